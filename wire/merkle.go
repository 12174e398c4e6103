package wire

import (
	"crypto/sha256"
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

// merkleRoot computes MTH over leaf hashes.
func merkleRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return merkleNode(merkleRoot(leaves[:k]), merkleRoot(leaves[k:]))
}

// merklePath returns the inclusion path of leaf m (RFC 9162 §2.1.3.1).
func merklePath(m int, leaves [][32]byte) [][32]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := splitPoint(len(leaves))
	if m < k {
		return append(merklePath(m, leaves[:k]), merkleRoot(leaves[k:]))
	}
	return append(merklePath(m-k, leaves[k:]), merkleRoot(leaves[:k]))
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
