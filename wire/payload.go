package wire

import (
	"encoding/binary"
	"fmt"
)

// PayloadVersion is the version byte of a Payload.
const PayloadVersion = 0x01

// PayloadKind says what a payload carries (SPEC.md §16).
type PayloadKind uint8

// Payload kinds.
const (
	// PayloadText is a user message; Body is its content.
	PayloadText PayloadKind = 1
	// PayloadDelivery is a delivery receipt; Acks lists the sender counters
	// of the messages it confirms.
	PayloadDelivery PayloadKind = 2
)

const (
	// MaxBody bounds a text payload's body.
	MaxBody = 192 << 10
	// MaxPayloadAcks bounds the counters one delivery receipt confirms.
	MaxPayloadAcks = 1024
	// PayloadPadBlock is the padding block: every payload's length is a
	// multiple of it, so relays see sizes only to this granularity.
	PayloadPadBlock = 64
	// payloadHeader is version, kind, counter, reply_to, sent_at_ms, body_len.
	payloadHeader = 1 + 1 + 8 + MailboxLen + 8 + 4
)

// Payload is the plaintext a client seals with the ratchet (SPEC.md §16).
// Relays never see it.
type Payload struct {
	Kind PayloadKind
	// Counter is the sender's counter in this conversation: 1 for its first
	// payload to this contact, +1 for each one after, whatever the kind. The
	// recipient orders and detects gaps by it, never by clock.
	Counter uint64
	// ReplyTo is the sender's current mailbox address.
	ReplyTo Mailbox
	// SentAtMs is the sender's clock, for display only.
	SentAtMs uint64
	// Body is the message of a PayloadText.
	Body []byte
	// Acks are the counters a PayloadDelivery confirms.
	Acks []uint64
}

// Marshal returns the canonical, padded encoding.
func (p *Payload) Marshal() ([]byte, error) {
	var body []byte
	switch p.Kind {
	case PayloadText:
		if len(p.Body) > MaxBody {
			return nil, fmt.Errorf("payload: body of %d bytes: %w", len(p.Body), ErrMalformed)
		}
		if len(p.Acks) != 0 {
			return nil, fmt.Errorf("payload: text with acks: %w", ErrMalformed)
		}
		body = p.Body
	case PayloadDelivery:
		if len(p.Acks) == 0 || len(p.Acks) > MaxPayloadAcks || len(p.Body) != 0 {
			return nil, fmt.Errorf("payload: delivery of %d acks: %w", len(p.Acks), ErrMalformed)
		}
		body = make([]byte, 0, 8*len(p.Acks))
		for _, a := range p.Acks {
			body = binary.BigEndian.AppendUint64(body, a)
		}
	default:
		return nil, fmt.Errorf("payload: kind %d: %w", p.Kind, ErrMalformed)
	}
	if p.Counter == 0 {
		return nil, fmt.Errorf("payload: counter 0: %w", ErrMalformed)
	}
	if p.ReplyTo[0] != 0x12 || p.ReplyTo[1] != 0x20 {
		return nil, fmt.Errorf("payload: reply-to address: %w", ErrMalformed)
	}
	n := payloadHeader + len(body)
	padded := (n + PayloadPadBlock - 1) / PayloadPadBlock * PayloadPadBlock
	b := make([]byte, 0, padded)
	b = append(b, PayloadVersion, byte(p.Kind))
	b = binary.BigEndian.AppendUint64(b, p.Counter)
	b = append(b, p.ReplyTo[:]...)
	b = binary.BigEndian.AppendUint64(b, p.SentAtMs)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return b[:padded], nil // the capacity beyond n is zeroed by make
}

// ParsePayload parses a payload; Body aliases b.
func ParsePayload(b []byte) (*Payload, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("payload: empty: %w", ErrMalformed)
	}
	if b[0] != PayloadVersion {
		return nil, fmt.Errorf("payload: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	if len(b) < payloadHeader || len(b)%PayloadPadBlock != 0 {
		return nil, fmt.Errorf("payload: %d bytes: %w", len(b), ErrMalformed)
	}
	p := &Payload{Kind: PayloadKind(b[1])}
	p.Counter = binary.BigEndian.Uint64(b[2:10])
	mb, err := ParseMailbox(b[10 : 10+MailboxLen])
	if err != nil {
		return nil, fmt.Errorf("payload reply-to: %w", err)
	}
	p.ReplyTo = mb
	rest := b[10+MailboxLen:]
	p.SentAtMs = binary.BigEndian.Uint64(rest[0:8])
	n := int(binary.BigEndian.Uint32(rest[8:12]))
	rest = rest[12:]
	if n > len(rest) {
		return nil, fmt.Errorf("payload: body length %d: %w", n, ErrMalformed)
	}
	body, pad := rest[:n], rest[n:]
	if len(pad) >= PayloadPadBlock {
		return nil, fmt.Errorf("payload: %d bytes of padding: %w", len(pad), ErrMalformed)
	}
	for _, x := range pad {
		if x != 0 {
			return nil, fmt.Errorf("payload: non-zero padding: %w", ErrMalformed)
		}
	}
	if p.Counter == 0 {
		return nil, fmt.Errorf("payload: counter 0: %w", ErrMalformed)
	}
	switch p.Kind {
	case PayloadText:
		if n > MaxBody {
			return nil, fmt.Errorf("payload: body of %d bytes: %w", n, ErrMalformed)
		}
		p.Body = body
	case PayloadDelivery:
		if n == 0 || n%8 != 0 || n/8 > MaxPayloadAcks {
			return nil, fmt.Errorf("payload: delivery body of %d bytes: %w", n, ErrMalformed)
		}
		p.Acks = make([]uint64, n/8)
		for i := range p.Acks {
			p.Acks[i] = binary.BigEndian.Uint64(body[8*i:])
		}
	default:
		return nil, fmt.Errorf("payload: kind %d: %w", p.Kind, ErrMalformed)
	}
	return p, nil
}
