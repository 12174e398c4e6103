package wire

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"
)

// CursorVersion is the version byte of a Cursor.
const CursorVersion = 0x01

// Position is one (origin, seq) pair of a cursor, a watermark, or a resume
// point.
type Position struct {
	Origin peer.ID
	Seq    uint64
}

// Cursor is a portable sync cursor (SPEC.md §7): for each origin relay, the
// highest sequence number up to which the holder has every entry of a
// mailbox. It is valid on every replica. The zero value is the empty cursor.
type Cursor struct {
	// positions is sorted by origin bytes, without duplicates or zero seqs.
	positions []Position
}

// Get returns the cursor's sequence number for origin (0 if absent).
func (c *Cursor) Get(origin peer.ID) uint64 {
	i, ok := c.find(origin)
	if !ok {
		return 0
	}
	return c.positions[i].Seq
}

func (c *Cursor) find(origin peer.ID) (int, bool) {
	return slices.BinarySearchFunc(c.positions, origin, func(p Position, o peer.ID) int {
		return strings.Compare(string(p.Origin), string(o))
	})
}

// Covers reports whether the cursor covers the entry (origin, seq).
func (c *Cursor) Covers(origin peer.ID, seq uint64) bool {
	return seq <= c.Get(origin)
}

// Advance raises origin's position to seq if seq is higher. It fails if
// the cursor already lists MaxCursorOrigins origins and origin is new, or if
// origin is not a well-formed peer ID of 1…MaxPeerIDLen bytes.
func (c *Cursor) Advance(origin peer.ID, seq uint64) error {
	if seq == 0 {
		return nil
	}
	i, ok := c.find(origin)
	if ok {
		if seq > c.positions[i].Seq {
			c.positions[i].Seq = seq
		}
		return nil
	}
	// A new origin must be one ParseCursor accepts, so that Marshal stays
	// parseable.
	if err := checkPeerID(origin); err != nil {
		return fmt.Errorf("cursor origin: %w", err)
	}
	if len(c.positions) >= MaxCursorOrigins {
		return fmt.Errorf("cursor: more than %d origins: %w", MaxCursorOrigins, ErrMalformed)
	}
	c.positions = slices.Insert(c.positions, i, Position{Origin: origin, Seq: seq})
	return nil
}

// Positions returns a copy of the positions in canonical order.
func (c *Cursor) Positions() []Position { return slices.Clone(c.positions) }

// Len returns the number of origins listed.
func (c *Cursor) Len() int { return len(c.positions) }

// Clone returns an independent copy.
func (c *Cursor) Clone() Cursor { return Cursor{positions: slices.Clone(c.positions)} }

// Equal reports whether two cursors list the same positions.
func (c *Cursor) Equal(o *Cursor) bool { return slices.Equal(c.positions, o.positions) }

// String returns a short human-readable form for logs.
func (c *Cursor) String() string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, p := range c.positions {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s:%d", p.Origin.ShortString(), p.Seq)
	}
	sb.WriteByte('}')
	return sb.String()
}

// Marshal returns the canonical encoding.
func (c *Cursor) Marshal() []byte {
	n := 2
	for _, p := range c.positions {
		n += 1 + len(p.Origin) + 8
	}
	b := make([]byte, 0, n)
	b = append(b, CursorVersion, byte(len(c.positions)))
	for _, p := range c.positions {
		b = append(b, byte(len(p.Origin)))
		b = append(b, p.Origin...)
		b = binary.BigEndian.AppendUint64(b, p.Seq)
	}
	return b
}

// ParseCursor parses a canonical cursor. An empty input is malformed; the
// empty cursor is 01 00.
func ParseCursor(b []byte) (Cursor, error) {
	var c Cursor
	if len(b) >= 1 && b[0] != CursorVersion {
		return c, fmt.Errorf("cursor: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	if len(b) < 2 {
		return c, fmt.Errorf("cursor: short: %w", ErrMalformed)
	}
	n := int(b[1])
	if n > MaxCursorOrigins {
		return c, fmt.Errorf("cursor: %d origins: %w", n, ErrMalformed)
	}
	rest := b[2:]
	if n > 0 {
		c.positions = make([]Position, 0, n)
	}
	for i := 0; i < n; i++ {
		origin, r, err := readPeerID(rest)
		if err != nil {
			return Cursor{}, fmt.Errorf("cursor position %d: %w", i, err)
		}
		if len(r) < 8 {
			return Cursor{}, fmt.Errorf("cursor position %d: short: %w", i, ErrMalformed)
		}
		seq := binary.BigEndian.Uint64(r[:8])
		rest = r[8:]
		if seq == 0 {
			return Cursor{}, fmt.Errorf("cursor position %d: seq 0: %w", i, ErrMalformed)
		}
		if i > 0 && string(c.positions[i-1].Origin) >= string(origin) {
			return Cursor{}, fmt.Errorf("cursor position %d: origins not sorted: %w", i, ErrMalformed)
		}
		c.positions = append(c.positions, Position{Origin: origin, Seq: seq})
	}
	if len(rest) != 0 {
		return Cursor{}, fmt.Errorf("cursor: %d trailing bytes: %w", len(rest), ErrMalformed)
	}
	return c, nil
}
