package wire

import (
	"encoding/binary"
	"fmt"
)

// EnvelopeVersion is the version byte of an Envelope.
const EnvelopeVersion = 0x01

// Envelope is what a sender deposits and a relay stores (SPEC.md §3). It
// carries no sender identity.
//
//	version(1) ‖ mailbox(34) ‖ expiry(u64) ‖ postage(u64) ‖ length(u32) ‖ ciphertext
type Envelope struct {
	Mailbox Mailbox
	// Expiry is in Unix seconds; 0 asks for the relay's default TTL.
	Expiry uint64
	// Postage is the proof-of-work nonce (SPEC.md §5).
	Postage uint64
	// Ciphertext is opaque to relays; 1 ≤ len ≤ MaxCiphertext.
	Ciphertext []byte
}

// Size returns the length of the envelope's encoding.
func (e *Envelope) Size() int { return EnvelopeOverhead + len(e.Ciphertext) }

// Marshal returns the canonical encoding. It fails only if the ciphertext
// length is out of bounds.
func (e *Envelope) Marshal() ([]byte, error) {
	return e.AppendMarshal(make([]byte, 0, e.Size()))
}

// AppendMarshal appends the canonical encoding to b.
func (e *Envelope) AppendMarshal(b []byte) ([]byte, error) {
	if len(e.Ciphertext) == 0 || len(e.Ciphertext) > MaxCiphertext {
		return nil, fmt.Errorf("envelope: ciphertext length %d: %w", len(e.Ciphertext), ErrMalformed)
	}
	if e.Mailbox[0] != 0x12 || e.Mailbox[1] != 0x20 {
		return nil, fmt.Errorf("envelope: mailbox address: %w", ErrMalformed)
	}
	b = append(b, EnvelopeVersion)
	b = append(b, e.Mailbox[:]...)
	b = binary.BigEndian.AppendUint64(b, e.Expiry)
	b = binary.BigEndian.AppendUint64(b, e.Postage)
	b = binary.BigEndian.AppendUint32(b, uint32(len(e.Ciphertext)))
	return append(b, e.Ciphertext...), nil
}

// ParseEnvelope parses an envelope. The returned Ciphertext aliases b.
func ParseEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	if err := e.Unmarshal(b); err != nil {
		return nil, err
	}
	return &e, nil
}

// Unmarshal parses b into e; e.Ciphertext aliases b.
func (e *Envelope) Unmarshal(b []byte) error {
	if len(b) < 1 {
		return fmt.Errorf("envelope: empty: %w", ErrMalformed)
	}
	if b[0] != EnvelopeVersion {
		return fmt.Errorf("envelope: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	if len(b) < EnvelopeOverhead+1 {
		return fmt.Errorf("envelope: %d bytes: %w", len(b), ErrMalformed)
	}
	if len(b) > MaxEnvelope {
		return fmt.Errorf("envelope: %d bytes: %w", len(b), ErrMalformed)
	}
	mb, err := ParseMailbox(b[1:35])
	if err != nil {
		return fmt.Errorf("envelope: %w", err)
	}
	n := binary.BigEndian.Uint32(b[51:55])
	if int(n) != len(b)-EnvelopeOverhead {
		return fmt.Errorf("envelope: length field %d for %d ciphertext bytes: %w", n, len(b)-EnvelopeOverhead, ErrMalformed)
	}
	e.Mailbox = mb
	e.Expiry = binary.BigEndian.Uint64(b[35:43])
	e.Postage = binary.BigEndian.Uint64(b[43:51])
	e.Ciphertext = b[EnvelopeOverhead:]
	return nil
}

// EnvelopeMailbox returns the mailbox of an encoded envelope without parsing
// the rest; it fails only on a short or malformed header.
func EnvelopeMailbox(b []byte) (Mailbox, error) {
	if len(b) >= 1 && b[0] != EnvelopeVersion {
		return Mailbox{}, fmt.Errorf("envelope: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	if len(b) < EnvelopeOverhead {
		return Mailbox{}, fmt.Errorf("envelope: %d bytes: %w", len(b), ErrMalformed)
	}
	return ParseMailbox(b[1:35])
}
