package wire

import (
	"crypto/sha256"
	"fmt"
	"math/bits"
)

// Merkle trees over receipt batches, exactly as RFC 9162 §2.1 defines them
// with SHA-256 (SPEC.md §6.2).

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
func splitPoint(n int) int {
	return 1 << (bits.Len(uint(n-1)) - 1)
}

// ReceiptTree is the Merkle tree of a receipt batch (SPEC.md §6.2, RFC 9162
// §2.1): NewReceiptTree computes every node once, in O(n) hashes, and Path
// then costs O(log n) lookups. A tree is read-only after construction and
// safe for concurrent use.
type ReceiptTree struct {
	leaves [][32]byte
	nodes  map[uint32][32]byte // MTH(leaves[lo:hi]) at lo<<16 | hi, for hi-lo ≥ 2
}

// NewReceiptTree builds the tree over 1…MaxReceiptBatch leaf hashes (see
// ReceiptLeaf). It keeps leaves; do not modify them afterwards.
func NewReceiptTree(leaves [][32]byte) (*ReceiptTree, error) {
	if len(leaves) == 0 || len(leaves) > MaxReceiptBatch {
		return nil, fmt.Errorf("receipt tree: %d leaves: %w", len(leaves), ErrMalformed)
	}
	t := &ReceiptTree{leaves: leaves, nodes: make(map[uint32][32]byte, len(leaves))}
	t.build(0, len(leaves))
	return t, nil
}

func (t *ReceiptTree) build(lo, hi int) [32]byte {
	if hi-lo == 1 {
		return t.leaves[lo]
	}
	s := lo + splitPoint(hi-lo)
	r := merkleNode(t.build(lo, s), t.build(s, hi))
	t.nodes[uint32(lo)<<16|uint32(hi)] = r
	return r
}

func (t *ReceiptTree) node(lo, hi int) [32]byte {
	if hi-lo == 1 {
		return t.leaves[lo]
	}
	return t.nodes[uint32(lo)<<16|uint32(hi)]
}

// Len returns the number of leaves (the batch size).
func (t *ReceiptTree) Len() int { return len(t.leaves) }

// Leaf returns leaf i's hash.
func (t *ReceiptTree) Leaf(i int) [32]byte { return t.leaves[i] }

// Root returns the tree head that the batch signature covers.
func (t *ReceiptTree) Root() [32]byte { return t.node(0, len(t.leaves)) }

// Path returns the inclusion path of leaf m (RFC 9162 §2.1.3.1).
func (t *ReceiptTree) Path(m int) [][32]byte {
	out := make([][32]byte, 0, merklePathLen(m, len(t.leaves)))
	var walk func(lo, hi int)
	walk = func(lo, hi int) {
		if hi-lo <= 1 {
			return
		}
		s := lo + splitPoint(hi-lo)
		if m < s {
			walk(lo, s)
			out = append(out, t.node(s, hi))
		} else {
			walk(s, hi)
			out = append(out, t.node(lo, s))
		}
	}
	walk(0, len(t.leaves))
	return out
}

// merkleRoot computes MTH over leaf hashes (the empty tree included).
func merkleRoot(leaves [][32]byte) [32]byte {
	if len(leaves) == 0 {
		return sha256.Sum256(nil)
	}
	t, err := NewReceiptTree(leaves)
	if err != nil {
		panic(err) // only tests call it, with at most MaxReceiptBatch leaves
	}
	return t.Root()
}

// merklePath returns the inclusion path of leaf m (RFC 9162 §2.1.3.1).
func merklePath(m int, leaves [][32]byte) [][32]byte {
	t, err := NewReceiptTree(leaves)
	if err != nil {
		panic(err)
	}
	return t.Path(m)
}

// merklePathLen returns the inclusion path length for leaf index of a tree of
// size n, which a canonical signed receipt must match.
func merklePathLen(index, n int) int {
	l := 0
	for n > 1 {
		k := splitPoint(n)
		if index < k {
			n = k
		} else {
			index -= k
			n -= k
		}
		l++
	}
	return l
}

// merkleRootFromPath recomputes the root from a leaf hash and its inclusion
// path (RFC 9162 §2.1.3.2). ok is false if the path does not fit (index, n).
func merkleRootFromPath(index, n int, leaf [32]byte, path [][32]byte) (root [32]byte, ok bool) {
	if index < 0 || index >= n || n < 1 {
		return root, false
	}
	fn, sn := uint64(index), uint64(n-1)
	r := leaf
	for _, p := range path {
		if sn == 0 {
			return root, false
		}
		if fn&1 == 1 || fn == sn {
			r = merkleNode(p, r)
			if fn&1 == 0 {
				for fn&1 == 0 && fn != 0 {
					fn >>= 1
					sn >>= 1
				}
			}
		} else {
			r = merkleNode(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return root, false
	}
	return r, true
}
