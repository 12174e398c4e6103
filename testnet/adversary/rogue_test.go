package adversary

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-net/cairn/ratchet"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// rogueNet starts two honest relays, two clients (alice = 0, bob = 1) and a
// rogue that is the closest replica of bob's mailbox: bob subscribes there
// and syncs it first, and alice tries it first for every deposit to bob.
// R = 3, so the rogue and both honest relays replicate every mailbox.
func rogueNet(t *testing.T) (n *Net, alice, bob *client.Client, bobAtAlice, aliceAtBob client.ContactID) {
	t.Helper()
	n = StartNet(t, NetOptions{
		Relays:            2,
		Clients:           2,
		CaptureClientLogs: true,
		RogueKey: func(cs []*client.Client, honest []peer.ID) crypto.PrivKey {
			return ClosestKey(cs[1].Mailbox(), honest)
		},
	})
	alice, bob = n.Clients[0], n.Clients[1]
	bobAtAlice, aliceAtBob = introduce(t, alice, bob)
	// Bob's live subscription is on the rogue (the closest replica).
	eventually(t, "bob subscribed at the rogue", func() error {
		if n.Rogue.Subscribers(bob.Mailbox()) == 0 {
			return errNotYet
		}
		return nil
	})
	return n, alice, bob, bobAtAlice, aliceAtBob
}

// detected waits until client i's log holds each of the reasons (the
// client's own words for what it refused: the error of a sync, a
// subscription, a deposit).
func detected(t testing.TB, n *Net, i int, reasons ...string) {
	t.Helper()
	for _, r := range reasons {
		eventually(t, fmt.Sprintf("client %d to detect %q", i, r), func() error {
			if !bytes.Contains(n.ClientLogs[i].Bytes(), []byte(r)) {
				return errNotYet
			}
			return nil
		})
	}
}

// dropper drops one entry of a mailbox, chosen as the k-th (0-based) the
// rogue receives for it, from every push and sync, and reports truthful
// watermarks for what it then holds (below the hole).
type dropper struct {
	r  *Rogue
	mb wire.Mailbox
	k  int

	mu   sync.Mutex
	cid  wire.CID
	seen int
}

func (d *dropper) target() (wire.CID, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cid, !d.cid.IsZero()
}

func (d *dropper) push(mb wire.Mailbox, e *pb.Entry) []*pb.Entry {
	if mb != d.mb {
		return []*pb.Entry{e}
	}
	d.mu.Lock()
	if d.seen == d.k {
		d.cid = wire.CIDOf(e.Envelope)
	}
	d.seen++
	d.mu.Unlock()
	if c, ok := d.target(); ok && c == wire.CIDOf(e.Envelope) {
		d.r.Note("dropped-push")
		return nil
	}
	return []*pb.Entry{e}
}

func (d *dropper) sync(mb wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
	c, ok := d.target()
	if mb != d.mb || !ok {
		return es, wms
	}
	var out []*pb.Entry
	for _, e := range es {
		if wire.CIDOf(e.Envelope) == c {
			d.r.Note("dropped-sync")
			continue
		}
		out = append(out, e)
	}
	// Truthful watermarks for a relay that lacks the entry: the origin's
	// watermark stays below it.
	for _, h := range d.r.Held(mb) {
		if h.Stamp.CID != c {
			continue
		}
		for _, w := range wms {
			if peer.ID(w.Origin) == h.Stamp.Origin && w.Seq >= h.Stamp.Seq {
				w.Seq = h.Stamp.Seq - 1
			}
		}
	}
	return out, wms
}

// A replica that drops an entry, from its live pushes and from its sync
// pages (reporting, as it must, a watermark below the hole): bob holds the
// message after the hole, fetches the missing one from the honest replicas,
// and shows all three once, in order, without a gap report.
func TestRogueDropsEntry(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	d := &dropper{r: n.Rogue, mb: bob.Mailbox(), k: 1}
	n.Rogue.SetBehavior(Behavior{Push: d.push, Sync: d.sync})

	want := []string{"one", "two", "three"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	if n.Rogue.Count("dropped-push") == 0 {
		t.Fatal("the rogue never dropped a push: the attack did not happen")
	}
	if n.Rogue.Count("dropped-sync") == 0 {
		t.Fatal("bob never synced the rogue while it withheld the entry")
	}
}

// holdBack makes a push hook that withholds the k-th entry (0-based) of a
// mailbox until the next one has been pushed, then pushes it: the two
// arrive swapped.
func holdBack(r *Rogue, mb wire.Mailbox, k int) func(wire.Mailbox, *pb.Entry) []*pb.Entry {
	var mu sync.Mutex
	seen := 0
	var held *pb.Entry
	return func(m wire.Mailbox, e *pb.Entry) []*pb.Entry {
		if m != mb {
			return []*pb.Entry{e}
		}
		mu.Lock()
		defer mu.Unlock()
		i := seen
		seen++
		switch {
		case i == k:
			held = e
			return nil
		case held != nil:
			r.Note("reordered-push")
			out := []*pb.Entry{e, held}
			held = nil
			return out
		}
		return []*pb.Entry{e}
	}
}

// A replica that reorders: its pushes arrive swapped, and its sync page is
// out of (origin, seq) order. The page is refused as a protocol violation
// (rpc checks the order), the pushes are put back in order by the sender's
// counter, and bob shows the messages once, in order.
func TestRogueReordersEntries(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	rg.SetBehavior(Behavior{
		Push: holdBack(rg, bob.Mailbox(), 1),
		Sync: func(mb wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
			if len(es) >= 2 {
				es[0], es[1] = es[1], es[0]
				rg.Note("reordered-sync")
			}
			return es, wms
		},
	})
	want := []string{"one", "two", "three", "four"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	waitCount(t, rg, "reordered-push", 1)
	waitCount(t, rg, "reordered-sync", 1)
	detected(t, n, 1, "out of order")
	// Bob keeps working with the rogue's misbehaviour going on.
	more := []string{"five", "six"}
	send(t, alice, bobAtAlice, more...)
	checkShown(t, bob, rec, aliceAtBob, append(want, more...), false)
}

// rewrap returns env addressed to mb with a new postage nonce (so a new
// CID) and the same ciphertext: what a relay can make of an envelope
// without any key, since the postage and the address are outside the
// ratchet's authentication. (Rogue behaviours call it from the rogue's
// goroutines, so it panics rather than failing the test: env is always a
// valid envelope.)
func rewrap(_ testing.TB, env []byte, mb wire.Mailbox, salt uint64) []byte {
	e, err := wire.ParseEnvelope(env)
	if err != nil {
		panic(err)
	}
	e2 := *e
	e2.Mailbox = mb
	e2.Postage ^= salt
	b, err := e2.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// stamped is an entry with the rogue's own valid stamp.
func stamped(_ testing.TB, r *Rogue, env []byte, mb wire.Mailbox, seq uint64) *pb.Entry {
	st, err := r.Stamp(env, mb, seq)
	if err != nil {
		panic(err)
	}
	return &pb.Entry{Envelope: env, Stamp: st}
}

// A replica that replays: every push is sent twice, every earlier entry is
// pushed again with each new one, its sync page repeats an entry, and it
// pushes copies of delivered messages re-wrapped under a new CID (new
// postage nonce) with its own valid stamp, which CID dedup cannot catch.
// The repeated page is refused (order), the same-CID copies are skipped as
// seen, the re-wrapped copies are refused by the ratchet, and bob shows
// each message once.
func TestRogueReplaysEntries(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	mb := bob.Mailbox()
	var seqs atomic.Uint64
	seqs.Store(1000)
	rg.SetBehavior(Behavior{
		Push: func(m wire.Mailbox, e *pb.Entry) []*pb.Entry {
			if m != mb {
				return []*pb.Entry{e}
			}
			out := []*pb.Entry{e, e}
			for _, h := range rg.Held(mb) {
				out = append(out, h.Entry())
				seq := seqs.Add(1)
				out = append(out, stamped(t, rg, rewrap(t, h.Envelope, mb, seq), mb, seq))
			}
			rg.Note("replayed-push")
			return out
		},
		Sync: func(m wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
			if len(es) > 0 {
				es = append([]*pb.Entry{es[0]}, es...)
				rg.Note("replayed-sync")
			}
			return es, wms
		},
	})
	want := []string{"one", "two", "three"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	waitCount(t, rg, "replayed-push", 3)
	waitCount(t, rg, "replayed-sync", 1)
	detected(t, n, 1, "out of order")

	// Later replays of everything bob already stored and acked, under the
	// old CIDs and under new ones; then a new message still arrives once.
	for _, h := range rg.Held(mb) {
		rg.PushRaw(mb, h.Entry())
		seq := seqs.Add(1)
		rg.PushRaw(mb, stamped(t, rg, rewrap(t, h.Envelope, mb, seq), mb, seq))
	}
	rg.SetBehavior(Behavior{Sync: func(m wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
		// Serve every entry ever held, old and re-wrapped, whatever the
		// cursor says is covered: only uncovered ones pass rpc's check.
		var out []*pb.Entry
		for _, h := range rg.Held(m) {
			seq := seqs.Add(1)
			out = append(out, stamped(t, rg, rewrap(t, h.Envelope, m, seq), m, seq))
		}
		slices.SortFunc(out, func(a, b *pb.Entry) int { return bytes.Compare(a.Stamp, b.Stamp) })
		rg.Note("replayed-sync-rewrapped")
		return append(es, out...), wms
	}})
	if err := bob.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rg, "replayed-sync-rewrapped", 1)
	send(t, alice, bobAtAlice, "four")
	checkShown(t, bob, rec, aliceAtBob, append(want, "four"), false)
}

// A replica that serves another mailbox's entries to bob: alice's mailbox
// entries with their genuine stamps (refused: the stamp names another
// mailbox), and the same ciphertexts re-addressed to bob's mailbox under
// the rogue's own valid stamp (accepted by the transport, but no session
// of bob's opens them: kept aside, never shown). Bob's conversation is
// unharmed.
func TestRogueServesAnotherMailbox(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	// Bob writes to alice first, so alice's mailbox (of which the rogue
	// is a replica too) has entries: bob's message and its receipts.
	send(t, bob, aliceAtBob, "from bob")
	waitHistory(t, alice, bobAtAlice, client.Incoming, []string{"from bob"})
	eventually(t, "the rogue holding alice's entries", func() error {
		if len(rg.Held(alice.Mailbox())) == 0 {
			return errNotYet
		}
		return nil
	})
	mb := bob.Mailbox()
	var seqs atomic.Uint64
	seqs.Store(5000)
	foreign := func() []*pb.Entry {
		var out []*pb.Entry
		for _, h := range rg.Held(alice.Mailbox()) {
			out = append(out, h.Entry())
			out = append(out, stamped(t, rg, rewrap(t, h.Envelope, mb, 0), mb, seqs.Add(1)))
		}
		return out
	}
	rg.SetBehavior(Behavior{
		Push: func(m wire.Mailbox, e *pb.Entry) []*pb.Entry {
			if m != mb {
				return []*pb.Entry{e}
			}
			rg.Note("foreign-push")
			return append(foreign(), e)
		},
		Sync: func(m wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
			if m != mb {
				return es, wms
			}
			rg.Note("foreign-sync")
			return append(foreign(), es...), wms
		},
	})
	want := []string{"one", "two", "three"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	waitCount(t, rg, "foreign-push", 1)
	if err := bob.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitCount(t, rg, "foreign-sync", 1)
	detected(t, n, 1, "entry of another mailbox")
	send(t, alice, bobAtAlice, "four")
	checkShown(t, bob, rec, aliceAtBob, append(want, "four"), false)
	if got := history(t, bob, aliceAtBob, client.Outgoing); !slices.Equal(got, []string{"from bob"}) {
		t.Fatalf("bob's own messages changed: %q", got)
	}
}

// A replica that serves entries under stamps of other origins: a genuine
// envelope with the genuine stamp of another entry (CID mismatch), a stamp
// naming an honest relay as origin but signed by the rogue (signature
// failure), and a stamp the rogue signed as itself (valid: the same CID,
// deduplicated). Bob shows each message once, in order.
func TestRogueForeignStamps(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	mb := bob.Mailbox()
	honest := n.Relays[0].ID()
	var mu sync.Mutex
	var seq uint64 = 7000
	variants := func(e *pb.Entry) []*pb.Entry {
		mu.Lock()
		defer mu.Unlock()
		var out []*pb.Entry
		for _, h := range rg.Held(mb) {
			if !bytes.Equal(h.Envelope, e.Envelope) {
				out = append(out, &pb.Entry{Envelope: e.Envelope, Stamp: h.Raw})
				rg.Note("swapped-stamp")
				break
			}
		}
		st, err := wire.ParseSignedReceipt(e.Stamp)
		if err != nil {
			t.Error(err)
			return nil
		}
		// The rogue signs a receipt that names an honest origin.
		rs, err := wire.SignReceipts(rg.Key(), []wire.Receipt{{Origin: rg.ID(), Mailbox: mb, CID: st.CID, Seq: st.Seq, StoredAtMs: st.StoredAtMs, Expiry: st.Expiry}})
		if err != nil {
			t.Error(err)
			return nil
		}
		rs[0].Origin = honest
		if b, err := rs[0].Marshal(); err == nil {
			out = append(out, &pb.Entry{Envelope: e.Envelope, Stamp: b})
			rg.Note("impersonated-origin")
		}
		seq++
		out = append(out, stamped(t, rg, e.Envelope, mb, seq))
		rg.Note("restamped")
		return out
	}
	rg.SetBehavior(Behavior{
		Push: func(m wire.Mailbox, e *pb.Entry) []*pb.Entry {
			if m != mb {
				return []*pb.Entry{e}
			}
			return append(variants(e), e)
		},
		Sync: func(m wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
			if m != mb || len(es) == 0 {
				return es, wms
			}
			rg.Note("foreign-stamp-sync")
			return append(variants(es[0]), es...), wms
		},
	})
	want := []string{"one", "two", "three"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	waitCount(t, rg, "swapped-stamp", 1)
	waitCount(t, rg, "impersonated-origin", 1)
	waitCount(t, rg, "restamped", 1)
	detected(t, n, 1, "cid does not match the envelope", "signed receipt from "+honest.String()+": bad signature")
	send(t, alice, bobAtAlice, "four")
	checkShown(t, bob, rec, aliceAtBob, append(want, "four"), false)
}

// forgery builds a forged deposit answer for one request.
type forgery struct {
	name string
	make func(t testing.TB, r *Rogue, honest peer.ID, req *pb.DepositRequest) *pb.DepositResponse
}

func receiptOK(t testing.TB, b []byte) *pb.DepositResponse {
	return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Receipt: b, Replicas: 1}
}

var forgeries = []forgery{
	{"bad-signature", func(t testing.TB, r *Rogue, _ peer.ID, req *pb.DepositRequest) *pb.DepositResponse {
		mb, _ := wire.EnvelopeMailbox(req.Envelope)
		b, err := r.Stamp(req.Envelope, mb, 1)
		if err != nil {
			t.Error(err)
		}
		b[len(b)-1] ^= 0x01
		return receiptOK(t, b)
	}},
	{"other-envelope", func(t testing.TB, r *Rogue, _ peer.ID, req *pb.DepositRequest) *pb.DepositResponse {
		mb, _ := wire.EnvelopeMailbox(req.Envelope)
		other := rewrap(t, req.Envelope, mb, 1)
		b, err := r.Stamp(other, mb, 1)
		if err != nil {
			t.Error(err)
		}
		return receiptOK(t, b)
	}},
	{"altered-field", func(t testing.TB, r *Rogue, _ peer.ID, req *pb.DepositRequest) *pb.DepositResponse {
		mb, _ := wire.EnvelopeMailbox(req.Envelope)
		b, err := r.Stamp(req.Envelope, mb, 1)
		if err != nil {
			t.Error(err)
		}
		sr, err := wire.ParseSignedReceipt(b)
		if err != nil {
			t.Error(err)
		}
		sr.Seq = 2 // the signature covered seq 1
		if b, err = sr.Marshal(); err != nil {
			t.Error(err)
		}
		return receiptOK(t, b)
	}},
	{"foreign-key", func(t testing.TB, r *Rogue, _ peer.ID, req *pb.DepositRequest) *pb.DepositResponse {
		mb, _ := wire.EnvelopeMailbox(req.Envelope)
		k, _, _ := crypto.GenerateEd25519Key(crand.Reader)
		b, err := SignStamp(k, req.Envelope, mb, 1)
		if err != nil {
			t.Error(err)
		}
		return receiptOK(t, b)
	}},
	{"impersonated-origin", func(t testing.TB, r *Rogue, honest peer.ID, req *pb.DepositRequest) *pb.DepositResponse {
		mb, _ := wire.EnvelopeMailbox(req.Envelope)
		b, err := r.Stamp(req.Envelope, mb, 1)
		if err != nil {
			t.Error(err)
		}
		sr, _ := wire.ParseSignedReceipt(b)
		sr.Origin = honest
		if b, err = sr.Marshal(); err != nil {
			t.Error(err)
		}
		return receiptOK(t, b)
	}},
}

// A replica that forges or alters the receipts of deposits it never stores:
// a bad signature, a valid stamp for another envelope, an altered field, a
// valid stamp by a key that is not the relay's, and a stamp naming an
// honest relay signed by the rogue. The sender refuses each receipt, keeps
// the message queued and deposits it at an honest replica, which stores
// it; bob shows every message once, in order.
func TestRogueForgesReceipts(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	honest := n.Relays[0].ID()
	var want []string
	for _, fg := range forgeries {
		rg.SetBehavior(Behavior{Deposit: func(req *pb.DepositRequest) *pb.DepositResponse {
			rg.Note("forged-" + fg.name)
			return fg.make(t, rg, honest, req)
		}})
		// The sender tries the rogue first unless a recent failure put it
		// last: send until the rogue has forged this kind at least once.
		// (A refused relay is tried last for a backoff of at most
		// RetryMax, 1 s here: the pause lets it come first again.)
		for i := 0; rg.Count("forged-"+fg.name) == 0; i++ {
			if i == 30 {
				t.Fatalf("%s: the rogue was never asked to store a deposit", fg.name)
			}
			if i > 0 {
				settle(250 * time.Millisecond)
			}
			body := fmt.Sprintf("%s #%d", fg.name, i)
			ids := send(t, alice, bobAtAlice, body)
			want = append(want, body)
			waitStored(t, alice, ids...)
		}
	}
	checkShown(t, bob, rec, aliceAtBob, want, false)
	detected(t, n, 0, "bad signature", "receipt for another envelope", "not the relay")
	// Every message reached both honest relays: the forged receipts were
	// not taken for storage. Each holds it, or its tombstone once bob
	// acked it there (bob syncs every replica with its own cursor, so
	// honest relays deliver and delete what they hold).
	// Replication to the other honest relay is asynchronous: wait for it.
	for _, r := range n.Relays {
		eventually(t, fmt.Sprintf("%s holds every message", r.ID()), func() error {
			info, _ := r.Store().Mailbox(bob.Mailbox())
			if got := info.Entries + info.Tombstones; got < int64(len(want)) {
				return fmt.Errorf("%d entries and %d tombstones of bob's mailbox, want ≥ %d in all", info.Entries, info.Tombstones, len(want))
			}
			return nil
		})
	}
}

// A replica that hands out forged one-time prekeys (well-formed, signed by
// a key that is not the mailbox's prekey signer): the initiator refuses
// them, takes genuine ones from an honest replica, and the handshake and
// conversation work.
func TestRogueForgesPrekeys(t *testing.T) {
	n := StartNet(t, NetOptions{
		Relays:  2,
		Clients: 2,
		RogueKey: func(cs []*client.Client, honest []peer.ID) crypto.PrivKey {
			return ClosestKey(cs[1].Mailbox(), honest)
		},
	})
	alice, bob := n.Clients[0], n.Clients[1]
	rec := record(bob)
	rg := n.Rogue
	_, wrong, _ := ed25519.GenerateKey(crand.Reader)
	rg.SetBehavior(Behavior{PrekeyFetch: func(req *pb.PrekeyFetch) *pb.PrekeyResponse {
		var pub [32]byte
		_, _ = crand.Read(pub[:])
		p, err := ratchet.SignOneTimePrekey(wrong, ratchet.KindX25519, 7, pub[:])
		if err != nil {
			t.Error(err)
			return nil
		}
		rg.Note("forged-prekey")
		return &pb.PrekeyResponse{Status: pb.Status_STATUS_OK, X25519: p.Marshal(), RemainingX25519: 1}
	}})
	// Bob's replicas hold his one-time prekeys before alice asks.
	eventually(t, "bob's prekeys at the honest relays", func() error {
		for _, r := range n.Relays {
			if got := prekeyCount(t, r, bob.Mailbox()); got == 0 {
				return errNotYet
			}
		}
		return nil
	})
	bobAtAlice, aliceAtBob := introduce(t, alice, bob)
	want := []string{"first", "second"}
	send(t, alice, bobAtAlice, want...)
	checkShown(t, bob, rec, aliceAtBob, want, false)
	if rg.Count("forged-prekey") == 0 {
		t.Fatal("alice never fetched prekeys from the rogue")
	}
}
