package wire

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"testing"
)

// A reference Merkle tree written straight from RFC 9162 §2.1, as
// independent as possible from merkle.go: it hashes leaf data, recurses on
// slices of data, and finds k with a loop.

func refLeafHash(d []byte) [32]byte { return sha256.Sum256(append([]byte{0x00}, d...)) }

func refNodeHash(l, r [32]byte) [32]byte {
	return sha256.Sum256(append(append([]byte{0x01}, l[:]...), r[:]...))
}

// refK is "the largest power of two smaller than n (i.e., k < n <= 2k)".
func refK(n int) int {
	k := 1
	for 2*k < n {
		k *= 2
	}
	return k
}

// refTree computes MTH and PATH over leaf data D by the recursions of RFC
// 9162 §2.1.1 and §2.1.3.1, on index ranges [lo, hi) of D. It remembers
// the subtree hashes it has computed, so that the paths of every leaf of a
// tree cost no more than the tree.
type refTree struct {
	d    [][]byte
	memo map[[2]int][32]byte
}

func newRefTree(d [][]byte) *refTree { return &refTree{d: d, memo: map[[2]int][32]byte{}} }

// mth is MTH(D[lo:hi]).
func (t *refTree) mth(lo, hi int) [32]byte {
	if h, ok := t.memo[[2]int{lo, hi}]; ok {
		return h
	}
	var h [32]byte
	switch n := hi - lo; n {
	case 0:
		h = sha256.Sum256(nil)
	case 1:
		h = refLeafHash(t.d[lo])
	default:
		k := refK(n)
		h = refNodeHash(t.mth(lo, lo+k), t.mth(lo+k, hi))
	}
	t.memo[[2]int{lo, hi}] = h
	return h
}

// path is PATH(m, D[lo:hi]).
func (t *refTree) path(m, lo, hi int) [][32]byte {
	n := hi - lo
	if n == 1 {
		return nil
	}
	k := refK(n)
	if m < k {
		return append(t.path(m, lo, lo+k), t.mth(lo+k, hi))
	}
	return append(t.path(m-k, lo+k, hi), t.mth(lo, lo+k))
}

// refMTH is MTH(D[n]) of RFC 9162 §2.1.1.
func refMTH(d [][]byte) [32]byte { return newRefTree(d).mth(0, len(d)) }

// refPATH is PATH(m, D[n]) of RFC 9162 §2.1.3.1.
func refPATH(m int, d [][]byte) [][32]byte { return newRefTree(d).path(m, 0, len(d)) }

// refRootFromPath inverts refPATH: the root of a tree of size n whose leaf m
// has hash h and inclusion path path; ok is false if the path has the wrong
// length for (m, n).
func refRootFromPath(m, n int, h [32]byte, path [][32]byte) ([32]byte, bool) {
	if n == 1 {
		return h, len(path) == 0
	}
	if len(path) == 0 {
		return h, false
	}
	k := refK(n)
	last, rest := path[len(path)-1], path[:len(path)-1]
	if m < k {
		l, ok := refRootFromPath(m, k, h, rest)
		return refNodeHash(l, last), ok
	}
	r, ok := refRootFromPath(m-k, n-k, h, rest)
	return refNodeHash(last, r), ok
}

func refPathLen(m, n int) int {
	if n == 1 {
		return 0
	}
	k := refK(n)
	if m < k {
		return 1 + refPathLen(m, k)
	}
	return 1 + refPathLen(m-k, n-k)
}

// Certificate Transparency's reference leaves and tree heads (RFC 6962 test
// data, as shipped by certificate-transparency-go and trillian), which the
// RFC 9162 tree keeps unchanged.
var (
	ctLeaves = [][]byte{
		{}, unhex("00"), unhex("10"), unhex("2021"), unhex("3031"), unhex("40414243"),
		unhex("5051525354555657"), unhex("606162636465666768696a6b6c6d6e6f"),
	}
	ctRoots = []string{
		"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
		"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
		"aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
		"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		"4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
		"76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
		"ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
		"5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
	}
	ctInclusion = []struct {
		index, size int
		path        []string
	}{
		{0, 8, []string{
			"96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
		}},
		{5, 8, []string{
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
			"ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
			"d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
		}},
		{2, 3, []string{"fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"}},
		{1, 5, []string{
			"6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
			"5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
			"bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
		}},
	}
)

func leafHashes(d [][]byte) [][32]byte {
	hs := make([][32]byte, len(d))
	for i := range d {
		hs[i] = merkleLeaf(d[i])
	}
	return hs
}

func hexPath(p [][32]byte) []string {
	s := make([]string, len(p))
	for i := range p {
		s[i] = hex.EncodeToString(p[i][:])
	}
	return s
}

func TestMerkleCTVectors(t *testing.T) {
	if got := hex.EncodeToString(func() []byte { r := merkleRoot(nil); return r[:] }()); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("empty root %s", got)
	}
	for n := 1; n <= len(ctLeaves); n++ {
		ref := refMTH(ctLeaves[:n])
		got := merkleRoot(leafHashes(ctLeaves[:n]))
		if hex.EncodeToString(ref[:]) != ctRoots[n-1] {
			t.Errorf("reference MTH of %d CT leaves = %x, want %s", n, ref, ctRoots[n-1])
		}
		if hex.EncodeToString(got[:]) != ctRoots[n-1] {
			t.Errorf("merkleRoot of %d CT leaves = %x, want %s", n, got, ctRoots[n-1])
		}
	}
	for _, v := range ctInclusion {
		d := ctLeaves[:v.size]
		if got := hexPath(refPATH(v.index, d)); !slices.Equal(got, v.path) {
			t.Errorf("reference PATH(%d, %d) = %v, want %v", v.index, v.size, got, v.path)
		}
		if got := hexPath(merklePath(v.index, leafHashes(d))); !slices.Equal(got, v.path) {
			t.Errorf("merklePath(%d, %d) = %v, want %v", v.index, v.size, got, v.path)
		}
		root, ok := merkleRootFromPath(v.index, v.size, merkleLeaf(d[v.index]), merklePath(v.index, leafHashes(d)))
		if !ok || hex.EncodeToString(root[:]) != ctRoots[v.size-1] {
			t.Errorf("merkleRootFromPath(%d, %d) = %x, %v", v.index, v.size, root, ok)
		}
	}
}

func TestMerkleAgainstRFC9162Reference(t *testing.T) {
	const maxN = 130
	data := make([][]byte, maxN)
	for i := range data {
		data[i] = []byte{byte(i), byte(i >> 8), 0xc4}
	}
	for n := 1; n <= maxN; n++ {
		d := data[:n]
		hs := leafHashes(d)
		for i := range hs {
			if hs[i] != refLeafHash(d[i]) {
				t.Fatalf("merkleLeaf differs from SHA-256(0x00 ‖ d)")
			}
		}
		ref := newRefTree(d)
		root := merkleRoot(hs)
		if ref := ref.mth(0, n); root != ref {
			t.Fatalf("n=%d: merkleRoot %x, reference MTH %x", n, root, ref)
		}
		for m := 0; m < n; m++ {
			path := merklePath(m, hs)
			refPath := ref.path(m, 0, n)
			if !slices.Equal(path, refPath) {
				t.Fatalf("n=%d m=%d: merklePath differs from the reference PATH", n, m)
			}
			if l := merklePathLen(m, n); l != len(refPath) {
				t.Fatalf("n=%d m=%d: merklePathLen %d, reference path length %d", n, m, l, len(refPath))
			}
			got, ok := merkleRootFromPath(m, n, hs[m], path)
			if !ok || got != root {
				t.Fatalf("n=%d m=%d: merkleRootFromPath = %x, %v; want the root", n, m, got, ok)
			}
			if r, ok := refRootFromPath(m, n, hs[m], path); !ok || r != root {
				t.Fatalf("n=%d m=%d: the reference verifier rejects the path", n, m)
			}
			// A path one hash too long or too short never verifies.
			if _, ok := merkleRootFromPath(m, n, hs[m], append(slices.Clone(path), root)); ok {
				t.Fatalf("n=%d m=%d: accepted a path with an extra hash", n, m)
			}
			if len(path) > 0 {
				if _, ok := merkleRootFromPath(m, n, hs[m], path[:len(path)-1]); ok {
					t.Fatalf("n=%d m=%d: accepted a path missing its last hash", n, m)
				}
				// Any other leaf, or any changed path hash, moves the root.
				bad := slices.Clone(path)
				bad[len(bad)/2][7] ^= 1
				if r, ok := merkleRootFromPath(m, n, hs[m], bad); ok && r == root {
					t.Fatalf("n=%d m=%d: a changed path hash gives the same root", n, m)
				}
			}
			if r, ok := merkleRootFromPath(m, n, refLeafHash([]byte("other")), path); ok && r == root {
				t.Fatalf("n=%d m=%d: another leaf gives the same root", n, m)
			}
			// The same path under another index of the same path length
			// gives another root (every index for small trees, the
			// neighbours and the mirror image for the larger ones).
			others := []int{m - 1, m + 1, n - 1 - m, m ^ 1}
			if n <= 40 {
				others = others[:0]
				for o := range n {
					others = append(others, o)
				}
			}
			for _, o := range others {
				if o == m || o < 0 || o >= n || merklePathLen(o, n) != len(path) {
					continue
				}
				if r, ok := merkleRootFromPath(o, n, hs[m], path); ok && r == root {
					t.Fatalf("n=%d: leaf %d's path also proves index %d", n, m, o)
				}
			}
		}
		// Out-of-range indices and sizes fail.
		for _, tt := range [][2]int{{n, n}, {n + 5, n}, {0, 0}, {-1, n}} {
			if _, ok := merkleRootFromPath(tt[0], tt[1], hs[0], nil); ok {
				t.Fatalf("merkleRootFromPath(index %d, n %d) succeeded", tt[0], tt[1])
			}
		}
	}
}

func TestMerklePathLenBound(t *testing.T) {
	// SPEC.md §6.2: path_len is 0 … 10 for N ≤ 1024.
	maxLen := 0
	for n := 1; n <= MaxReceiptBatch; n++ {
		if k := splitPoint(n + 1); k != refK(n+1) {
			t.Fatalf("splitPoint(%d) = %d, want %d", n+1, k, refK(n+1))
		}
		for m := 0; m < n; m++ {
			l := merklePathLen(m, n)
			if l != refPathLen(m, n) {
				t.Fatalf("merklePathLen(%d, %d) = %d, want %d", m, n, l, refPathLen(m, n))
			}
			maxLen = max(maxLen, l)
		}
	}
	if maxLen != 10 {
		t.Errorf("longest path for N ≤ %d is %d, SPEC.md §6.2 says 10", MaxReceiptBatch, maxLen)
	}
}
