// Package relay implements a cairn relay node: a libp2p host (TCP and QUIC,
// Noise, yamux) with the Kademlia DHT in server mode under the /cairn
// prefix, the mailbox log of package store, and the protocol handlers of
// SPEC.md §10 — info, deposit, sync, subscribe, ack, status and prekeys —
// behind admission limits, with Prometheus metrics and structured logs.
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
// Replication (issue 6) plugs in through Config.Placement (which mailboxes
// this relay accepts, SPEC.md §14) and Config.Forwarder (every entry stored
// and every tombstone left, from the store's commit path).
//
// Logs never contain envelope contents, auth proofs or keys.
//
// Backwards compatibility: the protocol IDs served are the 1.0.0 versions of
// wire's protocol constants. A change a v1 client would misread gets a new
// major protocol version, served beside the old one during a transition
// (SPEC.md §16).
package relay
