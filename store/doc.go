// Package store keeps cairn's durable state on badger/v4: the relay's mailbox
// log (entries, origin sequence numbers, tombstones, quotas, reconciliation
// fingerprints) and the client's state (identity, sessions, contacts, outbox,
// received messages, cursors).
package store
