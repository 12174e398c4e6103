package store

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testLog(t *testing.T, dir string, tweak func(*badger.Options)) (*Log, *testClock) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	clock := &testClock{t: time.Now().Truncate(time.Second)}
	l, err := OpenLog(LogOptions{Dir: dir, Now: clock.Now, Origin: id, Signer: k, GCInterval: -1, tweak: tweak})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, clock
}

func testEnvelope(t testing.TB, mb wire.Mailbox, n int) []byte {
	ct := make([]byte, n)
	rand.Read(ct)
	b, err := (&wire.Envelope{Mailbox: mb, Ciphertext: ct}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewrite applies f to the raw value of key k, keeping badger's metadata.
func rewrite(t *testing.T, l *Log, k []byte, f func([]byte)) {
	t.Helper()
	err := l.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		f(v)
		e := badger.NewEntry(k, v).WithMeta(item.UserMeta())
		e.ExpiresAt = item.ExpiresAt()
		return txn.SetEntry(e)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStoreCorruptRecords(t *testing.T) {
	l, _ := testLog(t, t.TempDir(), nil)
	mb := wire.MailboxOf(make([]byte, 32))
	ctx := context.Background()
	var cids []wire.CID
	for i := 0; i < 10; i++ {
		r, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 500)})
		if err != nil {
			t.Fatal(err)
		}
		cids = append(cids, r.Receipt.CID)
	}
	mbid := l.mboxes[mb].id
	// Flip one byte in the middle of entry 5's envelope.
	rewrite(t, l, entryKey(mbid, l.own, 5), func(v []byte) { v[len(v)/2] ^= 0x40 })
	p, err := l.Read(mb, nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 9 || len(p.Corrupt) != 1 || !errors.Is(p.Corrupt[0], ErrCorrupt) {
		t.Fatalf("read: %d entries, corrupt %v", len(p.Entries), p.Corrupt)
	}
	// The watermark stays below the corrupt entry, so a client fetches it
	// elsewhere.
	if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != 4 {
		t.Fatalf("watermarks %v", p.Watermarks)
	}
	if _, err := l.Get(mb, cids[4]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get: %v", err)
	}
	var ce *CorruptError
	if _, err := l.GetBySeq(mb, l.opts.Origin, 5); !errors.As(err, &ce) || len(ce.Key) != entryKeyLen {
		t.Fatalf("get by seq: %v", err)
	}
	// A corrupt fate record is an error for that CID only.
	rewrite(t, l, fateKey(mbid, cids[2].Digest()), func(v []byte) { v[7] ^= 1 })
	if _, err := l.Fate(mb, cids[2]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fate: %v", err)
	}
	if f, err := l.Fate(mb, cids[3]); err != nil || f != FateStored {
		t.Fatalf("fate of a good record: %v %v", f, err)
	}
	// A corrupt receipt batch makes its entries corrupt, not the log.
	e, _ := l.GetBySeq(mb, l.opts.Origin, 1)
	_ = e
	rewrite(t, l, batchKey(1), func(v []byte) { v[10] ^= 1 })
	l.trees = treeCache{} // forget the batch trees read before the flip
	p, err = l.Read(mb, nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries)+len(p.Corrupt) != 10 || len(p.Corrupt) < 2 {
		t.Fatalf("after batch corruption: %d entries, %d corrupt", len(p.Entries), len(p.Corrupt))
	}
	if l.Stats().Corrupt == 0 {
		t.Fatal("corrupt records not counted")
	}
	// Appends and acks go on.
	if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 50)}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Ack(ctx, mb, cids, testOwnerAcks(cids)); err != nil {
		t.Fatal(err)
	}
}

// TestStoreCorruptOnDisk flips bytes inside badger's table files, under
// badger (which does not verify its block checksums on reads by default),
// and checks that the log reports the entry and serves the rest.
func TestStoreCorruptOnDisk(t *testing.T) {
	dir := t.TempDir()
	l, _ := testLog(t, dir, nil)
	mb := wire.MailboxOf(make([]byte, 32))
	ctx := context.Background()
	envs := make([][]byte, 5)
	for i := range envs {
		envs[i] = testEnvelope(t, mb, 2000)
		if _, err := l.Append(ctx, Deposit{Envelope: envs[i]}); err != nil {
			t.Fatal(err)
		}
	}
	origin, signer := l.opts.Origin, l.opts.Signer
	l.Close() // flushes the memtable into a table file
	// Find the third envelope's ciphertext in the table files and flip a
	// byte.
	needle := envs[2][wire.EnvelopeOverhead+100 : wire.EnvelopeOverhead+132]
	files, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	flipped := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+len(needle) <= len(b); i++ {
			if string(b[i:i+len(needle)]) == string(needle) {
				b[i+5] ^= 0xff
				flipped++
			}
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if flipped == 0 {
		t.Fatal("envelope not found in the table files")
	}
	l2, err := OpenLog(LogOptions{Dir: dir, Origin: origin, Signer: signer, GCInterval: -1})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer l2.Close()
	p, err := l2.Read(mb, nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != 4 || len(p.Corrupt) != 1 || !errors.Is(p.Corrupt[0], ErrCorrupt) {
		t.Fatalf("read: %d entries, %d corrupt", len(p.Entries), len(p.Corrupt))
	}
	for _, e := range p.Entries {
		if string(e.Envelope) != string(envs[e.Stamp.Seq-1]) || e.Stamp.VerifyFor(e.Envelope) != nil || e.Stamp.Seq == 3 {
			t.Fatalf("entry %d served wrong", e.Stamp.Seq)
		}
	}
	if len(p.Watermarks) != 1 || p.Watermarks[0].Seq != 2 {
		t.Fatalf("watermarks %v", p.Watermarks)
	}
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			// Blocks in use: badger preallocates and mmaps sparse files.
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			} else {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// TestStoreGCReclaims writes, expires, sweeps and collects, and checks that
// the directory shrinks (blocks in use). Small memtables and an eager L0
// make badger's compactions run within the test.
func TestStoreGCReclaims(t *testing.T) {
	dir := t.TempDir()
	tweak := func(o *badger.Options) {
		*o = o.WithValueLogFileSize(1 << 20).WithMemTableSize(1 << 20).WithBaseTableSize(256 << 10).
			WithNumLevelZeroTables(1).WithNumLevelZeroTablesStall(2)
	}
	l, clock := testLog(t, dir, tweak)
	ctx := context.Background()
	mb := wire.MailboxOf(make([]byte, 32))
	var ds []Deposit
	for i := 0; i < 2000; i++ {
		ds = append(ds, Deposit{Envelope: testEnvelope(t, mb, 4000), Expiry: uint64(clock.Now().Unix() + 60)})
	}
	for i := 0; i < len(ds); i += 100 {
		for _, r := range l.AppendMany(ctx, ds[i:i+100]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	l.db.Sync()
	full := dirSize(t, dir)
	clock.Advance(time.Minute)
	res, err := l.Sweep(ctx)
	if err != nil || res.Expired != 2000 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	// Keep going as a live relay does: entries come and expire, memtables
	// flush, and badger's background compactions drop the deleted
	// versions. Compactions run on their own schedule, so the check is
	// made after each round, up to a bound.
	after := dirSize(t, dir)
	for round := 0; round < 100 && after > full/2; round++ {
		for i := 0; i < 50; i++ {
			if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 4000), Expiry: uint64(clock.Now().Unix() + 60)}); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(time.Minute)
		if _, err := l.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.GC(); err != nil {
			t.Fatal(err)
		}
		after = dirSize(t, dir)
	}
	t.Logf("directory: %d bytes full, %d after expiry and GC (%d compactions requested)", full, after, l.Stats().GCRuns)
	if after > full/2 {
		t.Fatalf("directory did not shrink: %d → %d bytes", full, after)
	}
}

// TestStoreGCCompacts: once the bytes swept since the last compaction reach
// the live bytes (and a floor), GC compacts the LSM tree itself, so an idle
// relay gets its space back too.
func TestStoreGCCompacts(t *testing.T) {
	dir := t.TempDir()
	l, clock := testLog(t, dir, func(o *badger.Options) { *o = o.WithMemTableSize(4 << 20) })
	l.compactFloor = 1 << 20
	ctx := context.Background()
	mb := wire.MailboxOf(make([]byte, 32))
	var ds []Deposit
	for i := 0; i < 2000; i++ {
		ds = append(ds, Deposit{Envelope: testEnvelope(t, mb, 4000), Expiry: uint64(clock.Now().Unix() + 60)})
	}
	for i := 0; i < len(ds); i += 100 {
		for _, r := range l.AppendMany(ctx, ds[i:i+100]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	// Let the data reach table files, as it would over time.
	l.db.Flatten(1)
	full := dirSize(t, dir)
	clock.Advance(time.Minute)
	if _, err := l.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.GC(); err != nil {
		t.Fatal(err)
	}
	after := dirSize(t, dir)
	t.Logf("directory: %d bytes full, %d after expiry and one GC", full, after)
	if after > full/2 || l.Stats().GCRuns == 0 {
		t.Fatalf("GC did not compact: %d → %d bytes, %d runs", full, after, l.Stats().GCRuns)
	}
}

// TestStoreFateFilterRebuild checks that the dedup filter built from the
// fate records (at open, and when it is rebuilt) knows every CID, so no
// duplicate is ever stored twice.
func TestStoreFateFilterRebuild(t *testing.T) {
	dir := t.TempDir()
	l, _ := testLog(t, dir, nil)
	mb := wire.MailboxOf(make([]byte, 32))
	ctx := context.Background()
	var envs [][]byte
	for i := 0; i < 50; i++ {
		envs = append(envs, testEnvelope(t, mb, 20))
		if _, err := l.Append(ctx, Deposit{Envelope: envs[i]}); err != nil {
			t.Fatal(err)
		}
	}
	// Force a rebuild at the next commit.
	l.mu.Lock()
	l.filter.n = l.filter.limit + 1
	l.mu.Unlock()
	r, err := l.Append(ctx, Deposit{Envelope: envs[0]})
	if err != nil || !r.Duplicate {
		t.Fatalf("after a rebuild: %+v %v", r, err)
	}
	if l.filter.full() {
		t.Fatal("not rebuilt")
	}
	origin, signer := l.opts.Origin, l.opts.Signer
	l.Close()
	l2, err := OpenLog(LogOptions{Dir: dir, Origin: origin, Signer: signer, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	for i, e := range envs {
		r, err := l2.Append(ctx, Deposit{Envelope: e})
		if err != nil || !r.Duplicate {
			t.Fatalf("entry %d after reopen: %+v %v", i, r, err)
		}
	}
}

// TestStoreStatsNotAheadOfCommit: Stats (the relay's stored-entries metric)
// never counts an operation whose commit has not returned. A relay killed
// while a group commit is being written must not have reported its
// entries: after the restart they are gone, and a metric that had counted
// them reads as a loss (the demo's "fewer after restart").
func TestStoreStatsNotAheadOfCommit(t *testing.T) {
	l, _ := testLog(t, t.TempDir(), nil)
	ctx := context.Background()
	mb := wire.MailboxOf(make([]byte, 32))
	if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 100)}); err != nil {
		t.Fatal(err)
	}
	before := l.Stats()
	inCommit, release := make(chan struct{}), make(chan struct{})
	l.beforeCommit = func() {
		inCommit <- struct{}{}
		<-release
	}
	other, otherID := newOrigin(t)
	env := testEnvelope(t, mb, 100)
	exp := uint64(time.Now().Add(time.Hour).Unix())
	rc := wire.Receipt{Origin: otherID, Mailbox: mb, CID: wire.CIDOf(env), Seq: 1, StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: exp}
	st, err := wire.SignReceipts(other, []wire.Receipt{rc})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() {
		_, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 100)})
		done <- err
	}()
	<-inCommit
	if s := l.Stats(); s.Entries != before.Entries || s.Bytes != before.Bytes || s.Appends != before.Appends {
		t.Errorf("during an append's commit, stats count %d entries (%d appends); %d are durable", s.Entries, s.Appends, before.Entries)
	}
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := l.Import(ctx, env, &st[0])
		done <- err
	}()
	<-inCommit
	if s := l.Stats(); s.Entries != before.Entries+1 || s.Imports != 0 {
		t.Errorf("during an import's commit, stats count %d entries (%d imports); %d are durable", s.Entries, s.Imports, before.Entries+1)
	}
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l.beforeCommit = nil
	if s := l.Stats(); s.Entries != before.Entries+2 || s.Imports != 1 || s.Appends != 2 {
		t.Fatalf("after the commits: %+v", s)
	}
}

func newOrigin(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// TestStoreIndexBudget: reconciliation indexes beyond LogOptions.IndexBudget
// are dropped least recently used first and reloaded on demand with the same
// content; the index in use is never dropped, and concurrent queries and
// commits see consistent indexes.
func TestStoreIndexBudget(t *testing.T) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	const perMailbox = 100
	// One index of 100 items takes about 3.4 KiB: three fit.
	l, err := OpenLog(LogOptions{Origin: id, Signer: k, GCInterval: -1, IndexBudget: 11 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	var mbs []wire.Mailbox
	for i := range 6 {
		mb := wire.MailboxOf([]byte{byte(i), 1, 2, 3})
		mbs = append(mbs, mb)
		for range perMailbox {
			if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mb, 80)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	loaded := func() (n int, bytes int64) {
		l.mu.RLock()
		defer l.mu.RUnlock()
		return len(l.idxLoaded), l.idxBytes
	}
	fps := map[wire.Mailbox]wire.FingerprintAcc{}
	for _, mb := range mbs {
		acc, err := l.RangeFingerprint(mb, SetEntries, nil, nil)
		if err != nil || acc.Count() != perMailbox {
			t.Fatalf("fingerprint: %v, %d items", err, acc.Count())
		}
		fps[mb] = acc
		if n, b := loaded(); b > l.opts.IndexBudget && n > 1 {
			t.Fatalf("%d indexes of %d bytes loaded, budget %d", n, b, l.opts.IndexBudget)
		}
	}
	st := l.Stats()
	if st.IndexEvictions == 0 {
		t.Fatal("no index was dropped")
	}
	// The last one used stays: querying it again drops nothing.
	last := mbs[len(mbs)-1]
	if _, err := l.RangeItems(last, SetEntries, nil, nil, 0); err != nil {
		t.Fatal(err)
	}
	if l.Stats().IndexEvictions != st.IndexEvictions {
		t.Fatal("the most recently used index was dropped")
	}
	// Dropped ones come back with the same content, also after writes
	// while they were out.
	extra := testEnvelope(t, mbs[0], 80)
	if _, err := l.Append(ctx, Deposit{Envelope: extra}); err != nil {
		t.Fatal(err)
	}
	want := fps[mbs[0]]
	want.Add(wire.CIDOf(extra).Digest())
	fps[mbs[0]] = want
	for _, mb := range mbs {
		acc, err := l.RangeFingerprint(mb, SetEntries, nil, nil)
		if err != nil || acc != fps[mb] {
			t.Fatalf("reloaded index differs: %v", err)
		}
	}
	// A single index above the budget is kept while it is in use.
	big := wire.MailboxOf([]byte("big"))
	for range 400 {
		if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, big, 80)}); err != nil {
			t.Fatal(err)
		}
	}
	if acc, err := l.RangeFingerprint(big, SetEntries, nil, nil); err != nil || acc.Count() != 400 {
		t.Fatalf("big mailbox: %v", err)
	}
	if n, _ := loaded(); n != 1 {
		t.Fatalf("%d indexes loaded next to one above the budget", n)
	}
	// Concurrent queries over all mailboxes and appends.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				mb := mbs[(w+i)%len(mbs)]
				acc, err := l.RangeFingerprint(mb, SetEntries, nil, nil)
				if err != nil || acc.Count() < perMailbox {
					t.Errorf("concurrent fingerprint: %v, %d items", err, acc.Count())
					return
				}
				if _, err := l.SplitRange(mb, SetEntries, nil, nil, 4); err != nil {
					t.Errorf("split: %v", err)
					return
				}
			}
		}()
	}
	for range 100 {
		if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, mbs[1], 80)}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if acc, err := l.RangeFingerprint(mbs[1], SetEntries, nil, nil); err != nil || acc.Count() != perMailbox+100 {
		t.Fatalf("after concurrent appends: %v, %d items", err, acc.Count())
	}
	_, b := loaded()
	l.mu.RLock()
	var sum int64
	for x := range l.idxLoaded {
		sum += x.memBytes()
	}
	l.mu.RUnlock()
	if sum != b || l.Stats().IndexBytes != b+l.filter.memBytes() {
		t.Fatalf("index bytes: tracked %d, loaded %d, stats %d", b, sum, l.Stats().IndexBytes)
	}
}

// TestStoreMailboxesPaged: Mailboxes yields every mailbox once across its
// pages, stops when asked, and sees a mailbox created meanwhile at most once.
func TestStoreMailboxesPaged(t *testing.T) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	l, err := OpenLog(LogOptions{Origin: id, Signer: k, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	const n = 2*mailboxPage + 100
	var ds []Deposit
	for i := range n {
		ds = append(ds, Deposit{Envelope: testEnvelope(t, wire.MailboxOf([]byte{byte(i), byte(i >> 8), 7}), 60)})
	}
	for len(ds) > 0 {
		k := min(len(ds), 256)
		for _, r := range l.AppendMany(ctx, ds[:k]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
		ds = ds[k:]
	}
	seen := map[wire.Mailbox]int{}
	i := 0
	for info := range l.Mailboxes() {
		seen[info.Mailbox]++
		if info.Entries != 1 {
			t.Fatalf("mailbox with %d entries", info.Entries)
		}
		if i++; i == mailboxPage+1 { // a new mailbox in the middle
			if _, err := l.Append(ctx, Deposit{Envelope: testEnvelope(t, wire.MailboxOf([]byte("late")), 60)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(seen) < n || len(seen) > n+1 {
		t.Fatalf("%d mailboxes seen, want %d (or one more)", len(seen), n)
	}
	for mb, c := range seen {
		if c != 1 {
			t.Fatalf("mailbox %s seen %d times", mb, c)
		}
	}
	i = 0
	for range l.Mailboxes() {
		if i++; i == 10 {
			break
		}
	}
	if i != 10 {
		t.Fatalf("stopped after %d", i)
	}
}

// testOwnerAcks returns stand-ins for owner acks (the store does not verify
// them; storetest.OwnerAcks is the same for external tests).
func testOwnerAcks(cids []wire.CID) [][]byte {
	out := make([][]byte, len(cids))
	for i, c := range cids {
		out[i] = []byte("owner ack of " + c.String())
	}
	return out
}

// TestStoreMailboxIDsSpread: mailboxes created one after another get ids
// spread over the whole 32-bit space (newMailboxID), never 0 and never one
// in use, also after a reopen and when the sequence meets ids taken before
// (a store written with consecutive ids).
func TestStoreMailboxIDsSpread(t *testing.T) {
	dir := t.TempDir()
	l, _ := testLog(t, dir, nil)
	ctx := context.Background()
	create := func(l *Log, from, to int) {
		t.Helper()
		var ds []Deposit
		for i := from; i < to; i++ {
			ds = append(ds, Deposit{Envelope: testEnvelope(t, wire.MailboxOf([]byte{byte(i), byte(i >> 8), 9}), 60)})
		}
		for _, r := range l.AppendMany(ctx, ds) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	ids := func(l *Log) []uint32 {
		l.mu.RLock()
		defer l.mu.RUnlock()
		var ids []uint32
		for _, mb := range l.order {
			ids = append(ids, mb.id)
		}
		return ids
	}
	checkDistinct := func(ids []uint32) {
		t.Helper()
		seen := map[uint32]bool{}
		for _, id := range ids {
			if id == 0 || seen[id] {
				t.Fatalf("mailbox id %#x: zero or given twice in %x", id, ids)
			}
			seen[id] = true
		}
	}
	// Any 50 mailboxes created in a row span most of the space (with
	// consecutive ids they would span 49).
	checkSpread := func(ids []uint32) {
		t.Helper()
		for i := 0; i+50 <= len(ids); i += 50 {
			lo, hi := slices.Min(ids[i:i+50]), slices.Max(ids[i:i+50])
			if hi-lo < 1<<31 {
				t.Fatalf("mailboxes %d–%d have ids %#x–%#x", i, i+49, lo, hi)
			}
		}
	}

	create(l, 0, 300)
	first := ids(l)
	checkDistinct(first)
	checkSpread(first)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, _ = testLog(t, dir, nil)
	create(l, 300, 600)
	all := ids(l)
	if len(all) != 600 {
		t.Fatalf("%d mailboxes after the reopen, want 600", len(all))
	}
	checkDistinct(all)
	checkSpread(all[300:])
	// The sequence meets every id in use again: each is skipped.
	l.mu.Lock()
	l.mbidSeq = 0
	l.mu.Unlock()
	create(l, 600, 900)
	all = ids(l)
	checkDistinct(all)
	if len(all) != 900 {
		t.Fatalf("%d mailboxes, want 900", len(all))
	}
}
