// Package cairn is the root of a peer-to-peer, end-to-end encrypted
// store-and-forward messaging relay network. The code lives in its
// subpackages:
//
//   - ratchet: the hybrid post-quantum handshake and the Double Ratchet;
//   - wire: everything on the wire or signed, and the protocol IDs and limits;
//   - rpc: the calling side of every protocol over a libp2p host;
//   - store: durable state on badger, for relays and for clients;
//   - relay: a relay node;
//   - client: the embeddable client;
//   - testnet: local clusters with faults on demand;
//   - cmd/cairn: the command.
//
// SPEC.md is the wire contract. This package holds no code; its tests check
// the layering: imports only point down, cmd → testnet → {relay, client} →
// {rpc, store, wire, ratchet}.
package cairn
