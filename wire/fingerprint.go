package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
)

// FingerprintLen is the size of a range fingerprint (SPEC.md §10.10).
const FingerprintLen = 16

// Fingerprint is the reconciliation fingerprint of a set of item digests.
type Fingerprint [FingerprintLen]byte

// FingerprintAcc accumulates item digests into a range fingerprint: their
// sum modulo 2^256 (each digest read as a little-endian 256-bit integer) and
// their count. Sums are commutative, so a range's accumulator can be built
// in any order and combined from sub-ranges with Merge. The zero value is an
// empty accumulator.
type FingerprintAcc struct {
	sum   [4]uint64 // little-endian limbs
	count uint64
}

// Add adds one item digest.
func (a *FingerprintAcc) Add(d [32]byte) {
	var carry uint64
	for i := 0; i < 4; i++ {
		a.sum[i], carry = bits.Add64(a.sum[i], binary.LittleEndian.Uint64(d[8*i:]), carry)
	}
	a.count++
}

// Merge adds every item of b.
func (a *FingerprintAcc) Merge(b *FingerprintAcc) {
	var carry uint64
	for i := 0; i < 4; i++ {
		a.sum[i], carry = bits.Add64(a.sum[i], b.sum[i], carry)
	}
	a.count += b.count
}

// Count returns the number of items added.
func (a *FingerprintAcc) Count() uint64 { return a.count }

// Fingerprint returns the first 16 bytes of
// SHA-256("cairn/v1/fp" ‖ 0x00 ‖ sum(32, little-endian) ‖ u64(count)).
func (a *FingerprintAcc) Fingerprint() Fingerprint {
	b := labelled(LabelFingerprint)
	for i := 0; i < 4; i++ {
		b = binary.LittleEndian.AppendUint64(b, a.sum[i])
	}
	b = binary.BigEndian.AppendUint64(b, a.count)
	sum := sha256.Sum256(b)
	return Fingerprint(sum[:FingerprintLen])
}

// Sub removes every item of b, which must have been added to a (a range's
// accumulator is then the difference of two prefix accumulators).
func (a *FingerprintAcc) Sub(b *FingerprintAcc) {
	var borrow uint64
	for i := 0; i < 4; i++ {
		a.sum[i], borrow = bits.Sub64(a.sum[i], b.sum[i], borrow)
	}
	a.count -= b.count
}

// MailboxSummary returns the summary item of a mailbox for a summary
// exchange (SPEC.md §10.10): SHA-256("cairn/v1/summary" ‖ 0x00 ‖ mailbox ‖
// fingerprint(entries) ‖ u64(count(entries)) ‖ fingerprint(tombstones) ‖
// u64(count(tombstones))). Two replicas give the same item for a mailbox
// exactly when they hold the same sets of it (up to SHA-256 collisions).
func MailboxSummary(mailbox Mailbox, entries, tombstones *FingerprintAcc) [32]byte {
	b := labelled(LabelSummary)
	b = append(b, mailbox[:]...)
	for _, a := range []*FingerprintAcc{entries, tombstones} {
		fp := a.Fingerprint()
		b = append(b, fp[:]...)
		b = binary.BigEndian.AppendUint64(b, a.count)
	}
	return sha256.Sum256(b)
}
