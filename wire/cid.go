package wire

import (
	"crypto/sha256"
	"fmt"

	"github.com/ipfs/go-cid"
)

// CIDLen is the size of a binary CID in version 1.
const CIDLen = 36

// cidPrefix is CIDv1 ‖ raw codec (0x55) ‖ sha2-256 ‖ 32-byte digest.
var cidPrefix = [4]byte{0x01, 0x55, 0x12, 0x20}

// CID is the content ID of an envelope (SPEC.md §4): CIDv1, raw codec,
// sha2-256 over the exact envelope bytes, in binary form. It is comparable
// and usable as a map key.
type CID [CIDLen]byte

// CIDOf computes the CID of an encoded envelope.
func CIDOf(envelope []byte) CID {
	var c CID
	copy(c[:4], cidPrefix[:])
	sum := sha256.Sum256(envelope)
	copy(c[4:], sum[:])
	return c
}

// CIDFromDigest returns the CID whose sha2-256 digest is d (the inverse of
// CID.Digest).
func CIDFromDigest(d [32]byte) CID {
	var c CID
	copy(c[:4], cidPrefix[:])
	copy(c[4:], d[:])
	return c
}

// ParseCID checks and copies a binary CID of version 1's form.
func ParseCID(b []byte) (CID, error) {
	var c CID
	if len(b) != CIDLen || [4]byte(b[:4]) != cidPrefix {
		return c, fmt.Errorf("cid: %w", ErrMalformed)
	}
	copy(c[:], b)
	return c, nil
}

// ParseCIDString parses the text form (any multibase go-cid accepts) of a
// version 1 CID.
func ParseCIDString(s string) (CID, error) {
	v, err := cid.Decode(s)
	if err != nil {
		return CID{}, fmt.Errorf("cid %q: %w", s, ErrMalformed)
	}
	return ParseCID(v.Bytes())
}

// Digest returns the sha2-256 digest inside the CID: the item ID used by
// reconciliation (SPEC.md §10.10).
func (c CID) Digest() [32]byte { return [32]byte(c[4:]) }

// Cid converts to go-cid's type.
func (c CID) Cid() cid.Cid {
	v, err := cid.Cast(c[:])
	if err != nil {
		// Unreachable for a CID built by CIDOf or ParseCID.
		panic(fmt.Sprintf("wire: invalid CID bytes %x: %v", c[:], err))
	}
	return v
}

// String returns the base32 text form (b…). A value that is not a valid
// version 1 CID (one not made by CIDOf or ParseCID) prints as
// "<invalid cid …>" with its hex rather than panicking.
func (c CID) String() string {
	if c == (CID{}) {
		return "<zero cid>"
	}
	if [4]byte(c[:4]) != cidPrefix {
		return fmt.Sprintf("<invalid cid %x>", c[:])
	}
	return c.Cid().String()
}

// IsZero reports whether c is the zero value.
func (c CID) IsZero() bool { return c == CID{} }
