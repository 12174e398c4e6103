package store

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/skl"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// Log is a relay's mailbox log (SPEC.md §6, §7, §10.4–§10.10, §13): every
// mailbox's entries in (origin, seq) order, their fates, tombstones,
// watermarks, quotas and reconciliation indexes, on one badger database.
//
// All writes go through one commit goroutine that gathers the operations
// queued meanwhile (appends, imports, acks, sweeps …) into one badger
// transaction, signs the receipts of its appends with one signature, and
// commits it with one fsync (group commit, SPEC.md §13). Every caller waits
// for that fsync. A Log is safe for concurrent use.
//
// Clocks: expiries, fate retention and stored_at use LogOptions.Now. Badger's
// own TTL runs on the wall clock, so the log gives badger a wall-clock
// deadline of wall_now + (due − now) and never relies on it for
// correctness: reads filter by the stored expiry against Now, and the sweep
// deletes by the expiry index against Now. Badger's TTL is a backstop that
// keeps space bounded if the sweep falls behind.
//
// Lock order: closeMu (read) → mu. The commit goroutine holds mu while it
// applies a batch and commits it, so readers never see in-memory state
// (counters, known_through, indexes) ahead of what a badger read sees.
type Log struct {
	opts  LogOptions
	db    *badger.DB
	now   func() time.Time
	log   *slog.Logger
	own   uint32 // oid of opts.Origin
	mem   bool
	batch int
	// chunk bounds the entries one ack, tombstone or sweep operation
	// touches, so a transaction of maxBatchHeavy of them plus a full batch
	// of appends stays within badger's transaction limits.
	chunk int
	// maxBytes bounds the envelope bytes of one group commit.
	maxBytes int

	closeMu  sync.RWMutex
	closed   bool
	stopOnce sync.Once

	reqs       chan *op
	commitDone chan struct{}
	// queued counts operations submitted and not yet committed (those
	// waiting to enter reqs included); lastCommitNs is the duration of the
	// latest group commit, ewmaCommitNs a moving average of it (Backlog).
	queued       atomic.Int64
	lastCommitNs atomic.Int64
	ewmaCommitNs atomic.Int64
	bgStop       chan struct{}
	bgDone       chan struct{}
	trimDone     chan struct{} // closed when trimLoop returns (or at open, without it)

	mu        sync.RWMutex
	failed    atomic.Pointer[error] // set once a commit failed
	mboxes    map[wire.Mailbox]*mbox
	byID      map[uint32]*mbox
	origins   []peer.ID // by oid; origins[0] is unused
	originIDs map[peer.ID]uint32
	holesMu   sync.Mutex
	holes     map[[2]uint32]uint64 // (mbid, oid) → lowest corrupt seq met; holesMu
	order     []*mbox              // every mailbox, those loaded at open first
	mbidSeq   uint32               // how many mailbox ids newMailboxID tried
	nextBatch uint64
	nextDue   uint64 // uniq part of X keys: wall-clock nanoseconds at open, then +1

	st    counters
	trees treeCache

	// filter: committer only (built in load).
	filter *fateFilter

	// compactFloor is the least deleted bytes that make GC compact.
	compactFloor int64

	// Reconciliation indexes in memory (LRU, opts.IndexBudget): written by
	// the commit goroutine with mu held.
	idxLoaded map[*digestIndex]idxOwner
	idxBytes  int64
	idxClock  atomic.Int64 // recency stamps of digestIndex.used

	// beforeCommit, if set, runs in the commit goroutine between applying
	// a batch and committing it (tests only; set before the first write).
	beforeCommit func()

	// prekeys: committer only.
	prekeys     map[[2]uint32]*prekeyCount
	prekeyBytes int64
}

type counters struct {
	entries, bytes, mailboxes, tombstones, indexBytes, deletedBytes atomic.Int64
	appends, imports, duplicates, acked, expired, evicted, corrupt  atomic.Uint64
	rejQuota, rejFull, rejOther, commits, commitOps, gcRuns         atomic.Uint64
	indexEvictions                                                  atomic.Uint64
}

// add adds the counts of d (one committed batch) to c.
func (c *counters) add(d *counters) {
	for _, p := range [...][2]*atomic.Int64{{&c.entries, &d.entries}, {&c.bytes, &d.bytes},
		{&c.mailboxes, &d.mailboxes}, {&c.tombstones, &d.tombstones}, {&c.indexBytes, &d.indexBytes},
		{&c.deletedBytes, &d.deletedBytes}} {
		if v := p[1].Load(); v != 0 {
			p[0].Add(v)
		}
	}
	for _, p := range [...][2]*atomic.Uint64{{&c.appends, &d.appends}, {&c.imports, &d.imports},
		{&c.duplicates, &d.duplicates}, {&c.acked, &d.acked}, {&c.expired, &d.expired},
		{&c.evicted, &d.evicted}, {&c.corrupt, &d.corrupt}, {&c.rejQuota, &d.rejQuota},
		{&c.rejFull, &d.rejFull}, {&c.rejOther, &d.rejOther}, {&c.commits, &d.commits},
		{&c.commitOps, &d.commitOps}, {&c.gcRuns, &d.gcRuns}, {&c.indexEvictions, &d.indexEvictions}} {
		if v := p[1].Load(); v != 0 {
			p[0].Add(v)
		}
	}
}

// mbox is the in-memory state of one mailbox. Fields are written by the
// commit goroutine with Log.mu held and read with Log.mu held.
type mbox struct {
	id         uint32
	addr       wire.Mailbox
	entries    int64
	bytes      int64
	tombstones int64
	kt         map[uint32]uint64 // known_through by oid (present = known origin)
	lowLive    map[uint32]uint64 // hint: no live entry of oid below this seq
	idx        [3]*digestIndex   // by Set; nil until loaded
	// total[set] accumulates the whole set (Summary) once totalOK[set]:
	// set when its index is first loaded, then kept up to date by every
	// commit, also after the index is dropped for the budget.
	total   [3]wire.FingerprintAcc
	totalOK [3]bool
}

// OpenLog opens (or creates) a log.
func OpenLog(opts LogOptions) (*Log, error) {
	if opts.Origin == "" || len(opts.Origin) > wire.MaxPeerIDLen {
		return nil, errors.New("store: LogOptions.Origin is required")
	}
	if opts.Signer == nil {
		return nil, errors.New("store: LogOptions.Signer is required")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DefaultTTL == 0 {
		opts.DefaultTTL = DefaultTTL
	}
	if opts.MaxTTL == 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.MailboxQuotaBytes == 0 {
		opts.MailboxQuotaBytes = DefaultMailboxQuotaBytes
	}
	if opts.MailboxQuotaEntries == 0 {
		opts.MailboxQuotaEntries = DefaultMailboxQuotaEntries
	}
	if opts.StorageCapBytes == 0 {
		opts.StorageCapBytes = DefaultStorageCapBytes
	}
	if opts.FateRetention == 0 {
		opts.FateRetention = DefaultFateRetention
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = DefaultGCInterval
	}
	if opts.PrekeyCapBytes == 0 {
		opts.PrekeyCapBytes = DefaultPrekeyCapBytes
	}
	if opts.MaxCommitBatch <= 0 {
		opts.MaxCommitBatch = DefaultMaxCommitBatch
	}
	if opts.MaxCommitBatch > MaxCommitBatch {
		opts.MaxCommitBatch = MaxCommitBatch
	}
	if opts.MemoryBudget == 0 {
		opts.MemoryBudget = DefaultMemoryBudget
	}
	if opts.MemoryBudget > 0 {
		opts.MemoryBudget = max(opts.MemoryBudget, MinMemoryBudget)
	}
	if opts.IndexBudget == 0 {
		opts.IndexBudget = -1
		if opts.MemoryBudget > 0 {
			opts.IndexBudget = opts.MemoryBudget / 4
		}
	}
	bo := badgerOptions(opts.Dir, opts.Logger).
		WithCompression(options.None). // envelopes are ciphertext
		WithNumVersionsToKeep(1)
	if opts.Dir != "" && opts.MemoryBudget > 0 {
		bo = budgetOptions(bo, opts.MemoryBudget)
	}
	// Envelopes stay inline in the LSM tree (badger's default value
	// threshold, 1 MiB, is above every envelope): a group commit then costs
	// one fsync (the memtable's write-ahead log) instead of two (value log
	// and write-ahead log), which measured 1.5–2× more durable appends per
	// second here (BENCHMARKS). Space of deleted and expired entries is
	// reclaimed when compactions rewrite their tables; GC still runs
	// value-log GC for any value that went to the value log.
	if opts.tweak != nil {
		opts.tweak(&bo)
	}
	if limit := bo.MemTableSize * 15 / 100; bo.ValueThreshold >= limit {
		bo.ValueThreshold = limit - 1 // badger requires it below its batch size
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open log: %w", err)
	}
	l := &Log{
		opts:         opts,
		db:           db,
		now:          opts.Now,
		log:          opts.Logger,
		mem:          opts.Dir == "",
		batch:        opts.MaxCommitBatch,
		reqs:         make(chan *op, 4*opts.MaxCommitBatch),
		commitDone:   make(chan struct{}),
		bgStop:       make(chan struct{}),
		bgDone:       make(chan struct{}),
		trimDone:     make(chan struct{}),
		mboxes:       make(map[wire.Mailbox]*mbox),
		byID:         make(map[uint32]*mbox),
		origins:      []peer.ID{""},
		originIDs:    make(map[peer.ID]uint32),
		holes:        make(map[[2]uint32]uint64),
		idxLoaded:    make(map[*digestIndex]idxOwner),
		prekeys:      make(map[[2]uint32]*prekeyCount),
		nextBatch:    1,
		nextDue:      uint64(time.Now().UnixNano()),
		compactFloor: 64 << 20,
	}
	// Badger refuses a transaction above 15% of a memtable in bytes, or
	// that divided by its skiplist node size in count; each entry an op
	// touches costs up to 4 writes.
	maxCount := int(bo.MemTableSize*15/100) / skl.MaxNodeSize
	l.chunk = min(1024, max(16, (maxCount/2-4*l.batch)/(4*maxBatchHeavy)))
	l.maxBytes = int(min(4<<20, bo.MemTableSize*15/100/2))
	if err := l.load(); err != nil {
		db.Close()
		return nil, err
	}
	l.st.indexBytes.Add(l.filter.memBytes())
	go l.run()
	l.startTrim()
	if opts.GCInterval > 0 {
		go l.background()
	} else {
		close(l.bgDone)
	}
	return l, nil
}

// budgetOptions sizes badger's own memory to budget (LogOptions.MemoryBudget).
func budgetOptions(bo badger.Options, budget int64) badger.Options {
	return bo.
		WithNumMemtables(2).
		WithMemTableSize(min(max(budget/4, 4<<20), 64<<20)).
		WithBlockCacheSize(0).
		WithIndexCacheSize(budget / 4).
		WithNumCompactors(2).
		WithValueLogFileSize(64 << 20)
}

// badgerOptions are the options shared by the log and the client store.
func badgerOptions(dir string, logger *slog.Logger) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{logger}).
		WithDetectConflicts(false).
		WithSyncWrites(true).
		WithMetricsEnabled(false)
	if dir == "" {
		bo = bo.WithInMemory(true).WithMemTableSize(16 << 20).WithBlockCacheSize(8 << 20)
	}
	return bo
}

// load reads the schema version, origins, mailboxes and watermarks.
func (l *Log) load() error {
	return l.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keySchema)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if err := txn.Set(keySchema, encodeU64(kindMeta, schemaVersion)); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			ver, err := decodeU64(keySchema, v, kindMeta)
			if err != nil {
				return fmt.Errorf("store: open log: %w", err)
			}
			if ver != schemaVersion {
				return fmt.Errorf("store: open log: schema version %d, want %d", ver, schemaVersion)
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for it.Seek([]byte{pOrigin}); it.ValidForPrefix([]byte{pOrigin}); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			b, err := decodeBytes(k, v, kindOrigin)
			if err != nil {
				return fmt.Errorf("store: open log: %w", err)
			}
			id, err := peer.IDFromBytes(b)
			if err != nil || len(k) != 5 {
				return fmt.Errorf("store: open log: %w", corrupt(k, "origin"))
			}
			oid := binary.BigEndian.Uint32(k[1:])
			for uint32(len(l.origins)) <= oid {
				l.origins = append(l.origins, "")
			}
			l.origins[oid] = id
			l.originIDs[id] = oid
		}
		for it.Seek([]byte{pMailbox}); it.ValidForPrefix([]byte{pMailbox}); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			r, err := decodeMailbox(k, v)
			if err != nil || len(k) != 5 {
				return fmt.Errorf("store: open log: mailbox record: %w", err)
			}
			mb := &mbox{id: binary.BigEndian.Uint32(k[1:]), addr: r.addr, entries: r.entries, bytes: r.bytes,
				tombstones: r.tombstones, kt: map[uint32]uint64{}, lowLive: map[uint32]uint64{}}
			l.mboxes[r.addr] = mb
			l.byID[mb.id] = mb
			l.order = append(l.order, mb)
			l.st.entries.Add(r.entries)
			l.st.bytes.Add(r.bytes)
			l.st.tombstones.Add(r.tombstones)
		}
		l.mbidSeq = uint32(len(l.order))
		l.st.mailboxes.Store(int64(len(l.mboxes)))
		for it.Seek([]byte{pKnown}); it.ValidForPrefix([]byte{pKnown}); it.Next() {
			k := it.Item().KeyCopy(nil)
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			seq, err := decodeU64(k, v, kindKnown)
			if err != nil || len(k) != 9 {
				return fmt.Errorf("store: open log: known_through record: %w", err)
			}
			mb := l.byID[binary.BigEndian.Uint32(k[1:])]
			if mb == nil {
				return fmt.Errorf("store: open log: %w", corrupt(k, "known_through of an unknown mailbox"))
			}
			mb.kt[binary.BigEndian.Uint32(k[5:])] = seq
		}
		// The next batch id follows the highest stored one.
		rit := txn.NewIterator(badger.IteratorOptions{Reverse: true, Prefix: []byte{pBatch}})
		defer rit.Close()
		rit.Seek([]byte{pBatch, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		if rit.Valid() {
			if k := rit.Item().Key(); len(k) == 9 {
				l.nextBatch = binary.BigEndian.Uint64(k[1:]) + 1
			}
		}
		l.filter = buildFateFilter(txn, 0)
		if err := l.loadPrekeys(txn); err != nil {
			return err
		}
		if oid, ok := l.originIDs[l.opts.Origin]; ok {
			l.own = oid
		} else {
			l.own = uint32(len(l.origins))
			l.origins = append(l.origins, l.opts.Origin)
			l.originIDs[l.opts.Origin] = l.own
			if err := txn.Set(originKey(l.own), encodeBytes(kindOrigin, []byte(l.opts.Origin))); err != nil {
				return err
			}
		}
		return nil
	})
}

// badgerLogger forwards badger's messages to slog.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Infof(f string, a ...any)    { b.l.Debug("badger: " + fmt.Sprintf(f, a...)) }
func (b badgerLogger) Debugf(string, ...any)       {}

// enter takes the close lock for the duration of a public call.
func (l *Log) enter() error {
	l.closeMu.RLock()
	if l.closed {
		l.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (l *Log) exit() { l.closeMu.RUnlock() }

// submit queues ops and waits until all are done or ctx ends.
func (l *Log) submit(ctx context.Context, ops ...*op) error {
	done, err := l.enqueue(ctx, ops)
	if err != nil {
		return err
	}
	return await(ctx, done, len(ops))
}

// enqueue hands ops to the commit goroutine, in order, and returns the
// channel each reports on when its commit is done.
func (l *Log) enqueue(ctx context.Context, ops []*op) (chan *op, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.exit()
	if failed := l.failed.Load(); failed != nil {
		return nil, fmt.Errorf("store: log failed earlier: %w", *failed)
	}
	done := make(chan *op, len(ops))
	l.queued.Add(int64(len(ops)))
	for i, o := range ops {
		o.done = done
		select {
		case l.reqs <- o:
		case <-ctx.Done():
			l.queued.Add(-int64(len(ops) - i)) // never queued
			return nil, ctx.Err()              // those queued may still be stored

		}
	}
	return done, nil
}

// await waits for n ops to report on done.
func await(ctx context.Context, done chan *op, n int) error {
	for range n {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Append stores one envelope with this relay as origin and returns its
// signed receipt once the group commit holding it is fsync'd. A known CID
// returns Duplicate and stores nothing. Errors wrap wire.ErrMailboxQuota,
// wire.ErrStorageFull, wire.ErrExpiryInvalid, wire.ErrMalformed, ErrClosed
// or the context's error; on error nothing was stored, except that if ctx
// ends while the append is in flight it may still be stored (a retry
// deduplicates).
func (l *Log) Append(ctx context.Context, d Deposit) (AppendResult, error) {
	o := &op{kind: opAppend, dep: d}
	if err := prepareAppend(o); err != nil {
		l.st.rejOther.Add(1)
		return AppendResult{}, err
	}
	if err := l.submit(ctx, o); err != nil {
		return AppendResult{}, err
	}
	return o.appendRes, o.err
}

// AppendMany appends deposits of a pipelined stream; each gets its own
// result, in order. They share group commits with each other and with
// concurrent callers.
//
// If ctx ends while some deposits are queued, every result carries ctx's
// error, but deposits already queued may still be stored (a retry
// deduplicates).
func (l *Log) AppendMany(ctx context.Context, ds []Deposit) []AppendManyResult {
	return l.AppendManyAsync(ctx, ds)()
}

// AppendManyAsync is AppendMany in two steps: it hands the batch to the
// log at once and returns; wait blocks until the batch is committed and
// returns its results. Batches handed over one after another (by one
// goroutine) are committed in that order, so a caller can give the log its
// next batch while the previous one is being written: a deposit stream
// then keeps the group commit full. ds may be reused once it returns; wait
// must be called once.
func (l *Log) AppendManyAsync(ctx context.Context, ds []Deposit) (wait func() []AppendManyResult) {
	out := make([]AppendManyResult, len(ds))
	ops := make([]*op, 0, len(ds))
	idx := make([]int, 0, len(ds))
	for i := range ds {
		o := &op{kind: opAppend, dep: ds[i]}
		if err := prepareAppend(o); err != nil {
			l.st.rejOther.Add(1)
			out[i].Err = err
			continue
		}
		ops = append(ops, o)
		idx = append(idx, i)
	}
	if len(ops) == 0 {
		return func() []AppendManyResult { return out }
	}
	done, err := l.enqueue(ctx, ops)
	return func() []AppendManyResult {
		if err == nil {
			err = await(ctx, done, len(ops))
		}
		for k, o := range ops {
			i := idx[k]
			if err != nil {
				out[i].Err = err
				continue
			}
			out[i] = AppendManyResult{AppendResult: o.appendRes, Err: o.err}
		}
		return out
	}
}

// Import stores an entry replicated from another origin with its stamp
// unchanged (SPEC.md §10.9). The caller has verified the stamp's signature;
// Import checks that it matches the envelope (wire.ErrBadSignature if not).
// It advances known_through for the stamp's origin over hole-free
// sequences. An origin that signed two CIDs with one seq gets
// wire.ErrBadSignature for the second.
func (l *Log) Import(ctx context.Context, envelope []byte, stamp *wire.SignedReceipt) (duplicate bool, err error) {
	r := l.ImportMany(ctx, []Import{{Envelope: envelope, Stamp: *stamp}})
	return r[0].Duplicate, r[0].Err
}

// ImportMany imports a batch of replicated entries; one result per entry,
// in order.
func (l *Log) ImportMany(ctx context.Context, entries []Import) []ImportResult {
	ops := make([]*op, len(entries))
	for i := range entries {
		ops[i] = &op{kind: opImport, imp: entries[i]}
	}
	err := l.submit(ctx, ops...)
	out := make([]ImportResult, len(entries))
	for i, o := range ops {
		if err != nil {
			out[i].Err = err
			continue
		}
		out[i] = ImportResult{Duplicate: o.appendRes.Duplicate, Err: o.err}
	}
	return out
}

// Ack deletes the listed entries of mailbox, leaving a tombstone for each
// that keeps ownerAcks[i], the owner's ack of cids[i] (a wire.OwnerAck
// encoding, SPEC.md §6.3, §10.6; the caller has verified it). Unknown or
// already acked CIDs are ignored. A large ack is applied in several
// transactions; each is durable before the next starts, and an ack
// interrupted by a crash can be repeated.
func (l *Log) Ack(ctx context.Context, mailbox wire.Mailbox, cids []wire.CID, ownerAcks [][]byte) (AckResult, error) {
	var res AckResult
	if len(ownerAcks) != len(cids) {
		return res, fmt.Errorf("ack: %d owner acks for %d cids: %w", len(ownerAcks), len(cids), wire.ErrMalformed)
	}
	for i, a := range ownerAcks {
		if len(a) == 0 || len(a) > wire.MaxOwnerAckLen {
			return res, fmt.Errorf("ack: owner ack %d of %d bytes: %w", i, len(a), wire.ErrMalformed)
		}
	}
	for len(cids) > 0 {
		k := min(len(cids), l.chunk)
		o := &op{kind: opAck, mb: mailbox, cids: cids[:k], acks: ownerAcks[:k]}
		if err := l.submit(ctx, o); err != nil {
			return res, err
		}
		if o.err != nil {
			return res, o.err
		}
		res.Acked += len(o.tombs)
		res.Tombstones = append(res.Tombstones, o.tombs...)
		cids, ownerAcks = cids[k:], ownerAcks[k:]
	}
	return res, nil
}

// ImportTombstones applies tombstones replicated from another replica
// (SPEC.md §10.9): a held entry is deleted, an unknown one is recorded as
// acked so it is never stored later. It returns how many changed state.
func (l *Log) ImportTombstones(ctx context.Context, ts []Tombstone) (int, error) {
	n := 0
	for len(ts) > 0 {
		k := min(len(ts), l.chunk)
		o := &op{kind: opTombstones, tombs: ts[:k]}
		if err := l.submit(ctx, o); err != nil {
			return n, err
		}
		if o.err != nil {
			return n, o.err
		}
		n += o.count
		ts = ts[k:]
	}
	return n, nil
}

// AdoptKnownThrough raises known_through of (mailbox, origin) to seq, as
// SPEC.md §10.10 allows after a complete reconciliation with the origin.
func (l *Log) AdoptKnownThrough(ctx context.Context, mailbox wire.Mailbox, origin peer.ID, seq uint64) error {
	if len(origin) == 0 || len(origin) > wire.MaxPeerIDLen {
		return fmt.Errorf("adopt known_through: origin: %w", wire.ErrMalformed)
	}
	o := &op{kind: opAdopt, mb: mailbox, origin: origin, seq: seq}
	if err := l.submit(ctx, o); err != nil {
		return err
	}
	return o.err
}

// Sweep deletes entries whose expiry has passed on the log's clock (writing
// EXPIRED fates and fixing the quota counters) and drops expired tombstones.
// The background loop calls it every GCInterval.
func (l *Log) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	for {
		o := &op{kind: opSweep}
		if err := l.submit(ctx, o); err != nil {
			return res, err
		}
		if o.err != nil {
			return res, o.err
		}
		res.Expired += o.count
		res.Tombstones += o.count2
		if !o.more {
			return res, nil
		}
	}
}

// GC reclaims the space of deleted entries. The background loop calls it
// every GCInterval. Envelopes are stored inline in badger's LSM tree, so
// their space comes back when compactions rewrite the tables that hold
// them; badger compacts on its own as writes flow, but not while a relay
// is idle. So GC flushes the memtable and compacts the whole tree (badger's
// Flatten) once the envelope bytes deleted since the last time (swept,
// acked, evicted) reach both the live bytes and a floor (64 MiB): the
// rewrite then costs at most as much as the space it returns. It also runs
// value-log GC for anything that went to the value log. On an in-memory log
// it does nothing.
func (l *Log) GC() error {
	if l.mem {
		return nil
	}
	deleted := l.st.deletedBytes.Load()
	if deleted >= l.compactFloor && deleted >= l.st.bytes.Load() {
		// The deletions must reach table files first: flush through the
		// commit goroutine (a flush blocks badger's writes), then compact
		// concurrently with new commits.
		o := &op{kind: opFlush}
		if err := l.submit(context.Background(), o); err != nil {
			return err
		}
		if o.err != nil {
			return fmt.Errorf("store: flush: %w", o.err)
		}
		l.st.deletedBytes.Add(-deleted)
		if err := l.enter(); err != nil {
			return err
		}
		err := l.db.Flatten(1)
		l.exit()
		if err != nil {
			return fmt.Errorf("store: compact: %w", err)
		}
		l.st.gcRuns.Add(1)
	}
	if err := l.enter(); err != nil {
		return err
	}
	defer l.exit()
	return runValueLogGC(l.db, &l.st.gcRuns)
}

func runValueLogGC(db *badger.DB, runs *atomic.Uint64) error {
	if db.Opts().InMemory {
		return nil
	}
	for i := 0; i < 100; i++ {
		err := db.RunValueLogGC(0.5)
		switch {
		case err == nil:
			runs.Add(1)
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return nil
		default:
			return fmt.Errorf("store: value-log gc: %w", err)
		}
	}
	return nil
}

func (l *Log) background() {
	defer close(l.bgDone)
	t := time.NewTicker(l.opts.GCInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-l.bgStop
		cancel()
	}()
	for {
		select {
		case <-l.bgStop:
			return
		case <-t.C:
		}
		if res, err := l.Sweep(ctx); err != nil {
			if !errors.Is(err, ErrClosed) && ctx.Err() == nil {
				l.log.Error("store: sweep", "err", err)
			}
		} else if res.Expired+res.Tombstones > 0 {
			l.log.Debug("store: sweep", "expired", res.Expired, "tombstones", res.Tombstones)
		}
		if err := l.GC(); err != nil && !errors.Is(err, ErrClosed) {
			l.log.Error("store: gc", "err", err)
		}
	}
}

// Close stops the background loop, waits for in-flight commits and closes
// the database. Calls after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.stopOnce.Do(func() { close(l.bgStop) })
	<-l.bgDone
	<-l.trimDone
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.closeMu.Unlock()
	l.reqs <- &op{kind: opStop}
	<-l.commitDone
	return l.db.Close()
}

// Stats returns the current counters. A group commit's changes are
// counted only once its fsync has returned, so Stats never reports an entry
// that a crash could still take back (a relay's stored-entries metric read
// right before a SIGKILL is at most what it holds after the restart).
func (l *Log) Stats() Stats {
	s := &l.st
	return Stats{
		Entries: s.entries.Load(), Bytes: s.bytes.Load(), Mailboxes: s.mailboxes.Load(),
		Tombstones: s.tombstones.Load(), IndexBytes: s.indexBytes.Load(),
		Appends: s.appends.Load(), Imports: s.imports.Load(), Duplicates: s.duplicates.Load(),
		Acked: s.acked.Load(), Expired: s.expired.Load(), Evicted: s.evicted.Load(),
		Corrupt: s.corrupt.Load(), RejectedQuota: s.rejQuota.Load(), RejectedFull: s.rejFull.Load(),
		RejectedOther: s.rejOther.Load(), Commits: s.commits.Load(), CommitOps: s.commitOps.Load(),
		GCRuns: s.gcRuns.Load(), IndexEvictions: s.indexEvictions.Load(),
	}
}

// KnownThrough returns known_through of every origin the log knows for
// mailbox (SPEC.md §7), sorted by origin bytes. Origins at 0 are omitted.
func (l *Log) KnownThrough(mailbox wire.Mailbox) []wire.Position {
	l.mu.RLock()
	defer l.mu.RUnlock()
	mb := l.mboxes[mailbox]
	if mb == nil {
		return nil
	}
	var out []wire.Position
	for _, o := range l.sortedOrigins(mb) {
		if w := l.watermark(mb, o.oid, o.kt); w > 0 {
			out = append(out, wire.Position{Origin: o.id, Seq: w})
		}
	}
	return out
}

type originKT struct {
	id  peer.ID
	oid uint32
	kt  uint64
}

// sortedOrigins lists mb's origins by peer ID bytes. Caller holds mu.
func (l *Log) sortedOrigins(mb *mbox) []originKT {
	out := make([]originKT, 0, len(mb.kt))
	for oid, kt := range mb.kt {
		out = append(out, originKT{id: l.origins[oid], oid: oid, kt: kt})
	}
	slices.SortFunc(out, func(a, b originKT) int { return cmp.Compare(a.id, b.id) })
	return out
}

// watermark is known_through, held below the lowest corrupt record met.
// Caller holds mu (read).
func (l *Log) watermark(mb *mbox, oid uint32, kt uint64) uint64 {
	l.holesMu.Lock()
	h, ok := l.holes[[2]uint32{mb.id, oid}]
	l.holesMu.Unlock()
	if ok && h <= kt {
		return h - 1
	}
	return kt
}

// mailboxPage is how many mailboxes Mailboxes reads under one lock.
const mailboxPage = 1024

// Mailboxes iterates over the mailboxes the log holds state for (those it
// loaded at open, then those created since, in that order), a page of
// mailboxPage at a time: each page is a snapshot taken under the log's read
// lock, so a large log is never copied whole and commits wait for one page
// at most. A mailbox created during the iteration may or may not be
// included; none is left out or repeated (mailboxes are never removed).
func (l *Log) Mailboxes() iter.Seq[MailboxInfo] {
	return func(yield func(MailboxInfo) bool) {
		page := make([]MailboxInfo, 0, mailboxPage)
		for next := 0; ; {
			page = page[:0]
			l.mu.RLock()
			end := len(l.order)
			for ; next < end && len(page) < mailboxPage; next++ {
				page = append(page, l.order[next].info())
			}
			l.mu.RUnlock()
			for _, in := range page {
				if !yield(in) {
					return
				}
			}
			if next >= end {
				return
			}
		}
	}
}

func (mb *mbox) info() MailboxInfo {
	return MailboxInfo{Mailbox: mb.addr, Entries: mb.entries, Bytes: mb.bytes, Tombstones: mb.tombstones}
}

// Mailbox returns the summary of one mailbox; ok is false if the log holds
// nothing for it.
func (l *Log) Mailbox(mailbox wire.Mailbox) (info MailboxInfo, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	mb := l.mboxes[mailbox]
	if mb == nil {
		return MailboxInfo{}, false
	}
	return mb.info(), true
}

func (l *Log) nowUnix() int64 { return l.now().Unix() }

// Fate returns what became of c in mailbox (SPEC.md §10.7).
func (l *Log) Fate(mailbox wire.Mailbox, c wire.CID) (Fate, error) {
	if err := l.enter(); err != nil {
		return FateUnknown, err
	}
	defer l.exit()
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	l.mu.RUnlock()
	if mb == nil {
		return FateUnknown, nil
	}
	var f Fate
	err := l.db.View(func(txn *badger.Txn) error {
		r, ok, err := getFate(txn, mb.id, c.Digest())
		if err != nil || !ok {
			return err
		}
		f = l.effectiveFate(r)
		return nil
	})
	return f, err
}

// effectiveFate applies the clock: a stored entry past its expiry is
// expired, and a fate past its retention is forgotten.
func (l *Log) effectiveFate(r fateRec) Fate {
	now := l.nowUnix()
	if int64(r.expiry)+int64(l.opts.FateRetention/time.Second) <= now {
		return FateUnknown
	}
	if r.fate == FateStored && int64(r.expiry) <= now {
		return FateExpired
	}
	return r.fate
}

func getFate(txn *badger.Txn, mbid uint32, d [32]byte) (fateRec, bool, error) {
	k := fateKey(mbid, d)
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fateRec{}, false, nil
	}
	if err != nil {
		return fateRec{}, false, err
	}
	var r fateRec
	err = item.Value(func(v []byte) error {
		var err error
		r, err = decodeFate(k, v)
		return err
	})
	return r, err == nil, err
}

// Tombstone returns the unexpired tombstone of c in mailbox, or ErrNotFound.
func (l *Log) Tombstone(mailbox wire.Mailbox, c wire.CID) (Tombstone, error) {
	if err := l.enter(); err != nil {
		return Tombstone{}, err
	}
	defer l.exit()
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	var origin peer.ID
	l.mu.RUnlock()
	if mb == nil {
		return Tombstone{}, ErrNotFound
	}
	var t Tombstone
	err := l.db.View(func(txn *badger.Txn) error {
		r, ok, err := getFate(txn, mb.id, c.Digest())
		if err != nil {
			return err
		}
		if !ok || r.fate != FateAcked || int64(r.expiry) <= l.nowUnix() {
			return ErrNotFound
		}
		l.mu.RLock()
		origin = l.origins[r.origin]
		l.mu.RUnlock()
		k := entryKey(mb.id, r.origin, r.seq)
		item, err := txn.Get(k)
		if err != nil {
			return fmt.Errorf("tombstone of %s: mark: %w", c, err)
		}
		var ownerAck, stamp []byte
		err = item.Value(func(v []byte) error {
			m, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			if m.kind != kindTombstoneMark || m.digest != c.Digest() {
				return corrupt(k, "acked %s, mark of kind %d for another digest", c, m.kind)
			}
			ownerAck, stamp = clone(m.ownerAck), clone(m.tombStamp)
			return nil
		})
		if err != nil {
			return err
		}
		t = Tombstone{Mailbox: mailbox, CID: c, Origin: origin, Seq: r.seq, Expiry: r.expiry, OwnerAck: ownerAck, Stamp: stamp}
		return nil
	})
	return t, err
}

// Get returns the live entry with this CID in mailbox, or ErrNotFound.
func (l *Log) Get(mailbox wire.Mailbox, c wire.CID) (StoredEntry, error) {
	if err := l.enter(); err != nil {
		return StoredEntry{}, err
	}
	defer l.exit()
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	l.mu.RUnlock()
	if mb == nil {
		return StoredEntry{}, ErrNotFound
	}
	var e StoredEntry
	err := l.db.View(func(txn *badger.Txn) error {
		r, ok, err := getFate(txn, mb.id, c.Digest())
		if err != nil {
			return err
		}
		if !ok || r.fate != FateStored {
			return ErrNotFound
		}
		l.mu.RLock()
		origin := l.origins[r.origin]
		l.mu.RUnlock()
		e, err = l.readEntry(txn, mb, r.origin, origin, r.seq)
		return err
	})
	return e, err
}

// GetBySeq returns the live entry (origin, seq) of mailbox, or ErrNotFound.
func (l *Log) GetBySeq(mailbox wire.Mailbox, origin peer.ID, seq uint64) (StoredEntry, error) {
	if err := l.enter(); err != nil {
		return StoredEntry{}, err
	}
	defer l.exit()
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	oid, ok := l.originIDs[origin]
	l.mu.RUnlock()
	if mb == nil || !ok {
		return StoredEntry{}, ErrNotFound
	}
	var e StoredEntry
	err := l.db.View(func(txn *badger.Txn) error {
		var err error
		e, err = l.readEntry(txn, mb, oid, origin, seq)
		return err
	})
	return e, err
}

// readEntry reads and rebuilds one live entry.
func (l *Log) readEntry(txn *badger.Txn, mb *mbox, oid uint32, origin peer.ID, seq uint64) (StoredEntry, error) {
	k := entryKey(mb.id, oid, seq)
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return StoredEntry{}, ErrNotFound
	}
	if err != nil {
		return StoredEntry{}, err
	}
	if m := item.UserMeta(); m != kindLocalEntry && m != kindImportedEntry {
		return StoredEntry{}, ErrNotFound
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return StoredEntry{}, err
	}
	e, live, err := l.buildEntry(txn, mb, origin, seq, k, v)
	if err != nil {
		l.noteCorrupt(mb.id, oid, seq, err)
		return StoredEntry{}, err
	}
	if !live {
		return StoredEntry{}, ErrNotFound
	}
	return e, nil
}

func (l *Log) noteCorrupt(mbid, oid uint32, seq uint64, err error) {
	if !errors.Is(err, ErrCorrupt) {
		return
	}
	l.st.corrupt.Add(1)
	l.log.Error("store: corrupt record", "err", err)
	l.holesMu.Lock()
	k := [2]uint32{mbid, oid}
	if h, ok := l.holes[k]; !ok || seq < h {
		l.holes[k] = seq
	}
	l.holesMu.Unlock()
}

// buildEntry decodes an E value into a StoredEntry. live is false for
// marks and for entries past their expiry on the log's clock. v must not
// be reused by the caller.
func (l *Log) buildEntry(txn *badger.Txn, mb *mbox, origin peer.ID, seq uint64, k, v []byte) (StoredEntry, bool, error) {
	r, err := decodeEntry(k, v)
	if err != nil {
		return StoredEntry{}, false, err
	}
	if r.kind != kindImportedEntry && r.kind != kindLocalEntry {
		return StoredEntry{}, false, nil
	}
	s, err := l.stampOf(txn, mb, origin, seq, k, &r)
	if err != nil {
		return StoredEntry{}, false, err
	}
	if int64(s.Expiry) <= l.nowUnix() {
		return StoredEntry{}, false, nil
	}
	return StoredEntry{Envelope: r.envelope, Stamp: s}, true, nil
}

// stampOf returns the origin stamp of a decoded entry record (local or
// imported) at key k = (mb, origin, seq): the stored stamp of an imported
// entry, or a local entry's receipt rebuilt with its batch's path and
// signature.
func (l *Log) stampOf(txn *badger.Txn, mb *mbox, origin peer.ID, seq uint64, k []byte, r *entryRec) (wire.SignedReceipt, error) {
	if r.kind == kindImportedEntry {
		s, err := wire.ParseSignedReceipt(r.stamp)
		if err != nil {
			return wire.SignedReceipt{}, corrupt(k, "stamp: %v", err)
		}
		if s.Seq != seq || s.Mailbox != mb.addr {
			return wire.SignedReceipt{}, corrupt(k, "stamp does not match its key")
		}
		return *s, nil
	}
	rc := wire.Receipt{Origin: origin, Mailbox: mb.addr, CID: wire.CIDFromDigest(r.digest), Seq: seq,
		StoredAtMs: r.storedAtMs, Expiry: r.expiry}
	t, err := l.trees.get(txn, r.batch, k)
	if err != nil {
		return wire.SignedReceipt{}, err
	}
	n := len(t.rec.leaves)
	if int(r.index) >= n {
		return wire.SignedReceipt{}, corrupt(k, "leaf %d of a batch of %d", r.index, n)
	}
	leaf, err := wire.ReceiptLeaf(&rc)
	if err != nil {
		return wire.SignedReceipt{}, corrupt(k, "receipt: %v", err)
	}
	if leaf != t.rec.leaves[r.index] {
		return wire.SignedReceipt{}, corrupt(k, "receipt does not match its batch leaf")
	}
	return wire.SignedReceipt{Receipt: rc, BatchSize: uint16(n), Index: r.index,
		Path: t.path(int(r.index)), Signature: t.rec.sig}, nil
}

// Read returns one page of the entries of mailbox that cursor (nil: the
// empty cursor) does not cover and that come after the resume position
// after (nil: from the start), in (origin bytes, seq) order, with the
// watermarks of SPEC.md §10.4. maxEntries and maxBytes bound the page
// (≤ 0: no bound; bytes count envelopes); a page holds at least one entry
// if any remains. A page costs one seek per origin plus a scan of what it
// returns (and of the tombstones between).
func (l *Log) Read(mailbox wire.Mailbox, cursor *wire.Cursor, after *wire.Position, maxEntries, maxBytes int) (Page, error) {
	if err := l.enter(); err != nil {
		return Page{}, err
	}
	defer l.exit()
	if cursor == nil {
		cursor = &wire.Cursor{}
	}
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	var origins []originKT
	if mb != nil {
		origins = l.sortedOrigins(mb)
	}
	l.mu.RUnlock()
	var page Page
	if mb == nil {
		return page, nil
	}
	// The snapshot is taken after known_through was read, so it holds every
	// entry the watermarks vouch for.
	txn := l.db.NewTransaction(false)
	defer txn.Discard()
	bytesSent := 0
	endedIn, lastSent := -1, uint64(0)
	it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
	defer it.Close()
	wm := func(i int) uint64 {
		return l.watermark(mb, origins[i].oid, origins[i].kt)
	}
scan:
	for i, o := range origins {
		if after != nil && o.id < after.Origin {
			continue
		}
		start := cursor.Get(o.id) + 1
		if after != nil && o.id == after.Origin {
			start = max(start, after.Seq+1)
		}
		prefix := entryPrefix(mb.id, o.oid)
		for it.Seek(entryKey(mb.id, o.oid, start)); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			if m := item.UserMeta(); m != kindLocalEntry && m != kindImportedEntry {
				continue
			}
			k := item.KeyCopy(nil)
			_, _, seq, _ := parseEntryKey(k)
			v, err := item.ValueCopy(nil)
			if err != nil {
				return Page{}, err
			}
			e, live, err := l.buildEntry(txn, mb, o.id, seq, k, v)
			if err != nil {
				var ce *CorruptError
				if !errors.As(err, &ce) {
					return Page{}, err
				}
				l.noteCorrupt(mb.id, o.oid, seq, err)
				page.Corrupt = append(page.Corrupt, ce)
				continue
			}
			if !live {
				continue
			}
			if (maxEntries > 0 && len(page.Entries) >= maxEntries) ||
				(maxBytes > 0 && len(page.Entries) > 0 && bytesSent+len(e.Envelope) > maxBytes) {
				page.More = true
				if lastSent > 0 && endedIn == i {
					page.Watermarks = append(page.Watermarks, wire.Position{Origin: o.id, Seq: min(wm(i), lastSent)})
				}
				break scan
			}
			page.Entries = append(page.Entries, e)
			bytesSent += len(e.Envelope)
			endedIn, lastSent = i, seq
		}
		if w := wm(i); w > 0 {
			page.Watermarks = append(page.Watermarks, wire.Position{Origin: o.id, Seq: w})
		}
	}
	if !page.More {
		page.Watermarks = page.Watermarks[:0]
		for i := range origins {
			if w := wm(i); w > 0 {
				page.Watermarks = append(page.Watermarks, wire.Position{Origin: origins[i].id, Seq: w})
			}
		}
	}
	return page, nil
}

// ensureIndex loads the reconciliation index of (mailbox, set) through the
// commit goroutine, so no commit can slip between the scan and the
// installation. It returns nil if the log holds nothing for the mailbox.
func (l *Log) ensureIndex(mailbox wire.Mailbox, set Set) (*mbox, error) {
	if set != SetEntries && set != SetTombstones {
		return nil, fmt.Errorf("store: reconciliation set %d: %w", set, wire.ErrMalformed)
	}
	l.mu.RLock()
	mb := l.mboxes[mailbox]
	loaded := mb != nil && mb.idx[set] != nil
	l.mu.RUnlock()
	if mb == nil || loaded {
		return mb, nil
	}
	o := &op{kind: opLoadIndex, mb: mailbox, set: set}
	if err := l.submit(context.Background(), o); err != nil {
		return nil, err
	}
	return mb, o.err
}

// maxIndexReloads bounds how often one query reloads an index that was
// dropped (IndexBudget) before it could use it.
const maxIndexReloads = 8

// withIndex runs f on the index of (mailbox, set) with l.mu read-held,
// loading it first if needed; found is false if the log holds nothing for
// the mailbox.
func (l *Log) withIndex(mailbox wire.Mailbox, set Set, f func(x *digestIndex)) (found bool, err error) {
	for range maxIndexReloads {
		mb, err := l.ensureIndex(mailbox, set)
		if err != nil || mb == nil {
			return false, err
		}
		l.mu.RLock()
		if x := mb.idx[set]; x != nil {
			x.used.Store(l.idxClock.Add(1))
			f(x)
			l.mu.RUnlock()
			return true, nil
		}
		l.mu.RUnlock() // dropped meanwhile: load it again
	}
	return false, fmt.Errorf("store: reconciliation index of %s dropped %d times: %w", mailbox, maxIndexReloads, wire.ErrBusy)
}

// RangeFingerprint returns the accumulator (fingerprint and count) of the
// items of set in mailbox with lower ≤ digest < upper, bytewise (SPEC.md
// §10.10). An empty lower means from the start, an empty upper to the end.
// The first call for a (mailbox, set) loads its index (one scan of the
// mailbox's fate records); later calls are served from memory while the
// index stays within LogOptions.IndexBudget.
func (l *Log) RangeFingerprint(mailbox wire.Mailbox, set Set, lower, upper []byte) (wire.FingerprintAcc, error) {
	var acc wire.FingerprintAcc
	_, err := l.withIndex(mailbox, set, func(x *digestIndex) { acc = x.rangeAcc(lower, upper) })
	return acc, err
}

// Summary returns the accumulators (fingerprint and count) of the whole
// reconciliation sets of mailbox (SPEC.md §10.10, summaries): its live
// entries and its tombstones. The first call for a mailbox loads its
// indexes; from then on the totals are kept up to date by every commit,
// also when the indexes are dropped to stay within LogOptions.IndexBudget,
// so later calls cost no I/O. A mailbox the log holds nothing of has empty
// sets.
func (l *Log) Summary(mailbox wire.Mailbox) (entries, tombstones wire.FingerprintAcc, err error) {
	out := [3]wire.FingerprintAcc{}
	for _, set := range []Set{SetEntries, SetTombstones} {
		l.mu.RLock()
		mb := l.mboxes[mailbox]
		ok := mb != nil && mb.totalOK[set]
		if ok {
			out[set] = mb.total[set]
		}
		l.mu.RUnlock()
		if mb == nil || ok {
			continue
		}
		if _, err := l.withIndex(mailbox, set, func(x *digestIndex) { out[set] = x.rangeAcc(nil, nil) }); err != nil {
			return entries, tombstones, err
		}
	}
	return out[SetEntries], out[SetTombstones], nil
}

// RangeItems lists the digests of the items of set in [lower, upper), in
// order, at most limit of them (≤ 0: all).
func (l *Log) RangeItems(mailbox wire.Mailbox, set Set, lower, upper []byte, limit int) ([][32]byte, error) {
	var items [][32]byte
	_, err := l.withIndex(mailbox, set, func(x *digestIndex) { items = x.rangeItems(lower, upper, limit) })
	return items, err
}

// SplitRange splits [lower, upper) into min(k, n) subranges of equal item
// count (sizes differ by at most one, larger first), each with its
// fingerprint; the last ends at upper. An empty range gives one empty
// subrange.
func (l *Log) SplitRange(mailbox wire.Mailbox, set Set, lower, upper []byte, k int) ([]Subrange, error) {
	var subs []Subrange
	found, err := l.withIndex(mailbox, set, func(x *digestIndex) { subs = x.split(lower, upper, k) })
	if err != nil {
		return nil, err
	}
	if !found {
		return []Subrange{{Upper: clone(upper)}}, nil
	}
	return subs, nil
}

// Backlog is the work queued for the log's commit goroutine (a relay's
// admission check, SPEC.md §12 MaxStoreBacklog).
type Backlog struct {
	// Ops counts operations submitted and not yet committed: those waiting
	// for the commit goroutine and those in the commit being written.
	Ops int
	// Batch is LogOptions.MaxCommitBatch: at most this many operations
	// share one commit.
	Batch int
	// LastCommit is the duration of the latest group commit, and Commit a
	// moving average over recent ones (1/8 weight for the newest); both 0
	// before the first.
	LastCommit, Commit time.Duration
}

// Drain estimates how long the queued operations take to commit: as many
// commits of Batch operations as they fill, each taking the average
// commit time (the latest, if longer: a slowing disk shows at once).
func (b Backlog) Drain() time.Duration {
	if b.Ops <= 0 {
		return 0
	}
	commits := (b.Ops + max(1, b.Batch) - 1) / max(1, b.Batch)
	return time.Duration(commits) * max(b.Commit, b.LastCommit)
}

// Backlog returns the queued work. It takes no lock.
func (l *Log) Backlog() Backlog {
	return Backlog{
		Ops:        int(max(0, l.queued.Load())),
		Batch:      l.batch,
		LastCommit: time.Duration(l.lastCommitNs.Load()),
		Commit:     time.Duration(l.ewmaCommitNs.Load()),
	}
}

// noteCommit records a commit's duration (commit goroutine only).
func (l *Log) noteCommit(d time.Duration) {
	l.lastCommitNs.Store(int64(d))
	old := l.ewmaCommitNs.Load()
	if old == 0 {
		l.ewmaCommitNs.Store(int64(d))
		return
	}
	l.ewmaCommitNs.Store(old + (int64(d)-old)/8)
}
