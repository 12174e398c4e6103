// Package storetest is the conformance suite of the store: the same tests
// run against every backend and mode (badger on disk, badger in memory).
// Each test gets a fresh log from the Opener, with a fake clock it can
// advance.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Opener opens a log with opts (Dir is chosen by the opener). reopen, if
// the backend persists, closes nothing itself: the suite closes the log
// and calls the opener again with the same opts to check persistence.
type Opener struct {
	// Name is the backend's name in test names.
	Name string
	// Persistent is true if a log reopened with the same options sees
	// the same data.
	Persistent bool
	// Open opens a log; dir is a per-test directory (ignored by in-memory
	// backends).
	Open func(t testing.TB, dir string, opts store.LogOptions) *store.Log
}

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a clock at the wall clock's current second (badger's own
// TTL runs on the wall clock, so a clock far in the past would make badger
// drop fresh records; the log converts but starts from there).
func NewClock() *Clock { return &Clock{t: time.Now().Truncate(time.Second)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Relay is a test relay identity.
type Relay struct {
	Key crypto.PrivKey
	ID  peer.ID
}

// NewRelay makes an Ed25519 relay identity.
func NewRelay(t testing.TB) Relay {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return Relay{Key: k, ID: id}
}

// Mailbox makes a random mailbox address.
// OwnerAcks returns stand-ins for the owner acks of cids, one per CID: the
// store keeps an owner ack with its tombstone but does not verify it (the
// relay does, SPEC.md §6.3).
func OwnerAcks(cids []wire.CID) [][]byte {
	out := make([][]byte, len(cids))
	for i, c := range cids {
		out[i] = fmt.Appendf(nil, "owner ack of %s", c)
	}
	return out
}

func Mailbox(t testing.TB) wire.Mailbox {
	var pub [32]byte
	rand.Read(pub[:])
	return wire.MailboxOf(pub[:])
}

// Envelope makes an envelope for mb with n random ciphertext bytes and the
// given expiry.
func Envelope(t testing.TB, mb wire.Mailbox, expiry uint64, n int) []byte {
	ct := make([]byte, n)
	rand.Read(ct)
	e := wire.Envelope{Mailbox: mb, Expiry: expiry, Ciphertext: ct}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Stamp signs a receipt for an envelope as origin r would (for imports).
func Stamp(t testing.TB, r Relay, env []byte, seq, expiry uint64) wire.SignedReceipt {
	mb, err := wire.EnvelopeMailbox(env)
	if err != nil {
		t.Fatal(err)
	}
	rc := wire.Receipt{Origin: r.ID, Mailbox: mb, CID: wire.CIDOf(env), Seq: seq,
		StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: expiry}
	s, err := wire.SignReceipts(r.Key, []wire.Receipt{rc})
	if err != nil {
		t.Fatal(err)
	}
	return s[0]
}

type env struct {
	t     *testing.T
	o     Opener
	dir   string
	clock *Clock
	relay Relay
	opts  store.LogOptions
	log   *store.Log
}

func newEnv(t *testing.T, o Opener, tweak func(*store.LogOptions)) *env {
	e := &env{t: t, o: o, dir: t.TempDir(), clock: NewClock(), relay: NewRelay(t)}
	e.opts = store.LogOptions{Now: e.clock.Now, Origin: e.relay.ID, Signer: e.relay.Key, GCInterval: -1}
	if tweak != nil {
		tweak(&e.opts)
	}
	e.log = o.Open(t, e.dir, e.opts)
	t.Cleanup(func() {
		if e.log != nil {
			e.log.Close()
		}
	})
	return e
}

func (e *env) reopen() {
	e.t.Helper()
	if err := e.log.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.log = e.o.Open(e.t, e.dir, e.opts)
}

func (e *env) now() uint64 { return uint64(e.clock.Now().Unix()) }

func (e *env) append(mb wire.Mailbox, size int) ([]byte, store.AppendResult) {
	e.t.Helper()
	b := Envelope(e.t, mb, 0, size)
	r, err := e.log.Append(context.Background(), store.Deposit{Envelope: b})
	if err != nil {
		e.t.Fatalf("append: %v", err)
	}
	return b, r
}

// RunLog runs the mailbox-log conformance suite.
func RunLog(t *testing.T, o Opener) {
	tests := []struct {
		name string
		f    func(*testing.T, Opener)
	}{
		{"AppendRead", testAppendRead},
		{"Dedup", testDedup},
		{"Paging", testPaging},
		{"Quota", testQuota},
		{"Eviction", testEviction},
		{"Expiry", testExpiry},
		{"Ack", testAck},
		{"AckMany", testAckMany},
		{"Import", testImport},
		{"ImportTombstones", testImportTombstones},
		{"Reconcile", testReconcile},
		{"Summary", testSummary},
		{"Concurrent", testConcurrent},
		{"AppendMany", testAppendMany},
		{"AppendManyAsync", testAppendManyAsync},
		{"Persistence", testPersistence},
		{"BadInput", testBadInput},
		{"Prekeys", testPrekeys},
		{"Holes", testHoles},
		{"OnStored", testOnStored},
		{"Mailboxes", testMailboxes},
		{"BackgroundSweep", testBackgroundSweep},
		{"MultiOriginPages", testMultiOriginPages},
		{"ReadWhileAppending", testReadWhileAppending},
	}
	for _, tc := range tests {
		if tc.name == "Persistence" && !o.Persistent {
			continue // nothing survives Close in this backend
		}
		t.Run("Store"+tc.name, func(t *testing.T) { tc.f(t, o) })
	}
}

func testAppendRead(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	var envs [][]byte
	var rcs []wire.SignedReceipt
	for i := 0; i < 20; i++ {
		b, r := e.append(mb, 100+i)
		if r.Duplicate || r.Fate != store.FateStored {
			t.Fatalf("append %d: %+v", i, r)
		}
		if err := r.Receipt.VerifyFor(b); err != nil {
			t.Fatalf("receipt %d: %v", i, err)
		}
		if r.Receipt.Seq != uint64(i+1) || r.Receipt.Origin != e.relay.ID {
			t.Fatalf("receipt %d: seq %d origin %s", i, r.Receipt.Seq, r.Receipt.Origin)
		}
		if r.Receipt.Expiry != e.now()+uint64(store.DefaultTTL/time.Second) {
			t.Fatalf("receipt %d: expiry %d", i, r.Receipt.Expiry)
		}
		envs = append(envs, b)
		rcs = append(rcs, r.Receipt)
	}
	p, err := e.log.Read(mb, nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 20 || p.More || len(p.Corrupt) != 0 {
		t.Fatalf("page: %d entries, more %v, corrupt %v", len(p.Entries), p.More, p.Corrupt)
	}
	for i, en := range p.Entries {
		if string(en.Envelope) != string(envs[i]) {
			t.Fatalf("entry %d: envelope differs", i)
		}
		if err := en.Stamp.VerifyFor(en.Envelope); err != nil {
			t.Fatalf("entry %d: stamp: %v", i, err)
		}
		a, _ := en.Stamp.Marshal()
		b, _ := rcs[i].Marshal()
		if string(a) != string(b) {
			t.Fatalf("entry %d: stamp differs from the receipt", i)
		}
	}
	if len(p.Watermarks) != 1 || p.Watermarks[0] != (wire.Position{Origin: e.relay.ID, Seq: 20}) {
		t.Fatalf("watermarks %v", p.Watermarks)
	}
	g, err := e.log.Get(mb, rcs[5].CID)
	if err != nil || string(g.Envelope) != string(envs[5]) {
		t.Fatalf("get: %v", err)
	}
	g, err = e.log.GetBySeq(mb, e.relay.ID, 7)
	if err != nil || string(g.Envelope) != string(envs[6]) {
		t.Fatalf("get by seq: %v", err)
	}
	if _, err := e.log.GetBySeq(mb, e.relay.ID, 21); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get by seq 21: %v", err)
	}
	if _, err := e.log.Get(Mailbox(t), rcs[5].CID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get in another mailbox: %v", err)
	}
	if f, _ := e.log.Fate(mb, rcs[0].CID); f != store.FateStored {
		t.Fatalf("fate %v", f)
	}
	if f, _ := e.log.Fate(mb, wire.CIDOf([]byte("x"))); f != store.FateUnknown {
		t.Fatalf("fate of unknown %v", f)
	}
	st := e.log.Stats()
	if st.Entries != 20 || st.Appends != 20 || st.Mailboxes != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Another mailbox is independent.
	p, _ = e.log.Read(Mailbox(t), nil, nil, 0, 0)
	if len(p.Entries) != 0 || p.More || len(p.Watermarks) != 0 {
		t.Fatalf("empty mailbox page %+v", p)
	}
}

func testDedup(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	b, r1 := e.append(mb, 64)
	r2, err := e.log.Append(context.Background(), store.Deposit{Envelope: b})
	if err != nil || !r2.Duplicate || r2.Fate != store.FateStored {
		t.Fatalf("second append: %+v %v", r2, err)
	}
	x, _ := r1.Receipt.Marshal()
	y, _ := r2.Receipt.Marshal()
	if string(x) != string(y) {
		t.Fatal("duplicate returned another receipt")
	}
	// Duplicates inside one AppendMany share the first's receipt.
	b2 := Envelope(t, mb, 0, 70)
	rs := e.log.AppendMany(context.Background(), []store.Deposit{{Envelope: b2}, {Envelope: b2}})
	if rs[0].Err != nil || rs[1].Err != nil || rs[0].Duplicate || !rs[1].Duplicate ||
		rs[0].Receipt.Seq != rs[1].Receipt.Seq || rs[1].Receipt.Seq != 2 {
		t.Fatalf("in-batch duplicate: %+v", rs)
	}
	if err := rs[1].Receipt.VerifyFor(b2); err != nil {
		t.Fatal(err)
	}
	if st := e.log.Stats(); st.Entries != 2 || st.Duplicates != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func testPaging(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	for i := 0; i < 25; i++ {
		e.append(mb, 100)
	}
	var after *wire.Position
	var got []uint64
	pages := 0
	for {
		p, err := e.log.Read(mb, nil, after, 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, en := range p.Entries {
			got = append(got, en.Stamp.Seq)
		}
		last := p.Entries[len(p.Entries)-1].Stamp
		if p.More {
			if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != last.Seq {
				t.Fatalf("page %d watermarks %v, last %d", pages, p.Watermarks, last.Seq)
			}
			after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
			continue
		}
		if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != 25 {
			t.Fatalf("last page watermarks %v", p.Watermarks)
		}
		break
	}
	if pages != 3 || len(got) != 25 {
		t.Fatalf("%d pages, %d entries", pages, len(got))
	}
	for i, s := range got {
		if s != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, s)
		}
	}
	// A cursor covers a prefix.
	var c wire.Cursor
	c.Advance(e.relay.ID, 15)
	p, _ := e.log.Read(mb, &c, nil, 0, 0)
	if len(p.Entries) != 10 || p.Entries[0].Stamp.Seq != 16 {
		t.Fatalf("cursor read: %d entries", len(p.Entries))
	}
	// A byte bound still returns one entry.
	p, _ = e.log.Read(mb, nil, nil, 0, 1)
	if len(p.Entries) != 1 || !p.More {
		t.Fatalf("byte-bounded page: %d entries, more %v", len(p.Entries), p.More)
	}
	p, _ = e.log.Read(mb, nil, nil, 0, 3*155+10)
	if len(p.Entries) != 3 {
		t.Fatalf("byte-bounded page: %d entries", len(p.Entries))
	}
}

func testQuota(t *testing.T, o Opener) {
	e := newEnv(t, o, func(o *store.LogOptions) { o.MailboxQuotaEntries = 3; o.MailboxQuotaBytes = 1000 })
	mb := Mailbox(t)
	for i := 0; i < 3; i++ {
		e.append(mb, 100)
	}
	_, err := e.log.Append(context.Background(), store.Deposit{Envelope: Envelope(t, mb, 0, 100)})
	if !errors.Is(err, wire.ErrMailboxQuota) {
		t.Fatalf("4th append: %v", err)
	}
	mb2 := Mailbox(t)
	_, err = e.log.Append(context.Background(), store.Deposit{Envelope: Envelope(t, mb2, 0, 1000)})
	if !errors.Is(err, wire.ErrMailboxQuota) {
		t.Fatalf("large append: %v", err)
	}
	if kt := e.log.KnownThrough(mb); len(kt) != 1 || kt[0].Seq != 3 {
		t.Fatalf("known_through after rejects: %v", kt)
	}
	if st := e.log.Stats(); st.Entries != 3 || st.RejectedQuota != 2 || st.Mailboxes != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func testEviction(t *testing.T, o Opener) {
	const size = 200 + wire.EnvelopeOverhead
	e := newEnv(t, o, func(o *store.LogOptions) { o.StorageCapBytes = 10 * size })
	big, small := Mailbox(t), Mailbox(t)
	var bigRcs []store.AppendResult
	for i := 0; i < 8; i++ {
		_, r := e.append(big, 200)
		bigRcs = append(bigRcs, r)
		e.clock.Advance(time.Second)
	}
	e.append(small, 200)
	e.append(small, 200)
	// Full: the big mailbox cannot evict its own entries.
	_, err := e.log.Append(context.Background(), store.Deposit{Envelope: Envelope(t, big, 0, 200)})
	if !errors.Is(err, wire.ErrStorageFull) {
		t.Fatalf("append to the largest mailbox at the cap: %v", err)
	}
	// The small one evicts the big one's oldest.
	e.append(small, 200)
	if f, _ := e.log.Fate(big, bigRcs[0].Receipt.CID); f != store.FateExpired {
		t.Fatalf("evicted entry's fate: %v", f)
	}
	if f, _ := e.log.Fate(big, bigRcs[1].Receipt.CID); f != store.FateStored {
		t.Fatalf("next entry's fate: %v", f)
	}
	st := e.log.Stats()
	if st.Evicted != 1 || st.Bytes != 10*size || st.RejectedFull != 1 {
		t.Fatalf("stats %+v", st)
	}
	p, _ := e.log.Read(big, nil, nil, 0, 0)
	if len(p.Entries) != 7 || p.Entries[0].Stamp.Seq != 2 {
		t.Fatalf("big mailbox after eviction: %d entries", len(p.Entries))
	}
}

func testExpiry(t *testing.T, o Opener) {
	e := newEnv(t, o, func(o *store.LogOptions) { o.FateRetention = time.Hour })
	mb := Mailbox(t)
	short := Envelope(t, mb, e.now()+10, 100)
	r1, err := e.log.Append(context.Background(), store.Deposit{Envelope: short})
	if err != nil || r1.Receipt.Expiry != e.now()+10 {
		t.Fatalf("append: %v %+v", err, r1)
	}
	_, r2 := e.append(mb, 100)
	for _, exp := range []uint64{e.now(), e.now() + uint64(store.DefaultMaxTTL/time.Second) + 1} {
		_, err := e.log.Append(context.Background(), store.Deposit{Envelope: Envelope(t, mb, exp, 10)})
		if !errors.Is(err, wire.ErrExpiryInvalid) {
			t.Fatalf("expiry %d: %v", exp, err)
		}
	}
	e.clock.Advance(10 * time.Second)
	// Never served after expiry, even before the sweep.
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 1 || p.Entries[0].Stamp.Seq != 2 {
		t.Fatalf("read after expiry: %d entries", len(p.Entries))
	}
	if _, err := e.log.Get(mb, r1.Receipt.CID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get after expiry: %v", err)
	}
	if f, _ := e.log.Fate(mb, r1.Receipt.CID); f != store.FateExpired {
		t.Fatalf("fate before sweep: %v", f)
	}
	res, err := e.log.Sweep(context.Background())
	if err != nil || res.Expired != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	if f, _ := e.log.Fate(mb, r1.Receipt.CID); f != store.FateExpired {
		t.Fatalf("fate after sweep: %v", f)
	}
	st := e.log.Stats()
	if st.Entries != 1 || st.Bytes != 155 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A re-deposit of an expired CID is a duplicate that stores nothing.
	r, err := e.log.Append(context.Background(), store.Deposit{Envelope: short, Expiry: e.now() + 100})
	if err != nil || !r.Duplicate || r.Fate != store.FateExpired {
		t.Fatalf("re-deposit: %+v %v", r, err)
	}
	e.clock.Advance(time.Hour)
	if f, _ := e.log.Fate(mb, r1.Receipt.CID); f != store.FateUnknown {
		t.Fatalf("fate after retention: %v", f)
	}
	if f, _ := e.log.Fate(mb, r2.Receipt.CID); f != store.FateStored {
		t.Fatalf("fate of the live entry: %v", f)
	}
	if res, _ := e.log.Sweep(context.Background()); res.Expired != 0 {
		t.Fatalf("second sweep: %+v", res)
	}
	e.clock.Advance(store.DefaultTTL)
	if res, _ := e.log.Sweep(context.Background()); res.Expired != 1 {
		t.Fatalf("third sweep: %+v", res)
	}
	if st := e.log.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
	if kt := e.log.KnownThrough(mb); len(kt) != 1 || kt[0].Seq != 2 {
		t.Fatalf("known_through: %v", kt)
	}
}

func testAck(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	var rcs []store.AppendResult
	var envs [][]byte
	for i := 0; i < 5; i++ {
		b, r := e.append(mb, 100)
		rcs = append(rcs, r)
		envs = append(envs, b)
	}
	acked := []wire.CID{rcs[1].Receipt.CID, rcs[3].Receipt.CID, wire.CIDOf([]byte("unknown"))}
	res, err := e.log.Ack(context.Background(), mb, acked, OwnerAcks(acked))
	if err != nil || res.Acked != 2 || len(res.Tombstones) != 2 {
		t.Fatalf("ack: %+v %v", res, err)
	}
	tb := res.Tombstones[0]
	if tb.CID != rcs[1].Receipt.CID || tb.Seq != 2 || tb.Origin != e.relay.ID || tb.Expiry != rcs[1].Receipt.Expiry || tb.Mailbox != mb {
		t.Fatalf("tombstone %+v", tb)
	}
	if s, err := wire.ParseSignedReceipt(tb.Stamp); err != nil || s.Receipt != rcs[1].Receipt.Receipt || s.Verify() != nil {
		t.Fatalf("tombstone stamp %v %v, want the entry's receipt", s, err)
	}
	if res, _ := e.log.Ack(context.Background(), mb, []wire.CID{rcs[1].Receipt.CID}, OwnerAcks([]wire.CID{rcs[1].Receipt.CID})); res.Acked != 0 {
		t.Fatalf("second ack: %+v", res)
	}
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 3 || p.Entries[1].Stamp.Seq != 3 {
		t.Fatalf("read after ack: %d entries", len(p.Entries))
	}
	if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != 5 {
		t.Fatalf("watermarks %v", p.Watermarks)
	}
	if f, _ := e.log.Fate(mb, rcs[1].Receipt.CID); f != store.FateAcked {
		t.Fatalf("fate %v", f)
	}
	if got, err := e.log.Tombstone(mb, rcs[3].Receipt.CID); err != nil || !reflect.DeepEqual(got, res.Tombstones[1]) {
		t.Fatalf("tombstone lookup %+v %v", got, err)
	}
	if _, err := e.log.Tombstone(mb, rcs[0].Receipt.CID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("tombstone of a live entry: %v", err)
	}
	r, err := e.log.Append(context.Background(), store.Deposit{Envelope: envs[1]})
	if err != nil || !r.Duplicate || r.Fate != store.FateAcked {
		t.Fatalf("re-deposit of an acked entry: %+v %v", r, err)
	}
	st := e.log.Stats()
	if st.Entries != 3 || st.Tombstones != 2 || st.Acked != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Tombstones are dropped at the entry's expiry.
	e.clock.Advance(store.DefaultTTL)
	sw, _ := e.log.Sweep(context.Background())
	if sw.Expired != 3 || sw.Tombstones != 2 {
		t.Fatalf("sweep %+v", sw)
	}
	if st := e.log.Stats(); st.Tombstones != 0 || st.Entries != 0 {
		t.Fatalf("stats %+v", st)
	}
	if f, _ := e.log.Fate(mb, rcs[1].Receipt.CID); f != store.FateAcked {
		t.Fatalf("fate after expiry %v", f)
	}
}

func testAckMany(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	const n = 2500 // more than one ack chunk
	ds := make([]store.Deposit, n)
	for i := range ds {
		ds[i] = store.Deposit{Envelope: Envelope(t, mb, 0, 32)}
	}
	var cids []wire.CID
	for _, r := range e.log.AppendMany(context.Background(), ds) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		cids = append(cids, r.Receipt.CID)
	}
	acks := OwnerAcks(cids[:n-10])
	res, err := e.log.Ack(context.Background(), mb, cids[:n-10], acks)
	if err != nil || res.Acked != n-10 || len(res.Tombstones) != n-10 {
		t.Fatalf("ack: %d %v", res.Acked, err)
	}
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 10 || p.Entries[0].Stamp.Seq != n-9 {
		t.Fatalf("read: %d entries", len(p.Entries))
	}
	if st := e.log.Stats(); st.Entries != 10 || st.Tombstones != n-10 {
		t.Fatalf("stats %+v", st)
	}
	// Each tombstone keeps its own owner ack.
	for _, i := range []int{0, 1500, n - 11} {
		if got, err := e.log.Tombstone(mb, cids[i]); err != nil || !bytes.Equal(got.OwnerAck, acks[i]) || !bytes.Equal(res.Tombstones[i].OwnerAck, acks[i]) {
			t.Fatalf("tombstone %d: %q %v, want the owner ack %q", i, got.OwnerAck, err, acks[i])
		}
	}
	// An ack without its owner acks changes nothing.
	for _, bad := range [][][]byte{nil, {nil}, {make([]byte, wire.MaxOwnerAckLen+1)}} {
		if _, err := e.log.Ack(context.Background(), mb, cids[n-1:], bad); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("ack with owner acks %d: %v, want ErrMalformed", len(bad), err)
		}
	}
	if st := e.log.Stats(); st.Entries != 10 {
		t.Fatalf("stats after refused acks %+v", st)
	}
}

func testImport(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	other := NewRelay(t)
	mb := Mailbox(t)
	exp := e.now() + 3600
	var envs [][]byte
	var stamps []wire.SignedReceipt
	for i := 1; i <= 4; i++ {
		b := Envelope(t, mb, exp, 50)
		envs = append(envs, b)
		stamps = append(stamps, Stamp(t, other, b, uint64(i), exp))
	}
	ctx := context.Background()
	var stored []store.StoredEntry
	_ = stored
	for _, i := range []int{0, 2, 3} {
		dup, err := e.log.Import(ctx, envs[i], &stamps[i])
		if err != nil || dup {
			t.Fatalf("import %d: %v %v", i, dup, err)
		}
	}
	kt := func() uint64 {
		for _, p := range e.log.KnownThrough(mb) {
			if p.Origin == other.ID {
				return p.Seq
			}
		}
		return 0
	}
	if kt() != 1 {
		t.Fatalf("known_through with a hole: %d", kt())
	}
	// The page holds 3 and 4 but vouches only for 1.
	e.append(mb, 50)
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 4 {
		t.Fatalf("read: %d entries", len(p.Entries))
	}
	for i, en := range p.Entries {
		if err := en.Stamp.VerifyFor(en.Envelope); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	// Order: origins by bytes.
	if (string(other.ID) < string(e.relay.ID)) != (p.Entries[0].Stamp.Origin == other.ID) {
		t.Fatal("origins out of order")
	}
	for _, w := range p.Watermarks {
		if w.Origin == other.ID && w.Seq != 1 {
			t.Fatalf("watermark beyond the hole: %v", p.Watermarks)
		}
	}
	dup, err := e.log.Import(ctx, envs[1], &stamps[1])
	if err != nil || dup || kt() != 4 {
		t.Fatalf("filling the hole: %v %v kt %d", dup, err, kt())
	}
	if dup, err := e.log.Import(ctx, envs[1], &stamps[1]); err != nil || !dup {
		t.Fatalf("re-import: %v %v", dup, err)
	}
	// A stamp for another envelope is refused.
	b := Envelope(t, mb, exp, 50)
	if _, err := e.log.Import(ctx, b, &stamps[0]); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("mismatched stamp: %v", err)
	}
	// Two CIDs under one seq: the second is refused.
	s := Stamp(t, other, b, 2, exp)
	if _, err := e.log.Import(ctx, b, &s); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("equivocation: %v", err)
	}
	// Expired imports are refused.
	old := Envelope(t, mb, e.now(), 50)
	so := Stamp(t, other, old, 9, e.now())
	if _, err := e.log.Import(ctx, old, &so); !errors.Is(err, wire.ErrExpiryInvalid) {
		t.Fatalf("expired import: %v", err)
	}
	// A dedup across origins: depositing an imported envelope returns its
	// original stamp.
	r, err := e.log.Append(ctx, store.Deposit{Envelope: envs[2]})
	if err != nil || !r.Duplicate || r.Receipt.Origin != other.ID || r.Receipt.Seq != 3 {
		t.Fatalf("deposit of an imported entry: %+v %v", r, err)
	}
	g, err := e.log.GetBySeq(mb, other.ID, 3)
	if err != nil || string(g.Envelope) != string(envs[2]) {
		t.Fatalf("get by seq: %v", err)
	}
	if err := e.log.AdoptKnownThrough(ctx, mb, other.ID, 10); err != nil || kt() != 10 {
		t.Fatalf("adopt: %v %d", err, kt())
	}
	if st := e.log.Stats(); st.Imports != 4 || st.Entries != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func testImportTombstones(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	other := NewRelay(t)
	mb := Mailbox(t)
	exp := e.now() + 3600
	b1, b2 := Envelope(t, mb, exp, 50), Envelope(t, mb, exp, 50)
	s1, s2 := Stamp(t, other, b1, 1, exp), Stamp(t, other, b2, 2, exp)
	ctx := context.Background()
	if _, err := e.log.Import(ctx, b2, &s2); err != nil {
		t.Fatal(err)
	}
	acks := OwnerAcks([]wire.CID{s1.CID, s2.CID})
	ts := []store.Tombstone{
		{Mailbox: mb, CID: s1.CID, Origin: other.ID, Seq: 1, Expiry: exp, OwnerAck: acks[0], Stamp: mustMarshal(t, &s1)},
		{Mailbox: mb, CID: s2.CID, Origin: other.ID, Seq: 2, Expiry: exp, OwnerAck: acks[1], Stamp: mustMarshal(t, &s2)},
	}
	// A tombstone without an owner ack or a stamp is ignored.
	noAck, noStamp := ts[1], ts[1]
	noAck.OwnerAck, noStamp.Stamp = nil, nil
	if n, err := e.log.ImportTombstones(ctx, []store.Tombstone{noAck, noStamp}); err != nil || n != 0 {
		t.Fatalf("import of tombstones without an owner ack or a stamp: %d %v", n, err)
	}
	n, err := e.log.ImportTombstones(ctx, ts)
	if err != nil || n != 2 {
		t.Fatalf("import tombstones: %d %v", n, err)
	}
	if dup, err := e.log.Import(ctx, b1, &s1); err != nil || !dup {
		t.Fatalf("import after its tombstone: %v %v", dup, err)
	}
	for _, c := range []wire.CID{s1.CID, s2.CID} {
		if f, _ := e.log.Fate(mb, c); f != store.FateAcked {
			t.Fatalf("fate %v", f)
		}
	}
	if kt := e.log.KnownThrough(mb); len(kt) != 1 || kt[0].Seq != 2 {
		t.Fatalf("known_through %v", kt)
	}
	if n, _ := e.log.ImportTombstones(ctx, ts); n != 0 {
		t.Fatalf("re-import: %d", n)
	}
	// Each keeps what it came with; the one of the entry held here, this
	// relay's copy's stamp.
	for i, want := range ts {
		got, err := e.log.Tombstone(mb, want.CID)
		if err != nil || !bytes.Equal(got.OwnerAck, want.OwnerAck) || !bytes.Equal(got.Stamp, want.Stamp) {
			t.Fatalf("tombstone %d: %+v %v", i, got, err)
		}
	}
	items, _ := e.log.RangeItems(mb, store.SetTombstones, nil, nil, 0)
	if len(items) != 2 {
		t.Fatalf("tombstone set: %d", len(items))
	}
	if st := e.log.Stats(); st.Entries != 0 || st.Tombstones != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func testReconcile(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	var cids []wire.CID
	for i := 0; i < 300; i++ {
		_, r := e.append(mb, 20)
		cids = append(cids, r.Receipt.CID)
	}
	check := func(set store.Set, want map[[32]byte]bool) {
		t.Helper()
		var acc wire.FingerprintAcc
		for d := range want {
			acc.Add(d)
		}
		got, err := e.log.RangeFingerprint(mb, set, nil, nil)
		if err != nil || got.Fingerprint() != acc.Fingerprint() || got.Count() != uint64(len(want)) {
			t.Fatalf("set %d: fingerprint/count %d, want %d (%v)", set, got.Count(), len(want), err)
		}
		items, _ := e.log.RangeItems(mb, set, nil, nil, 0)
		if len(items) != len(want) {
			t.Fatalf("set %d: %d items, want %d", set, len(items), len(want))
		}
		for i, d := range items {
			if !want[d] || (i > 0 && string(items[i-1][:]) >= string(d[:])) {
				t.Fatalf("set %d: item %d wrong or out of order", set, i)
			}
		}
		subs, err := e.log.SplitRange(mb, set, nil, nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		var total uint64
		lower := []byte(nil)
		for j, s := range subs {
			a, _ := e.log.RangeFingerprint(mb, set, lower, s.Upper)
			if a.Fingerprint() != s.Acc.Fingerprint() {
				t.Fatalf("set %d: subrange %d fingerprint", set, j)
			}
			if n := s.Acc.Count(); len(want) >= 16 && (n < uint64(len(want)/16) || n > uint64(len(want)/16+1)) {
				t.Fatalf("set %d: subrange %d holds %d of %d", set, j, n, len(want))
			}
			total += s.Acc.Count()
			lower = s.Upper
		}
		if total != uint64(len(want)) || len(subs[len(subs)-1].Upper) != 0 {
			t.Fatalf("set %d: split covers %d", set, total)
		}
		// A middle range.
		if len(items) > 10 {
			a, _ := e.log.RangeFingerprint(mb, set, items[3][:], items[10][:])
			var m wire.FingerprintAcc
			for _, d := range items[3:10] {
				m.Add(d)
			}
			if a.Fingerprint() != m.Fingerprint() {
				t.Fatalf("set %d: middle range", set)
			}
			// Prefix bounds shorter than 32 bytes work too.
			p, _ := e.log.RangeItems(mb, set, items[3][:1], nil, 0)
			if len(p) == 0 || string(p[0][:1]) < string(items[3][:1]) {
				t.Fatalf("set %d: short bound", set)
			}
		}
	}
	live := map[[32]byte]bool{}
	for _, c := range cids {
		live[c.Digest()] = true
	}
	check(store.SetEntries, live)
	check(store.SetTombstones, map[[32]byte]bool{})
	// Updates reach the loaded indexes.
	res, _ := e.log.Ack(context.Background(), mb, cids[:40], OwnerAcks(cids[:40]))
	if res.Acked != 40 {
		t.Fatal(res.Acked)
	}
	tomb := map[[32]byte]bool{}
	for _, c := range cids[:40] {
		delete(live, c.Digest())
		tomb[c.Digest()] = true
	}
	_, r := e.append(mb, 20)
	live[r.Receipt.CID.Digest()] = true
	check(store.SetEntries, live)
	check(store.SetTombstones, tomb)
	if e.log.Stats().IndexBytes <= 0 {
		t.Fatal("index bytes not accounted")
	}
	if e.o.Persistent {
		e.reopen()
		check(store.SetEntries, live)
		check(store.SetTombstones, tomb)
	}
}

func testConcurrent(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	const writers, per = 16, 40
	var wg sync.WaitGroup
	seqs := make(chan uint64, writers*per)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				b := Envelope(t, mb, 0, 64)
				r, err := e.log.Append(context.Background(), store.Deposit{Envelope: b})
				if err != nil {
					t.Error(err)
					return
				}
				if err := r.Receipt.VerifyFor(b); err != nil {
					t.Error(err)
				}
				seqs <- r.Receipt.Seq
			}
		}()
	}
	wg.Wait()
	close(seqs)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] || s < 1 || s > writers*per {
			t.Fatalf("seq %d repeated or out of range", s)
		}
		seen[s] = true
	}
	st := e.log.Stats()
	if st.Entries != writers*per || st.Commits >= writers*per {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d appends in %d commits", st.CommitOps, st.Commits)
}

func testAppendMany(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	var ds []store.Deposit
	for i := 0; i < 600; i++ {
		ds = append(ds, store.Deposit{Envelope: Envelope(t, mb, 0, 40)})
	}
	ds[7].Envelope = []byte{1, 2, 3}
	ds[9].Expiry = 1
	rs := e.log.AppendMany(context.Background(), ds)
	next := uint64(1)
	for i, r := range rs {
		switch i {
		case 7:
			if !errors.Is(r.Err, wire.ErrMalformed) {
				t.Fatalf("malformed: %v", r.Err)
			}
			continue
		case 9:
			if !errors.Is(r.Err, wire.ErrExpiryInvalid) {
				t.Fatalf("expiry: %v", r.Err)
			}
			continue
		}
		if r.Err != nil || r.Receipt.Seq != next {
			t.Fatalf("result %d: %v seq %d want %d", i, r.Err, r.Receipt.Seq, next)
		}
		if err := r.Receipt.VerifyFor(ds[i].Envelope); err != nil {
			t.Fatalf("result %d: %v", i, err)
		}
		next++
	}
}

func testPersistence(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	other := NewRelay(t)
	var last store.AppendResult
	for i := 0; i < 10; i++ {
		_, last = e.append(mb, 100)
	}
	exp := e.now() + 3600
	b := Envelope(t, mb, exp, 10)
	s := Stamp(t, other, b, 2, exp)
	if _, err := e.log.Import(context.Background(), b, &s); err != nil {
		t.Fatal(err)
	}
	e.log.Ack(context.Background(), mb, []wire.CID{last.Receipt.CID}, OwnerAcks([]wire.CID{last.Receipt.CID}))
	before := e.log.Stats()
	e.reopen()
	after := e.log.Stats()
	if after.Entries != before.Entries || after.Bytes != before.Bytes || after.Tombstones != before.Tombstones || after.Mailboxes != 1 {
		t.Fatalf("stats before %+v after %+v", before, after)
	}
	_, r := e.append(mb, 100)
	if r.Receipt.Seq != 11 {
		t.Fatalf("seq after reopen: %d", r.Receipt.Seq)
	}
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 11 {
		t.Fatalf("read after reopen: %d", len(p.Entries))
	}
	for _, en := range p.Entries {
		if err := en.Stamp.VerifyFor(en.Envelope); err != nil {
			t.Fatal(err)
		}
	}
	kt := e.log.KnownThrough(mb)
	for _, w := range kt {
		if w.Origin == other.ID && w.Seq != 0 {
			t.Fatalf("known_through of the other origin: %v", kt)
		}
	}
	if f, _ := e.log.Fate(mb, last.Receipt.CID); f != store.FateAcked {
		t.Fatalf("fate %v", f)
	}
}

func testBadInput(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	ctx := context.Background()
	b := Envelope(t, mb, 0, 10)
	for i, d := range []store.Deposit{
		{Envelope: nil},
		{Envelope: b[:20]},
		{Envelope: append([]byte{2}, b[1:]...)},
		{Envelope: b, Mailbox: Mailbox(t)},
	} {
		if _, err := e.log.Append(ctx, d); !errors.Is(err, wire.ErrMalformed) && !errors.Is(err, wire.ErrUnsupportedVersion) {
			t.Fatalf("deposit %d: %v", i, err)
		}
	}
	if _, err := e.log.RangeFingerprint(mb, 9, nil, nil); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("bad set: %v", err)
	}
	if st := e.log.Stats(); st.Entries != 0 || st.Mailboxes != 0 || st.RejectedOther != 4 {
		t.Fatalf("stats %+v", st)
	}
	e.log.Close()
	if _, err := e.log.Append(ctx, store.Deposit{Envelope: b}); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, err := e.log.Read(mb, nil, nil, 0, 0); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	e.log = nil
}

var _ = binary.BigEndian

func testPrekeys(t *testing.T, o Opener) {
	e := newEnv(t, o, func(o *store.LogOptions) { o.PrekeyCapBytes = 2000 })
	mb := Mailbox(t)
	ctx := context.Background()
	if n, err := e.log.PutPrekeys(ctx, mb, 1, nil, 5); err != nil || n != 0 {
		t.Fatalf("count of nothing: %d %v", n, err)
	}
	recs := []store.RelayPrekey{{ID: 1, Record: []byte("one")}, {ID: 2, Record: []byte("two")}, {ID: 1, Record: []byte("dup")}}
	if n, err := e.log.PutPrekeys(ctx, mb, 1, recs, 5); err != nil || n != 2 {
		t.Fatalf("put: %d %v", n, err)
	}
	more := []store.RelayPrekey{{ID: 3, Record: []byte("three")}, {ID: 4, Record: []byte("four")}, {ID: 5, Record: []byte("five")}, {ID: 6, Record: []byte("six")}}
	if n, err := e.log.PutPrekeys(ctx, mb, 1, more, 5); err != nil || n != 5 {
		t.Fatalf("put beyond max: %d %v", n, err)
	}
	if n, _ := e.log.PutPrekeys(ctx, mb, 2, []store.RelayPrekey{{ID: 1, Record: []byte("kem")}}, 5); n != 1 {
		t.Fatalf("other kind: %d", n)
	}
	if _, err := e.log.PutPrekeys(ctx, mb, 1, []store.RelayPrekey{{ID: 9, Record: make([]byte, 3000)}}, 500); !errors.Is(err, wire.ErrStorageFull) {
		t.Fatalf("over the cap: %v", err)
	}
	if e.o.Persistent {
		e.reopen()
	}
	for i, want := range []string{"one", "two", "three", "four", "five"} {
		r, n, err := e.log.TakePrekey(ctx, mb, 1)
		if err != nil || string(r) != want || n != 4-i {
			t.Fatalf("take %d: %q %d %v", i, r, n, err)
		}
	}
	if r, n, err := e.log.TakePrekey(ctx, mb, 1); r != nil || n != 0 || err != nil {
		t.Fatalf("take from empty: %q %d %v", r, n, err)
	}
	if r, _, _ := e.log.TakePrekey(ctx, Mailbox(t), 1); r != nil {
		t.Fatal("take from unknown mailbox")
	}
	if r, n, _ := e.log.TakePrekey(ctx, mb, 2); string(r) != "kem" || n != 0 {
		t.Fatalf("other kind: %q", r)
	}
	// A handed-out ID is not accepted again (it would be a second use).
	if n, _ := e.log.PutPrekeys(ctx, mb, 1, recs[:1], 5); n != 0 {
		t.Fatalf("re-upload of a handed-out prekey: %d", n)
	}
	if n, _ := e.log.PutPrekeys(ctx, mb, 1, []store.RelayPrekey{{ID: 77, Record: []byte("new")}}, 5); n != 1 {
		t.Fatalf("new upload: %d", n)
	}
}

// testHoles: entries of another origin above a hole that expire or are
// acked keep their seq, so known_through still closes when the hole fills
// (SPEC.md §7).
func testHoles(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	other := NewRelay(t)
	mb := Mailbox(t)
	ctx := context.Background()
	short, long := e.now()+10, e.now()+3600
	var envs [][]byte
	var stamps []wire.SignedReceipt
	for i := 1; i <= 4; i++ {
		exp := long
		if i == 3 {
			exp = short
		}
		b := Envelope(t, mb, exp, 30)
		envs = append(envs, b)
		stamps = append(stamps, Stamp(t, other, b, uint64(i), exp))
	}
	for _, i := range []int{0, 2, 3} {
		if _, err := e.log.Import(ctx, envs[i], &stamps[i]); err != nil {
			t.Fatal(err)
		}
	}
	// Seq 4 is acked and seq 3 expires while seq 2 is missing.
	if res, _ := e.log.Ack(ctx, mb, []wire.CID{stamps[3].CID}, OwnerAcks([]wire.CID{stamps[3].CID})); res.Acked != 1 {
		t.Fatal("ack")
	}
	e.clock.Advance(20 * time.Second)
	if res, err := e.log.Sweep(ctx); err != nil || res.Expired != 1 {
		t.Fatalf("sweep %+v %v", res, err)
	}
	kt := func() uint64 {
		for _, p := range e.log.KnownThrough(mb) {
			if p.Origin == other.ID {
				return p.Seq
			}
		}
		return 0
	}
	if kt() != 1 {
		t.Fatalf("known_through %d before the hole fills", kt())
	}
	if _, err := e.log.Import(ctx, envs[1], &stamps[1]); err != nil {
		t.Fatal(err)
	}
	if kt() != 4 {
		t.Fatalf("known_through %d after the hole filled, want 4", kt())
	}
	p, _ := e.log.Read(mb, nil, nil, 0, 0)
	if len(p.Entries) != 2 || p.Entries[0].Stamp.Seq != 1 || p.Entries[1].Stamp.Seq != 2 {
		t.Fatalf("read: %d entries", len(p.Entries))
	}
	if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != 4 {
		t.Fatalf("watermarks %v", p.Watermarks)
	}
	// The placeholders go after the fate retention.
	e.clock.Advance(store.DefaultFateRetention + time.Hour)
	if _, err := e.log.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if kt() != 4 {
		t.Fatalf("known_through %d after the placeholders went", kt())
	}
}

func testOnStored(t *testing.T, o Opener) {
	var mu sync.Mutex
	var got []store.StoredEntry
	e := newEnv(t, o, func(o *store.LogOptions) {
		o.OnStored = func(s store.StoredEntry) {
			mu.Lock()
			got = append(got, s)
			mu.Unlock()
		}
	})
	mb := Mailbox(t)
	ctx := context.Background()
	b1, r1 := e.append(mb, 10)
	e.log.Append(ctx, store.Deposit{Envelope: b1}) // a duplicate: not stored again
	other := NewRelay(t)
	b2 := Envelope(t, mb, e.now()+100, 10)
	s2 := Stamp(t, other, b2, 1, e.now()+100)
	e.log.Import(ctx, b2, &s2)
	e.log.Append(ctx, store.Deposit{Envelope: []byte("bad")})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || string(got[0].Envelope) != string(b1) || got[0].Stamp.Seq != r1.Receipt.Seq ||
		got[1].Stamp.Origin != other.ID || got[0].CID() != r1.Receipt.CID {
		t.Fatalf("OnStored saw %d entries", len(got))
	}
	if err := got[0].Stamp.VerifyFor(got[0].Envelope); err != nil {
		t.Fatal(err)
	}
}

func testMailboxes(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	want := map[wire.Mailbox]int{}
	for i := 0; i < 5; i++ {
		mb := Mailbox(t)
		for k := 0; k <= i; k++ {
			e.append(mb, 10)
		}
		want[mb] = i + 1
	}
	n := 0
	for info := range e.log.Mailboxes() {
		if int(info.Entries) != want[info.Mailbox] || info.Bytes != int64(want[info.Mailbox]*65) {
			t.Fatalf("mailbox info %+v", info)
		}
		n++
	}
	if n != 5 {
		t.Fatalf("%d mailboxes", n)
	}
	for range e.log.Mailboxes() {
		break // stopping early is fine
	}
	if _, ok := e.log.Mailbox(Mailbox(t)); ok {
		t.Fatal("unknown mailbox found")
	}
}

// testBackgroundSweep: with GCInterval set, the log sweeps by itself.
func testBackgroundSweep(t *testing.T, o Opener) {
	e := newEnv(t, o, func(o *store.LogOptions) { o.GCInterval = 5 * time.Millisecond })
	mb := Mailbox(t)
	b := Envelope(t, mb, e.now()+5, 10)
	if _, err := e.log.Append(context.Background(), store.Deposit{Envelope: b}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	// Poll: the loop runs on a wall-clock ticker. The deadline is a safety
	// net, not a performance assertion.
	deadline := time.Now().Add(20 * time.Second)
	for e.log.Stats().Expired == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the background sweep never ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := e.log.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// testMultiOriginPages pages through three origins with small pages and
// checks the order, the resume and the watermarks of SPEC.md §10.4.
func testMultiOriginPages(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	ctx := context.Background()
	relays := []Relay{NewRelay(t), NewRelay(t)}
	exp := e.now() + 3600
	for _, r := range relays {
		for s := 1; s <= 5; s++ {
			b := Envelope(t, mb, exp, 20)
			st := Stamp(t, r, b, uint64(s), exp)
			if _, err := e.log.Import(ctx, b, &st); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < 5; i++ {
		e.append(mb, 20)
	}
	origins := []peer.ID{relays[0].ID, relays[1].ID, e.relay.ID}
	slices.Sort(origins)
	var c wire.Cursor
	c.Advance(origins[1], 2) // the client has 1..2 of the middle origin
	var after *wire.Position
	var got []wire.Position
	final := map[peer.ID]uint64{}
	for pages := 0; ; pages++ {
		p, err := e.log.Read(mb, &c, after, 4, 0)
		if err != nil || pages > 10 {
			t.Fatal(err, pages)
		}
		for _, en := range p.Entries {
			got = append(got, wire.Position{Origin: en.Stamp.Origin, Seq: en.Stamp.Seq})
		}
		for _, w := range p.Watermarks {
			// A watermark never passes what the page sent of an origin it
			// ended inside.
			if p.More && len(p.Entries) > 0 {
				last := p.Entries[len(p.Entries)-1].Stamp
				if w.Origin == last.Origin && w.Seq > last.Seq {
					t.Fatalf("watermark %v beyond the last entry sent %d", w, last.Seq)
				}
			}
			final[w.Origin] = max(final[w.Origin], w.Seq)
		}
		if !p.More {
			if len(p.Watermarks) != 3 {
				t.Fatalf("last page lists %d watermarks", len(p.Watermarks))
			}
			break
		}
		last := p.Entries[len(p.Entries)-1].Stamp
		after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
	}
	if len(got) != 13 {
		t.Fatalf("%d entries", len(got))
	}
	for i := 1; i < len(got); i++ {
		a, b := got[i-1], got[i]
		if a.Origin > b.Origin || (a.Origin == b.Origin && a.Seq >= b.Seq) {
			t.Fatalf("out of order at %d: %v then %v", i, a, b)
		}
	}
	if got[0] != (wire.Position{Origin: origins[0], Seq: 1}) || got[5] != (wire.Position{Origin: origins[1], Seq: 3}) {
		t.Fatalf("start of origins: %v %v", got[0], got[5])
	}
	for _, o := range origins {
		if final[o] != 5 {
			t.Fatalf("final watermark of %s: %d", o, final[o])
		}
	}
}

// testReadWhileAppending syncs repeatedly while appends commit, and checks
// the promise of the watermarks: every entry at or below W(o) was sent.
func testReadWhileAppending(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 150; i++ {
				ds := []store.Deposit{{Envelope: Envelope(t, mb, 0, 20)}, {Envelope: Envelope(t, mb, 0, 20)}}
				for _, r := range e.log.AppendMany(ctx, ds) {
					if r.Err != nil {
						t.Error(r.Err)
						return
					}
				}
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()
	syncs := 0
	for done := false; !done; syncs++ {
		select {
		case <-stop:
			done = true // one more sync after the last append
		default:
		}
		var c wire.Cursor
		var after *wire.Position
		seen := map[uint64]bool{}
		var w uint64
		for {
			p, err := e.log.Read(mb, &c, after, 7, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, en := range p.Entries {
				seen[en.Stamp.Seq] = true
			}
			for _, wm := range p.Watermarks {
				w = max(w, wm.Seq)
			}
			if !p.More {
				break
			}
			last := p.Entries[len(p.Entries)-1].Stamp
			after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
		}
		for s := uint64(1); s <= w; s++ {
			if !seen[s] {
				t.Fatalf("sync %d: watermark %d passes seq %d, which was not sent", syncs, w, s)
			}
		}
		if done && w != 1200 {
			t.Fatalf("final watermark %d, want 1200", w)
		}
	}
	t.Logf("%d syncs during the appends", syncs)
}

// testSummary: a mailbox's summary (the accumulators of its whole sets) is
// kept up to date by appends, acks, imported tombstones and sweeps, also
// while its index is dropped for the budget, and equals what a fresh load
// from disk gives.
func testSummary(t *testing.T, o Opener) {
	e := newEnv(t, o, func(opts *store.LogOptions) { opts.IndexBudget = 1 }) // keeps one index at most
	ctx := context.Background()
	mbs := []wire.Mailbox{Mailbox(t), Mailbox(t), Mailbox(t)}
	cids := map[wire.Mailbox][]wire.CID{}
	for _, mb := range mbs {
		for range 20 {
			_, r := e.append(mb, 64)
			cids[mb] = append(cids[mb], r.Receipt.CID)
		}
	}
	type sum struct{ entries, tombstones wire.FingerprintAcc }
	summary := func(mb wire.Mailbox) sum {
		t.Helper()
		en, tb, err := e.log.Summary(mb)
		if err != nil {
			t.Fatal(err)
		}
		return sum{en, tb}
	}
	for _, mb := range mbs {
		if s := summary(mb); s.entries.Count() != 20 || s.tombstones.Count() != 0 {
			t.Fatalf("summary after 20 appends: %d entries, %d tombstones", s.entries.Count(), s.tombstones.Count())
		}
	}
	a := mbs[0]
	// Load the other mailboxes' indexes: a's is dropped (budget), its
	// totals stay.
	for _, mb := range mbs[1:] {
		if _, err := e.log.RangeFingerprint(mb, store.SetEntries, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		_, r := e.append(a, 64)
		cids[a] = append(cids[a], r.Receipt.CID)
	}
	acked := cids[a][:3]
	if res, err := e.log.Ack(ctx, a, acked, OwnerAcks(acked)); err != nil || res.Acked != 3 {
		t.Fatalf("ack: %+v %v", res, err)
	}
	other := NewRelay(t)
	exp := e.now() + 3600
	neverHere := Stamp(t, other, Envelope(t, a, exp, 50), 1, exp)
	unknown := neverHere.CID
	ts := []store.Tombstone{{Mailbox: a, CID: unknown, Origin: other.ID, Seq: 1, Expiry: exp,
		OwnerAck: OwnerAcks([]wire.CID{unknown})[0], Stamp: mustMarshal(t, &neverHere)}}
	if n, err := e.log.ImportTombstones(ctx, ts); err != nil || n != 1 {
		t.Fatalf("import tombstone: %d %v", n, err)
	}
	kept := summary(a)
	if kept.entries.Count() != 22 || kept.tombstones.Count() != 4 {
		t.Fatalf("summary kept up to date: %d entries, %d tombstones; want 22, 4", kept.entries.Count(), kept.tombstones.Count())
	}
	// A fresh load of a's indexes from the records (a's were dropped
	// again by loading the others'; with a persistent backend, after a
	// reopen too) gives the same.
	same := func(when string) {
		t.Helper()
		for _, mb := range mbs[1:] {
			if _, err := e.log.RangeFingerprint(mb, store.SetTombstones, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		var fresh sum
		var err error
		if fresh.entries, err = e.log.RangeFingerprint(a, store.SetEntries, nil, nil); err != nil {
			t.Fatal(err)
		}
		if fresh.tombstones, err = e.log.RangeFingerprint(a, store.SetTombstones, nil, nil); err != nil {
			t.Fatal(err)
		}
		if fresh.entries.Fingerprint() != kept.entries.Fingerprint() || fresh.tombstones.Fingerprint() != kept.tombstones.Fingerprint() {
			t.Fatalf("%s: %d/%d entries, %d/%d tombstones: the fresh sets differ from the summary kept in memory",
				when, fresh.entries.Count(), kept.entries.Count(), fresh.tombstones.Count(), kept.tombstones.Count())
		}
	}
	same("index reloaded")
	if o.Persistent {
		e.reopen()
		same("after reopen")
	}
	// Expiry empties both sets.
	e.clock.Advance(store.DefaultTTL + time.Hour)
	if _, err := e.log.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if s := summary(mb); s.entries.Count() != 0 || s.tombstones.Count() != 0 {
			t.Fatalf("summary after expiry: %d entries, %d tombstones", s.entries.Count(), s.tombstones.Count())
		}
	}
	// A mailbox the log never held has empty sets.
	if s := summary(Mailbox(t)); s.entries.Count() != 0 || s.tombstones.Count() != 0 {
		t.Fatal("summary of an unknown mailbox is not empty")
	}
}

func mustMarshal(t testing.TB, m interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testAppendManyAsync: batches handed over one after another are committed
// in that order, whatever the order their results are waited for, and the
// deposits slice may be reused as soon as the call returns.
func testAppendManyAsync(t *testing.T, o Opener) {
	e := newEnv(t, o, nil)
	mb := Mailbox(t)
	ctx := context.Background()
	ds := make([]store.Deposit, 3)
	var waits []func() []store.AppendManyResult
	var envs [][]byte
	for range 4 {
		for i := range ds {
			ds[i] = store.Deposit{Envelope: Envelope(t, mb, 0, 40)}
			envs = append(envs, ds[i].Envelope)
		}
		waits = append(waits, e.log.AppendManyAsync(ctx, ds))
	}
	var got []store.AppendManyResult
	for i := len(waits) - 1; i >= 0; i-- {
		got = append(waits[i](), got...)
	}
	for i, r := range got {
		if r.Err != nil || r.Duplicate {
			t.Fatalf("deposit %d: %+v", i, r)
		}
		if r.Receipt.Seq != uint64(i+1) || r.Receipt.CID != wire.CIDOf(envs[i]) {
			t.Fatalf("deposit %d: seq %d, cid %s; want seq %d for its own envelope", i, r.Receipt.Seq, r.Receipt.CID, i+1)
		}
	}
}
