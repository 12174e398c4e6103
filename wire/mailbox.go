package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// MailboxLen is the size of a mailbox address: a sha2-256 multihash.
const MailboxLen = 34

// Mailbox is a mailbox address (SPEC.md §2): 0x12 ‖ 0x20 ‖ SHA-256(mailbox
// public key). Its bytes are also the mailbox's DHT key.
type Mailbox [MailboxLen]byte

// MailboxOf returns the address of a mailbox public key.
func MailboxOf(pub ed25519.PublicKey) Mailbox {
	var m Mailbox
	m[0], m[1] = 0x12, 0x20
	sum := sha256.Sum256(pub)
	copy(m[2:], sum[:])
	return m
}

// ParseMailbox checks and copies a 34-byte mailbox address.
func ParseMailbox(b []byte) (Mailbox, error) {
	var m Mailbox
	if len(b) != MailboxLen || b[0] != 0x12 || b[1] != 0x20 {
		return m, fmt.Errorf("mailbox address: %w", ErrMalformed)
	}
	copy(m[:], b)
	return m, nil
}

// ParseMailboxHex parses the text form of a mailbox address.
func ParseMailboxHex(s string) (Mailbox, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return Mailbox{}, fmt.Errorf("mailbox address: %w", ErrMalformed)
	}
	return ParseMailbox(b)
}

// DHTKey returns the Kademlia key of the mailbox.
func (m Mailbox) DHTKey() string { return string(m[:]) }

// String returns the lowercase hex text form.
func (m Mailbox) String() string { return hex.EncodeToString(m[:]) }

// IsZero reports whether m is the zero value (not a valid address).
func (m Mailbox) IsZero() bool { return m == Mailbox{} }
