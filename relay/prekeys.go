package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// prekeys — /cairn/prekeys/1.0.0 (SPEC.md §10.8): one PrekeyRequest per
// stream. upload: an Authenticated (op 4) PrekeyUpload of at most
// wire.MaxPrekeyUpload one-time prekeys; every prekey is parsed and its
// signature checked with the proof's mailbox key before anything is stored
// (one bad signature rejects the whole upload with BAD_SIGNATURE);
// duplicates by (kind, id) are dropped; at most MaxStoredPrekeys are kept
// per kind per mailbox. fetch: removes and returns at most one prekey of
// each kind; each is handed out at most once. Fetches are rate-limited per
// peer like every request.

// prekeyKinds are the one-time prekey kinds a relay stores, in answer order.
var prekeyKinds = [2]ratchet.PrekeyKind{ratchet.KindX25519, ratchet.KindMLKEM768}

// prekeyStore keeps one-time prekeys durably (package store's PutPrekeys
// and TakePrekey satisfy it). put adds records of one kind (dropping IDs it
// holds or handed out, and anything beyond max) and returns how many the
// mailbox holds of that kind; put with no records only counts. take removes
// the oldest (nil when none is left).
type prekeyStore interface {
	PutPrekeys(ctx context.Context, mb wire.Mailbox, kind uint8, recs []store.RelayPrekey, max int) (remaining int, err error)
	TakePrekey(ctx context.Context, mb wire.Mailbox, kind uint8) (record []byte, remaining int, err error)
}

var _ prekeyStore = (*store.Log)(nil)

func kindIndex(k ratchet.PrekeyKind) int {
	if k == ratchet.KindMLKEM768 {
		return 1
	}
	return 0
}

func (n *Node) servePrekeys(in *inbound) {
	if !n.admitRequest(in, replyPrekeys) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var req pb.PrekeyRequest
	if !n.readRequest(in, f, &req, replyPrekeys) {
		return
	}
	var resp *pb.PrekeyResponse
	var err error
	switch k := req.Kind.(type) {
	case *pb.PrekeyRequest_Upload:
		resp, err = n.prekeyUpload(k.Upload)
	case *pb.PrekeyRequest_Fetch:
		resp, err = n.prekeyFetch(k.Fetch)
	default:
		err = fmt.Errorf("prekeys: no request: %w", wire.ErrMalformed)
	}
	if err != nil {
		n.answerErr(in, f, replyPrekeys, err)
		return
	}
	n.answer(in, f, resp, pb.Status_STATUS_OK)
}

// prekeyErr maps ratchet's parse and verify errors to wire statuses.
func prekeyErr(i int, err error) error {
	switch {
	case errors.Is(err, ratchet.ErrAuth):
		return fmt.Errorf("prekey %d: signature: %w", i, wire.ErrBadSignature)
	case errors.Is(err, ratchet.ErrUnsupportedVersion):
		return fmt.Errorf("prekey %d: %w", i, wire.ErrUnsupportedVersion)
	}
	return fmt.Errorf("prekey %d: %w", i, wire.ErrMalformed)
}

func (n *Node) prekeyUpload(a *pb.Authenticated) (*pb.PrekeyResponse, error) {
	var body pb.PrekeyUpload
	proof, err := authenticateProof(n.id, wire.AuthPrekeys, a, &body, n.now(), n.replay)
	if err != nil {
		return nil, err
	}
	mb := proof.Mailbox()
	if len(body.Prekeys) > wire.MaxPrekeyUpload {
		return nil, fmt.Errorf("prekeys: %d in one upload: %w", len(body.Prekeys), wire.ErrMalformed)
	}
	var signer [32]byte
	copy(signer[:], proof.MailboxKey[:ed25519.PublicKeySize])
	var byKind [2][]store.RelayPrekey
	for i, raw := range body.Prekeys {
		p, err := ratchet.ParseOneTimePrekey(raw)
		if err != nil {
			return nil, prekeyErr(i, err)
		}
		if err := p.Verify(signer); err != nil {
			return nil, prekeyErr(i, err)
		}
		k := kindIndex(p.Kind)
		byKind[k] = append(byKind[k], store.RelayPrekey{ID: p.ID, Record: raw})
	}
	resp := &pb.PrekeyResponse{Status: pb.Status_STATUS_OK}
	for k, kind := range prekeyKinds {
		remaining, err := n.prekeys.PutPrekeys(n.workCtx, mb, uint8(kind), byKind[k], n.cfg.MaxStoredPrekeys)
		if err != nil {
			if wire.StatusOf(err) == pb.Status_STATUS_INTERNAL {
				err = fmt.Errorf("prekeys: %v: %w", err, wire.ErrInternal)
			}
			return nil, err
		}
		if k == 0 {
			resp.RemainingX25519 = uint32(remaining)
		} else {
			resp.RemainingMlkem = uint32(remaining)
		}
	}
	return resp, nil
}

func (n *Node) prekeyFetch(req *pb.PrekeyFetch) (*pb.PrekeyResponse, error) {
	mb, err := wire.ParseMailbox(req.GetMailbox())
	if err != nil {
		return nil, fmt.Errorf("prekeys: %w", err)
	}
	resp := &pb.PrekeyResponse{Status: pb.Status_STATUS_OK}
	for k, kind := range prekeyKinds {
		rec, remaining, err := n.prekeys.TakePrekey(n.workCtx, mb, uint8(kind))
		if err != nil {
			return nil, fmt.Errorf("prekeys: %v: %w", err, wire.ErrInternal)
		}
		if k == 0 {
			resp.X25519, resp.RemainingX25519 = rec, uint32(remaining)
		} else {
			resp.Mlkem, resp.RemainingMlkem = rec, uint32(remaining)
		}
	}
	return resp, nil
}
