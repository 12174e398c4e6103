package wire

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"
)

// refFingerprint is SPEC.md §10.10 with math/big: the digests summed as
// little-endian 256-bit integers modulo 2^256, then
// SHA-256("cairn/v1/fp" ‖ 0x00 ‖ sum(32, little-endian) ‖ u64(count))[:16].
func refFingerprint(ds [][32]byte) Fingerprint {
	mod := new(big.Int).Lsh(big.NewInt(1), 256)
	sum := new(big.Int)
	for _, d := range ds {
		le := slices.Clone(d[:])
		slices.Reverse(le)
		sum.Add(sum, new(big.Int).SetBytes(le))
	}
	sum.Mod(sum, mod)
	be := sum.FillBytes(make([]byte, 32))
	slices.Reverse(be)
	h := sha(cat([]byte("cairn/v1/fp\x00"), be, u64(uint64(len(ds)))))
	return Fingerprint(h[:16])
}

func accOf(ds [][32]byte) *FingerprintAcc {
	var a FingerprintAcc
	for _, d := range ds {
		a.Add(d)
	}
	return &a
}

func fixtureDigests(n int) [][32]byte {
	ds := make([][32]byte, n)
	for i := range ds {
		ds[i] = sha256.Sum256(fmt.Appendf(nil, "item %d", i))
	}
	return ds
}

func TestFingerprintGolden(t *testing.T) {
	ones := [32]byte(bytes.Repeat([]byte{0xff}, 32))                        // 2^256 - 1
	one := [32]byte{0x01}                                                   // 1, little-endian
	carry := [32]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00} // 2^64 - 1
	vectors := []struct {
		name string
		ds   [][32]byte
	}{
		{"empty", nil},
		{"one", fixtureDigests(1)},
		{"three", fixtureDigests(3)},
		{"wraparound", [][32]byte{ones, one}},
		{"limb-carry", [][32]byte{carry, one}},
		{"hundred", fixtureDigests(100)},
	}
	var cases []golden
	for _, v := range vectors {
		got := accOf(v.ds).Fingerprint()
		if want := refFingerprint(v.ds); got != want {
			t.Errorf("%s: fingerprint %x, SPEC.md §10.10 by hand %x", v.name, got, want)
		}
		cases = append(cases, hexGolden(v.name, got[:]))
	}
	// The wrapped sum is 0: the fingerprint is that of S = 0 with count 2.
	if got, want := accOf(vectors[3].ds).Fingerprint(), Fingerprint(sha(cat([]byte("cairn/v1/fp\x00"), make([]byte, 32), u64(2)))[:16]); got != want {
		t.Errorf("2^256-1 + 1 does not wrap to 0: %x, want %x", got, want)
	}
	checkGolden(t, "fingerprint.txt", `
Range fingerprints (SPEC.md §10.10). one, three, hundred: the digests SHA-256("item <i>") for i = 0 … n-1.
wraparound: digests ff…ff and 01 00…00 (sum 0 mod 2^256). limb-carry: ff×8 00…00 and 01 00…00.`, cases)
}

func TestFingerprintOrderIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ds := fixtureDigests(50)
	want := accOf(ds).Fingerprint()
	for range 20 {
		p := slices.Clone(ds)
		rng.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		if got := accOf(p).Fingerprint(); got != want {
			t.Fatal("fingerprint depends on the order of the items")
		}
	}
	if accOf(ds[:49]).Fingerprint() == want {
		t.Fatal("dropping an item does not change the fingerprint")
	}
	// The count is part of the fingerprint: a zero digest changes it.
	if accOf(append(slices.Clone(ds), [32]byte{})).Fingerprint() == want {
		t.Fatal("adding the zero digest does not change the fingerprint")
	}
}

func TestFingerprintMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 50 {
		ds := fixtureDigests(rng.IntN(60))
		for i := range ds {
			if rng.IntN(4) == 0 {
				ds[i] = [32]byte(bytes.Repeat([]byte{0xff}, 32)) // force carries
			}
		}
		all := accOf(ds)
		var merged FingerprintAcc
		for rest := ds; len(rest) > 0; {
			k := rng.IntN(len(rest)) + 1
			merged.Merge(accOf(rest[:k]))
			rest = rest[k:]
		}
		merged.Merge(&FingerprintAcc{}) // merging the empty range changes nothing
		if merged != *all || merged.Count() != uint64(len(ds)) {
			t.Fatalf("Merge of the parts %+v, Add of all %+v", merged, *all)
		}
		if merged.Fingerprint() != refFingerprint(ds) {
			t.Fatal("fingerprint differs from the reference")
		}
	}
}

func TestFingerprintAddAllocs(t *testing.T) {
	var a FingerprintAcc
	d := fixtureDigests(1)[0]
	if n := testing.AllocsPerRun(100, func() { a.Add(d) }); n != 0 {
		t.Errorf("FingerprintAcc.Add allocates %v times", n)
	}
}

func TestFingerprintSub(t *testing.T) {
	// A range's accumulator is the difference of two prefix accumulators.
	rng := rand.New(rand.NewPCG(7, 8))
	ds := fixtureDigests(80)
	for i := range ds {
		if rng.IntN(3) == 0 {
			ds[i] = [32]byte(bytes.Repeat([]byte{0xff}, 32)) // force carries and borrows
		}
	}
	prefix := make([]FingerprintAcc, len(ds)+1)
	for i, d := range ds {
		prefix[i+1] = prefix[i]
		prefix[i+1].Add(d)
	}
	for i := 0; i <= len(ds); i++ {
		for j := i; j <= len(ds); j++ {
			r := prefix[j]
			r.Sub(&prefix[i])
			if r != *accOf(ds[i:j]) {
				t.Fatalf("prefix %d minus prefix %d differs from the range's accumulator", j, i)
			}
		}
	}
	// Sub undoes Merge, across a wraparound of the sum.
	a := accOf([][32]byte{{0x05}})
	b := accOf([][32]byte{[32]byte(bytes.Repeat([]byte{0xff}, 32)), {0x07}})
	c := *a
	c.Merge(b)
	c.Sub(b)
	if c != *a {
		t.Fatalf("Sub does not undo Merge: %+v, want %+v", c, *a)
	}
	var empty FingerprintAcc
	a.Sub(a)
	if *a != empty || a.Fingerprint() != empty.Fingerprint() {
		t.Fatal("a range minus itself is not empty")
	}
}

func TestMailboxSummaryLayout(t *testing.T) {
	var en, tb FingerprintAcc
	en.Add([32]byte{1})
	en.Add([32]byte{2})
	tb.Add([32]byte{3})
	fe, ft := en.Fingerprint(), tb.Fingerprint()
	want := sha(cat([]byte("cairn/v1/summary\x00"), fixtureMailbox[:], fe[:], unhex("0000000000000002"), ft[:], unhex("0000000000000001")))
	got := MailboxSummary(fixtureMailbox, &en, &tb)
	if string(got[:]) != string(want) {
		t.Fatalf("MailboxSummary = %x, SPEC.md §10.10 gives %x", got, want)
	}
	// Another mailbox, or the same items in the other set, is another item.
	other := MailboxOf(make([]byte, 32))
	if MailboxSummary(other, &en, &tb) == got || MailboxSummary(fixtureMailbox, &tb, &en) == got {
		t.Fatal("summary does not depend on the mailbox or on which set holds the items")
	}
	var empty FingerprintAcc
	if MailboxSummary(fixtureMailbox, &empty, &empty) == MailboxSummary(other, &empty, &empty) {
		t.Fatal("empty sets of two mailboxes give one summary")
	}
}
