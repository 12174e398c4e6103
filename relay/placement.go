package relay

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Placement decides whether this relay accepts deposits for a mailbox
// (SPEC.md §14): iff it is in the mailbox's replica set in its own view, or
// it knows fewer than R relays. It is the seam for replica-set computation
// (issue 6: DHT GetClosestPeers plus self, re-sorted, cached for
// ReplicaCacheTTL). Accepts is called once per deposit, on the deposit
// path: it must be fast (cached) and must not block on the network.
type Placement interface {
	// Accepts reports whether the relay takes deposits for mailbox; when
	// it does not, replicas is the replica set it computed (the peers a
	// NOT_REPLICA answer names).
	Accepts(mailbox wire.Mailbox) (ok bool, replicas []peer.ID)
}

// acceptAll is the placement of a relay that knows fewer than R relays: it
// accepts every mailbox.
type acceptAll struct{}

func (acceptAll) Accepts(wire.Mailbox) (bool, []peer.ID) { return true, nil }

// Forwarder receives what replication forwards to the other replicas
// (issue 6). Both methods are called on the store's commit path (Stored
// from its commit goroutine): they must not block and must copy what they
// keep beyond the call.
type Forwarder interface {
	// Stored is called once for every entry that became durable here,
	// deposited or imported, in commit order.
	Stored(e store.StoredEntry)
	// Tombstoned is called with the tombstones an ack left.
	Tombstoned(ts []store.Tombstone)
}
