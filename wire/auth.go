package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// AuthVersion is the version byte of an AuthProof.
const AuthVersion = 0x01

// AuthOp names the operation an auth proof authorises (SPEC.md §8).
type AuthOp uint8

// Operations that need the mailbox owner's proof.
const (
	AuthSync      AuthOp = 1
	AuthSubscribe AuthOp = 2
	AuthAck       AuthOp = 3
	AuthPrekeys   AuthOp = 4
)

func (op AuthOp) valid() bool { return op >= AuthSync && op <= AuthPrekeys }

// AuthProof proves that the holder of a mailbox key asked one relay for one
// request at one time (SPEC.md §8).
type AuthProof struct {
	Op         AuthOp
	Relay      peer.ID
	MailboxKey ed25519.PublicKey
	TimeMs     uint64
	Nonce      [16]byte
	BodyDigest [32]byte
	Signature  [64]byte
}

// NewAuthProof signs a proof for body (the exact protobuf bytes of the
// request) addressed to relay, with a fresh nonce from random.
func NewAuthProof(key ed25519.PrivateKey, op AuthOp, relay peer.ID, body []byte, now time.Time, random io.Reader) (*AuthProof, error) {
	if !op.valid() {
		return nil, fmt.Errorf("auth proof: op %d: %w", op, ErrMalformed)
	}
	p := &AuthProof{
		Op:         op,
		Relay:      relay,
		MailboxKey: key.Public().(ed25519.PublicKey),
		TimeMs:     uint64(now.UnixMilli()),
		BodyDigest: sha256.Sum256(body),
	}
	if _, err := io.ReadFull(random, p.Nonce[:]); err != nil {
		return nil, fmt.Errorf("auth proof: nonce: %w", err)
	}
	signed, err := p.signedPart()
	if err != nil {
		return nil, err
	}
	copy(p.Signature[:], ed25519.Sign(key, signingInput(LabelAuth, signed)))
	return p, nil
}

func signingInput(label string, data []byte) []byte {
	return append(labelled(label), data...)
}

// signedPart is the encoding without the signature.
func (p *AuthProof) signedPart() ([]byte, error) {
	if len(p.MailboxKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("auth proof: mailbox key length %d: %w", len(p.MailboxKey), ErrMalformed)
	}
	b := make([]byte, 0, 3+len(p.Relay)+32+8+16+32+64)
	b = append(b, AuthVersion, byte(p.Op))
	b, err := appendPeerID(b, p.Relay)
	if err != nil {
		return nil, fmt.Errorf("auth proof relay: %w", err)
	}
	b = append(b, p.MailboxKey...)
	b = binary.BigEndian.AppendUint64(b, p.TimeMs)
	b = append(b, p.Nonce[:]...)
	return append(b, p.BodyDigest[:]...), nil
}

// Marshal returns the canonical encoding.
func (p *AuthProof) Marshal() ([]byte, error) {
	b, err := p.signedPart()
	if err != nil {
		return nil, err
	}
	return append(b, p.Signature[:]...), nil
}

// ParseAuthProof parses a proof without verifying it.
func ParseAuthProof(b []byte) (*AuthProof, error) {
	if len(b) >= 1 && b[0] != AuthVersion {
		return nil, fmt.Errorf("auth proof: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	if len(b) < 2 {
		return nil, fmt.Errorf("auth proof: short: %w", ErrMalformed)
	}
	p := &AuthProof{Op: AuthOp(b[1])}
	if !p.Op.valid() {
		return nil, fmt.Errorf("auth proof: op %d: %w", b[1], ErrMalformed)
	}
	relay, rest, err := readPeerID(b[2:])
	if err != nil {
		return nil, fmt.Errorf("auth proof relay: %w", err)
	}
	if len(rest) != 32+8+16+32+64 {
		return nil, fmt.Errorf("auth proof: %d bytes after relay: %w", len(rest), ErrMalformed)
	}
	p.Relay = relay
	p.MailboxKey = ed25519.PublicKey(append([]byte(nil), rest[:32]...))
	p.TimeMs = binary.BigEndian.Uint64(rest[32:40])
	p.Nonce = [16]byte(rest[40:56])
	p.BodyDigest = [32]byte(rest[56:88])
	p.Signature = [64]byte(rest[88:152])
	return p, nil
}

// Mailbox returns the address of the proof's mailbox key.
func (p *AuthProof) Mailbox() Mailbox { return MailboxOf(p.MailboxKey) }

// Verify runs the stateless checks of SPEC.md §8 in order, cheapest first:
// op, relay, time window (ErrAuthStale), body digest and mailbox address,
// then the signature (ErrAuthFailed). The caller checks the replay cache
// afterwards (ErrAuthReplayed).
func (p *AuthProof) Verify(op AuthOp, self peer.ID, mailbox Mailbox, body []byte, now time.Time) error {
	if p.Op != op {
		return fmt.Errorf("auth proof: op %d for op %d: %w", p.Op, op, ErrAuthFailed)
	}
	if p.Relay != self {
		return fmt.Errorf("auth proof: addressed to another relay: %w", ErrAuthFailed)
	}
	t := time.UnixMilli(int64(p.TimeMs))
	if d := now.Sub(t); d > AuthWindow || d < -AuthWindow {
		return fmt.Errorf("auth proof: time off by %v: %w", d.Round(time.Millisecond), ErrAuthStale)
	}
	if sha256.Sum256(body) != p.BodyDigest {
		return fmt.Errorf("auth proof: body digest: %w", ErrAuthFailed)
	}
	if p.Mailbox() != mailbox {
		return fmt.Errorf("auth proof: key is not the mailbox's: %w", ErrAuthFailed)
	}
	signed, err := p.signedPart()
	if err != nil {
		return fmt.Errorf("auth proof: %w", ErrAuthFailed)
	}
	if !ed25519.Verify(p.MailboxKey, signingInput(LabelAuth, signed), p.Signature[:]) {
		return fmt.Errorf("auth proof: signature: %w", ErrAuthFailed)
	}
	return nil
}

// ReplayKey is what a relay's replay cache records for a proof.
type ReplayKey struct {
	MailboxKey [32]byte
	Nonce      [16]byte
}

// ReplayKey returns the proof's replay-cache key.
func (p *AuthProof) ReplayKey() ReplayKey {
	var k ReplayKey
	copy(k.MailboxKey[:], p.MailboxKey)
	k.Nonce = p.Nonce
	return k
}

// ReplayExpiry is when a relay may forget the proof: time + AuthWindow.
func (p *AuthProof) ReplayExpiry() time.Time {
	return time.UnixMilli(int64(p.TimeMs)).Add(AuthWindow)
}
