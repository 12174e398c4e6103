package store

import (
	"crypto/sha256"
	"errors"
	"math/bits"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// batchTree rebuilds RFC 9162 inclusion paths (SPEC.md §6.2) from the
// leaves of a stored batch. Subtree roots are memoised, so the paths of all
// k entries of one batch read together cost O(n + k·log n) hashes.
type batchTree struct {
	rec  batchRec
	memo map[[2]uint16][32]byte
}

func newBatchTree(rec batchRec) *batchTree {
	return &batchTree{rec: rec, memo: make(map[[2]uint16][32]byte)}
}

func merkleLeaf(data []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{0x00})
	h.Write(data)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func merkleNode(left, right [32]byte) [32]byte {
	var buf [65]byte
	buf[0] = 0x01
	copy(buf[1:33], left[:])
	copy(buf[33:], right[:])
	return sha256.Sum256(buf[:])
}

// splitPoint returns the largest power of two smaller than n (n ≥ 2).
func splitPoint(n int) int { return 1 << (bits.Len(uint(n-1)) - 1) }

// root returns MTH(leaves[lo:hi]).
func (t *batchTree) root(lo, hi int) [32]byte {
	if hi-lo == 1 {
		return t.rec.leaves[lo]
	}
	k := [2]uint16{uint16(lo), uint16(hi)}
	if r, ok := t.memo[k]; ok {
		return r
	}
	s := lo + splitPoint(hi-lo)
	r := merkleNode(t.root(lo, s), t.root(s, hi))
	t.memo[k] = r
	return r
}

// path returns the inclusion path of leaf m (RFC 9162 §2.1.3.1).
func (t *batchTree) path(m int) [][32]byte {
	var out [][32]byte
	var walk func(lo, hi int)
	walk = func(lo, hi int) {
		if hi-lo <= 1 {
			return
		}
		s := lo + splitPoint(hi-lo)
		if m < s {
			walk(lo, s)
			out = append(out, t.root(s, hi))
		} else {
			walk(s, hi)
			out = append(out, t.root(lo, s))
		}
	}
	walk(0, len(t.rec.leaves))
	return out
}

// treeCache keeps recently read batch trees, fully built (so they are
// read-only and shared by concurrent readers). A sync of consecutive
// entries reads each batch once.
type treeCache struct {
	mu    sync.Mutex
	trees map[uint64]*batchTree
	order []uint64 // FIFO of cached ids
}

const treeCacheSize = 64

// get returns the tree of batch id, reading it through txn on a miss. k is
// the key of the entry that needs it (for errors).
func (c *treeCache) get(txn *badger.Txn, id uint64, k []byte) (*batchTree, error) {
	c.mu.Lock()
	t := c.trees[id]
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	bk := batchKey(id)
	item, err := txn.Get(bk)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, corrupt(k, "receipt batch %d missing", id)
	}
	if err != nil {
		return nil, err
	}
	var rec batchRec
	if err := item.Value(func(v []byte) error {
		var err error
		rec, err = decodeBatch(bk, v)
		return err
	}); err != nil {
		return nil, err
	}
	t = newBatchTree(rec)
	t.root(0, len(rec.leaves)) // build every node now: read-only from here
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trees == nil {
		c.trees = make(map[uint64]*batchTree)
	}
	if _, ok := c.trees[id]; !ok {
		if len(c.order) >= treeCacheSize {
			delete(c.trees, c.order[0])
			c.order = c.order[1:]
		}
		c.trees[id] = t
		c.order = append(c.order, id)
	}
	return t, nil
}
