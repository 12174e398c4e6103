package store

import (
	"bytes"
	"cmp"
	"slices"
	"sync/atomic"

	"github.com/cairn-net/cairn/wire"
)

// digestIndex is the in-memory reconciliation index of one set of one
// mailbox (SPEC.md §10.10): the 32-byte CID digests in bytewise order, cut
// into chunks of at most chunkMax digests that each keep their fingerprint
// accumulator. A range fingerprint merges the accumulators of the whole
// chunks it spans and adds the digests of at most two partial chunks; a
// count or a split walks the chunk list. For a mailbox of n items that is
// O(n/chunkMax + chunkMax) work per query, about 3,000 steps for n = 10⁶.
//
// Memory: chunks are between half and completely full, so an index holds
// 32–64 bytes per item (about 43 bytes on average with random digests)
// plus ~120 bytes per chunk; Stats.IndexBytes reports the total.
type digestIndex struct {
	chunks []*chunk
	n      int
	bytes  int64        // memBytes at the last update, for Stats.IndexBytes
	used   atomic.Int64 // Log.idxClock at the last query (LRU)
}

// idxOwner names the mailbox and set of a loaded index.
type idxOwner struct {
	mb  *mbox
	set Set
}

type chunk struct {
	items [][32]byte
	acc   wire.FingerprintAcc
}

const chunkMax = 512

func (c *chunk) recompute() {
	c.acc = wire.FingerprintAcc{}
	for _, d := range c.items {
		c.acc.Add(d)
	}
}

// newDigestIndex builds an index from digests in strictly increasing order.
func newDigestIndex(sorted [][32]byte) *digestIndex {
	x := &digestIndex{n: len(sorted)}
	for len(sorted) > 0 {
		n := min(len(sorted), chunkMax*3/4)
		c := &chunk{items: slices.Clone(sorted[:n])}
		c.recompute()
		x.chunks = append(x.chunks, c)
		sorted = sorted[n:]
	}
	return x
}

func (x *digestIndex) memBytes() int64 {
	var b int64 = 48
	for _, c := range x.chunks {
		b += 120 + 32*int64(cap(c.items))
	}
	return b
}

// chunkFor returns the index of the chunk where d belongs.
func (x *digestIndex) chunkFor(d []byte) int {
	// The last chunk whose first item is ≤ d.
	i, _ := slices.BinarySearchFunc(x.chunks, d, func(c *chunk, d []byte) int {
		return bytes.Compare(c.items[0][:], d)
	})
	// i is the first chunk with items[0] ≥ d.
	if i < len(x.chunks) && bytes.Equal(x.chunks[i].items[0][:], d) {
		return i
	}
	if i > 0 {
		return i - 1
	}
	return 0
}

func cmpDigest(a [32]byte, b []byte) int { return bytes.Compare(a[:], b) }

func (x *digestIndex) insert(d [32]byte) bool {
	if len(x.chunks) == 0 {
		x.chunks = []*chunk{{items: [][32]byte{d}}}
		x.chunks[0].acc.Add(d)
		x.n = 1
		return true
	}
	ci := x.chunkFor(d[:])
	c := x.chunks[ci]
	j, found := slices.BinarySearchFunc(c.items, d[:], cmpDigest)
	if found {
		return false
	}
	c.items = slices.Insert(c.items, j, d)
	c.acc.Add(d)
	x.n++
	if len(c.items) > chunkMax {
		h := len(c.items) / 2
		nc := &chunk{items: slices.Clone(c.items[h:])}
		c.items = slices.Clip(c.items[:h:h])
		c.items = slices.Clone(c.items)
		c.recompute()
		nc.recompute()
		x.chunks = slices.Insert(x.chunks, ci+1, nc)
	}
	return true
}

func (x *digestIndex) remove(d [32]byte) bool {
	if len(x.chunks) == 0 {
		return false
	}
	ci := x.chunkFor(d[:])
	c := x.chunks[ci]
	j, found := slices.BinarySearchFunc(c.items, d[:], cmpDigest)
	if !found {
		return false
	}
	c.items = slices.Delete(c.items, j, j+1)
	x.n--
	if len(c.items) == 0 {
		x.chunks = slices.Delete(x.chunks, ci, ci+1)
		return true
	}
	c.recompute()
	return true
}

// pos is a position in the index: item i of chunk c. The end is
// (len(chunks), 0).
type pos struct{ c, i int }

// lowerBound returns the position of the first item ≥ b; an empty b is the
// start.
func (x *digestIndex) lowerBound(b []byte) pos {
	if len(b) == 0 || len(x.chunks) == 0 {
		return pos{}
	}
	ci := x.chunkFor(b)
	c := x.chunks[ci]
	j, _ := slices.BinarySearchFunc(c.items, b, cmpDigest)
	if j == len(c.items) {
		return pos{ci + 1, 0}
	}
	return pos{ci, j}
}

// upperPos returns the exclusive end position of a range with upper bound
// b; an empty b is the end.
func (x *digestIndex) upperPos(b []byte) pos {
	if len(b) == 0 {
		return pos{len(x.chunks), 0}
	}
	return x.lowerBound(b)
}

func (x *digestIndex) less(a, b pos) bool { return a.c < b.c || (a.c == b.c && a.i < b.i) }

// rank returns the number of items before p.
func (x *digestIndex) rank(p pos) int {
	r := 0
	for i := 0; i < p.c && i < len(x.chunks); i++ {
		r += len(x.chunks[i].items)
	}
	return r + p.i
}

// at returns the position of the item of rank r.
func (x *digestIndex) at(r int) pos {
	for ci, c := range x.chunks {
		if r < len(c.items) {
			return pos{ci, r}
		}
		r -= len(c.items)
	}
	return pos{len(x.chunks), 0}
}

func (x *digestIndex) item(p pos) [32]byte { return x.chunks[p.c].items[p.i] }

// accBetween accumulates the items in [a, b).
func (x *digestIndex) accBetween(a, b pos) wire.FingerprintAcc {
	var acc wire.FingerprintAcc
	for !x.less(b, a) && a != b {
		c := x.chunks[a.c]
		if a.i == 0 && (a.c < b.c) {
			acc.Merge(&c.acc)
			a = pos{a.c + 1, 0}
			continue
		}
		end := len(c.items)
		if a.c == b.c {
			end = b.i
		}
		for _, d := range c.items[a.i:end] {
			acc.Add(d)
		}
		if a.c == b.c {
			break
		}
		a = pos{a.c + 1, 0}
	}
	return acc
}

func (x *digestIndex) rangeAcc(lower, upper []byte) wire.FingerprintAcc {
	a, b := x.lowerBound(lower), x.upperPos(upper)
	if !x.less(a, b) {
		return wire.FingerprintAcc{}
	}
	return x.accBetween(a, b)
}

func (x *digestIndex) rangeItems(lower, upper []byte, limit int) [][32]byte {
	a, b := x.lowerBound(lower), x.upperPos(upper)
	var out [][32]byte
	for x.less(a, b) {
		if limit > 0 && len(out) >= limit {
			break
		}
		out = append(out, x.item(a))
		a.i++
		if a.i >= len(x.chunks[a.c].items) {
			a = pos{a.c + 1, 0}
		}
	}
	return out
}

func (x *digestIndex) split(lower, upper []byte, k int) []Subrange {
	a, b := x.lowerBound(lower), x.upperPos(upper)
	ra, rb := x.rank(a), x.rank(b)
	n := max(rb-ra, 0)
	if n == 0 || k <= 1 {
		var acc wire.FingerprintAcc
		if n > 0 {
			acc = x.accBetween(a, b)
		}
		return []Subrange{{Upper: clone(upper), Acc: acc}}
	}
	parts := min(k, n)
	out := make([]Subrange, 0, parts)
	start := a
	r := ra
	for j := 0; j < parts; j++ {
		size := n / parts
		if j < n%parts {
			size++
		}
		r += size
		var end pos
		var ub []byte
		if j == parts-1 {
			end, ub = b, clone(upper)
		} else {
			end = x.at(r)
			d := x.item(end)
			ub = d[:]
		}
		out = append(out, Subrange{Upper: ub, Acc: x.accBetween(start, end)})
		start = end
	}
	return out
}

// trackIndex registers a newly loaded index for the budget. Committer, mu
// held.
func (l *Log) trackIndex(mb *mbox, set Set, x *digestIndex) {
	x.used.Store(l.idxClock.Add(1))
	l.idxLoaded[x] = idxOwner{mb: mb, set: set}
	l.idxBytes += x.bytes
}

// evictIndexes drops the least recently used reconciliation indexes until
// those left fit in 7/8 of LogOptions.IndexBudget (so that evictions come in
// batches, not at every commit), never the most recently used one.
// Committer, mu held.
func (l *Log) evictIndexes() {
	budget := l.opts.IndexBudget
	if budget < 0 || l.idxBytes <= budget || len(l.idxLoaded) < 2 {
		return
	}
	xs := make([]*digestIndex, 0, len(l.idxLoaded))
	for x := range l.idxLoaded {
		xs = append(xs, x)
	}
	slices.SortFunc(xs, func(a, b *digestIndex) int { return cmp.Compare(a.used.Load(), b.used.Load()) })
	for _, x := range xs[:len(xs)-1] {
		if l.idxBytes <= budget*7/8 {
			break
		}
		own := l.idxLoaded[x]
		own.mb.idx[own.set] = nil
		delete(l.idxLoaded, x)
		l.idxBytes -= x.bytes
		l.st.indexBytes.Add(-x.bytes)
		l.st.indexEvictions.Add(1)
	}
}
