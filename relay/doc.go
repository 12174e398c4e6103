// Package relay implements a cairn relay node: a libp2p host with the
// Kademlia DHT in server mode, the mailbox protocols of SPEC.md, admission
// limits, replication, anti-entropy and metrics.
package relay
