package wire

import "github.com/libp2p/go-libp2p/core/protocol"

// Protocol IDs (SPEC.md §10). Each carries a semantic version; see SPEC.md
// §16 for when it changes.
//
// Version history: 1.0.0 — first version of every protocol.
const (
	ProtocolInfo      protocol.ID = "/cairn/info/1.0.0"
	ProtocolDeposit   protocol.ID = "/cairn/deposit/1.0.0"
	ProtocolSync      protocol.ID = "/cairn/sync/1.0.0"
	ProtocolSubscribe protocol.ID = "/cairn/subscribe/1.0.0"
	ProtocolAck       protocol.ID = "/cairn/ack/1.0.0"
	ProtocolStatus    protocol.ID = "/cairn/status/1.0.0"
	ProtocolPrekeys   protocol.ID = "/cairn/prekeys/1.0.0"
	ProtocolReplicate protocol.ID = "/cairn/replicate/1.0.0"
	ProtocolReconcile protocol.ID = "/cairn/reconcile/1.0.0"
)

// DHTPrefix is the Kademlia protocol prefix of cairn's DHT (SPEC.md §14): the
// DHT speaks /cairn/kad/1.0.0.
const DHTPrefix protocol.ID = "/cairn"
