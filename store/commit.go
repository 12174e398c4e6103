package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

type opKind uint8

const (
	opAppend opKind = iota + 1
	opImport
	opAck
	opTombstones
	opAdopt
	opSweep
	opLoadIndex
	opPrekeyPut
	opPrekeyTake
	opFlush
	opStop
)

// op is one operation queued for the commit goroutine.
type op struct {
	kind   opKind
	dep    Deposit
	imp    Import
	mb     wire.Mailbox
	cids   []wire.CID
	acks   [][]byte // owner acks of cids, in order (opAck)
	tombs  []Tombstone
	origin peer.ID
	seq    uint64
	set    Set
	done   chan *op

	prekeys   []RelayPrekey
	record    []byte
	envExpiry uint64 // the envelope's own expiry field (prepareAppend)

	// results
	err       error
	appendRes AppendResult
	more      bool
	count     int
	count2    int
	dupOf     *pendingAppend
}

// heavy ops touch up to l.chunk entries each.
func (o *op) heavy() bool { return o.kind != opAppend && o.kind != opImport }

func (o *op) size() int {
	switch o.kind {
	case opAppend:
		return len(o.dep.Envelope)
	case opImport:
		return len(o.imp.Envelope)
	}
	return 0
}

const (
	maxBatchHeavy = 4
	// markSlack is added to the badger TTL of fate records and marks, which
	// the sweep removes on the log's clock; badger's TTL only bounds them if
	// the sweep never runs.
	markSlack = 30 * 24 * time.Hour
	// importSkew is how far beyond now+MaxTTL an imported entry's expiry
	// may be (another origin's clock and policy).
	importSkew = time.Hour
)

// run is the commit goroutine.
//
// Group commit: a batch is the first queued op plus everything queued
// meanwhile, up to the limits. Writers whose results were just delivered
// need a moment to submit again, so without help batches alternate between
// two halves of the writers. The loop therefore lingers: if fewer ops are
// queued than the last batch held (the writers just answered, who are
// likely to come back), it waits for more, at most a quarter of the last
// commit's duration. A lone writer (batches of one) never waits.
func (l *Log) run() {
	defer close(l.commitDone)
	var carry *op
	prev := 0
	var lastCommit time.Duration
	var timer *time.Timer
	for {
		first := carry
		carry = nil
		if first == nil {
			first = <-l.reqs
		}
		if first.kind == opStop {
			return
		}
		batch := []*op{first}
		bytes, heavy := first.size(), 0
		if first.heavy() {
			heavy++
		}
		stop := false
		target := min(prev, l.batch)
		var deadline <-chan time.Time
	drain:
		for len(batch) < l.batch {
			var o *op
			select {
			case o = <-l.reqs:
			default:
				if len(batch) >= target || target <= 1 || lastCommit <= 0 {
					break drain
				}
				if deadline == nil {
					d := min(lastCommit/4, 2*time.Millisecond)
					if timer == nil {
						timer = time.NewTimer(d)
					} else {
						timer.Reset(d)
					}
					deadline = timer.C
				}
				select {
				case o = <-l.reqs:
				case <-deadline:
					break drain
				}
			}
			if o.kind == opStop {
				stop = true
				break drain
			}
			if bytes+o.size() > l.maxBytes || (o.heavy() && heavy >= maxBatchHeavy) {
				carry = o
				break drain
			}
			bytes += o.size()
			if o.heavy() {
				heavy++
			}
			batch = append(batch, o)
		}
		if deadline != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		start := time.Now()
		l.commit(batch)
		lastCommit = time.Since(start)
		l.noteCommit(lastCommit)
		prev = len(batch)
		if stop {
			return
		}
	}
}

// batchCtx is the state of one group commit.
type batchCtx struct {
	l       *Log
	txn     *badger.Txn
	now     int64
	nowMs   uint64
	wall    int64
	mbs     map[*mbox]bool
	kts     map[*mbox]map[uint32]bool
	appends []*pendingAppend
	inBatch map[[32]byte]*pendingAppend
	recon   []reconOp
	stored  []StoredEntry
	dues    map[[2]uint64][][32]byte // (due, mbid) → digests
	dups    []*op
	// st counts what the batch changes; it is added to the log's counters
	// only once the batch is committed, so Stats (the relay's metrics)
	// never reports what a crash could still take back.
	st *counters
}

type pendingAppend struct {
	op      *op
	receipt wire.Receipt
	env     []byte
}

type reconOp struct {
	mb  *mbox
	set Set
	d   [32]byte
	add bool
}

// commit applies a batch in one transaction and one fsync. It holds l.mu
// throughout, so readers see either none or all of the batch's in-memory
// effects, and never before badger holds them.
func (l *Log) commit(batch []*op) {
	stored, err := l.commitLocked(batch)
	if err == nil {
		for _, o := range batch {
			if o.kind == opFlush {
				o.err = l.flushMemtables()
			}
		}
	}
	l.queued.Add(-int64(len(batch)))
	for _, o := range batch {
		if err != nil {
			o.err = err
		}
		o.done <- o
	}
	if err == nil && l.opts.OnStored != nil {
		for _, e := range stored {
			l.opts.OnStored(e)
		}
	}
}

func (l *Log) commitLocked(batch []*op) ([]StoredEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if failed := l.failed.Load(); failed != nil {
		return nil, fmt.Errorf("store: log failed earlier: %w", *failed)
	}
	now := l.now()
	b := &batchCtx{
		l: l, txn: l.db.NewTransaction(true), now: now.Unix(), nowMs: uint64(now.UnixMilli()),
		wall: time.Now().Unix(), mbs: map[*mbox]bool{}, kts: map[*mbox]map[uint32]bool{},
		inBatch: map[[32]byte]*pendingAppend{}, st: new(counters),
	}
	defer b.txn.Discard()
	if l.filter.full() {
		old := l.filter.memBytes()
		l.filter = buildFateFilter(b.txn, 2*l.filter.limit)
		l.st.indexBytes.Add(l.filter.memBytes() - old)
	}
	err := b.apply(batch)
	if err == nil {
		err = b.finish()
	}
	if err == nil && l.beforeCommit != nil {
		l.beforeCommit()
	}
	if err == nil {
		err = b.txn.Commit()
	}
	if err != nil {
		// In-memory state may be ahead of the disk now; refuse everything
		// until the log is reopened (which reloads it from disk).
		l.failed.Store(&err)
		l.log.Error("store: commit failed; the log refuses further operations", "err", err)
		return nil, fmt.Errorf("store: commit: %w: %w", wire.ErrInternal, err)
	}
	l.st.add(b.st)
	l.st.commits.Add(1)
	l.st.commitOps.Add(uint64(len(batch)))
	touched := map[*digestIndex]bool{}
	for _, r := range b.recon {
		changed := true
		if x := r.mb.idx[r.set]; x != nil {
			if r.add {
				changed = x.insert(r.d)
			} else {
				changed = x.remove(r.d)
			}
			touched[x] = true
		}
		if changed && r.mb.totalOK[r.set] {
			var one wire.FingerprintAcc
			one.Add(r.d)
			if r.add {
				r.mb.total[r.set].Merge(&one)
			} else {
				r.mb.total[r.set].Sub(&one)
			}
		}
	}
	for x := range touched {
		old := x.bytes
		x.bytes = x.memBytes()
		l.st.indexBytes.Add(x.bytes - old)
		l.idxBytes += x.bytes - old
	}
	l.evictIndexes()
	for _, o := range b.dups {
		o.appendRes.Receipt = o.dupOf.op.appendRes.Receipt
	}
	return b.stored, nil
}

func (b *batchCtx) apply(batch []*op) error {
	for _, o := range batch {
		var err error
		switch o.kind {
		case opAppend:
			err = b.doAppend(o)
		case opImport:
			err = b.doImport(o)
		case opAck:
			err = b.doAck(o)
		case opTombstones:
			err = b.doTombstones(o)
		case opAdopt:
			err = b.doAdopt(o)
		case opSweep:
			err = b.doSweep(o)
		case opLoadIndex:
			err = b.doLoadIndex(o)
		case opPrekeyPut:
			err = b.doPrekeyPut(o)
		case opPrekeyTake:
			err = b.doPrekeyTake(o)
		case opFlush:
			// done after the commit, by commit()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// finish signs the batch's receipts and writes the counters it changed.
func (b *batchCtx) finish() error {
	l := b.l
	if n := len(b.appends); n > 0 {
		id := l.nextBatch
		l.nextBatch++
		rec := batchRec{leaves: make([][32]byte, n)}
		var maxExp uint64
		for i, p := range b.appends {
			var err error
			if rec.leaves[i], err = wire.ReceiptLeaf(&p.receipt); err != nil {
				return err
			}
			maxExp = max(maxExp, p.receipt.Expiry)
		}
		t, err := newBatchTree(rec)
		if err != nil {
			return err
		}
		sig, err := l.opts.Signer.Sign(wire.ReceiptSigningInput(n, t.tree.Root()))
		if err != nil {
			return fmt.Errorf("sign receipts: %w", err)
		}
		if len(sig) != 64 {
			return fmt.Errorf("sign receipts: signature of %d bytes: not Ed25519", len(sig))
		}
		rec.sig = [64]byte(sig)
		t.rec.sig = rec.sig
		if err := b.set(batchKey(id), rec.encode(), kindBatch, int64(maxExp), markSlack); err != nil {
			return err
		}
		for i, p := range b.appends {
			s := wire.SignedReceipt{Receipt: p.receipt, BatchSize: uint16(n), Index: uint16(i),
				Path: t.path(i), Signature: rec.sig}
			p.op.appendRes = AppendResult{Receipt: s, Fate: FateStored}
			b.stored = append(b.stored, StoredEntry{Envelope: p.env, Stamp: s})
		}
	}
	if err := b.writeDues(); err != nil {
		return err
	}
	for mb := range b.mbs {
		r := mailboxRec{addr: mb.addr, entries: mb.entries, bytes: mb.bytes, tombstones: mb.tombstones}
		if err := b.txn.Set(mailboxKey(mb.id), r.encode()); err != nil {
			return err
		}
	}
	for mb, oids := range b.kts {
		for oid := range oids {
			if err := b.txn.Set(knownKey(mb.id, oid), encodeU64(kindKnown, mb.kt[oid])); err != nil {
				return err
			}
		}
	}
	return nil
}

// set writes a record whose badger TTL is the wall-clock equivalent of due
// (a time on the log's clock) plus slack; due 0 means no TTL.
func (b *batchCtx) set(k, v []byte, meta byte, due int64, slack time.Duration) error {
	e := badger.NewEntry(k, v).WithMeta(meta)
	if due > 0 {
		e.ExpiresAt = uint64(b.wall + max(due-b.now, 1) + int64(slack/time.Second))
	}
	return b.txn.SetEntry(e)
}

func (b *batchCtx) touch(mb *mbox) { b.mbs[mb] = true }

func (b *batchCtx) touchKT(mb *mbox, oid uint32) {
	if b.kts[mb] == nil {
		b.kts[mb] = map[uint32]bool{}
	}
	b.kts[mb][oid] = true
	if _, ok := mb.kt[oid]; !ok {
		mb.kt[oid] = 0
	}
}

// mailbox returns the state of addr, creating it.
func (b *batchCtx) mailbox(addr wire.Mailbox) *mbox {
	l := b.l
	if mb := l.mboxes[addr]; mb != nil {
		return mb
	}
	mb := &mbox{id: l.newMailboxID(), addr: addr, kt: map[uint32]uint64{}, lowLive: map[uint32]uint64{}}
	l.mboxes[addr] = mb
	l.byID[mb.id] = mb
	l.order = append(l.order, mb)
	b.st.mailboxes.Add(1)
	b.touch(mb)
	return mb
}

// originID returns the oid of an origin, registering it.
func (b *batchCtx) originID(id peer.ID) (uint32, error) {
	l := b.l
	if oid, ok := l.originIDs[id]; ok {
		return oid, nil
	}
	oid := uint32(len(l.origins))
	if err := b.txn.Set(originKey(oid), encodeBytes(kindOrigin, []byte(id))); err != nil {
		return 0, err
	}
	l.origins = append(l.origins, id)
	l.originIDs[id] = oid
	return oid, nil
}

func (b *batchCtx) reject(o *op, err error) {
	o.err = err
	switch {
	case errors.Is(err, wire.ErrMailboxQuota):
		b.st.rejQuota.Add(1)
	case errors.Is(err, wire.ErrStorageFull):
		b.st.rejFull.Add(1)
	default:
		b.st.rejOther.Add(1)
	}
}

// fate reads a fate record in the batch; a corrupt one counts as absent
// (it is logged and counted; the caller's write, if any, replaces it).
func (b *batchCtx) fate(mbid uint32, d [32]byte) (fateRec, bool, error) {
	r, ok, err := getFate(b.txn, mbid, d)
	if errors.Is(err, ErrCorrupt) {
		b.st.corrupt.Add(1)
		b.l.log.Error("store: corrupt fate record", "err", err)
		return fateRec{}, false, nil
	}
	return r, ok, err
}

// known looks a CID up for dedup: its effective fate, or FateUnknown.
func (b *batchCtx) known(mb *mbox, d [32]byte) (fateRec, Fate, error) {
	if mb == nil {
		return fateRec{}, FateUnknown, nil
	}
	if !b.l.filter.mayContain(d) {
		return fateRec{}, FateUnknown, nil
	}
	// A corrupt fate record counts as unknown: the new one overwrites it.
	r, ok, err := b.fate(mb.id, d)
	if err != nil || !ok {
		return fateRec{}, FateUnknown, err
	}
	return r, b.l.effectiveFate(r), nil
}

// prepareAppend does an append's checks and hashing that need no state,
// in the caller's goroutine (so concurrent callers do them in parallel,
// outside the commit goroutine): it parses the envelope, checks the
// mailbox and fills in the CID.
func prepareAppend(o *op) error {
	d := &o.dep
	env, err := wire.ParseEnvelope(d.Envelope)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if !d.Mailbox.IsZero() && d.Mailbox != env.Mailbox {
		return fmt.Errorf("append: deposit mailbox differs from the envelope's: %w", wire.ErrMalformed)
	}
	d.Mailbox = env.Mailbox
	if d.CID.IsZero() {
		d.CID = wire.CIDOf(d.Envelope)
	}
	o.envExpiry = env.Expiry
	return nil
}

func (b *batchCtx) doAppend(o *op) error {
	l := b.l
	d := &o.dep
	cid := d.CID
	exp := d.Expiry
	if exp == 0 {
		exp = o.envExpiry
	}
	if exp == 0 {
		exp = uint64(b.now + int64(l.opts.DefaultTTL/time.Second))
	}
	if int64(exp) <= b.now || int64(exp) > b.now+int64(l.opts.MaxTTL/time.Second) {
		b.reject(o, fmt.Errorf("append: expiry %d: %w", exp, wire.ErrExpiryInvalid))
		return nil
	}
	digest := cid.Digest()
	mb := l.mboxes[d.Mailbox]
	if p := b.inBatch[digest]; p != nil {
		o.dupOf = p
		o.appendRes = AppendResult{Duplicate: true, Fate: FateStored}
		b.dups = append(b.dups, o)
		b.st.duplicates.Add(1)
		return nil
	}
	r, fate, err := b.known(mb, digest)
	if err != nil {
		return err
	}
	if fate != FateUnknown {
		b.st.duplicates.Add(1)
		o.appendRes = AppendResult{Duplicate: true, Fate: fate}
		if fate == FateStored {
			e, err := l.readEntry(b.txn, mb, r.origin, l.origins[r.origin], r.seq)
			if err != nil {
				o.err = fmt.Errorf("append: reading the stored duplicate: %w", err)
				return nil
			}
			o.appendRes.Receipt = e.Stamp
		}
		return nil
	}
	size := int64(len(d.Envelope))
	if err := b.admit(mb, size); err != nil {
		b.reject(o, fmt.Errorf("append: %w", err))
		return nil
	}
	mb = b.mailbox(d.Mailbox)
	seq := mb.kt[l.own] + 1
	mb.kt[l.own] = seq
	b.touchKT(mb, l.own)
	rc := wire.Receipt{Origin: l.opts.Origin, Mailbox: mb.addr, CID: cid, Seq: seq, StoredAtMs: b.nowMs, Expiry: exp}
	rec := entryRec{kind: kindLocalEntry, storedAtMs: b.nowMs, expiry: exp, batch: l.nextBatch,
		index: uint16(len(b.appends)), digest: digest, envelope: d.Envelope}
	if err := b.set(entryKey(mb.id, l.own, seq), rec.encode(), kindLocalEntry, int64(exp), 0); err != nil {
		return err
	}
	if err := b.addLive(mb, l.own, seq, digest, exp, size); err != nil {
		return err
	}
	p := &pendingAppend{op: o, receipt: rc, env: d.Envelope}
	b.appends = append(b.appends, p)
	b.inBatch[digest] = p
	b.st.appends.Add(1)
	return nil
}

// addLive writes the fate and due records of a new live entry and counts it.
func (b *batchCtx) addLive(mb *mbox, oid uint32, seq uint64, d [32]byte, exp uint64, size int64) error {
	f := fateRec{fate: FateStored, origin: oid, seq: seq, expiry: exp, size: uint32(size)}
	if err := b.set(fateKey(mb.id, d), f.encode(), kindFate, b.retain(exp), markSlack); err != nil {
		return err
	}
	b.l.filter.add(d)
	b.addDue(exp, mb.id, d)
	mb.entries++
	mb.bytes += size
	b.st.entries.Add(1)
	b.st.bytes.Add(size)
	b.touch(mb)
	b.recon = append(b.recon, reconOp{mb: mb, set: SetEntries, d: d, add: true})
	return nil
}

// retain is the end of an entry's fate retention on the log's clock.
func (b *batchCtx) retain(exp uint64) int64 {
	return int64(exp) + int64(b.l.opts.FateRetention/time.Second)
}

// admit checks the quotas for size more bytes in mb (nil: a new mailbox)
// and evicts from other mailboxes if the global cap requires it (SPEC.md
// §13). It changes nothing when it refuses.
func (b *batchCtx) admit(mb *mbox, size int64) error {
	l := b.l
	var entries, bytes int64
	if mb != nil {
		entries, bytes = mb.entries, mb.bytes
	}
	if q := l.opts.MailboxQuotaEntries; q >= 0 && entries+1 > q {
		return fmt.Errorf("mailbox holds %d entries: %w", entries, wire.ErrMailboxQuota)
	}
	if q := l.opts.MailboxQuotaBytes; q >= 0 && bytes+size > q {
		return fmt.Errorf("mailbox holds %d bytes: %w", bytes, wire.ErrMailboxQuota)
	}
	cap := l.opts.StorageCapBytes
	if cap < 0 {
		return nil
	}
	stored := l.st.bytes.Load() + b.st.bytes.Load() // committed, and this batch's
	need := stored + size - cap
	if need <= 0 {
		return nil
	}
	// Only bytes that mailboxes larger than this one hold above its size may
	// be evicted for it.
	var avail int64
	for _, m := range l.mboxes {
		if m != mb && m.bytes > bytes {
			avail += m.bytes - bytes
		}
	}
	if avail < need {
		return fmt.Errorf("%d bytes stored, cap %d: %w", stored, cap, wire.ErrStorageFull)
	}
	for need > 0 {
		var victim *mbox
		for _, m := range l.mboxes {
			if m != mb && m.entries > 0 && (victim == nil || m.bytes > victim.bytes) {
				victim = m
			}
		}
		if victim == nil {
			return fmt.Errorf("nothing to evict: %w", wire.ErrStorageFull)
		}
		freed, err := b.evictOldest(victim)
		if err != nil {
			return err
		}
		need -= freed
	}
	return nil
}

// evictOldest evicts the live entry of mb with the lowest stored_at among
// the first live entry of each origin, leaving an EXPIRED fate.
func (b *batchCtx) evictOldest(mb *mbox) (int64, error) {
	type cand struct {
		oid      uint32
		seq      uint64
		storedAt uint64
		d        [32]byte
	}
	var best *cand
	it := b.txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	for oid := range mb.kt {
		prefix := entryPrefix(mb.id, oid)
		for it.Seek(entryKey(mb.id, oid, max(mb.lowLive[oid], 1))); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			if m := item.UserMeta(); m != kindLocalEntry && m != kindImportedEntry {
				continue
			}
			k := item.KeyCopy(nil)
			_, _, seq, _ := parseEntryKey(k)
			v, err := item.ValueCopy(nil)
			if err != nil {
				it.Close()
				return 0, err
			}
			c := cand{oid: oid, seq: seq}
			r, err := decodeEntry(k, v)
			if err == nil && r.kind == kindImportedEntry {
				s, perr := wire.ParseSignedReceipt(r.stamp)
				if perr != nil {
					err = corrupt(k, "stamp: %v", perr)
				} else {
					c.storedAt, c.d = s.StoredAtMs, s.CID.Digest()
				}
			} else if err == nil {
				c.storedAt, c.d = r.storedAtMs, r.digest
			}
			if err != nil {
				// A corrupt entry goes first: it cannot be served anyway,
				// but it cannot be counted down either; skip it.
				continue
			}
			if best == nil || c.storedAt < best.storedAt {
				best = &c
			}
			break
		}
	}
	it.Close()
	if best == nil {
		return 0, fmt.Errorf("mailbox %s counts %d entries but none is readable: %w", mb.addr, mb.entries, wire.ErrStorageFull)
	}
	r, ok, err := b.fate(mb.id, best.d)
	if err != nil {
		return 0, err
	}
	if !ok || r.fate != FateStored {
		// Without its fate record the entry cannot be counted down; drop
		// it from the scan and let the caller pick again.
		mb.lowLive[best.oid] = best.seq + 1
		return 0, nil
	}
	if err := b.expireEntry(mb, r, best.d, true); err != nil {
		return 0, err
	}
	mb.lowLive[best.oid] = best.seq + 1
	return int64(r.size), nil
}

// needsPlaceholder says whether a removed entry of another origin must stay
// as a mark so known_through can still advance over its seq later.
func (b *batchCtx) needsPlaceholder(mb *mbox, oid uint32, seq uint64) bool {
	return oid != b.l.own && seq > mb.kt[oid]
}

// expireEntry removes a live entry at its expiry or by eviction and records
// its EXPIRED fate.
func (b *batchCtx) expireEntry(mb *mbox, r fateRec, d [32]byte, evicted bool) error {
	k := entryKey(mb.id, r.origin, r.seq)
	if b.needsPlaceholder(mb, r.origin, r.seq) {
		mark := entryRec{kind: kindExpiredMark, digest: d, expiry: r.expiry, size: r.size}
		if err := b.set(k, mark.encode(), kindExpiredMark, b.retain(r.expiry), markSlack); err != nil {
			return err
		}
		b.addDue(uint64(b.retain(r.expiry)), mb.id, d)
	} else if err := b.txn.Delete(k); err != nil {
		return err
	}
	r.fate = FateExpired
	if err := b.set(fateKey(mb.id, d), r.encode(), kindFate, b.retain(r.expiry), markSlack); err != nil {
		return err
	}
	mb.entries--
	mb.bytes -= int64(r.size)
	b.st.entries.Add(-1)
	b.st.bytes.Add(-int64(r.size))
	b.st.deletedBytes.Add(int64(r.size))
	if evicted {
		b.st.evicted.Add(1)
	} else {
		b.st.expired.Add(1)
	}
	b.touch(mb)
	b.recon = append(b.recon, reconOp{mb: mb, set: SetEntries, d: d})
	return nil
}

// ackEntry replaces a live entry by its tombstone, which keeps the owner's
// ack and the entry's stamp. An entry whose record is corrupt is left as
// it is (errSkipCorrupt).
func (b *batchCtx) ackEntry(mb *mbox, r fateRec, d [32]byte, ownerAck []byte) (Tombstone, error) {
	k := entryKey(mb.id, r.origin, r.seq)
	stamp, err := b.entryStamp(mb, r, k)
	if err != nil {
		return Tombstone{}, err
	}
	mark := entryRec{kind: kindTombstoneMark, digest: d, expiry: r.expiry, size: r.size, ownerAck: ownerAck, tombStamp: stamp}
	if err := b.set(k, mark.encode(), kindTombstoneMark, b.retain(r.expiry), markSlack); err != nil {
		return Tombstone{}, err
	}
	r.fate = FateAcked
	if err := b.set(fateKey(mb.id, d), r.encode(), kindFate, b.retain(r.expiry), markSlack); err != nil {
		return Tombstone{}, err
	}
	mb.entries--
	mb.bytes -= int64(r.size)
	mb.tombstones++
	b.st.entries.Add(-1)
	b.st.bytes.Add(-int64(r.size))
	b.st.deletedBytes.Add(int64(r.size))
	b.st.tombstones.Add(1)
	b.st.acked.Add(1)
	b.touch(mb)
	b.recon = append(b.recon, reconOp{mb: mb, set: SetEntries, d: d}, reconOp{mb: mb, set: SetTombstones, d: d, add: true})
	return Tombstone{Mailbox: mb.addr, CID: wire.CIDFromDigest(d), Origin: b.l.origins[r.origin], Seq: r.seq, Expiry: r.expiry,
		OwnerAck: ownerAck, Stamp: stamp}, nil
}

// errSkipCorrupt marks an entry whose record is corrupt: an ack leaves it.
var errSkipCorrupt = errors.New("store: corrupt entry record")

// entryStamp returns the encoded origin stamp of the live entry at k.
func (b *batchCtx) entryStamp(mb *mbox, r fateRec, k []byte) ([]byte, error) {
	item, err := b.txn.Get(k)
	if err != nil {
		return nil, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	rec, err := decodeEntry(k, v)
	if err == nil && rec.kind != kindLocalEntry && rec.kind != kindImportedEntry {
		err = corrupt(k, "fate stored, record of kind %d", rec.kind)
	}
	var s wire.SignedReceipt
	if err == nil {
		s, err = b.l.stampOf(b.txn, mb, b.l.origins[r.origin], r.seq, k, &rec)
	}
	if errors.Is(err, ErrCorrupt) {
		b.st.corrupt.Add(1)
		b.l.log.Warn("store: ack of a corrupt entry left undone", "err", err)
		return nil, errSkipCorrupt
	}
	if err != nil {
		return nil, err
	}
	return s.Marshal()
}

// advance raises known_through of (mb, oid) over the seqs now present.
func (b *batchCtx) advance(mb *mbox, oid uint32) error {
	if oid == b.l.own {
		return nil
	}
	kt := mb.kt[oid]
	start := kt
	for {
		_, err := b.txn.Get(entryKey(mb.id, oid, kt+1))
		if errors.Is(err, badger.ErrKeyNotFound) {
			break
		}
		if err != nil {
			return err
		}
		kt++
	}
	if kt != start {
		mb.kt[oid] = kt
		b.touchKT(mb, oid)
	}
	return nil
}

func (b *batchCtx) doImport(o *op) error {
	l := b.l
	s := &o.imp.Stamp
	env := o.imp.Envelope
	addr, err := wire.EnvelopeMailbox(env)
	if err != nil {
		b.reject(o, fmt.Errorf("import: %w", err))
		return nil
	}
	if len(env) > wire.MaxEnvelope {
		b.reject(o, fmt.Errorf("import: envelope of %d bytes: %w", len(env), wire.ErrMalformed))
		return nil
	}
	if s.Seq == 0 || len(s.Origin) == 0 || len(s.Origin) > wire.MaxPeerIDLen {
		b.reject(o, fmt.Errorf("import: stamp: %w", wire.ErrMalformed))
		return nil
	}
	if addr != s.Mailbox || wire.CIDOf(env) != s.CID {
		b.reject(o, fmt.Errorf("import: stamp does not match the envelope: %w", wire.ErrBadSignature))
		return nil
	}
	if int64(s.Expiry) <= b.now || int64(s.Expiry) > b.now+int64((l.opts.MaxTTL+importSkew)/time.Second) {
		b.reject(o, fmt.Errorf("import: expiry %d: %w", s.Expiry, wire.ErrExpiryInvalid))
		return nil
	}
	stamp, err := s.Marshal()
	if err != nil {
		b.reject(o, fmt.Errorf("import: stamp: %w", err))
		return nil
	}
	digest := s.CID.Digest()
	mb := l.mboxes[addr]
	if b.inBatch[digest] != nil {
		o.appendRes.Duplicate = true
		b.st.duplicates.Add(1)
		return nil
	}
	if _, fate, err := b.known(mb, digest); err != nil {
		return err
	} else if fate != FateUnknown {
		o.appendRes.Duplicate = true
		b.st.duplicates.Add(1)
		return nil
	}
	if oid, ok := l.originIDs[s.Origin]; ok && mb != nil {
		_, err := b.txn.Get(entryKey(mb.id, oid, s.Seq))
		if err == nil {
			b.reject(o, fmt.Errorf("import: origin %s signed another entry with seq %d: %w", s.Origin, s.Seq, wire.ErrBadSignature))
			return nil
		}
		if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
	}
	size := int64(len(env))
	if err := b.admit(mb, size); err != nil {
		b.reject(o, fmt.Errorf("import: %w", err))
		return nil
	}
	mb = b.mailbox(addr)
	oid, err := b.originID(s.Origin)
	if err != nil {
		return err
	}
	rec := entryRec{kind: kindImportedEntry, stamp: stamp, envelope: env}
	if err := b.set(entryKey(mb.id, oid, s.Seq), rec.encode(), kindImportedEntry, int64(s.Expiry), 0); err != nil {
		return err
	}
	if err := b.addLive(mb, oid, s.Seq, digest, s.Expiry, size); err != nil {
		return err
	}
	b.touchKT(mb, oid)
	if oid == l.own {
		mb.kt[oid] = max(mb.kt[oid], s.Seq)
	} else if err := b.advance(mb, oid); err != nil {
		return err
	}
	if lo, ok := mb.lowLive[oid]; ok && s.Seq < lo {
		mb.lowLive[oid] = s.Seq
	}
	// A deposit of the same CID later in this batch answers with this stamp.
	o.appendRes = AppendResult{Receipt: *s, Fate: FateStored}
	b.inBatch[digest] = &pendingAppend{op: o}
	b.stored = append(b.stored, StoredEntry{Envelope: env, Stamp: *s})
	b.st.imports.Add(1)
	return nil
}

func (b *batchCtx) doAck(o *op) error {
	mb := b.l.mboxes[o.mb]
	if mb == nil {
		return nil
	}
	for i, c := range o.cids {
		d := c.Digest()
		r, ok, err := b.fate(mb.id, d)
		if err != nil {
			return err
		}
		if !ok || r.fate != FateStored {
			continue
		}
		t, err := b.ackEntry(mb, r, d, o.acks[i])
		if errors.Is(err, errSkipCorrupt) {
			continue
		}
		if err != nil {
			return err
		}
		o.tombs = append(o.tombs, t)
	}
	return nil
}

func (b *batchCtx) doTombstones(o *op) error {
	l := b.l
	for _, t := range o.tombs {
		if _, err := wire.ParseCID(t.CID[:]); err != nil || t.Seq == 0 || len(t.Origin) == 0 ||
			len(t.Origin) > wire.MaxPeerIDLen || t.Mailbox[0] != 0x12 || t.Mailbox[1] != 0x20 ||
			len(t.OwnerAck) == 0 || len(t.OwnerAck) > wire.MaxOwnerAckLen || len(t.Stamp) == 0 || len(t.Stamp) > maxStampLen {
			l.log.Warn("store: malformed tombstone ignored", "cid", t.CID)
			continue
		}
		if int64(t.Expiry) <= b.now {
			continue
		}
		d := t.CID.Digest()
		mb := l.mboxes[t.Mailbox]
		if mb != nil {
			r, fate, err := b.known(mb, d)
			if err != nil {
				return err
			}
			if fate == FateStored {
				if _, err := b.ackEntry(mb, r, d, t.OwnerAck); errors.Is(err, errSkipCorrupt) {
					continue
				} else if err != nil {
					return err
				}
				o.count++
				continue
			}
			if fate != FateUnknown {
				continue
			}
		}
		mb = b.mailbox(t.Mailbox)
		oid, err := b.originID(t.Origin)
		if err != nil {
			return err
		}
		k := entryKey(mb.id, oid, t.Seq)
		if _, err := b.txn.Get(k); err == nil {
			continue // the seq holds another CID: keep what we have
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		mark := entryRec{kind: kindTombstoneMark, digest: d, expiry: t.Expiry, ownerAck: t.OwnerAck, tombStamp: t.Stamp}
		if err := b.set(k, mark.encode(), kindTombstoneMark, b.retain(t.Expiry), markSlack); err != nil {
			return err
		}
		f := fateRec{fate: FateAcked, origin: oid, seq: t.Seq, expiry: t.Expiry}
		if err := b.set(fateKey(mb.id, d), f.encode(), kindFate, b.retain(t.Expiry), markSlack); err != nil {
			return err
		}
		l.filter.add(d)
		b.addDue(t.Expiry, mb.id, d)
		mb.tombstones++
		b.st.tombstones.Add(1)
		b.touch(mb)
		b.touchKT(mb, oid)
		if err := b.advance(mb, oid); err != nil {
			return err
		}
		b.recon = append(b.recon, reconOp{mb: mb, set: SetTombstones, d: d, add: true})
		o.count++
	}
	return nil
}

func (b *batchCtx) doAdopt(o *op) error {
	mb := b.mailbox(o.mb)
	oid, err := b.originID(o.origin)
	if err != nil {
		return err
	}
	b.touchKT(mb, oid)
	if o.seq > mb.kt[oid] {
		mb.kt[oid] = o.seq
	}
	return nil
}

// addDue schedules the sweep to look at digest d of mailbox mbid at due.
// The commit writes one X record per (due, mailbox).
func (b *batchCtx) addDue(due uint64, mbid uint32, d [32]byte) {
	k := [2]uint64{due, uint64(mbid)}
	if b.dues == nil {
		b.dues = map[[2]uint64][][32]byte{}
	}
	b.dues[k] = append(b.dues[k], d)
}

func (b *batchCtx) writeDues() error {
	l := b.l
	for k, ds := range b.dues {
		for len(ds) > 0 {
			n := min(len(ds), l.chunk)
			l.nextDue++
			if err := b.txn.Set(dueKey(k[0], uint32(k[1]), l.nextDue), encodeDue(ds[:n])); err != nil {
				return err
			}
			ds = ds[n:]
		}
	}
	return nil
}

func (b *batchCtx) doSweep(o *op) error {
	l := b.l
	type dueRec struct {
		key []byte
		ds  [][32]byte
	}
	var recs []dueRec
	total := 0
	it := b.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pDue}})
	end := binary.BigEndian.AppendUint64([]byte{pDue}, uint64(b.now)+1)
	for it.Seek([]byte{pDue}); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		if string(k) >= string(end) {
			break
		}
		var ds [][32]byte
		err := it.Item().Value(func(v []byte) error {
			var err error
			ds, err = decodeDue(k, v)
			return err
		})
		if errors.Is(err, ErrCorrupt) {
			b.st.corrupt.Add(1)
			l.log.Error("store: corrupt expiry record dropped", "err", err)
			ds = nil
		} else if err != nil {
			it.Close()
			return err
		}
		if len(recs) > 0 && total+len(ds) > l.chunk {
			o.more = true
			break
		}
		recs = append(recs, dueRec{key: k, ds: ds})
		total += len(ds)
	}
	it.Close()
	for _, rec := range recs {
		if err := b.txn.Delete(rec.key); err != nil {
			return err
		}
		due, mbid, ok := parseDueKey(rec.key)
		if !ok {
			continue
		}
		mb := l.byID[mbid]
		if mb == nil {
			continue
		}
		for _, d := range rec.ds {
			if err := b.sweepOne(o, mb, due, d); err != nil {
				return err
			}
		}
	}
	return nil
}

// sweepOne handles one digest whose wake-up time due has come.
func (b *batchCtx) sweepOne(o *op, mb *mbox, due uint64, d [32]byte) error {
	r, ok, err := b.fate(mb.id, d)
	if err != nil {
		return err
	}
	if !ok || int64(r.expiry) > b.now {
		return nil
	}
	ek := entryKey(mb.id, r.origin, r.seq)
	switch r.fate {
	case FateStored:
		if err := b.expireEntry(mb, r, d, false); err != nil {
			return err
		}
		o.count++
	case FateAcked:
		if due < r.expiry {
			return nil
		}
		mb.tombstones--
		b.st.tombstones.Add(-1)
		b.touch(mb)
		b.recon = append(b.recon, reconOp{mb: mb, set: SetTombstones, d: d})
		if b.needsPlaceholder(mb, r.origin, r.seq) {
			mark := entryRec{kind: kindExpiredMark, digest: d, expiry: r.expiry, size: r.size}
			if err := b.set(ek, mark.encode(), kindExpiredMark, b.retain(r.expiry), markSlack); err != nil {
				return err
			}
			b.addDue(uint64(b.retain(r.expiry)), mb.id, d)
		} else if err := b.txn.Delete(ek); err != nil {
			return err
		}
		o.count2++
	case FateExpired:
		if b.retain(r.expiry) <= b.now || !b.needsPlaceholder(mb, r.origin, r.seq) {
			if err := b.txn.Delete(ek); err != nil {
				return err
			}
			o.count2++
		} else if int64(due) < b.retain(r.expiry) {
			b.addDue(uint64(b.retain(r.expiry)), mb.id, d)
		}
	}
	return nil
}

func (b *batchCtx) doLoadIndex(o *op) error {
	l := b.l
	mb := l.mboxes[o.mb]
	if mb == nil || mb.idx[o.set] != nil {
		return nil
	}
	var items [][32]byte
	prefix := fatePrefix(mb.id)
	it := b.txn.NewIterator(badger.IteratorOptions{PrefetchValues: false, Prefix: prefix})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		var r fateRec
		err := item.Value(func(v []byte) error {
			var err error
			r, err = decodeFate(k, v)
			return err
		})
		if errors.Is(err, ErrCorrupt) {
			b.st.corrupt.Add(1)
			continue
		}
		if err != nil {
			return err
		}
		if int64(r.expiry) <= b.now {
			continue
		}
		if (o.set == SetEntries && r.fate == FateStored) || (o.set == SetTombstones && r.fate == FateAcked) {
			items = append(items, [32]byte(k[len(prefix):]))
		}
	}
	x := newDigestIndex(items)
	x.bytes = x.memBytes()
	b.st.indexBytes.Add(x.bytes)
	mb.idx[o.set] = x
	mb.total[o.set], mb.totalOK[o.set] = x.rangeAcc(nil, nil), true
	l.trackIndex(mb, o.set, x)
	return nil
}

// keyFlush is a sentinel written and dropped to make badger flush its
// memtables (DropPrefix flushes them first); it holds nothing.
var keyFlush = []byte{pMeta, 'f'}

// flushMemtables writes every memtable to a table file, so a compaction
// can drop what they delete. It blocks badger's writes while it runs, so
// only the commit goroutine calls it, between commits.
func (l *Log) flushMemtables() error {
	if err := l.db.Update(func(txn *badger.Txn) error { return txn.Set(keyFlush, nil) }); err != nil {
		return err
	}
	return l.db.DropPrefix(keyFlush)
}
