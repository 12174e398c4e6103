// Package wire defines everything cairn puts on the wire or signs: the
// hand-encoded canonical structures (Envelope, Receipt, Cursor, AuthProof,
// Invite), content IDs, receipt signing and verification, the protobuf
// control messages of every protocol, protocol IDs, limits and status codes.
//
// SPEC.md is the normative description; names here mirror its sections.
package wire
