// Package adversary proves cairn's security promises against active
// attackers, with tests, benchmarks and the attackers themselves:
//
//   - Rogue, a malicious relay: a real libp2p host in the DHT that lands in
//     replica sets, speaks every cairn protocol with package rpc's framing
//     and wire/pb, keeps what honest replicas replicate to it, and answers
//     clients according to a Behavior a test sets (drop, reorder, replay,
//     forge receipts and stamps, serve other mailboxes' entries, lie in
//     watermarks, hand out forged prekeys). It also records what a curious
//     relay learns (Observations).
//   - Hostile, an abusive client: a bare host that writes raw frames on
//     every protocol, and ProofAt, Frame, LengthPrefix, Envelope to make
//     stale, replayed, oversized and malformed requests.
//   - Load, an open- and closed-loop deposit generator that counts what a
//     relay answers (OK, RATE_LIMITED, BUSY, no answer) and how late.
//   - Measure, which attributes live heap to the relay's own code (from the
//     heap profile), so memory bounds can be asserted in-process.
//   - Net, a small cluster of honest relay.Nodes, an optional Rogue and
//     clients on 127.0.0.1.
//
// TESTING.md (at the module root) lists each guarantee, the test that proves it and the
// last measured figures. Tests of known bugs carry the build tag
// adversary_known_bugs: they fail until the bug is fixed.
//
// The package sits in the testnet layer (layout_test.go): it imports
// relay, client, rpc, store, wire and ratchet, and nothing imports it.
package adversary
