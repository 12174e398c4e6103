package store

import (
	"crypto/sha256"
	"math/bits"
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
