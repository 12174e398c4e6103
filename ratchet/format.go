package ratchet

import "fmt"

// Format prints a summary of the session that holds no secret, for every
// verb, so that a session passed to a logger or fmt never leaks keys.
func (s Session) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "ratchet.Session{initiator: %v, sendingHandshake: %v, peer: %x, handshake: %x, skippedKeys: %d}",
		s.initiator, s.pending != nil, s.peer.Ed25519[:8], s.id[:8], s.nkeys)
}

// Format prints the public key only, for every verb.
func (id Identity) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "ratchet.Identity{%x}", id.pub.Ed25519[:])
}

// Format prints a summary without secrets, for every verb.
func (k PrivateKeys) Format(f fmt.State, _ rune) {
	var id [32]byte
	if k.id != nil {
		id = k.id.pub.Ed25519
	}
	fmt.Fprintf(f, "ratchet.PrivateKeys{identity: %x, oneTimeX25519: %d, oneTimeMLKEM768: %d, previous: %v}",
		id[:], len(k.otpDH), len(k.otpKEM), k.prev != nil)
}
