package adversary

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// oneRelay starts a single honest relay with the resource manager its
// config derives (as an operator runs it), adjusted by mod. With one relay
// and R = 1 it holds every mailbox.
func oneRelay(t testing.TB, mod func(*relay.Config)) *relay.Node {
	t.Helper()
	n := StartNet(t, NetOptions{Relays: 1, R: 1, RelayConfig: func(_ int, cfg *relay.Config) {
		cfg.ResourceManager = nil
		if mod != nil {
			mod(cfg)
		}
	}})
	return n.Relays[0]
}

func hostile(t testing.TB, r *relay.Node) *Hostile {
	t.Helper()
	h, err := NewHostile(ctxT(t), r.AddrInfo())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func statusOf(m proto.Message) pb.Status {
	return m.(interface{ GetStatus() pb.Status }).GetStatus()
}

// metric sums the samples of a relay metric whose labels include want.
func metric(t testing.TB, r *relay.Node, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// sized returns build(pad) for the pad that makes the message exactly
// size bytes.
func sized(t testing.TB, size int, build func(pad int) proto.Message) proto.Message {
	t.Helper()
	pad := size - proto.Size(build(0))
	for d := -16; d <= 4; d++ {
		if p := pad + d; p >= 0 {
			if m := build(p); proto.Size(m) == size {
				return m
			}
		}
	}
	t.Fatalf("no padding gives a %d-byte message", size)
	return nil
}

func auth(t testing.TB, key ed25519.PrivateKey, op wire.AuthOp, relay peer.ID, body proto.Message) *pb.Authenticated {
	t.Helper()
	a, err := rpc.Authenticate(key, op, relay, body, time.Now(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// rawCase is one hostile frame sequence on one protocol and what the
// relay must do with it: answer with status want, or (reset) give no
// answer at all.
type rawCase struct {
	name  string
	proto protocol.ID
	raw   []byte
	resp  func() proto.Message
	want  pb.Status
	reset bool
	check func(t *testing.T, resp proto.Message)
}

// Every protocol, fed frames it must refuse: a length prefix one byte
// above its limit (reset before allocating, SPEC.md §10.1), bytes that are
// not protobuf (MALFORMED; reconcile resets), frames exactly at the limit
// (read and answered), and well-formed frames with bad contents (the
// status SPEC.md §10 names for each). The relay keeps serving an honest
// client afterwards, and no refused frame changed its state.
func TestHostileMalformedFrames(t *testing.T) {
	r := oneRelay(t, nil)
	h := hostile(t, r)
	key, mb := NewMailboxKey()
	rid := r.ID()
	garbage := []byte{2, 0x0f, 0x01} // a 2-byte message whose tag has wire type 7

	dep := func() proto.Message { return &pb.DepositResponse{} }
	syn := func() proto.Message { return &pb.SyncPage{} }
	sub := func() proto.Message { return &pb.SubscribeEvent{} }
	ack := func() proto.Message { return &pb.AckResponse{} }
	sta := func() proto.Message { return &pb.StatusResponse{} }
	pre := func() proto.Message { return &pb.PrekeyResponse{} }
	rep := func() proto.Message { return &pb.ReplicateResponse{} }
	rec := func() proto.Message { return &pb.ReconcileMessage{} }
	inf := func() proto.Message { return &pb.InfoResponse{} }

	envWith := func(mut func(e *wire.Envelope)) []byte {
		e := wire.Envelope{Mailbox: mb, Expiry: uint64(time.Now().Add(time.Hour).Unix()), Ciphertext: []byte("x")}
		mut(&e)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v2 := envWith(func(*wire.Envelope) {})
	v2[0] = 2
	lenMismatch := envWith(func(*wire.Envelope) {})
	lenMismatch = append(lenMismatch, 0)
	otherKey, _ := NewMailboxKey()
	var pub [32]byte
	wrongSigned, err := ratchet.SignOneTimePrekey(otherKey, ratchet.KindX25519, 1, pub[:])
	if err != nil {
		t.Fatal(err)
	}
	cids := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			c := wire.CIDOf([]byte{byte(i), byte(i >> 8)})
			out[i] = c[:]
		}
		return out
	}
	hostileKey, _, _ := crypto.GenerateEd25519Key(crand.Reader)
	forgedEnv := Envelope(mb, 64, 0)
	forgedStamp, err := SignStamp(hostileKey, forgedEnv, mb, 1)
	if err != nil {
		t.Fatal(err)
	}

	bigEnv := Envelope(mb, wire.MaxCiphertext, 0)
	cases := []rawCase{
		{name: "info/oversized", proto: wire.ProtocolInfo, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: inf, reset: true},
		{name: "info/garbage", proto: wire.ProtocolInfo, raw: garbage, resp: inf, want: pb.Status_STATUS_MALFORMED},

		{name: "deposit/oversized", proto: wire.ProtocolDeposit, raw: LengthPrefix(wire.MaxDepositFrame + 1), resp: dep, reset: true},
		{name: "deposit/garbage", proto: wire.ProtocolDeposit, raw: garbage, resp: dep, want: pb.Status_STATUS_MALFORMED,
			check: func(t *testing.T, m proto.Message) {
				if id := m.(*pb.DepositResponse).Id; id != 0 {
					t.Errorf("answer to an unparsable frame has id %d, want 0", id)
				}
			}},
		{name: "deposit/at-limit", proto: wire.ProtocolDeposit, resp: dep, want: pb.Status_STATUS_TOO_LARGE,
			raw: Frame(sized(t, wire.MaxDepositFrame, func(pad int) proto.Message {
				return withUnknown(&pb.DepositRequest{Id: 1, Envelope: bigEnv}, pad)
			}))},
		{name: "deposit/not-an-envelope", proto: wire.ProtocolDeposit, raw: Frame(&pb.DepositRequest{Id: 7, Envelope: []byte{wire.EnvelopeVersion, 0x12, 0x20}}), resp: dep, want: pb.Status_STATUS_MALFORMED,
			check: func(t *testing.T, m proto.Message) {
				if id := m.(*pb.DepositResponse).Id; id != 7 {
					t.Errorf("answer id %d, want 7", id)
				}
			}},
		{name: "deposit/unknown-version", proto: wire.ProtocolDeposit, raw: Frame(&pb.DepositRequest{Id: 1, Envelope: v2}), resp: dep, want: pb.Status_STATUS_UNSUPPORTED_VERSION},
		{name: "deposit/length-mismatch", proto: wire.ProtocolDeposit, raw: Frame(&pb.DepositRequest{Id: 1, Envelope: lenMismatch}), resp: dep, want: pb.Status_STATUS_MALFORMED},
		{name: "deposit/expired", proto: wire.ProtocolDeposit, resp: dep, want: pb.Status_STATUS_EXPIRY_INVALID,
			raw: Frame(&pb.DepositRequest{Id: 1, Envelope: envWith(func(e *wire.Envelope) { e.Expiry = uint64(time.Now().Add(-time.Minute).Unix()) })})},
		{name: "deposit/beyond-max-ttl", proto: wire.ProtocolDeposit, resp: dep, want: pb.Status_STATUS_EXPIRY_INVALID,
			raw: Frame(&pb.DepositRequest{Id: 1, Envelope: envWith(func(e *wire.Envelope) { e.Expiry = uint64(time.Now().Add(31 * 24 * time.Hour).Unix()) })})},

		{name: "sync/oversized", proto: wire.ProtocolSync, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: syn, reset: true},
		{name: "sync/garbage", proto: wire.ProtocolSync, raw: garbage, resp: syn, want: pb.Status_STATUS_MALFORMED},
		{name: "sync/not-a-proof", proto: wire.ProtocolSync, resp: syn, want: pb.Status_STATUS_AUTH_FAILED,
			raw: Frame(&pb.Authenticated{Proof: []byte{1, 2, 3}, Body: []byte{}})},
		{name: "sync/bad-cursor", proto: wire.ProtocolSync, resp: syn, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthSync, rid, &pb.SyncRequest{Mailbox: mb[:], Cursor: []byte{1, 5, 0}}))},
		{name: "sync/seq-without-origin", proto: wire.ProtocolSync, resp: syn, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthSync, rid, &pb.SyncRequest{Mailbox: mb[:], AfterSeq: 3}))},

		{name: "subscribe/oversized", proto: wire.ProtocolSubscribe, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: sub, reset: true},
		{name: "subscribe/garbage", proto: wire.ProtocolSubscribe, raw: garbage, resp: sub, want: pb.Status_STATUS_MALFORMED},
		{name: "subscribe/bad-mailbox", proto: wire.ProtocolSubscribe, resp: sub, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthSubscribe, rid, &pb.SubscribeRequest{Mailbox: []byte("short")}))},

		{name: "ack/oversized", proto: wire.ProtocolAck, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: ack, reset: true},
		{name: "ack/garbage", proto: wire.ProtocolAck, raw: garbage, resp: ack, want: pb.Status_STATUS_MALFORMED},
		{name: "ack/too-many-cids", proto: wire.ProtocolAck, resp: ack, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthAck, rid, &pb.AckRequest{Mailbox: mb[:], Cids: cids(wire.MaxAckCIDs + 1)}))},
		{name: "ack/bad-cid", proto: wire.ProtocolAck, resp: ack, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthAck, rid, &pb.AckRequest{Mailbox: mb[:], Cids: [][]byte{[]byte("not a cid")}}))},
		{name: "ack/no-owner-signature", proto: wire.ProtocolAck, resp: ack, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(auth(t, key, wire.AuthAck, rid, &pb.AckRequest{Mailbox: mb[:], Cids: cids(1)}))},
		{name: "ack/forged-owner-signature", proto: wire.ProtocolAck, resp: ack, want: pb.Status_STATUS_BAD_SIGNATURE,
			raw: Frame(auth(t, key, wire.AuthAck, rid, &pb.AckRequest{Mailbox: mb[:], Cids: cids(1), Signature: make([]byte, 64)}))},

		{name: "status/oversized", proto: wire.ProtocolStatus, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: sta, reset: true},
		{name: "status/garbage", proto: wire.ProtocolStatus, raw: garbage, resp: sta, want: pb.Status_STATUS_MALFORMED},
		{name: "status/at-limit", proto: wire.ProtocolStatus, resp: sta, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(sized(t, wire.MaxControlFrame, func(pad int) proto.Message {
				return &pb.StatusRequest{Mailbox: mb[:], Cids: [][]byte{make([]byte, pad)}}
			}))},
		{name: "status/too-many-cids", proto: wire.ProtocolStatus, resp: sta, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.StatusRequest{Mailbox: mb[:], Cids: cids(wire.MaxStatusCIDs + 1)})},
		{name: "status/bad-mailbox", proto: wire.ProtocolStatus, resp: sta, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.StatusRequest{Mailbox: []byte{0x12, 0x20, 1}})},

		{name: "prekeys/oversized", proto: wire.ProtocolPrekeys, raw: LengthPrefix(wire.MaxControlFrame + 1), resp: pre, reset: true},
		{name: "prekeys/garbage", proto: wire.ProtocolPrekeys, raw: garbage, resp: pre, want: pb.Status_STATUS_MALFORMED},
		{name: "prekeys/no-kind", proto: wire.ProtocolPrekeys, raw: Frame(&pb.PrekeyRequest{}), resp: pre, want: pb.Status_STATUS_MALFORMED},
		{name: "prekeys/fetch-bad-mailbox", proto: wire.ProtocolPrekeys, resp: pre, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Fetch{Fetch: &pb.PrekeyFetch{Mailbox: []byte{1}}}})},
		{name: "prekeys/upload-too-many", proto: wire.ProtocolPrekeys, resp: pre, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: auth(t, key, wire.AuthPrekeys, rid,
				&pb.PrekeyUpload{Mailbox: mb[:], Prekeys: make([][]byte, wire.MaxPrekeyUpload+1)})}})},
		{name: "prekeys/upload-garbage", proto: wire.ProtocolPrekeys, resp: pre, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: auth(t, key, wire.AuthPrekeys, rid,
				&pb.PrekeyUpload{Mailbox: mb[:], Prekeys: [][]byte{{1, 1}}})}})},
		{name: "prekeys/upload-unknown-version", proto: wire.ProtocolPrekeys, resp: pre, want: pb.Status_STATUS_UNSUPPORTED_VERSION,
			raw: Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: auth(t, key, wire.AuthPrekeys, rid,
				&pb.PrekeyUpload{Mailbox: mb[:], Prekeys: [][]byte{[]byte("prekey")}})}})},
		{name: "prekeys/upload-other-signer", proto: wire.ProtocolPrekeys, resp: pre, want: pb.Status_STATUS_BAD_SIGNATURE,
			raw: Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: auth(t, key, wire.AuthPrekeys, rid,
				&pb.PrekeyUpload{Mailbox: mb[:], Prekeys: [][]byte{wrongSigned.Marshal()}})}})},

		{name: "replicate/oversized", proto: wire.ProtocolReplicate, raw: LengthPrefix(wire.MaxEntryFrame + 1), resp: rep, reset: true},
		{name: "replicate/garbage", proto: wire.ProtocolReplicate, raw: garbage, resp: rep, want: pb.Status_STATUS_MALFORMED},
		{name: "replicate/at-limit", proto: wire.ProtocolReplicate, resp: rep, want: pb.Status_STATUS_OK,
			raw: Frame(sized(t, wire.MaxEntryFrame, func(pad int) proto.Message {
				return &pb.ReplicateRequest{Id: 1, Entries: []*pb.Entry{{Envelope: make([]byte, pad), Stamp: []byte{1}}}}
			})),
			check: func(t *testing.T, m proto.Message) {
				if st := m.(*pb.ReplicateResponse).Statuses; len(st) != 1 || st[0] == pb.Status_STATUS_OK {
					t.Errorf("junk entry answered %v", st)
				}
			}},
		{name: "replicate/batch-above-limit", proto: wire.ProtocolReplicate, resp: rep, want: pb.Status_STATUS_MALFORMED,
			raw: Frame(&pb.ReplicateRequest{Id: 1, Entries: make([]*pb.Entry, wire.MaxReplicateBatch+1)})},
		{name: "replicate/forged-entry-from-stranger", proto: wire.ProtocolReplicate, resp: rep, want: pb.Status_STATUS_OK,
			raw: Frame(&pb.ReplicateRequest{Id: 1, Entries: []*pb.Entry{{Envelope: forgedEnv, Stamp: forgedStamp}}}),
			check: func(t *testing.T, m proto.Message) {
				if st := m.(*pb.ReplicateResponse).Statuses; len(st) != 1 || st[0] != pb.Status_STATUS_NOT_REPLICA {
					t.Errorf("a stranger's entry answered %v, want NOT_REPLICA", st)
				}
				if _, err := r.Store().Get(mb, wire.CIDOf(forgedEnv)); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("a stranger's entry was stored (%v)", err)
				}
			}},

		{name: "reconcile/oversized", proto: wire.ProtocolReconcile, raw: LengthPrefix(wire.MaxEntryFrame + 1), resp: rec, reset: true},
		{name: "reconcile/garbage", proto: wire.ProtocolReconcile, raw: garbage, resp: rec, reset: true},
		{name: "reconcile/bad-ranges", proto: wire.ProtocolReconcile, resp: rec, reset: true,
			raw: Frame(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
				Ranges: []*pb.Range{{Upper: []byte{9}, Mode: pb.RangeMode_RANGE_MODE_SKIP}, {Upper: []byte{3}, Mode: pb.RangeMode_RANGE_MODE_SKIP}}})},
		{name: "reconcile/summary-naming-a-mailbox", proto: wire.ProtocolReconcile, resp: rec, reset: true,
			raw: Frame(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_MAILBOXES,
				Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}})},
		{name: "reconcile/summary-too-many-mailboxes", proto: wire.ProtocolReconcile, resp: rec, reset: true,
			raw: Frame(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Set: pb.ReconcileSet_RECONCILE_SET_MAILBOXES,
				Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}, Mailboxes: slices.Repeat([][]byte{mb[:]}, 65537)})},
		{name: "reconcile/stranger", proto: wire.ProtocolReconcile, resp: rec, want: pb.Status_STATUS_NOT_REPLICA,
			raw: Frame(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
				Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}})},
	}
	before := storeStats(r)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := c.resp()
			err := h.Exchange(ctxT(t), c.proto, c.raw, resp)
			if c.reset {
				if err == nil {
					t.Fatalf("answered %v, want a reset", resp)
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if got := statusOf(resp); got != c.want {
				t.Fatalf("answered %v, want %v", got, c.want)
			}
			if c.check != nil {
				c.check(t, resp)
			}
		})
	}
	if after := storeStats(r); after.Entries != before.Entries || after.Bytes != before.Bytes {
		t.Fatalf("refused frames changed the store: %+v → %+v", before, after)
	}
	honestRoundTrip(t, r)
}

// withUnknown adds an unknown bytes field of pad bytes to m (receivers
// must ignore unknown fields, SPEC.md §18): a way to give a valid request
// any size.
func withUnknown(m proto.Message, pad int) proto.Message {
	if pad == 0 {
		return m
	}
	b := protowire.AppendTag(nil, 1000, protowire.BytesType)
	b = protowire.AppendBytes(b, make([]byte, pad))
	m.ProtoReflect().SetUnknown(b)
	return m
}

func storeStats(r *relay.Node) store.Stats { return r.Store().Stats() }

// honestRoundTrip checks that r serves an honest client: info, a deposit,
// a sync that returns it, an ack.
func honestRoundTrip(t testing.TB, r *relay.Node) {
	t.Helper()
	h, err := NewHostile(ctxT(t), r.AddrInfo())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := ctxT(t)
	if _, err := h.RPC.Info(ctx, r.ID()); err != nil {
		t.Fatalf("info: %v", err)
	}
	key, mb := NewMailboxKey()
	env := Envelope(mb, 200, 0)
	ds, err := h.RPC.OpenDeposit(ctx, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	res, err := ds.Deposit(ctx, env)
	_ = ds.Close()
	if err != nil || res.Receipt == nil {
		t.Fatalf("deposit: %v", err)
	}
	st, err := h.RPC.Sync(ctx, r.ID(), key, rpc.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	page, err := st.Next()
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if len(page.Entries) != 1 || page.Entries[0].CID() != wire.CIDOf(env) {
		t.Fatalf("sync returned %d entries", len(page.Entries))
	}
	if n, err := h.RPC.Ack(ctx, r.ID(), key, []wire.CID{wire.CIDOf(env)}); err != nil || n != 1 {
		t.Fatalf("ack: %d, %v", n, err)
	}
}

// authExchange sends one authenticated request of op (its body already
// inside a) and returns the status of the relay's first answer.
func authExchange(t testing.TB, h *Hostile, op wire.AuthOp, a *pb.Authenticated) pb.Status {
	t.Helper()
	var (
		pid  protocol.ID
		raw  []byte
		resp proto.Message
	)
	switch op {
	case wire.AuthSync:
		pid, raw, resp = wire.ProtocolSync, Frame(a), &pb.SyncPage{}
	case wire.AuthSubscribe:
		pid, raw, resp = wire.ProtocolSubscribe, Frame(a), &pb.SubscribeEvent{}
	case wire.AuthAck:
		pid, raw, resp = wire.ProtocolAck, Frame(a), &pb.AckResponse{}
	case wire.AuthPrekeys:
		pid, raw, resp = wire.ProtocolPrekeys, Frame(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: a}}), &pb.PrekeyResponse{}
	}
	if err := h.Exchange(ctxT(t), pid, raw, resp); err != nil {
		t.Fatalf("op %d: no answer: %v", op, err)
	}
	return statusOf(resp)
}

// bodyOf returns a valid request body of op for mailbox mb.
func bodyOf(op wire.AuthOp, mb wire.Mailbox, cid wire.CID) proto.Message {
	switch op {
	case wire.AuthSync:
		return &pb.SyncRequest{Mailbox: mb[:]}
	case wire.AuthSubscribe:
		return &pb.SubscribeRequest{Mailbox: mb[:]}
	case wire.AuthAck:
		return &pb.AckRequest{Mailbox: mb[:], Cids: [][]byte{cid[:]}}
	default:
		return &pb.PrekeyUpload{Mailbox: mb[:]}
	}
}

// Stale, replayed, misaddressed and forged authentication proofs on every
// authenticated protocol (sync, subscribe, ack, prekey upload) get the
// status SPEC.md §8 names, in its order of checks, and change nothing: the
// entry a refused ack names is still there, a refused prekey upload stored
// nothing. A full replay cache refuses new proofs with BUSY.
func TestHostileAuthProofs(t *testing.T) {
	r := oneRelay(t, nil)
	h := hostile(t, r)
	key, mb := NewMailboxKey()
	otherKey, _ := NewMailboxKey()
	_, otherMB := NewMailboxKey()
	otherRelay := peerOf(t)
	env := Envelope(mb, 100, 0)
	ds, err := h.RPC.OpenDeposit(ctxT(t), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Deposit(ctxT(t), env); err != nil {
		t.Fatal(err)
	}
	_ = ds.Close()
	cid := wire.CIDOf(env)
	var nonce uint64
	next := func() [16]byte {
		nonce++
		var n [16]byte
		n[0], n[1] = byte(nonce), byte(nonce>>8)
		_, _ = crand.Read(n[2:])
		return n
	}
	now := time.Now()
	for _, op := range []wire.AuthOp{wire.AuthSync, wire.AuthSubscribe, wire.AuthAck, wire.AuthPrekeys} {
		proof := func(k ed25519.PrivateKey, o wire.AuthOp, rel peer.ID, body proto.Message, at time.Time) *pb.Authenticated {
			a, err := ProofAt(k, o, rel, body, at, next())
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		body := bodyOf(op, mb, cid)
		wrongOp := wire.AuthSync
		if op == wire.AuthSync {
			wrongOp = wire.AuthAck
		}
		flipped := proof(key, op, r.ID(), body, now)
		flipped.Proof[len(flipped.Proof)-1] ^= 1
		altered := proof(key, op, r.ID(), body, now)
		altered.Body = append(altered.Body, 0x08, 0x01) // an extra field: digest differs
		cases := []struct {
			name string
			a    *pb.Authenticated
			want pb.Status
		}{
			{"stale-past", proof(key, op, r.ID(), body, now.Add(-wire.AuthWindow-5*time.Second)), pb.Status_STATUS_AUTH_STALE},
			{"stale-future", proof(key, op, r.ID(), body, now.Add(wire.AuthWindow+5*time.Second)), pb.Status_STATUS_AUTH_STALE},
			{"other-relay", proof(key, op, otherRelay, body, now), pb.Status_STATUS_AUTH_FAILED},
			{"other-op", proof(key, wrongOp, r.ID(), body, now), pb.Status_STATUS_AUTH_FAILED},
			{"body-altered", altered, pb.Status_STATUS_AUTH_FAILED},
			{"other-mailbox", proof(key, op, r.ID(), bodyOf(op, otherMB, cid), now), pb.Status_STATUS_AUTH_FAILED},
			{"other-key", proof(otherKey, op, r.ID(), body, now), pb.Status_STATUS_AUTH_FAILED},
			{"bad-signature", flipped, pb.Status_STATUS_AUTH_FAILED},
		}
		for _, c := range cases {
			if got := authExchange(t, h, op, c.a); got != c.want {
				t.Errorf("op %d %s: %v, want %v", op, c.name, got, c.want)
			}
		}
		// The same valid proof twice: accepted, then AUTH_REPLAYED. (Ack
		// is replayed with a body naming no entry, so that the first use
		// deletes nothing either.)
		rb := body
		if op == wire.AuthAck {
			rb = &pb.AckRequest{Mailbox: mb[:]}
		}
		good := proof(key, op, r.ID(), rb, now)
		if got := authExchange(t, h, op, good); got != pb.Status_STATUS_OK {
			t.Errorf("op %d: valid proof answered %v", op, got)
		}
		if got := authExchange(t, h, op, good); got != pb.Status_STATUS_AUTH_REPLAYED {
			t.Errorf("op %d: replayed proof answered %v, want AUTH_REPLAYED", op, got)
		}
	}
	if _, err := r.Store().Get(mb, cid); err != nil {
		t.Fatalf("the entry refused acks named is gone: %v", err)
	}
	if got := prekeyCount(t, r, mb); got != 0 {
		t.Fatalf("refused uploads stored %d prekeys", got)
	}

	// A full replay cache refuses fresh proofs with BUSY, not accepting
	// them unrecorded.
	const cacheSize = 8
	r2 := oneRelay(t, func(c *relay.Config) { c.MaxReplayCache = cacheSize })
	h2 := hostile(t, r2)
	for i := range cacheSize + 3 {
		a, err := ProofAt(key, wire.AuthSync, r2.ID(), &pb.SyncRequest{Mailbox: mb[:]}, time.Now(), next())
		if err != nil {
			t.Fatal(err)
		}
		want := pb.Status_STATUS_OK
		if i >= cacheSize {
			want = pb.Status_STATUS_BUSY
		}
		if got := authExchange(t, h2, wire.AuthSync, a); got != want {
			t.Fatalf("proof %d with a cache of %d: %v, want %v", i, cacheSize, got, want)
		}
	}
}

func peerOf(t testing.TB) peer.ID {
	k, _, err := crypto.GenerateEd25519Key(crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

var _ = fmt.Sprint
var _ = context.Background
