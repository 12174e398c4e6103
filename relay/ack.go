package relay

import (
	"fmt"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// ack — /cairn/ack/1.0.0 (SPEC.md §10.6): one Authenticated AckRequest
// (op 3) naming CIDs (at most wire.MaxAckCIDs) and/or a cursor up_to; the
// store deletes those entries, leaves a tombstone for each, and the answer
// says how many it deleted. Unknown or already acked CIDs are not errors.

func (n *Node) serveAck(in *inbound) {
	if !n.admitRequest(in, replyAck) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var a pb.Authenticated
	if !n.readRequest(in, f, &a, replyAck) {
		return
	}
	var req pb.AckRequest
	mb, err := authenticate(n.id, wire.AuthAck, &a, &req, n.now(), n.replay)
	if err != nil {
		n.answerErr(in, f, replyAck, err)
		return
	}
	if len(req.Cids) > wire.MaxAckCIDs {
		n.answerErr(in, f, replyAck, fmt.Errorf("ack: %d cids: %w", len(req.Cids), wire.ErrMalformed))
		return
	}
	cids := make([]wire.CID, len(req.Cids))
	for i, b := range req.Cids {
		if cids[i], err = wire.ParseCID(b); err != nil {
			n.answerErr(in, f, replyAck, fmt.Errorf("ack: cid %d: %w", i, err))
			return
		}
	}
	var upTo *wire.Cursor
	if len(req.UpTo) > 0 {
		c, err := wire.ParseCursor(req.UpTo)
		if err != nil {
			n.answerErr(in, f, replyAck, fmt.Errorf("ack: up_to: %w", err))
			return
		}
		upTo = &c
	}
	res, err := n.store.Ack(n.workCtx, mb, cids, upTo)
	if err != nil {
		n.answerErr(in, f, replyAck, fmt.Errorf("ack: %v: %w", err, wire.ErrInternal))
		return
	}
	n.m.acked.Add(float64(res.Acked))
	if len(res.Tombstones) > 0 {
		n.repl.tombstoned(res.Tombstones)
	}
	if n.cfg.Forwarder != nil && len(res.Tombstones) > 0 {
		n.cfg.Forwarder.Tombstoned(res.Tombstones)
	}
	n.answer(in, f, &pb.AckResponse{Status: pb.Status_STATUS_OK, Acked: uint32(res.Acked)}, pb.Status_STATUS_OK)
}
