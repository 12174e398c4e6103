package relay

import (
	"fmt"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// status — /cairn/status/1.0.0 (SPEC.md §10.7): StatusRequest {mailbox,
// cids} (at most wire.MaxStatusCIDs) → one EntryState per CID, in order.
// Unauthenticated: a CID is known only to its sender, its recipient and the
// relays.

func (n *Node) serveStatus(in *inbound) {
	if !n.admitRequest(in, replyStatus) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var req pb.StatusRequest
	if !n.readRequest(in, f, &req, replyStatus) {
		return
	}
	mb, err := wire.ParseMailbox(req.Mailbox)
	if err != nil {
		n.answerErr(in, f, replyStatus, fmt.Errorf("status: %w", err))
		return
	}
	if len(req.Cids) > wire.MaxStatusCIDs {
		n.answerErr(in, f, replyStatus, fmt.Errorf("status: %d cids: %w", len(req.Cids), wire.ErrMalformed))
		return
	}
	states := make([]pb.EntryState, len(req.Cids))
	for i, b := range req.Cids {
		c, err := wire.ParseCID(b)
		if err != nil {
			n.answerErr(in, f, replyStatus, fmt.Errorf("status: cid %d: %w", i, err))
			return
		}
		fate, err := n.store.Fate(mb, c)
		if err != nil {
			n.answerErr(in, f, replyStatus, fmt.Errorf("status: %v: %w", err, wire.ErrInternal))
			return
		}
		states[i] = entryState(fate)
	}
	n.answer(in, f, &pb.StatusResponse{Status: pb.Status_STATUS_OK, States: states}, pb.Status_STATUS_OK)
}

func entryState(f store.Fate) pb.EntryState {
	switch f {
	case store.FateStored:
		return pb.EntryState_ENTRY_STATE_STORED
	case store.FateAcked:
		return pb.EntryState_ENTRY_STATE_ACKED
	case store.FateExpired:
		return pb.EntryState_ENTRY_STATE_EXPIRED
	}
	return pb.EntryState_ENTRY_STATE_UNKNOWN
}
