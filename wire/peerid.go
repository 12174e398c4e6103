package wire

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
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

// checkPeerID checks that id is a well-formed peer ID (a multihash) of
// 1…MaxPeerIDLen bytes.
func checkPeerID(id peer.ID) error {
	if len(id) == 0 || len(id) > MaxPeerIDLen {
		return fmt.Errorf("peer id length %d: %w", len(id), ErrMalformed)
	}
	if _, err := mh.Decode([]byte(id)); err != nil {
		return fmt.Errorf("peer id: %w", ErrMalformed)
	}
	return nil
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
	id, err := peer.IDFromBytes(b[1 : 1+n])
	if err != nil {
		return "", nil, fmt.Errorf("peer id: %w", ErrMalformed)
	}
	return id, b[1+n:], nil
}
