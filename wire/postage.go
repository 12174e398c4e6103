package wire

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// postageWork computes the postage hash of SPEC.md §5 for a nonce, given
// the prefix label ‖ 0x00 ‖ mailbox ‖ expiry ‖ SHA-256(ciphertext).
func postageWork(prefix []byte, nonce uint64) [32]byte {
	h := sha256.New()
	h.Write(prefix)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], nonce)
	h.Write(n[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func postagePrefix(e *Envelope) []byte {
	b := labelled(LabelPostage)
	b = append(b, e.Mailbox[:]...)
	b = binary.BigEndian.AppendUint64(b, e.Expiry)
	ct := sha256.Sum256(e.Ciphertext)
	return append(b, ct[:]...)
}

// leadingZeroBits counts the leading zero bits of h, most significant first.
func leadingZeroBits(h [32]byte) int {
	n := 0
	for _, x := range h {
		if x != 0 {
			return n + bits.LeadingZeros8(x)
		}
		n += 8
	}
	return n
}

// PostageBits returns how many leading zero bits the envelope's postage hash
// has: the postage is valid for any difficulty up to this number.
func PostageBits(e *Envelope) int {
	return leadingZeroBits(postageWork(postagePrefix(e), e.Postage))
}

// CheckPostage reports whether the envelope's postage meets difficulty d.
func CheckPostage(e *Envelope, d int) error {
	if d <= 0 {
		return nil
	}
	if PostageBits(e) < d {
		return fmt.Errorf("postage: below difficulty %d: %w", d, ErrPostageRequired)
	}
	return nil
}

// SolvePostage searches nonces until the envelope's postage meets difficulty
// d and sets e.Postage. It checks ctx every 4096 attempts. Expected work is
// 2^d hashes.
func SolvePostage(ctx context.Context, e *Envelope, d int) error {
	if d <= 0 {
		return nil
	}
	if d > MaxPostageDifficulty {
		return fmt.Errorf("postage: difficulty %d above %d: %w", d, MaxPostageDifficulty, ErrMalformed)
	}
	prefix := postagePrefix(e)
	for nonce := e.Postage; ; nonce++ {
		if nonce&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("postage: %w", err)
			}
		}
		if leadingZeroBits(postageWork(prefix, nonce)) >= d {
			e.Postage = nonce
			return nil
		}
	}
}
