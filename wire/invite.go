package wire

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"

	ma "github.com/multiformats/go-multiaddr"
)

// InviteVersion is the version byte of an invite payload.
const InviteVersion = 0x01

// InvitePrefix starts every invite string (SPEC.md §9).
const InvitePrefix = "cairn1"

var inviteEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Invite is what a user hands another out of band to become a contact
// (SPEC.md §9).
type Invite struct {
	// Bundle is the inviter's public bundle (SPEC.md §15), opaque here.
	Bundle []byte
	// Name is a suggested display name; it may be empty.
	Name string
	// Hints are relays to bootstrap from, each with its /p2p/ component.
	Hints []ma.Multiaddr
}

// MarshalBinary returns the payload with its checksum.
func (inv *Invite) MarshalBinary() ([]byte, error) {
	if len(inv.Bundle) == 0 || len(inv.Bundle) > MaxInviteBundle {
		return nil, fmt.Errorf("invite: bundle of %d bytes: %w", len(inv.Bundle), ErrMalformed)
	}
	if len(inv.Name) > MaxInviteName || !utf8.ValidString(inv.Name) {
		return nil, fmt.Errorf("invite: name: %w", ErrMalformed)
	}
	if len(inv.Hints) > MaxInviteHints {
		return nil, fmt.Errorf("invite: %d hints: %w", len(inv.Hints), ErrMalformed)
	}
	b := []byte{InviteVersion}
	b = binary.BigEndian.AppendUint16(b, uint16(len(inv.Bundle)))
	b = append(b, inv.Bundle...)
	b = append(b, byte(len(inv.Name)))
	b = append(b, inv.Name...)
	b = append(b, byte(len(inv.Hints)))
	for _, h := range inv.Hints {
		hb := h.Bytes()
		if len(hb) == 0 || len(hb) > 255 {
			return nil, fmt.Errorf("invite: hint of %d bytes: %w", len(hb), ErrMalformed)
		}
		b = append(b, byte(len(hb)))
		b = append(b, hb...)
	}
	sum := inviteChecksum(b)
	return append(b, sum[:]...), nil
}

func inviteChecksum(payload []byte) [4]byte {
	h := sha256.New()
	h.Write(labelled(LabelInvite))
	h.Write(payload)
	return [4]byte(h.Sum(nil))
}

// minInvitePayload is the size of the smallest payload: version,
// bundle_len, a 1-byte bundle, name_len, hint_count and checksum.
const minInvitePayload = 1 + 2 + 1 + 1 + 1 + 4

// UnmarshalBinary parses a payload. As SPEC.md §9 orders it, the checksum
// is checked before anything it covers, the version included: a typo gives
// ErrInviteChecksum, a well-formed payload of another version
// ErrUnsupportedVersion. A payload too short to hold a checksum is
// ErrUnsupportedVersion if its first byte is not 1, else ErrMalformed.
func (inv *Invite) UnmarshalBinary(b []byte) error {
	if len(b) < 1 {
		return fmt.Errorf("invite: empty: %w", ErrMalformed)
	}
	if len(b) < minInvitePayload {
		if b[0] != InviteVersion {
			return fmt.Errorf("invite: version %d: %w", b[0], ErrUnsupportedVersion)
		}
		return fmt.Errorf("invite: short: %w", ErrMalformed)
	}
	body, sum := b[:len(b)-4], b[len(b)-4:]
	if inviteChecksum(body) != [4]byte(sum) {
		return fmt.Errorf("invite: %w", ErrInviteChecksum)
	}
	if b[0] != InviteVersion {
		return fmt.Errorf("invite: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	rest := body[1:]
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if n == 0 || n > MaxInviteBundle || len(rest) < n+1 {
		return fmt.Errorf("invite: bundle length %d: %w", n, ErrMalformed)
	}
	bundle := append([]byte(nil), rest[:n]...)
	rest = rest[n:]
	nameLen := int(rest[0])
	rest = rest[1:]
	if nameLen > MaxInviteName || len(rest) < nameLen+1 {
		return fmt.Errorf("invite: name length %d: %w", nameLen, ErrMalformed)
	}
	name := string(rest[:nameLen])
	if !utf8.ValidString(name) {
		return fmt.Errorf("invite: name is not UTF-8: %w", ErrMalformed)
	}
	rest = rest[nameLen:]
	count := int(rest[0])
	rest = rest[1:]
	if count > MaxInviteHints {
		return fmt.Errorf("invite: %d hints: %w", count, ErrMalformed)
	}
	var hints []ma.Multiaddr
	for i := 0; i < count; i++ {
		if len(rest) < 1 || rest[0] == 0 || len(rest) < 1+int(rest[0]) {
			return fmt.Errorf("invite: hint %d: %w", i, ErrMalformed)
		}
		l := int(rest[0])
		addr, err := ma.NewMultiaddrBytes(rest[1 : 1+l])
		if err != nil || !bytesEqual(addr.Bytes(), rest[1:1+l]) {
			return fmt.Errorf("invite: hint %d: %w", i, ErrMalformed)
		}
		hints = append(hints, addr)
		rest = rest[1+l:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("invite: %d trailing bytes: %w", len(rest), ErrMalformed)
	}
	*inv = Invite{Bundle: bundle, Name: name, Hints: hints}
	return nil
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// String returns the compact, copy-pasteable form: "cairn1" and the payload
// in lowercase unpadded base32.
func (inv *Invite) String() (string, error) {
	b, err := inv.MarshalBinary()
	if err != nil {
		return "", err
	}
	return InvitePrefix + strings.ToLower(inviteEncoding.EncodeToString(b)), nil
}

// MaxInviteQRLen is the most characters a QR code holds in alphanumeric
// mode (version 40, error correction level L): the longest QR form.
const MaxInviteQRLen = 4296

// QR returns the QR-friendly form: the string form in uppercase, every
// character of which is in the QR alphanumeric set. An invite whose form
// is longer than MaxInviteQRLen fits no QR code: QR returns ErrTooLarge
// (the string form still works).
func (inv *Invite) QR() (string, error) {
	s, err := inv.String()
	if err != nil {
		return "", err
	}
	if len(s) > MaxInviteQRLen {
		return "", fmt.Errorf("invite: QR form of %d characters, a QR code holds %d: %w", len(s), MaxInviteQRLen, ErrTooLarge)
	}
	return strings.ToUpper(s), nil
}

// ParseInvite parses either form of an invite string, ignoring ASCII
// whitespace (line breaks from copying) and ASCII case. Any other byte
// outside the base32 alphabet, non-ASCII ones included, is ErrMalformed.
// A last character whose unused low bits are not zero encodes no payload
// and is reported as ErrInviteChecksum, like any other typo.
func ParseInvite(s string) (*Invite, error) {
	// Normalise to uppercase without whitespace, byte by byte: Unicode case
	// mapping would turn some non-ASCII letters (K, ſ, ı) into base32 ones.
	norm := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f':
			continue
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 0x80:
			return nil, fmt.Errorf("invite: non-ASCII character: %w", ErrMalformed)
		}
		norm = append(norm, c)
	}
	prefix := strings.ToUpper(InvitePrefix)
	if !bytes.HasPrefix(norm, []byte(prefix)) {
		return nil, fmt.Errorf("invite: does not start with %q: %w", InvitePrefix, ErrMalformed)
	}
	enc := norm[len(prefix):]
	b := make([]byte, inviteEncoding.DecodedLen(len(enc)))
	n, err := inviteEncoding.Decode(b, enc)
	if err != nil {
		return nil, fmt.Errorf("invite: base32: %w", ErrMalformed)
	}
	b = b[:n]
	// Decoding ignores the unused bits of the last character; only the
	// canonical encoding of b is accepted.
	if inviteEncoding.EncodeToString(b) != string(enc) {
		return nil, fmt.Errorf("invite: base32 padding bits: %w", ErrInviteChecksum)
	}
	var inv Invite
	if err := inv.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return &inv, nil
}
