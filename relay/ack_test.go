package relay

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestRelayAckAndStatus(t *testing.T) {
	clk := &clock{}
	n := startNode(t, func(c *Config) { c.Now = clk.Now; c.MaxPageEntries = 3 })
	c := newClient(t, n)
	c.Now = clk.Now
	key, mb := mailboxKey(t)
	envs := fill(t, c, n, mb, 10, 200, 0)
	cid := func(i int) wire.CID { return wire.CIDOf(envs[i]) }

	// Ack two by CID (one twice, one unknown: not errors).
	unknown := cid(0)
	unknown[35] ^= 1
	acked, err := c.Ack(ctxT(t), n.ID(), key, []wire.CID{cid(1), cid(3), cid(3), unknown})
	if err != nil || acked != 2 {
		t.Fatalf("ack: %d, %v", acked, err)
	}
	// Ack 1 … 5 (1 and 3 are gone already).
	acked, err = c.Ack(ctxT(t), n.ID(), key, []wire.CID{cid(0), cid(1), cid(2), cid(3), cid(4)})
	if err != nil || acked != 3 {
		t.Fatalf("second ack: %d, %v", acked, err)
	}
	acked, err = c.Ack(ctxT(t), n.ID(), key, []wire.CID{cid(1)})
	if err != nil || acked != 0 {
		t.Fatalf("re-ack: %d, %v", acked, err)
	}
	// Each tombstone keeps the owner's ack of its CID.
	for _, i := range []int{0, 1, 3} {
		tb, err := n.Store().Tombstone(mb, cid(i))
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.VerifyOwnerAck(nil, tb.OwnerAck, mb, cid(i)); err != nil {
			t.Fatalf("tombstone %d: %v", i, err)
		}
	}
	// Sync returns only the rest.
	var got []uint64
	for _, p := range syncAll(t, c, n, key, rpc.SyncRequest{}) {
		for _, e := range p.Entries {
			got = append(got, e.Stamp.Seq)
		}
	}
	if len(got) != 5 || got[0] != 6 {
		t.Fatalf("after acks sync returns seqs %v", got)
	}
	// Status: stored, acked, unknown; another mailbox knows nothing.
	states, err := c.Status(ctxT(t), n.ID(), mb, []wire.CID{cid(9), cid(1), unknown, cid(4)})
	if err != nil {
		t.Fatal(err)
	}
	want := []pb.EntryState{pb.EntryState_ENTRY_STATE_STORED, pb.EntryState_ENTRY_STATE_ACKED, pb.EntryState_ENTRY_STATE_UNKNOWN, pb.EntryState_ENTRY_STATE_ACKED}
	for i := range want {
		if states[i] != want[i] {
			t.Fatalf("states %v, want %v", states, want)
		}
	}
	_, other := mailboxKey(t)
	if states, _ := c.Status(ctxT(t), n.ID(), other, []wire.CID{cid(9)}); states[0] != pb.EntryState_ENTRY_STATE_UNKNOWN {
		t.Fatalf("another mailbox: %v", states)
	}
	// Expired: past the default TTL the entry is EXPIRED, never served.
	clk.Advance(8 * 24 * time.Hour)
	states, err = c.Status(ctxT(t), n.ID(), mb, []wire.CID{cid(9)})
	if err != nil || states[0] != pb.EntryState_ENTRY_STATE_EXPIRED {
		t.Fatalf("after expiry: %v %v", states, err)
	}
	pages := syncAll(t, c, n, key, rpc.SyncRequest{})
	if len(pages) != 1 || len(pages[0].Entries) != 0 {
		t.Fatal("expired entries served")
	}
	// Too many CIDs.
	_, err = c.Status(ctxT(t), n.ID(), mb, make([]wire.CID, wire.MaxStatusCIDs+1))
	if !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("oversized status: %v", err)
	}
	var resp pb.StatusResponse
	big := &pb.StatusRequest{Mailbox: mb[:], Cids: make([][]byte, wire.MaxStatusCIDs+1)}
	c0 := cid(0)
	for i := range big.Cids {
		big.Cids[i] = c0[:]
	}
	if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolStatus, big, &resp); err != nil || resp.Status != pb.Status_STATUS_MALFORMED {
		t.Fatalf("raw oversized status: %v %v", resp.Status, err)
	}
	for name, req := range map[string]*pb.StatusRequest{
		"bad mailbox": {Mailbox: []byte{1, 2}},
		"bad cid":     {Mailbox: mb[:], Cids: [][]byte{{1, 2, 3}}},
	} {
		var resp pb.StatusResponse
		if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolStatus, req, &resp); err != nil || resp.Status != pb.Status_STATUS_MALFORMED {
			t.Fatalf("%s: %v %v", name, resp.Status, err)
		}
	}
	// Ack: bad CIDs, too many, no signature.
	for name, body := range map[string]*pb.AckRequest{
		"bad cid":      {Mailbox: mb[:], Cids: [][]byte{{1}}},
		"too many":     {Mailbox: mb[:], Cids: make([][]byte, wire.MaxAckCIDs+1)},
		"no signature": {Mailbox: mb[:], Cids: [][]byte{c0[:]}},
		"short":        {Mailbox: mb[:], Cids: [][]byte{c0[:]}, Signature: make([]byte, 63)},
	} {
		var resp pb.AckResponse
		a := mustAuth(t, key, wire.AuthAck, n, body, clk.Now())
		if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolAck, a, &resp); err != nil || resp.Status != pb.Status_STATUS_MALFORMED {
			t.Fatalf("ack %s: %v %v", name, resp.Status, err)
		}
	}
}

// TestRelayAckNeedsOwnerSignature: an ack whose owner signature is not the
// mailbox key's over exactly its CIDs is refused with BAD_SIGNATURE and
// deletes nothing, although its auth proof is good (SPEC.md §6.3, §10.6).
func TestRelayAckNeedsOwnerSignature(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	envs := fill(t, c, n, mb, 4, 200, 0)
	cids := make([]wire.CID, len(envs))
	for i := range envs {
		cids[i] = wire.CIDOf(envs[i])
	}
	otherKey, _ := mailboxKey(t)
	sign := func(k ed25519.PrivateKey, cs []wire.CID) []byte {
		sig, err := wire.SignOwnerAck(k, cs)
		if err != nil {
			t.Fatal(err)
		}
		return sig[:]
	}
	raw := func(cs []wire.CID) [][]byte {
		out := make([][]byte, len(cs))
		for i := range cs {
			out[i] = cs[i][:]
		}
		return out
	}
	reordered := []wire.CID{cids[1], cids[0]}
	flipped := sign(key, cids[:2])
	flipped[5] ^= 1
	for name, body := range map[string]*pb.AckRequest{
		"another key":         {Mailbox: mb[:], Cids: raw(cids[:2]), Signature: sign(otherKey, cids[:2])},
		"other cids":          {Mailbox: mb[:], Cids: raw(cids[:2]), Signature: sign(key, cids[2:])},
		"a subset":            {Mailbox: mb[:], Cids: raw(cids[:2]), Signature: sign(key, cids[:3])},
		"another order":       {Mailbox: mb[:], Cids: raw(reordered), Signature: sign(key, cids[:2])},
		"a flipped signature": {Mailbox: mb[:], Cids: raw(cids[:2]), Signature: flipped},
	} {
		var resp pb.AckResponse
		a := mustAuth(t, key, wire.AuthAck, n, body, n.now())
		if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolAck, a, &resp); err != nil || resp.Status != pb.Status_STATUS_BAD_SIGNATURE || resp.Acked != 0 {
			t.Fatalf("ack signed by %s: %v, acked %d, %v", name, resp.Status, resp.Acked, err)
		}
	}
	if st := n.Store().Stats(); st.Entries != 4 || st.Tombstones != 0 {
		t.Fatalf("after refused acks: %d entries, %d tombstones", st.Entries, st.Tombstones)
	}
	// The same request, signed right, deletes.
	var resp pb.AckResponse
	a := mustAuth(t, key, wire.AuthAck, n, &pb.AckRequest{Mailbox: mb[:], Cids: raw(reordered), Signature: sign(key, reordered)}, n.now())
	if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolAck, a, &resp); err != nil || resp.Status != pb.Status_STATUS_OK || resp.Acked != 2 {
		t.Fatalf("good ack: %v, acked %d, %v", resp.Status, resp.Acked, err)
	}
}

func TestRelayPrekeys(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxStoredPrekeys = 5 })
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	mkX := func(id uint32) []byte {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ratchet.SignOneTimePrekey(key, ratchet.KindX25519, id, k.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return p.Marshal()
	}
	mkKEM := func(id uint32) []byte {
		dk, err := mlkem.GenerateKey768()
		if err != nil {
			t.Fatal(err)
		}
		p, err := ratchet.SignOneTimePrekey(key, ratchet.KindMLKEM768, id, dk.EncapsulationKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return p.Marshal()
	}
	// An upload with one bad signature stores nothing.
	bad := mkX(99)
	bad[len(bad)-1] ^= 1
	_, err := c.UploadPrekeys(ctxT(t), n.ID(), key, [][]byte{mkX(1), bad})
	if !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("bad upload: %v", err)
	}
	// Signed by another mailbox key: BAD_SIGNATURE too.
	otherKey, _ := mailboxKey(t)
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	foreign, _ := ratchet.SignOneTimePrekey(otherKey, ratchet.KindX25519, 7, k.PublicKey().Bytes())
	if _, err := c.UploadPrekeys(ctxT(t), n.ID(), key, [][]byte{foreign.Marshal()}); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("foreign upload: %v", err)
	}
	if _, err := c.UploadPrekeys(ctxT(t), n.ID(), key, [][]byte{{1, 2, 3}}); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("garbage upload: %v", err)
	}
	got, err := c.FetchPrekeys(ctxT(t), n.ID(), mb)
	if err != nil || got.X25519 != nil || got.MLKEM != nil {
		t.Fatalf("fetch after rejected uploads: %+v %v", got, err)
	}
	// Duplicates by (kind, id) are dropped; at most 5 per kind are kept.
	xs := [][]byte{mkX(1), mkX(2), mkX(2), mkX(3)}
	counts, err := c.UploadPrekeys(ctxT(t), n.ID(), key, append(xs, mkKEM(1)))
	if err != nil || counts != (rpc.PrekeyCounts{X25519: 3, MLKEM: 1}) {
		t.Fatalf("upload: %+v %v", counts, err)
	}
	counts, err = c.UploadPrekeys(ctxT(t), n.ID(), key, [][]byte{mkX(4), mkX(5), mkX(6), mkX(7)})
	if err != nil || counts != (rpc.PrekeyCounts{X25519: 5, MLKEM: 1}) {
		t.Fatalf("upload over the cap: %+v %v", counts, err)
	}
	// Each prekey is handed out once.
	seen := map[string]bool{}
	for i := range 5 {
		got, err := c.FetchPrekeys(ctxT(t), n.ID(), mb)
		if err != nil || got.X25519 == nil {
			t.Fatalf("fetch %d: %+v %v", i, got, err)
		}
		if seen[string(got.X25519)] {
			t.Fatal("prekey handed out twice")
		}
		seen[string(got.X25519)] = true
		p, err := ratchet.ParseOneTimePrekey(got.X25519)
		if err != nil {
			t.Fatal(err)
		}
		var signer [32]byte
		copy(signer[:], key[32:])
		if err := p.Verify(signer); err != nil {
			t.Fatal(err)
		}
		if (i == 0) != (got.MLKEM != nil) || got.Remaining.X25519 != 4-i {
			t.Fatalf("fetch %d: mlkem %v remaining %+v", i, got.MLKEM != nil, got.Remaining)
		}
	}
	got, err = c.FetchPrekeys(ctxT(t), n.ID(), mb)
	if err != nil || got.X25519 != nil || got.MLKEM != nil {
		t.Fatalf("fetch when empty: %+v %v", got, err)
	}
	// Malformed requests.
	for name, req := range map[string]*pb.PrekeyRequest{
		"empty":       {},
		"bad mailbox": {Kind: &pb.PrekeyRequest_Fetch{Fetch: &pb.PrekeyFetch{Mailbox: []byte{9}}}},
	} {
		var resp pb.PrekeyResponse
		if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolPrekeys, req, &resp); err != nil || resp.Status != pb.Status_STATUS_MALFORMED {
			t.Fatalf("%s: %v %v", name, resp.Status, err)
		}
	}
	tooMany := make([][]byte, wire.MaxPrekeyUpload+1)
	a := mustAuth(t, key, wire.AuthPrekeys, n, &pb.PrekeyUpload{Mailbox: mb[:], Prekeys: tooMany}, n.now())
	var resp pb.PrekeyResponse
	if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolPrekeys, &pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: a}}, &resp); err != nil || resp.Status != pb.Status_STATUS_MALFORMED {
		t.Fatalf("too many prekeys: %v %v", resp.Status, err)
	}
}

// TestRelayPrekeysDurable: prekeys survive a restart, and one handed out
// before it is not handed out again.
func TestRelayPrekeysDurable(t *testing.T) {
	cfg := testConfig(t)
	cfg.Identity = newIdentity(t)
	key, mb := mailboxKey(t)
	var recs [][]byte
	for id := range uint32(3) {
		k, _ := ecdh.X25519().GenerateKey(rand.Reader)
		p, err := ratchet.SignOneTimePrekey(key, ratchet.KindX25519, id+1, k.PublicKey().Bytes())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, p.Marshal())
	}
	run := func(f func(c *rpc.Client, n *Node)) {
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		f(newClient(t, n), n)
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	run(func(c *rpc.Client, n *Node) {
		if _, err := c.UploadPrekeys(ctxT(t), n.ID(), key, recs); err != nil {
			t.Fatal(err)
		}
		got, err := c.FetchPrekeys(ctxT(t), n.ID(), mb)
		if err != nil || string(got.X25519) != string(recs[0]) {
			t.Fatalf("first fetch: %v", err)
		}
	})
	run(func(c *rpc.Client, n *Node) {
		// Re-uploading the handed-out prekey does not bring it back.
		counts, err := c.UploadPrekeys(ctxT(t), n.ID(), key, recs[:1])
		if err != nil || counts.X25519 != 2 {
			t.Fatalf("after restart: %+v %v", counts, err)
		}
		for i := 1; i < 3; i++ {
			got, err := c.FetchPrekeys(ctxT(t), n.ID(), mb)
			if err != nil || string(got.X25519) != string(recs[i]) {
				t.Fatalf("fetch %d after restart: %v", i, err)
			}
		}
	})
}
