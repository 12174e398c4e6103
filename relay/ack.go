package relay

import (
	"crypto/ed25519"
	"fmt"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// ack — /cairn/ack/1.0.0 (SPEC.md §10.6): one Authenticated AckRequest
// (op 3) naming up to wire.MaxAckCIDs CIDs, with the owner's signature over
// them (§6.3); the store deletes those entries and leaves a tombstone for
// each that keeps the owner's ack of its CID, so that the other replicas
// can check the deletion. The answer says how many were deleted. Unknown or
// already acked CIDs are not errors.

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
	p, err := authenticateProof(n.id, wire.AuthAck, &a, &req, n.now(), n.replay)
	if err != nil {
		n.answerErr(in, f, replyAck, err)
		return
	}
	mb := p.Mailbox()
	if len(req.Cids) > wire.MaxAckCIDs {
		n.answerErr(in, f, replyAck, fmt.Errorf("ack: %d cids: %w", len(req.Cids), wire.ErrMalformed))
		return
	}
	if len(req.Cids) == 0 {
		n.answer(in, f, &pb.AckResponse{Status: pb.Status_STATUS_OK}, pb.Status_STATUS_OK)
		return
	}
	cids := make([]wire.CID, len(req.Cids))
	for i, b := range req.Cids {
		if cids[i], err = wire.ParseCID(b); err != nil {
			n.answerErr(in, f, replyAck, fmt.Errorf("ack: cid %d: %w", i, err))
			return
		}
	}
	if len(req.Signature) != ed25519.SignatureSize {
		n.answerErr(in, f, replyAck, fmt.Errorf("ack: signature of %d bytes: %w", len(req.Signature), wire.ErrMalformed))
		return
	}
	acks, err := wire.OwnerAcks(p.MailboxKey, cids, [64]byte(req.Signature))
	if err != nil {
		n.answerErr(in, f, replyAck, fmt.Errorf("ack: %w", err))
		return
	}
	proofs := make([][]byte, len(acks))
	for i := range acks {
		if proofs[i], err = acks[i].Marshal(); err != nil {
			n.answerErr(in, f, replyAck, fmt.Errorf("ack: %v: %w", err, wire.ErrInternal))
			return
		}
	}
	res, err := n.store.Ack(n.workCtx, mb, cids, proofs)
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
