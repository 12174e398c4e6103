package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// ClientOptions configures OpenClientDB. Its zero value is an in-memory,
// unencrypted database on the wall clock.
type ClientOptions struct {
	// Dir is the badger directory; empty means in memory (nothing
	// survives Close).
	Dir string
	// EncryptionKey encrypts everything at rest with badger's AES
	// encryption (16, 24 or 32 bytes: AES-128/192/256). The embedding app
	// supplies it (from the platform keystore). Empty means no encryption,
	// which only tests should use. A database must always be opened with
	// the key it was created with: another key (or none) gets
	// ErrEncryptionKey.
	EncryptionKey []byte
	// Now is the clock of seen-CID expiry (MarkSeen); nil means time.Now.
	Now func() time.Time
	// Logger receives badger's messages (warnings and errors at their
	// level, the rest at debug); nil discards them.
	Logger *slog.Logger
}

// ClientDB is the client's durable state: its identity and prekeys,
// contacts, sessions, the outbox, each conversation's messages and receive
// state, the sync cursor of each mailbox, the seen-CID set and the entries
// no session opens yet. It is one badger database with synchronous
// commits, encrypted at rest.
//
// All access is in transactions: Update runs a function with a *ClientTx
// and commits everything it wrote at once, with one fsync, or nothing. A
// client makes each of its steps one Update (a sync page: the messages of
// both directions it touched, the sessions it advanced, the contacts'
// counters, the receive states, the identity whose one-time prekey a
// handshake consumed, the seen CIDs, the pending entries and the cursor),
// so a crash never leaves half a step.
//
// A ClientDB is safe for concurrent use. Updates that read and then write
// the same keys concurrently conflict: the later commit fails with
// ErrConflict and writes nothing (Update does not retry, since fn may have
// effects outside the transaction). Close waits for running transactions.
type ClientDB struct {
	db  *badger.DB
	now func() time.Time

	mu     sync.RWMutex // held shared by transactions, exclusively by Close
	closed bool
}

// Errors of the client database (besides ErrNotFound, ErrCorrupt and
// ErrClosed).
var (
	// ErrEncryptionKey is returned by OpenClientDB for a key that is not
	// the one the database was created with (or a missing one). The error
	// also wraps badger.ErrEncryptionKeyMismatch.
	ErrEncryptionKey = errors.New("store: wrong encryption key")
	// ErrConflict is returned by ClientDB.Update when a concurrent Update
	// committed a change to a key this one read; nothing was written.
	ErrConflict = errors.New("store: conflicting concurrent update")
)

// OpenClientDB opens (or creates) a client database.
func OpenClientDB(opts ClientOptions) (*ClientDB, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	bo := badgerOptions(opts.Dir, opts.Logger).
		WithDetectConflicts(true).
		WithNumVersionsToKeep(1).
		WithMemTableSize(16 << 20).
		WithBlockCacheSize(8 << 20).
		WithNumCompactors(2)
	if opts.Dir != "" {
		// Values above 4 KiB (large messages, a big identity) go to the
		// value log. In memory there is no value log: badger refuses
		// values above the threshold, so the default (1 MB) stays.
		bo = bo.WithValueThreshold(4 << 10)
	}
	if len(opts.EncryptionKey) > 0 {
		switch len(opts.EncryptionKey) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("store: open client db: encryption key of %d bytes (want 16, 24 or 32)", len(opts.EncryptionKey))
		}
		// Badger requires an index cache with encryption.
		bo = bo.WithEncryptionKey(opts.EncryptionKey).WithIndexCacheSize(4 << 20)
	}
	if opts.Dir != "" {
		if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("store: open client db: %w", err)
		}
		// Check the key first: badger.Open leaks goroutines when it fails
		// on a key mismatch (badger v4.9.6). Read-only: a missing registry
		// (a new database) is not created here.
		kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: opts.Dir, ReadOnly: true,
			EncryptionKey: opts.EncryptionKey, EncryptionKeyRotationDuration: bo.EncryptionKeyRotationDuration})
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("store: open client db: %w (%w)", ErrEncryptionKey, err)
		}
		if err != nil {
			return nil, fmt.Errorf("store: open client db: key registry: %w", err)
		}
		if err := kr.Close(); err != nil {
			return nil, fmt.Errorf("store: open client db: key registry: %w", err)
		}
	}
	db, err := badger.Open(bo)
	if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
		return nil, fmt.Errorf("store: open client db: %w (%w)", ErrEncryptionKey, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open client db: %w", err)
	}
	d := &ClientDB{db: db, now: opts.Now}
	if err := d.checkSchema(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open client db: %w", err)
	}
	return d, nil
}

// checkSchema writes the schema version into a new database and refuses a
// database of another version, or one that holds keys but no version
// (another kind of database, or a format before versioning).
func (d *ClientDB) checkSchema() error {
	return d.db.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(keyClientSchema)
		if errors.Is(err, badger.ErrKeyNotFound) {
			it := txn.NewIterator(badger.IteratorOptions{})
			it.Rewind()
			used := it.Valid()
			it.Close()
			if used {
				return errors.New("not a client database of a known version (no schema version)")
			}
			return txn.Set(keyClientSchema, encodeU64(kindClientMeta, clientSchemaVersion))
		}
		if err != nil {
			return err
		}
		var ver uint64
		if err := item.Value(func(v []byte) error {
			ver, err = decodeU64(keyClientSchema, v, kindClientMeta)
			return err
		}); err != nil {
			return err
		}
		if ver != clientSchemaVersion {
			return fmt.Errorf("client schema version %d, want %d", ver, clientSchemaVersion)
		}
		return nil
	})
}

// Update runs fn in a read-write transaction and commits what it wrote, with
// one fsync, when fn returns nil; when fn returns an error nothing is
// written and Update returns that error. Values that ClientTx returns are
// the caller's to keep.
func (d *ClientDB) Update(fn func(*ClientTx) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	err := d.db.Update(func(txn *badger.Txn) error { return fn(&ClientTx{txn: txn, now: d.now}) })
	if errors.Is(err, badger.ErrConflict) {
		return ErrConflict
	}
	return err
}

// View runs fn in a read-only transaction: a consistent snapshot. Writes in
// it fail.
func (d *ClientDB) View(fn func(*ClientTx) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	return d.db.View(func(txn *badger.Txn) error { return fn(&ClientTx{txn: txn, now: d.now}) })
}

// Close waits for running transactions and closes the database. Later
// calls of any method, Close included, return ErrClosed.
func (d *ClientDB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	d.closed = true
	return d.db.Close()
}

// ClientTx is one transaction of a ClientDB. Getters return ErrNotFound for
// an absent record and a *CorruptError for one that fails its checks; the
// ForEach methods visit records in key order and stop at the first error
// fn returns (which they return). A ClientTx is valid only inside the
// function Update or View passed it to, and is not safe for concurrent use.
type ClientTx struct {
	txn *badger.Txn
	now func() time.Time
}

// get decodes the record at k with dec.
func get[T any](t *ClientTx, k []byte, dec func(k, v []byte) (T, error)) (T, error) {
	var r T
	item, err := t.txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	err = item.Value(func(v []byte) error {
		r, err = dec(k, v)
		return err
	})
	return r, err
}

// scan calls fn with the key and value of every record under prefix, in
// key order. Both alias badger's buffers: fn copies what it keeps.
func (t *ClientTx) scan(prefix []byte, fn func(k, v []byte) error) error {
	it := t.txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		k := item.Key()
		if err := item.Value(func(v []byte) error { return fn(k, v) }); err != nil {
			return err
		}
	}
	return nil
}

func checkContactID(id string) error {
	if len(id) == 0 || len(id) > maxClientID {
		return fmt.Errorf("store: contact ID of %d bytes (want 1…%d): %w", len(id), maxClientID, wire.ErrMalformed)
	}
	return nil
}

// ---- identity and the local sequence number ----

// Identity returns the client's identity, or ErrNotFound before the first
// PutIdentity.
func (t *ClientTx) Identity() (*Identity, error) {
	return get(t, []byte{cIdentity}, decodeIdentity)
}

// PutIdentity stores the client's identity, replacing it.
func (t *ClientTx) PutIdentity(r *Identity) error {
	return t.txn.Set([]byte{cIdentity}, encodeIdentity(r))
}

// LocalSeq returns the client's local sequence number (0 before the first
// PutLocalSeq). The client numbers what it stores with it (Session.Active,
// OutboxEntry.Seq, Message.Seq, pending entries).
func (t *ClientTx) LocalSeq() (uint64, error) {
	v, err := get(t, []byte{cLocalSeq}, func(k, v []byte) (uint64, error) { return decodeU64(k, v, kindLocalSeq) })
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return v, err
}

// PutLocalSeq stores the local sequence number.
func (t *ClientTx) PutLocalSeq(seq uint64) error {
	return t.txn.Set([]byte{cLocalSeq}, encodeU64(kindLocalSeq, seq))
}

// ---- contacts ----

// Contact returns a contact, or ErrNotFound.
func (t *ClientTx) Contact(id string) (*Contact, error) {
	r, err := get(t, contactKey(id), decodeContact)
	if err != nil {
		return nil, err
	}
	r.ID = id
	return r, nil
}

// PutContact stores a contact, replacing one with its ID. An ID of 0 or
// more than 255 bytes is refused (wire.ErrMalformed).
func (t *ClientTx) PutContact(r *Contact) error {
	if err := checkContactID(r.ID); err != nil {
		return err
	}
	return t.txn.Set(contactKey(r.ID), encodeContact(r))
}

// ForEachContact calls fn for every contact, in ID order.
func (t *ClientTx) ForEachContact(fn func(*Contact) error) error {
	return t.scan([]byte{cContact}, func(k, v []byte) error {
		r, err := decodeContact(k, v)
		if err != nil {
			return err
		}
		r.ID = string(k[1:])
		return fn(r)
	})
}

// ---- sessions ----

// Session returns the session with a handshake ID, or ErrNotFound.
func (t *ClientTx) Session(hid [32]byte) (*Session, error) {
	r, err := get(t, sessionKey(hid), decodeSession)
	if err != nil {
		return nil, err
	}
	r.HandshakeID = hid
	return r, nil
}

// PutSession stores a session, replacing one with its handshake ID.
func (t *ClientTx) PutSession(r *Session) error {
	if err := checkContactID(r.Contact); err != nil {
		return err
	}
	return t.txn.Set(sessionKey(r.HandshakeID), encodeSession(r))
}

// DeleteSession removes a session (absent: nothing happens).
func (t *ClientTx) DeleteSession(hid [32]byte) error {
	return t.txn.Delete(sessionKey(hid))
}

// ForEachSession calls fn for every session, in handshake ID order.
func (t *ClientTx) ForEachSession(fn func(*Session) error) error {
	return t.scan([]byte{cSession}, func(k, v []byte) error {
		r, err := decodeSession(k, v)
		if err != nil {
			return err
		}
		if len(k) != 33 {
			return corrupt(k, "session key of %d bytes", len(k))
		}
		r.HandshakeID = [32]byte(k[1:])
		return fn(r)
	})
}

// ---- outbox ----

// Outbox returns the outbox entry of a contact's counter, or ErrNotFound.
func (t *ClientTx) Outbox(contact string, counter uint64) (*OutboxEntry, error) {
	if checkContactID(contact) != nil {
		return nil, ErrNotFound
	}
	r, err := get(t, outboxKey(contact, counter), decodeOutbox)
	if err != nil {
		return nil, err
	}
	r.Contact, r.Counter = contact, counter
	return r, nil
}

// PutOutbox stores an outbox entry, replacing the one of its (Contact,
// Counter). A status outside StatusQueued…StatusFailed is refused
// (wire.ErrMalformed).
func (t *ClientTx) PutOutbox(r *OutboxEntry) error {
	if err := checkContactID(r.Contact); err != nil {
		return err
	}
	if !r.Status.valid() {
		return fmt.Errorf("store: outbox status %d: %w", r.Status, wire.ErrMalformed)
	}
	return t.txn.Set(outboxKey(r.Contact, r.Counter), encodeOutbox(r))
}

// DeleteOutbox removes an outbox entry (absent: nothing happens).
func (t *ClientTx) DeleteOutbox(contact string, counter uint64) error {
	return t.txn.Delete(outboxKey(contact, counter))
}

// ForEachOutbox calls fn for every outbox entry, by contact (ID length,
// then bytes) and counter.
func (t *ClientTx) ForEachOutbox(fn func(*OutboxEntry) error) error {
	return t.scan([]byte{cOutbox}, func(k, v []byte) error {
		contact, counter, ok := parseOutboxKey(k)
		if !ok {
			return corrupt(k, "outbox key")
		}
		r, err := decodeOutbox(k, v)
		if err != nil {
			return err
		}
		r.Contact, r.Counter = contact, counter
		return fn(r)
	})
}

// ---- messages ----

// Message returns a message of a conversation, or ErrNotFound.
func (t *ClientTx) Message(contact string, dir Direction, counter uint64) (*Message, error) {
	if checkContactID(contact) != nil {
		return nil, ErrNotFound
	}
	r, err := get(t, messageKey(contact, dir, counter), decodeMessage)
	if err != nil {
		return nil, err
	}
	r.Direction, r.Counter = dir, counter
	return r, nil
}

// PutMessage stores a message of the conversation with contact, replacing
// the one of its (Direction, Counter). An unknown direction or status is
// refused (wire.ErrMalformed).
func (t *ClientTx) PutMessage(contact string, r *Message) error {
	if err := checkContactID(contact); err != nil {
		return err
	}
	if !r.Direction.valid() || (r.Status != 0 && !r.Status.valid()) {
		return fmt.Errorf("store: message direction %d status %d: %w", r.Direction, r.Status, wire.ErrMalformed)
	}
	return t.txn.Set(messageKey(contact, r.Direction, r.Counter), encodeMessage(r))
}

// ForEachMessage calls fn for every message of a conversation: the
// incoming ones, then the outgoing ones, each in counter order.
func (t *ClientTx) ForEachMessage(contact string, fn func(*Message) error) error {
	if checkContactID(contact) != nil {
		return nil
	}
	return t.scan(messagePrefix(contact), func(k, v []byte) error {
		dir, counter, ok := parseMessageKey(k, len(contact))
		if !ok || !dir.valid() {
			return corrupt(k, "message key")
		}
		r, err := decodeMessage(k, v)
		if err != nil {
			return err
		}
		r.Direction, r.Counter = dir, counter
		return fn(r)
	})
}

// ---- receive state ----

// RecvState returns the receive state of the conversation with contact, or
// ErrNotFound.
func (t *ClientTx) RecvState(contact string) (*RecvState, error) {
	return get(t, recvKey(contact), decodeRecv)
}

// PutRecvState stores the receive state of the conversation with contact.
func (t *ClientTx) PutRecvState(contact string, r *RecvState) error {
	if err := checkContactID(contact); err != nil {
		return err
	}
	return t.txn.Set(recvKey(contact), encodeRecv(r))
}

// ForEachRecvState calls fn for the receive state of every conversation,
// in contact ID order.
func (t *ClientTx) ForEachRecvState(fn func(contact string, r *RecvState) error) error {
	return t.scan([]byte{cRecv}, func(k, v []byte) error {
		r, err := decodeRecv(k, v)
		if err != nil {
			return err
		}
		return fn(string(k[1:]), r)
	})
}

// ---- cursor and seen CIDs ----

// Cursor returns the durable sync cursor of a mailbox (the empty cursor if
// none was stored).
func (t *ClientTx) Cursor(mb wire.Mailbox) (wire.Cursor, error) {
	c, err := get(t, cursorKey(mb), decodeCursor)
	if errors.Is(err, ErrNotFound) {
		return wire.Cursor{}, nil
	}
	return c, err
}

// PutCursor stores the sync cursor of a mailbox, replacing it. The caller
// advances it only over entries stored in the same transaction or before
// (SPEC.md §7).
func (t *ClientTx) PutCursor(mb wire.Mailbox, c *wire.Cursor) error {
	return t.txn.Set(cursorKey(mb), encodeCursor(c))
}

// RelayCursor returns the durable sync cursor of a mailbox at one relay:
// the coverage that relay's own watermarks vouch for (SPEC.md §7). It is
// the empty cursor if none was stored.
func (t *ClientTx) RelayCursor(mb wire.Mailbox, relay peer.ID) (wire.Cursor, error) {
	if len(relay) == 0 {
		return wire.Cursor{}, fmt.Errorf("store: relay cursor without a relay: %w", wire.ErrMalformed)
	}
	c, err := get(t, relayCursorKey(mb, relay), decodeCursor)
	if errors.Is(err, ErrNotFound) {
		return wire.Cursor{}, nil
	}
	return c, err
}

// PutRelayCursor stores the sync cursor of a mailbox at one relay,
// replacing it. The caller advances it only with that relay's watermarks,
// over entries stored in the same transaction or before (SPEC.md §7).
func (t *ClientTx) PutRelayCursor(mb wire.Mailbox, relay peer.ID, c *wire.Cursor) error {
	if len(relay) == 0 {
		return fmt.Errorf("store: relay cursor without a relay: %w", wire.ErrMalformed)
	}
	return t.txn.Set(relayCursorKey(mb, relay), encodeCursor(c))
}

// Seen reports whether a CID was marked seen (and not yet forgotten).
func (t *ClientTx) Seen(cid wire.CID) (bool, error) {
	_, err := t.txn.Get(seenKey(cid))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// MarkSeen records a CID as seen until the time until, on the database's
// clock (ClientOptions.Now), at least one second from now; a zero until
// keeps it forever. Relays never serve an entry after its expiry, so a
// mark may be forgotten some time after it.
func (t *ClientTx) MarkSeen(cid wire.CID, until time.Time) error {
	en := badger.NewEntry(seenKey(cid), seenRecord)
	if !until.IsZero() {
		// Badger's TTL runs on the wall clock: convert from the
		// database's clock.
		en = en.WithTTL(max(until.Sub(t.now()), time.Second))
	}
	return t.txn.SetEntry(en)
}

// ---- pending entries ----

// PutPending stores an entry no session opens yet under the local sequence
// number seq.
func (t *ClientTx) PutPending(seq uint64, r *PendingEntry) error {
	return t.txn.Set(pendingKey(seq), encodePending(r))
}

// DeletePending removes a pending entry (absent: nothing happens).
func (t *ClientTx) DeletePending(seq uint64) error {
	return t.txn.Delete(pendingKey(seq))
}

// ForEachPending calls fn for every pending entry, oldest (lowest seq)
// first. A record that fails its checks is passed as a nil entry with its
// *CorruptError, so the caller can drop it and go on.
func (t *ClientTx) ForEachPending(fn func(seq uint64, r *PendingEntry, err error) error) error {
	return t.scan([]byte{cPending}, func(k, v []byte) error {
		if len(k) != 9 {
			return corrupt(k, "pending key of %d bytes", len(k))
		}
		seq := binary.BigEndian.Uint64(k[1:])
		r, err := decodePending(k, v)
		if err != nil {
			return fn(seq, nil, err)
		}
		return fn(seq, r, nil)
	})
}
