package rpc

import (
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Entry is a stored envelope with its verified origin stamp (SPEC.md
// §10.1).
type Entry struct {
	// Envelope is the exact envelope bytes (SPEC.md §3).
	Envelope []byte
	// Stamp is the origin's signed receipt, verified against Envelope.
	Stamp wire.SignedReceipt
}

// CID returns the entry's content ID.
func (e *Entry) CID() wire.CID { return e.Stamp.CID }

// Position returns the entry's (origin, seq).
func (e *Entry) Position() wire.Position {
	return wire.Position{Origin: e.Stamp.Origin, Seq: e.Stamp.Seq}
}

// VerifyEntry parses a wire entry and checks that its stamp is the valid
// origin stamp of its envelope and names mailbox (SPEC.md §6.2). Errors wrap
// wire.ErrMalformed or wire.ErrBadSignature.
func VerifyEntry(v *wire.ReceiptVerifier, e *pb.Entry, mailbox wire.Mailbox) (Entry, error) {
	if e == nil {
		return Entry{}, fmt.Errorf("entry: missing: %w", wire.ErrMalformed)
	}
	stamp, err := wire.ParseSignedReceipt(e.Stamp)
	if err != nil {
		return Entry{}, fmt.Errorf("entry stamp: %w", err)
	}
	if stamp.Mailbox != mailbox {
		return Entry{}, fmt.Errorf("entry of another mailbox: %w", wire.ErrBadSignature)
	}
	if err := v.VerifyFor(stamp, e.Envelope); err != nil {
		return Entry{}, fmt.Errorf("entry: %w", err)
	}
	return Entry{Envelope: e.Envelope, Stamp: *stamp}, nil
}

// comparePos orders positions as sync does: by origin bytes, then seq.
func comparePos(a, b wire.Position) int {
	if c := strings.Compare(string(a.Origin), string(b.Origin)); c != 0 {
		return c
	}
	switch {
	case a.Seq < b.Seq:
		return -1
	case a.Seq > b.Seq:
		return 1
	}
	return 0
}

func positionsFromPB(ps []*pb.Position) ([]wire.Position, error) {
	out := make([]wire.Position, 0, len(ps))
	for _, p := range ps {
		id, err := peer.IDFromBytes(p.GetOrigin())
		if err != nil || len(p.GetOrigin()) > wire.MaxPeerIDLen {
			return nil, fmt.Errorf("watermark origin: %w", wire.ErrMalformed)
		}
		out = append(out, wire.Position{Origin: id, Seq: p.GetSeq()})
	}
	return out, nil
}
