// Package store keeps cairn's durable state on badger/v4: the relay's mailbox
// log (entries, origin sequence numbers, tombstones, fates, quotas,
// watermarks and reconciliation fingerprints) and the client's state
// (identity, prekeys, sessions, contacts, outbox, received messages, cursors
// and seen CIDs).
//
// # Relay side: Log
//
// OpenLog opens a Log. Every write (Append, AppendMany, Import, ImportMany,
// Ack, ImportTombstones, AdoptKnownThrough, Sweep) is queued to one commit
// goroutine, which gathers whatever is queued into one badger transaction,
// assigns sequence numbers, signs the receipts of the batch's appends with
// one Ed25519 signature over a Merkle root (SPEC.md §6.2), and commits with
// one fsync. A caller returns only after that fsync, so a receipt always
// means durably stored (SPEC.md §13). Reads (Read, Get, GetBySeq, Fate,
// Tombstone, the Range* reconciliation queries) run concurrently on badger
// snapshots.
//
// Key layout, record formats and the clock policy are described in keys.go,
// records.go and on Log. In short: entries are keyed by (mailbox id, origin
// id, seq), so a sync page is one seek per origin and a forward scan; each
// CID has a fate record keyed by (mailbox id, digest), which is the dedup
// index and, in digest order, the source of the reconciliation indexes; an
// expiry index keyed by time drives the sweep. Stored receipts are not
// kept per entry: a batch record holds the signature and the Merkle leaves,
// and inclusion paths are rebuilt on read.
//
// # Client side: ClientDB
//
// OpenClientDB opens a ClientDB, the client's state, encrypted at rest with
// badger's AES encryption under a key the embedding app supplies. Access is
// transactional: ClientDB.Update runs a function with a *ClientTx whose
// typed accessors read and write every kind of client record (Identity,
// Contact, Session, OutboxEntry, Message, RecvState, PendingEntry, the
// cursor of a mailbox, seen CIDs, the local sequence number) and commits all
// of it with one fsync, or nothing. The client makes each step one Update:
// a whole sync page (messages of both directions, sessions, receive states,
// contacts' counters, the identity whose one-time prekey a handshake used,
// seen marks, pending entries, the cursor) is one transaction. Key layout
// and record formats are in client_records.go; the schema version is
// stored under 0x00 'v' and checked at open.
//
// # Errors
//
// Lookups return ErrNotFound; records that fail their checksum, version or
// layout checks return a *CorruptError (errors.Is(err, ErrCorrupt)) for that
// record only; closed stores return ErrClosed. Quota and validation
// failures wrap the sentinels of package wire (wire.ErrMailboxQuota,
// wire.ErrStorageFull, wire.ErrExpiryInvalid, wire.ErrMalformed,
// wire.ErrBadSignature), so a relay maps them with wire.StatusOf.
//
// # Testing
//
// Package storetest is the conformance suite; store's tests run it against
// badger on disk and in memory. The crash test re-executes the test binary
// as a child and SIGKILLs it at random points.
//
// # Backwards compatibility
//
// Every stored value starts with a version byte, a kind byte and a CRC-32C;
// the log also stores a schema version under the key 0x00 'v' and refuses to
// open a database of another schema. A future format adds a new version
// and migrates on open; this version rejects what it does not know (as
// corrupt, per record) rather than guessing.
package store
