// Package relay implements a cairn relay node: a libp2p host (TCP and QUIC,
// Noise, yamux) with the Kademlia DHT in server mode under the /cairn
// prefix, the mailbox log of package store, and the protocol handlers of
// SPEC.md §10 — info, deposit, sync, subscribe, ack, status, prekeys, and the
// relay-to-relay replicate and reconcile — behind admission limits, with
// Prometheus metrics and structured logs.
//
// A relay is configured by a Config value (DefaultConfig holds every limit
// of SPEC.md §12 with its documented default); nothing in this package reads
// flags, the environment or configuration files. Its only state is
// Config.DataDir: identity.key (the relay's Ed25519 libp2p key, mode 0600)
// and store/ (the badger database).
//
//	cfg := relay.DefaultConfig()
//	cfg.DataDir = "/var/lib/cairn"
//	cfg.Logger = slog.Default()
//	n, err := relay.New(cfg)
//	...
//	err = n.Start(ctx)
//	defer n.Close() // drains in-flight requests, then closes DHT, host, store
//
// Each protocol lives in its own file (info.go, deposit.go, sync.go,
// subscribe.go, ack.go, status.go, prekeys.go) with its rules in a comment.
// Admission happens before any expensive work, in this order: the per-peer
// stream cap, the per-peer token bucket (requests, or deposits per
// envelope), the cheap checks of the request, authentication (SPEC.md §8,
// with a bounded replay cache), and only then the store.
//
// Many relays act as one store (SPEC.md §10.9, §10.10, §14):
//
//   - placement.go: a mailbox's replica set is the R relays closest to its
//     DHT key (GetClosestPeers plus this relay, cached, checked again on
//     routing-table churn); a relay takes deposits only for the mailboxes it
//     replicates and names the replicas otherwise (NOT_REPLICA).
//     Config.Placement may replace that decision.
//   - forward.go, replicate.go: the origin of each entry sends it with its
//     stamp to the other replicas over a long-lived pipelined stream per
//     peer, from bounded queues that never hold up a deposit; receivers
//     check the stamp and that sender and origin are (or recently were)
//     replicas. Config.ReceiptQuorum above 1 makes a deposit's answer wait
//     for that many replicas.
//   - reconcile.go, antientropy.go: anti-entropy by range-based set
//     reconciliation (package relay/reconcile over the store's indexes) of
//     each mailbox's entries and tombstones with each other replica —
//     periodically, when a replica (re)connects or joins, and where
//     forwarding dropped something; a restarted relay reports
//     ErrCatchingUp from Health until it has reconciled its mailboxes.
//
// Config.Forwarder, if set, also receives every entry stored and every
// tombstone left.
//
// Logs never contain envelope contents, auth proofs or keys.
//
// Backwards compatibility: the protocol IDs served are the 1.0.0 versions of
// wire's protocol constants. A change a v1 client would misread gets a new
// major protocol version, served beside the old one during a transition
// (SPEC.md §16).
package relay
