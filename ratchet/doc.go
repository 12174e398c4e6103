// Package ratchet implements cairn's end-to-end encryption: a PQXDH-style
// hybrid handshake (X25519 + ML-KEM-768) with sealed sender, and the Double
// Ratchet with header encryption. SPEC.md §15 is its normative description;
// the names there and here match.
//
// The package is pure: it performs no I/O, reads no clock and keeps no
// globals. Randomness comes from an injected io.Reader (except ML-KEM
// encapsulation, which the standard library draws from crypto/rand), and
// every state is a value that serialises to a versioned binary form.
//
// # Use
//
// A party makes an Identity (GenerateIdentity) and its PrivateKeys
// (NewPrivateKeys), publishes PrivateKeys.Bundle in its invite, and uploads
// one-time prekeys (PrivateKeys.GenerateOneTimePrekeys) signed by its
// mailbox key. An initiator calls Initiate with the bundle and any one-time
// prekeys a relay served, then Session.Encrypt: every message is a
// handshake message until the first reply decrypts
// (Session.SendingHandshake). A responder routes an incoming message:
//
//   - a handshake message (HandshakeID(msg) reports true) whose ID belongs
//     to a session it holds goes to that Session.Decrypt; otherwise to
//     PrivateKeys.Respond, which returns the new session and the plaintext;
//   - a ratchet message goes to Session.Decrypt of each session in turn
//     until one does not return ErrNotForSession.
//
// After every successful operation the caller persists the changed state
// (Session.MarshalBinary, PrivateKeys.MarshalBinary) before acting on the
// plaintext. Decrypt is atomic: on error nothing changed.
//
// To re-key a contact, initiate again with Replacing(current session); after
// losing session state, with AfterStateLoss(). Whenever a party holds two
// sessions with one peer (simultaneous initiation, re-keying), Converge
// says which one encrypts; both parties reach the same answer.
//
// Sessions, PrivateKeys and Identity values are not safe for concurrent use;
// each must have a single writer. Formatting them with fmt prints no secret.
//
// # Backwards compatibility
//
// Every encoding starts with a version or type byte and every KDF label
// carries "v1" (labels.go). Version 1 encodings — bundles, one-time
// prekeys, messages, serialised sessions and private keys — will stay
// readable by later versions of this package; a change to any layout,
// label or KDF gets new version bytes, never a silent reinterpretation.
package ratchet
