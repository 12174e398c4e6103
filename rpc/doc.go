// Package rpc is the client side of every cairn protocol (SPEC.md §10) over a
// libp2p host: it opens streams with deadlines, frames protobuf messages
// with size-bounded delimited framing, builds authenticated requests, checks
// every entry's origin stamp, and maps non-OK statuses to errors.
//
// Its users are the relay's tests, the embeddable client and relay-to-relay
// replication. The relay also uses Framed, the shared framing helper, on its
// side of each stream.
//
// Calls:
//   - Client.Info: /cairn/info/1.0.0.
//   - Client.OpenDeposit: a long-lived, pipelined deposit stream; Send
//     returns a DepositCall future, answers arrive in request order.
//   - Client.Sync: an authenticated sync whose pages are verified entry by
//     entry (stamp signature, CID, mailbox, order, cursor coverage).
//   - Client.Subscribe: a live feed of verified entries with keepalives.
//   - Client.Ack, Client.Status, Client.UploadPrekeys, Client.FetchPrekeys.
//   - Client.OpenReplicate (relay to relay): a long-lived, pipelined
//     replicate stream; Send returns a ReplicateCall future with one status
//     per entry and tombstone, answers arrive in request order.
//   - Client.OpenReconcile (relay to relay): the initiator's transport of
//     anti-entropy exchanges — framed, bounded, timed messages with byte
//     counters; package relay drives the turns with its store.
//
// A status other than OK is returned as an *Error that unwraps to the
// sentinel of package wire (errors.Is(err, wire.ErrRateLimited)) and carries
// the fields the status names: RetryAfter, ReplicaPeers, PostageDifficulty.
//
// Import rule: rpc imports wire and libp2p only, never relay, client or
// store.
package rpc
