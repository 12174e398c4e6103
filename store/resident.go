package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// resident gives the log's memory trim (Log.trimLoop) the parts of
// badger's state that badger.Options do not reach (BENCHMARKS.md, relay
// RSS):
//
//   - Badger writes every table file through a shared, writable mmap
//     (table.CreateTable copies the built table into the mapping and
//     msyncs it) and reads tables through that mapping, so every table
//     it wrote or read stays mapped in the process: with the envelopes
//     inline in the LSM tree the whole store (1.2 GiB for 1,000,000
//     1 KiB entries) counts in the relay's RSS. The pages are clean page
//     cache once msync'd; madvise(MADV_DONTNEED) on a shared file mapping
//     only unmaps them from the process (the page cache keeps them; a
//     later read maps them again with a minor fault), which loses nothing.
//   - The memtables' write-ahead logs are written through the same kind
//     of mapping (up to a memtable's size each). A page not yet msync'd
//     keeps its dirty state in the page cache when it is unmapped, and the
//     commit's msync (an fsync of the file's range) writes it as before.
//   - Table builders take their buffers from a pool of up to eight
//     allocators that is drained only after 2 s without a build, so under
//     writes it keeps every buffer it ever grew (~180 MB measured).
//
// The fields are found by name and type with reflection at open; if a
// badger version changes them, newResident fails and the log runs without
// the trim (TestResidentFindsBadgerState fails, so an upgrade notices).
// Every mapping is used only while badger's own reference on it is held
// (the table's, or the memtable skiplist's, whose release deletes the
// write-ahead log), taken under the lock badger's readers take, so a
// mapping cannot be unmapped while it is advised.
//
// The tables a compaction has written but not yet installed in a level
// (written through the mapping, so resident until the compaction ends: one
// compaction's output measured up to 600 MB) are in no structure it can
// reach. For those, the trim reads the process's mappings of table files in
// the database's directory (/proc/self/maps) and asks the kernel to reclaim
// the pages of every one that is not an installed table (madvise
// MADV_PAGEOUT, pageOutFiles). Unlike MADV_DONTNEED, that advice loses no
// data whatever is mapped at the address by the time it runs (a table file
// unmapped meanwhile and the range reused for the Go heap: anonymous pages
// are swapped out, or kept without swap), so it needs no reference; the
// pages it reclaims leave the page cache too, and a later read of that
// table reads the disk.
//
// Out of its reach: the builders' buffers in use.
type resident struct {
	dir    string // the database's directory, absolute, symbolic links resolved
	levels []levelRef
	dbLock *sync.RWMutex
	mt     *unsafe.Pointer // *memTable
	imm    *[]unsafe.Pointer
	mtOff  memtableOffsets
	pool   *chan *z.Allocator

	installed map[uintptr]bool // the installed tables' mappings at the last trimMapped
}

type levelRef struct {
	mu     *sync.RWMutex
	tables *[]*table.Table
}

// memtableOffsets locate a memtable's skiplist and write-ahead log's
// mapping (memTable.sl, memTable.wal.MmapFile).
type memtableOffsets struct {
	sl, wal, mf uintptr
}

func newResident(db *badger.DB) (r *resident, err error) {
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, fmt.Errorf("store: badger internals: %v", p)
		}
	}()
	dbv := reflect.ValueOf(db).Elem()
	r = &resident{installed: make(map[uintptr]bool)}
	if dir := db.Opts().Dir; dir != "" {
		if r.dir, err = filepath.Abs(dir); err == nil {
			r.dir, err = filepath.EvalSymlinks(r.dir)
		}
		if err != nil {
			return nil, fmt.Errorf("store: memory trim: %w", err)
		}
	}
	r.dbLock = fieldPtr[sync.RWMutex](dbv, "lock")
	lc := field(dbv, "lc")
	if lc.Kind() != reflect.Pointer || lc.IsNil() {
		return nil, errors.New("store: badger internals: DB.lc")
	}
	levels := field(lc.Elem(), "levels")
	if levels.Kind() != reflect.Slice {
		return nil, errors.New("store: badger internals: levelsController.levels")
	}
	for i := range levels.Len() {
		h := levels.Index(i).Elem()
		r.levels = append(r.levels, levelRef{
			mu:     fieldPtr[sync.RWMutex](h, "RWMutex"),
			tables: fieldPtr[[]*table.Table](h, "tables"),
		})
	}
	mt := field(dbv, "mt")
	imm := field(dbv, "imm")
	if mt.Kind() != reflect.Pointer || imm.Kind() != reflect.Slice || imm.Type().Elem() != mt.Type() {
		return nil, errors.New("store: badger internals: DB.mt, DB.imm")
	}
	r.mt = (*unsafe.Pointer)(unsafe.Pointer(mt.UnsafeAddr()))
	r.imm = (*[]unsafe.Pointer)(unsafe.Pointer(imm.UnsafeAddr()))
	mtt := mt.Type().Elem()
	sl, ok1 := mtt.FieldByName("sl")
	wal, ok2 := mtt.FieldByName("wal")
	if !ok1 || !ok2 || sl.Type != reflect.TypeFor[*skl.Skiplist]() || wal.Type.Kind() != reflect.Pointer {
		return nil, errors.New("store: badger internals: memTable.sl, memTable.wal")
	}
	mf, ok := wal.Type.Elem().FieldByName("MmapFile")
	if !ok || mf.Type != reflect.TypeFor[*z.MmapFile]() {
		return nil, errors.New("store: badger internals: logFile.MmapFile")
	}
	r.mtOff = memtableOffsets{sl: sl.Offset, wal: wal.Offset, mf: mf.Offset}
	pool := field(dbv, "allocPool")
	if pool.Type() != reflect.TypeFor[*z.AllocatorPool]() || pool.IsNil() {
		return nil, errors.New("store: badger internals: DB.allocPool")
	}
	r.pool = fieldPtr[chan *z.Allocator](pool.Elem(), "allocCh")
	return r, nil
}

// field returns s's field name; it panics if there is none.
func field(s reflect.Value, name string) reflect.Value {
	f := s.FieldByName(name)
	if !f.IsValid() {
		panic(s.Type().String() + " has no field " + name)
	}
	return f
}

// fieldPtr returns a pointer to s's field name, which must be a T.
func fieldPtr[T any](s reflect.Value, name string) *T {
	f := field(s, name)
	if f.Type() != reflect.TypeFor[T]() {
		panic(fmt.Sprintf("%s.%s is a %s, not a %s", s.Type(), name, f.Type(), reflect.TypeFor[T]()))
	}
	return (*T)(unsafe.Pointer(f.UnsafeAddr()))
}

// trimStats is what one trim did.
type trimStats struct {
	tables, wals, allocators int
	// pagedOut is how many mappings of table files not installed in a
	// level pageOut advised.
	pagedOut int
	// release is an error of a table's release (DecrRef) that deleted it:
	// the trim held the last reference of a table a compaction dropped.
	release error
}

// trim unmaps the pages of every table file and write-ahead log from the
// process (they stay in the page cache), has the kernel reclaim those of
// the table files no level holds, and releases the table builders' pooled
// buffers to the garbage collector (trimMapped, pageOut, trimPool). The
// database must be open.
func (r *resident) trim() (trimStats, error) {
	st, err := r.trimFiles()
	st.allocators = r.trimPool()
	return st, err
}

// trimFiles is trimMapped, then pageOut.
func (r *resident) trimFiles() (trimStats, error) {
	st, err := r.trimMapped()
	if err == nil {
		st.pagedOut, err = r.pageOut()
	}
	return st, err
}

// pageOut has the kernel reclaim the pages of the process's mappings of
// table files in the database's directory that were not installed in a
// level at the last trimMapped: the tables a compaction is writing.
func (r *resident) pageOut() (int, error) {
	if r.dir == "" {
		return 0, nil
	}
	return pageOutFiles(r.dir, ".sst", r.installed)
}

// trimMapped unmaps the pages of every table file and write-ahead log
// from the process.
func (r *resident) trimMapped() (st trimStats, err error) {
	var tables []*table.Table
	clear(r.installed)
	for _, lv := range r.levels {
		lv.mu.RLock()
		for _, t := range *lv.tables {
			t.IncrRef()
			tables = append(tables, t)
		}
		lv.mu.RUnlock()
	}
	for _, t := range tables {
		if err == nil && !t.IsInmemory && t.MmapFile != nil && t.Fd != nil {
			err = dropPages(t.Data)
			st.tables++
			if len(t.Data) > 0 {
				r.installed[uintptr(unsafe.Pointer(unsafe.SliceData(t.Data)))] = true
			}
		}
		if rerr := t.DecrRef(); rerr != nil {
			st.release = rerr
		}
	}
	if err != nil {
		return st, err
	}

	type wal struct {
		sl *skl.Skiplist
		mf *z.MmapFile
	}
	var wals []wal
	r.dbLock.RLock()
	for _, mt := range append([]unsafe.Pointer{*r.mt}, *r.imm...) {
		if mt == nil {
			continue
		}
		sl := *(**skl.Skiplist)(unsafe.Add(mt, r.mtOff.sl))
		lf := *(*unsafe.Pointer)(unsafe.Add(mt, r.mtOff.wal))
		if sl == nil || lf == nil {
			continue
		}
		if mf := *(**z.MmapFile)(unsafe.Add(lf, r.mtOff.mf)); mf != nil {
			sl.IncrRef()
			wals = append(wals, wal{sl, mf})
		}
	}
	r.dbLock.RUnlock()
	for _, w := range wals {
		if err == nil && w.mf.Fd != nil {
			err = dropPages(w.mf.Data)
			st.wals++
		}
		w.sl.DecrRef()
	}
	return st, err
}

// trimPool releases the allocators in the table builders' pool; it
// returns how many.
func (r *resident) trimPool() int {
	for n := 0; ; n++ {
		select {
		case a, ok := <-*r.pool:
			if !ok {
				return n
			}
			a.Release()
			continue
		default:
		}
		return n
	}
}

// How the log trims (trimLoop): every trimEvery it trims badger's files
// (trimFiles) and releases the builders' pooled buffers; in between it
// checks the process's resident file-backed memory every trimPoll and
// trims the files early once that is a trimSlack-th of the memory budget
// above what it was after the previous trim (the binary's own pages and
// anything else mapped stay in that base), so a burst of writes or
// compactions does not wait for the next second. (A level-0 compaction
// reads and writes about 150 MB in a second or two. With 100 ms and a
// quarter of the budget, the relay's peak RSS measured 527 MiB in one run
// (BENCHMARKS.md, relay RSS), with these 500 MiB.)
const (
	trimPoll  = 50 * time.Millisecond
	trimSlack = 8 // budget/8
	trimEvery = time.Second
)

// trimLoop trims until bgStop closes.
func (l *Log) trimLoop(r *resident) {
	defer close(l.trimDone)
	t := time.NewTicker(trimPoll)
	defer t.Stop()
	slack := l.opts.MemoryBudget / trimSlack
	base := int64(-1) // file-backed resident bytes after the last trim
	last := time.Now()
	for {
		select {
		case <-l.bgStop:
			return
		case <-t.C:
		}
		now := time.Now()
		due := now.Sub(last) >= trimEvery
		if mapped := residentFileBytes(); !due && base >= 0 && mapped >= 0 && mapped <= base+slack {
			continue
		}
		st, err := r.trimFiles()
		if err != nil {
			l.log.Error("store: memory trim stopped", "err", err)
			return
		}
		if st.release != nil {
			l.log.Warn("store: memory trim: release of a dropped table", "err", st.release)
		}
		if due {
			r.trimPool()
			last = now
		}
		base = residentFileBytes()
	}
}

// startTrim starts trimLoop for an on-disk log with a memory budget.
func (l *Log) startTrim() {
	if l.mem || l.opts.MemoryBudget <= 0 {
		close(l.trimDone)
		return
	}
	r, err := newResident(l.db)
	if err != nil {
		l.log.Warn("store: badger's mapped files and builder buffers will not be trimmed", "err", err)
		close(l.trimDone)
		return
	}
	if runtime.GOOS == "linux" && !pageOutSupported() {
		l.log.Warn("store: the kernel has no MADV_PAGEOUT: the tables a compaction writes stay resident until it ends")
		r.dir = ""
	}
	go l.trimLoop(r)
}
