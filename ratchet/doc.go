// Package ratchet implements cairn's end-to-end encryption: a PQXDH-style
// hybrid handshake (X25519 + ML-KEM-768) with sealed sender, and the Double
// Ratchet with header encryption.
//
// The package is pure: it performs no I/O, reads no clock and keeps no
// globals. Randomness comes from an injected io.Reader, and every session is
// a value that serialises to a versioned binary form.
package ratchet
