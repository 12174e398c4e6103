package wire

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"
)

// appendPeerID appends len(u8) ‖ id. It refuses what readPeerID would
// refuse, so an encoder never produces bytes its parser rejects.
func appendPeerID(b []byte, id peer.ID) ([]byte, error) {
	if err := checkPeerID(id); err != nil {
		return nil, err
	}
	b = append(b, byte(len(id)))
	return append(b, id...), nil
}

// checkPeerID checks that id is a well-formed peer ID of 1…MaxPeerIDLen
// bytes: exactly one multihash, as peer.IDFromBytes requires.
func checkPeerID(id peer.ID) error {
	if len(id) == 0 || len(id) > MaxPeerIDLen {
		return fmt.Errorf("peer id length %d: %w", len(id), ErrMalformed)
	}
	var buf [MaxPeerIDLen]byte // a copy on the stack: []byte(id) would allocate
	if !isMultihash(buf[:copy(buf[:], id)]) {
		return fmt.Errorf("peer id: %w", ErrMalformed)
	}
	return nil
}

// isMultihash reports whether b is exactly one multihash: a minimal uvarint
// hash code, a minimal uvarint digest length and that many digest bytes.
// These are the checks of go-multihash's Cast, which peer.IDFromBytes uses,
// without its allocations.
func isMultihash(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	_, n, err := varint.FromUvarint(b)
	if err != nil {
		return false
	}
	l, m, err := varint.FromUvarint(b[n:])
	if err != nil {
		return false
	}
	return uint64(len(b)-n-m) == l
}

// readPeerID reads len(u8) ‖ id and checks it is a well-formed peer ID.
func readPeerID(b []byte) (peer.ID, []byte, error) {
	if len(b) < 1 {
		return "", nil, fmt.Errorf("peer id: short: %w", ErrMalformed)
	}
	n := int(b[0])
	if n == 0 || n > MaxPeerIDLen || len(b) < 1+n {
		return "", nil, fmt.Errorf("peer id length %d: %w", n, ErrMalformed)
	}
	if !isMultihash(b[1 : 1+n]) {
		return "", nil, fmt.Errorf("peer id: %w", ErrMalformed)
	}
	return peer.ID(b[1 : 1+n]), b[1+n:], nil
}
