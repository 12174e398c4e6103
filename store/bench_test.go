package store_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/store/storetest"
	"github.com/cairn-net/cairn/wire"
)

// Benchmarks of the mailbox log with 1 KiB envelopes (1,024 bytes
// including the 55-byte header), durable on disk (SyncWrites: every group
// commit is fsync'd), next to the badger primitives that bound them.

const benchEnv = 1024

func benchLog(b *testing.B, dir string) *store.Log {
	r := storetest.NewRelay(b)
	l, err := store.OpenLog(store.LogOptions{Dir: dir, Origin: r.ID, Signer: r.Key, GCInterval: -1,
		MailboxQuotaEntries: -1, MailboxQuotaBytes: -1, StorageCapBytes: -1})
	if err != nil {
		b.Fatal(err)
	}
	return l
}

func benchEnvelopes(b *testing.B, mbs []wire.Mailbox, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = storetest.Envelope(b, mbs[i%len(mbs)], 0, benchEnv-wire.EnvelopeOverhead)
	}
	return out
}

func BenchmarkAppendSingleWriter(b *testing.B) {
	l := benchLog(b, b.TempDir())
	defer l.Close()
	mb := storetest.Mailbox(b)
	envs := benchEnvelopes(b, []wire.Mailbox{mb}, 512)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		// A fresh CID every time: a counter in the ciphertext.
		e := append([]byte(nil), envs[i%len(envs)]...)
		binary.BigEndian.PutUint64(e[wire.EnvelopeOverhead:], uint64(i))
		r, err := l.Append(ctx, store.Deposit{Envelope: e})
		if err != nil || r.Duplicate {
			b.Fatal(err, r.Duplicate)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "appends/s")
}

// benchConcurrent runs writers goroutines that each append one envelope
// (per), or per envelopes with AppendMany, at a time, until n appends.
func benchConcurrent(b *testing.B, writers, per int) {
	l := benchLog(b, b.TempDir())
	defer l.Close()
	mbs := []wire.Mailbox{storetest.Mailbox(b), storetest.Mailbox(b), storetest.Mailbox(b), storetest.Mailbox(b)}
	ctx := context.Background()
	pool := benchEnvelopes(b, mbs, 512)
	var total int
	for b.Loop() {
		// Each iteration is one round of writers×per appends of fresh
		// envelopes (a fresh CID: change 8 bytes of a pooled envelope).
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ds := make([]store.Deposit, per)
				for k := range ds {
					e := append([]byte(nil), pool[(w*per+k)%len(pool)]...)
					rand.Read(e[wire.EnvelopeOverhead : wire.EnvelopeOverhead+8])
					ds[k] = store.Deposit{Envelope: e}
				}
				if per == 1 {
					if _, err := l.Append(ctx, ds[0]); err != nil {
						b.Error(err)
					}
					return
				}
				for _, r := range l.AppendMany(ctx, ds) {
					if r.Err != nil {
						b.Error(r.Err)
					}
				}
			}()
		}
		wg.Wait()
		total += writers * per
	}
	st := l.Stats()
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "appends/s")
	b.ReportMetric(float64(st.CommitOps)/float64(max(st.Commits, 1)), "ops/commit")
}

// The round-based variants above include the wait for the slowest writer;
// this one keeps 16 writers busy for the whole run.
func BenchmarkAppend16Writers(b *testing.B) { bench16(b, b.TempDir()) }

// BenchmarkAppend16WritersInMemory is the same without the disk: the CPU
// cost of the commit path (validation, dedup, records, signing, badger's
// transaction) per append.
func BenchmarkAppend16WritersInMemory(b *testing.B) { bench16(b, "") }

func bench16(b *testing.B, dir string) {
	l := benchLog(b, dir)
	defer l.Close()
	mbs := []wire.Mailbox{storetest.Mailbox(b), storetest.Mailbox(b), storetest.Mailbox(b), storetest.Mailbox(b)}
	pool := benchEnvelopes(b, mbs, 512)
	ctx := context.Background()
	b.SetParallelism(16 / runtime.GOMAXPROCS(0))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		k := 0
		for pb.Next() {
			e := append([]byte(nil), pool[k%len(pool)]...)
			rand.Read(e[wire.EnvelopeOverhead : wire.EnvelopeOverhead+8])
			k++
			if _, err := l.Append(ctx, store.Deposit{Envelope: e}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	st := l.Stats()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
	b.ReportMetric(float64(st.CommitOps)/float64(max(st.Commits, 1)), "ops/commit")
}

func BenchmarkAppend16StreamsOf16(b *testing.B) { benchConcurrent(b, 16, 16) }

func BenchmarkCursorRead10k(b *testing.B) {
	l := benchLog(b, b.TempDir())
	defer l.Close()
	mb := storetest.Mailbox(b)
	ctx := context.Background()
	envs := benchEnvelopes(b, []wire.Mailbox{mb}, 10_000)
	for i := 0; i < len(envs); i += 256 {
		ds := make([]store.Deposit, 0, 256)
		for _, e := range envs[i:min(i+256, len(envs))] {
			ds = append(ds, store.Deposit{Envelope: e})
		}
		for _, r := range l.AppendMany(ctx, ds) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	n := 0
	for b.Loop() {
		var after *wire.Position
		for {
			p, err := l.Read(mb, nil, after, 512, 1<<20)
			if err != nil {
				b.Fatal(err)
			}
			n += len(p.Entries)
			if !p.More {
				break
			}
			last := p.Entries[len(p.Entries)-1].Stamp
			after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkCIDLookup(b *testing.B) {
	l := benchLog(b, b.TempDir())
	defer l.Close()
	mb := storetest.Mailbox(b)
	ctx := context.Background()
	var cids []wire.CID
	for _, e := range benchEnvelopes(b, []wire.Mailbox{mb}, 2000) {
		r, err := l.Append(ctx, store.Deposit{Envelope: e})
		if err != nil {
			b.Fatal(err)
		}
		cids = append(cids, r.Receipt.CID)
	}
	b.Run("Fate", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := l.Fate(mb, cids[i%len(cids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Get", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, err := l.Get(mb, cids[i%len(cids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func diskBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// BenchmarkSpace stores 50,000 1 KiB entries in 50 mailboxes, then reports
// bytes on disk (blocks in use, after closing, which flushes memtables, and
// a flatten) per payload byte; Go heap growth per entry while writing
// (mostly badger's memtables, which are bounded, not per entry); badger's
// in-memory table indexes and bloom filters per entry; and the reconciliation index per entry once loaded. One
// iteration is the whole measurement.
func BenchmarkSpace(b *testing.B) {
	const n = 50_000
	for b.Loop() {
		dir := b.TempDir()
		r := storetest.NewRelay(b)
		opts := store.LogOptions{Dir: dir, Origin: r.ID, Signer: r.Key, GCInterval: -1,
			MailboxQuotaEntries: -1, MailboxQuotaBytes: -1, StorageCapBytes: -1}
		l, err := store.OpenLog(opts)
		if err != nil {
			b.Fatal(err)
		}
		mbs := make([]wire.Mailbox, 50)
		for i := range mbs {
			mbs[i] = storetest.Mailbox(b)
		}
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		ctx := context.Background()
		var payload int64
		for i := 0; i < n; i += 256 {
			ds := make([]store.Deposit, 0, 256)
			for k := i; k < min(i+256, n); k++ {
				e := storetest.Envelope(b, mbs[k%len(mbs)], 0, benchEnv-wire.EnvelopeOverhead)
				payload += int64(len(e))
				ds = append(ds, store.Deposit{Envelope: e})
			}
			for _, r := range l.AppendMany(ctx, ds) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&ms1)
		heap := float64(int64(ms1.HeapInuse)-int64(ms0.HeapInuse)) / n
		for _, mb := range mbs {
			l.RangeFingerprint(mb, store.SetEntries, nil, nil)
		}
		idx := float64(l.Stats().IndexBytes) / n
		l.Close()
		// Reopen with compaction of L0 on close and flatten, as a
		// compacted steady state.
		bo := badger.DefaultOptions(dir).WithLogger(nil).WithValueThreshold(256).WithCompactL0OnClose(true)
		db, err := badger.Open(bo)
		if err != nil {
			b.Fatal(err)
		}
		db.Flatten(1)
		// What an open log keeps in memory per stored entry: badger's
		// table indexes and bloom filters (the log itself keeps no
		// per-entry state besides a loaded reconciliation index).
		var tableMem int64
		for _, ti := range db.Tables() {
			tableMem += int64(ti.IndexSz) + int64(ti.BloomFilterSize)
		}
		db.Close()
		disk := diskBytes(dir)
		b.ReportMetric(float64(disk)/float64(payload), "disk-bytes/payload-byte")
		b.ReportMetric(heap, "heap-bytes/entry-writing")
		b.ReportMetric(float64(tableMem)/n, "table-index-bytes/entry")
		b.ReportMetric(idx, "index-bytes/entry")
	}
}

// Primitive bounds, measured here: badger 1 KiB writes with a TTL through a
// WriteBatch (no sync per write), one synced transaction per write, and 64
// writes per synced transaction.
func BenchmarkBadgerPrimitive(b *testing.B) {
	open := func(b *testing.B, sync bool) *badger.DB {
		db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithLogger(nil).WithSyncWrites(sync))
		if err != nil {
			b.Fatal(err)
		}
		return db
	}
	val := make([]byte, 1024)
	rand.Read(val)
	key := func(i int) []byte {
		k := make([]byte, 16)
		rand.Read(k)
		return k
	}
	b.Run("WriteBatch", func(b *testing.B) {
		db := open(b, false)
		defer db.Close()
		wb := db.NewWriteBatch()
		i := 0
		for b.Loop() {
			wb.SetEntry(badger.NewEntry(key(i), val).WithTTL(time.Hour))
			i++
		}
		wb.Flush()
	})
	b.Run("SyncedTxnPerWrite", func(b *testing.B) {
		db := open(b, true)
		defer db.Close()
		i := 0
		for b.Loop() {
			db.Update(func(txn *badger.Txn) error {
				return txn.SetEntry(badger.NewEntry(key(i), val).WithTTL(time.Hour))
			})
			i++
		}
	})
	b.Run("PrefixScan10k", func(b *testing.B) {
		db := open(b, false)
		defer db.Close()
		wb := db.NewWriteBatch()
		for i := 0; i < 10_000; i++ {
			k := append([]byte("p"), key(i)...)
			wb.SetEntry(badger.NewEntry(k, val).WithTTL(time.Hour))
		}
		wb.Flush()
		n := 0
		for b.Loop() {
			db.View(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p")})
				defer it.Close()
				for it.Rewind(); it.Valid(); it.Next() {
					if _, err := it.Item().ValueCopy(nil); err != nil {
						return err
					}
					n++
				}
				return nil
			})
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "entries/s")
	})
	b.Run("PointGet", func(b *testing.B) {
		db := open(b, false)
		defer db.Close()
		var keys [][]byte
		wb := db.NewWriteBatch()
		for i := 0; i < 2000; i++ {
			k := key(i)
			keys = append(keys, k)
			wb.SetEntry(badger.NewEntry(k, val[:40]))
		}
		wb.Flush()
		i := 0
		for b.Loop() {
			db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(keys[i%len(keys)])
				if err != nil {
					return err
				}
				_, err = item.ValueCopy(nil)
				return err
			})
			i++
		}
	})
	b.Run("Synced64PerTxn", func(b *testing.B) {
		db := open(b, true)
		defer db.Close()
		i := 0
		for b.Loop() {
			db.Update(func(txn *badger.Txn) error {
				for k := 0; k < 64; k++ {
					txn.SetEntry(badger.NewEntry(key(i), val).WithTTL(time.Hour))
				}
				return nil
			})
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*64)/1000, "µs/write")
	})
}
