package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/wire"
)

// ClientOptions configures OpenClient.
type ClientOptions struct {
	// Dir is the badger directory; empty means in memory.
	Dir string
	// EncryptionKey encrypts everything at rest with badger's AES
	// encryption (16, 24 or 32 bytes: AES-128/192/256). The embedding app
	// supplies it (from the platform keystore). Empty means no encryption,
	// which only tests should use; a store created with a key must always
	// be opened with it.
	EncryptionKey []byte
	// Now is the clock (seen-CID expiry, timestamps); nil means time.Now.
	Now func() time.Time
	// Logger receives badger's warnings; nil discards them.
	Logger *slog.Logger
}

// Client is the client's durable state on one badger database: identity
// and prekeys, sessions, contacts, the outbox, received messages, per
// mailbox cursors and seen CIDs. Values the ratchet and the app own
// (identity, prekeys, session state, contact data, message bodies) are
// opaque bytes here; the store versions and checksums its own records
// around them. Every method is one badger transaction, so each is atomic
// and durable (fsync'd) when it returns. A Client is safe for concurrent
// use.
type Client struct {
	db     *badger.DB
	now    func() time.Time
	closed atomic.Bool
}

// Errors of the client store (besides ErrNotFound, ErrCorrupt, ErrClosed).
var (
	// ErrPrekeyUsed is returned by UsePrekey for a one-time prekey that was
	// already used.
	ErrPrekeyUsed = errors.New("store: one-time prekey already used")
	// ErrExists is returned when creating a record whose key exists.
	ErrExists = errors.New("store: already exists")
	// ErrEncryptionKey is returned by OpenClient for a key that does not
	// match the one the store was created with.
	ErrEncryptionKey = errors.New("store: wrong encryption key")
)

// Client key prefixes (one byte, then the parts shown):
//
//	'i'                                  identity
//	'k' kind(1) id(8)                    prekey
//	'c' len(1) contact                   contact
//	's' len(1) contact len(1) session    session
//	'o' id(16)                           outbox entry
//	'q' 255-priority(1) next(8) id(16)   outbox due index (queued entries)
//	'm' len(1) contact counter(8) cid    received message
//	'u' mailbox(34)                      cursor
//	'n' mailbox(34) cid(36)              seen CID (TTL: its expiry)
const (
	cIdentity = 'i'
	cPrekey   = 'k'
	cContact  = 'c'
	cSession  = 's'
	cOutbox   = 'o'
	cDue      = 'q'
	cMessage  = 'm'
	cCursor   = 'u'
	cSeen     = 'n'
)

// Client record kinds.
const (
	kindIdentity = 20 + iota
	kindPrekey
	kindContact
	kindSession
	kindOutbox
	kindMessage
	kindCursor
	kindSeen
)

// OpenClient opens (or creates) a client store.
func OpenClient(opts ClientOptions) (*Client, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Read-modify-write methods (UsePrekey, UpdateOutbox, StoreReceived)
	// rely on badger's conflict detection and are retried on a conflict.
	bo := badgerOptions(opts.Dir, opts.Logger).WithNumVersionsToKeep(1).WithDetectConflicts(true)
	if opts.Dir != "" {
		bo = bo.WithMemTableSize(16 << 20)
	}
	if len(opts.EncryptionKey) > 0 {
		switch len(opts.EncryptionKey) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("store: encryption key of %d bytes (want 16, 24 or 32)", len(opts.EncryptionKey))
		}
		// Badger requires an index cache with encryption.
		bo = bo.WithEncryptionKey(opts.EncryptionKey).WithIndexCacheSize(16 << 20)
		// Check the key first: badger.Open leaks its cache goroutines when
		// it fails on a key mismatch.
		if opts.Dir != "" {
			if _, err := os.Stat(filepath.Join(opts.Dir, badger.KeyRegistryFileName)); err == nil {
				kr, err := badger.OpenKeyRegistry(badger.KeyRegistryOptions{Dir: opts.Dir, ReadOnly: true, EncryptionKey: opts.EncryptionKey})
				if err != nil {
					return nil, fmt.Errorf("store: open client: %w: %v", ErrEncryptionKey, err)
				}
				kr.Close()
			}
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("store: open client: %w", err)
	}
	return &Client{db: db, now: opts.Now}, nil
}

// Close closes the database. Later calls return ErrClosed, as do all
// methods after Close.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return ErrClosed
	}
	return c.db.Close()
}

func (c *Client) view(f func(*badger.Txn) error) error {
	err := c.db.View(f)
	if errors.Is(err, badger.ErrDBClosed) {
		return ErrClosed
	}
	return err
}

func (c *Client) update(f func(*badger.Txn) error) error {
	for {
		err := c.db.Update(f)
		if errors.Is(err, badger.ErrConflict) {
			continue // a concurrent transaction changed what f read: redo
		}
		if errors.Is(err, badger.ErrDBClosed) {
			return ErrClosed
		}
		return err
	}
}

func getValue(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func lp(s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	return append([]byte{byte(len(s))}, s...)
}

func checkID(what, s string) error {
	if len(s) == 0 || len(s) > 255 {
		return fmt.Errorf("store: %s ID of %d bytes (want 1…255): %w", what, len(s), wire.ErrMalformed)
	}
	return nil
}

// ---- identity ----

// PutIdentity stores the identity blob (the app's serialised identity and
// signed prekeys), replacing any.
func (c *Client) PutIdentity(blob []byte) error {
	e := newEnc()
	e.bytes(blob)
	return c.update(func(txn *badger.Txn) error { return txn.Set([]byte{cIdentity}, e.seal(kindIdentity)) })
}

// Identity returns the identity blob, or ErrNotFound.
func (c *Client) Identity() ([]byte, error) {
	var out []byte
	err := c.view(func(txn *badger.Txn) error {
		k := []byte{cIdentity}
		v, err := getValue(txn, k)
		if err != nil {
			return err
		}
		d := newDec(k, v, kindIdentity)
		out = d.bytes()
		return d.done()
	})
	return out, err
}

// ---- prekeys ----

// Prekey is a one-time prekey: an opaque blob (its private part) under a
// kind (e.g. X25519 or ML-KEM) and an ID.
type Prekey struct {
	Kind uint8
	ID   uint64
	Blob []byte
	Used bool
}

func prekeyKey(kind uint8, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{cPrekey, kind}, id)
}

func encodePrekey(p *Prekey) []byte {
	e := newEnc()
	if p.Used {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.bytes(p.Blob)
	return e.seal(kindPrekey)
}

func decodePrekey(k, v []byte) (Prekey, error) {
	d := newDec(k, v, kindPrekey)
	p := Prekey{Used: d.u8() == 1, Blob: d.bytes()}
	if len(k) == 10 {
		p.Kind, p.ID = k[1], binary.BigEndian.Uint64(k[2:])
	}
	return p, d.done()
}

// PutPrekeys stores new one-time prekeys in one transaction; an existing
// (kind, ID) fails the whole call with ErrExists.
func (c *Client) PutPrekeys(ps []Prekey) error {
	return c.update(func(txn *badger.Txn) error {
		for i := range ps {
			k := prekeyKey(ps[i].Kind, ps[i].ID)
			if _, err := txn.Get(k); err == nil {
				return fmt.Errorf("prekey %d/%d: %w", ps[i].Kind, ps[i].ID, ErrExists)
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
			if err := txn.Set(k, encodePrekey(&ps[i])); err != nil {
				return err
			}
		}
		return nil
	})
}

// UsePrekey atomically marks a one-time prekey used and returns it; a
// second use fails with ErrPrekeyUsed, an unknown one with ErrNotFound.
// The blob is kept (marked used) until DeletePrekey, so a handshake that
// fails after this call can be diagnosed but never replayed.
func (c *Client) UsePrekey(kind uint8, id uint64) (Prekey, error) {
	var p Prekey
	err := c.update(func(txn *badger.Txn) error {
		k := prekeyKey(kind, id)
		v, err := getValue(txn, k)
		if err != nil {
			return err
		}
		if p, err = decodePrekey(k, v); err != nil {
			return err
		}
		if p.Used {
			return ErrPrekeyUsed
		}
		p.Used = true
		return txn.Set(k, encodePrekey(&p))
	})
	return p, err
}

// DeletePrekey removes a prekey.
func (c *Client) DeletePrekey(kind uint8, id uint64) error {
	return c.update(func(txn *badger.Txn) error { return txn.Delete(prekeyKey(kind, id)) })
}

// Prekeys lists the prekeys of a kind, in ID order.
func (c *Client) Prekeys(kind uint8) ([]Prekey, error) {
	var out []Prekey
	err := c.scan([]byte{cPrekey, kind}, func(k, v []byte) error {
		p, err := decodePrekey(k, v)
		if err == nil {
			out = append(out, p)
		}
		return err
	})
	return out, err
}

func (c *Client) scan(prefix []byte, f func(k, v []byte) error) error {
	return c.view(func(txn *badger.Txn) error { return scanTxn(txn, prefix, f) })
}

func scanTxn(txn *badger.Txn, prefix []byte, f func(k, v []byte) error) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		if err := f(it.Item().KeyCopy(nil), v); err != nil {
			return err
		}
	}
	return nil
}

// ---- contacts ----

// Contact is a contact: an ID the app chooses and opaque data (names,
// identity key, mailbox, relay hints as the client package encodes them).
type Contact struct {
	ID   string
	Data []byte
}

func contactKey(id string) []byte { return append([]byte{cContact}, lp(id)...) }

// PutContact stores or replaces a contact.
func (c *Client) PutContact(ct Contact) error {
	if err := checkID("contact", ct.ID); err != nil {
		return err
	}
	e := newEnc()
	e.str(ct.ID)
	e.bytes(ct.Data)
	return c.update(func(txn *badger.Txn) error { return txn.Set(contactKey(ct.ID), e.seal(kindContact)) })
}

func decodeContact(k, v []byte) (Contact, error) {
	d := newDec(k, v, kindContact)
	ct := Contact{ID: d.str(), Data: d.bytes()}
	return ct, d.done()
}

// Contact returns a contact, or ErrNotFound.
func (c *Client) Contact(id string) (Contact, error) {
	var ct Contact
	err := c.view(func(txn *badger.Txn) error {
		k := contactKey(id)
		v, err := getValue(txn, k)
		if err != nil {
			return err
		}
		ct, err = decodeContact(k, v)
		return err
	})
	return ct, err
}

// Contacts lists every contact, ordered by ID length then bytes.
func (c *Client) Contacts() ([]Contact, error) {
	var out []Contact
	err := c.scan([]byte{cContact}, func(k, v []byte) error {
		ct, err := decodeContact(k, v)
		if err == nil {
			out = append(out, ct)
		}
		return err
	})
	return out, err
}

// DeleteContact removes a contact and its sessions (not its messages).
func (c *Client) DeleteContact(id string) error {
	return c.update(func(txn *badger.Txn) error {
		var keys [][]byte
		if err := scanTxn(txn, append([]byte{cSession}, lp(id)...), func(k, _ []byte) error {
			keys = append(keys, k)
			return nil
		}); err != nil {
			return err
		}
		for _, k := range append(keys, contactKey(id)) {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- sessions ----

// Session is one ratchet session with a contact (a contact may have several:
// simultaneous initiation, several devices). State is the ratchet's
// serialised state, opaque here.
type Session struct {
	Contact   string
	ID        string
	State     []byte
	UpdatedAt time.Time
}

func sessionKey(contact, id string) []byte {
	return append(append([]byte{cSession}, lp(contact)...), lp(id)...)
}

func encodeSession(s *Session) []byte {
	e := newEnc()
	e.str(s.Contact)
	e.str(s.ID)
	e.bytes(s.State)
	e.i64(s.UpdatedAt.UnixNano())
	return e.seal(kindSession)
}

func decodeSession(k, v []byte) (Session, error) {
	d := newDec(k, v, kindSession)
	s := Session{Contact: d.str(), ID: d.str(), State: d.bytes()}
	s.UpdatedAt = time.Unix(0, d.i64())
	return s, d.done()
}

func putSession(txn *badger.Txn, s *Session) error {
	if err := checkID("contact", s.Contact); err != nil {
		return err
	}
	if err := checkID("session", s.ID); err != nil {
		return err
	}
	return txn.Set(sessionKey(s.Contact, s.ID), encodeSession(s))
}

// PutSession stores or replaces a session.
func (c *Client) PutSession(s Session) error {
	return c.update(func(txn *badger.Txn) error { return putSession(txn, &s) })
}

// Session returns one session, or ErrNotFound.
func (c *Client) Session(contact, id string) (Session, error) {
	var s Session
	err := c.view(func(txn *badger.Txn) error {
		k := sessionKey(contact, id)
		v, err := getValue(txn, k)
		if err != nil {
			return err
		}
		s, err = decodeSession(k, v)
		return err
	})
	return s, err
}

// Sessions lists a contact's sessions.
func (c *Client) Sessions(contact string) ([]Session, error) {
	var out []Session
	err := c.scan(append([]byte{cSession}, lp(contact)...), func(k, v []byte) error {
		s, err := decodeSession(k, v)
		if err == nil {
			out = append(out, s)
		}
		return err
	})
	return out, err
}

// DeleteSession removes a session.
func (c *Client) DeleteSession(contact, id string) error {
	return c.update(func(txn *badger.Txn) error { return txn.Delete(sessionKey(contact, id)) })
}

// ---- outbox ----

// OutboxStatus is the life of an outgoing message (DESIGN: queued → stored
// → delivered / expired-undelivered).
type OutboxStatus uint8

// Outbox statuses.
const (
	OutboxQueued    OutboxStatus = 1 // durable locally, not yet stored by a relay
	OutboxStored    OutboxStatus = 2 // a relay returned a receipt
	OutboxDelivered OutboxStatus = 3 // the recipient acked it (fate ACKED)
	OutboxExpired   OutboxStatus = 4 // it expired undelivered (fate EXPIRED)
)

func (s OutboxStatus) String() string {
	switch s {
	case OutboxQueued:
		return "queued"
	case OutboxStored:
		return "stored"
	case OutboxDelivered:
		return "delivered"
	case OutboxExpired:
		return "expired-undelivered"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// OutboxID identifies an outbox entry (random, chosen by the caller).
type OutboxID [16]byte

// OutboxEntry is one outgoing message.
type OutboxEntry struct {
	ID       OutboxID
	Contact  string
	Envelope []byte
	CID      wire.CID
	Status   OutboxStatus
	// Retries counts failed deposit attempts.
	Retries uint32
	// NextAttempt is when the sender should try (or check) next.
	NextAttempt time.Time
	// Priority orders due entries (higher first).
	Priority uint8
	// Receipts are the signed receipts (SPEC.md §6.2 encoding) relays
	// returned.
	Receipts  [][]byte
	CreatedAt time.Time
}

func outboxKey(id OutboxID) []byte { return append([]byte{cOutbox}, id[:]...) }

func dueIndexKey(o *OutboxEntry) []byte {
	b := []byte{cDue, 255 - o.Priority}
	b = binary.BigEndian.AppendUint64(b, uint64(o.NextAttempt.UnixNano()))
	return append(b, o.ID[:]...)
}

// pending says whether an entry is in the due index (still needs work).
func (o *OutboxEntry) pending() bool { return o.Status == OutboxQueued || o.Status == OutboxStored }

func encodeOutbox(o *OutboxEntry) []byte {
	e := newEnc()
	e.b = append(e.b, o.ID[:]...)
	e.str(o.Contact)
	e.bytes(o.Envelope)
	e.b = append(e.b, o.CID[:]...)
	e.u8(uint8(o.Status))
	e.u64(uint64(o.Retries))
	e.i64(o.NextAttempt.UnixNano())
	e.u8(o.Priority)
	e.u64(uint64(len(o.Receipts)))
	for _, r := range o.Receipts {
		e.bytes(r)
	}
	e.i64(o.CreatedAt.UnixNano())
	return e.seal(kindOutbox)
}

func decodeOutbox(k, v []byte) (OutboxEntry, error) {
	var o OutboxEntry
	d := newDec(k, v, kindOutbox)
	if d.err == nil && len(d.b) < 16 {
		d.fail("short id")
	}
	if d.err == nil {
		o.ID = OutboxID(d.b[:16])
		d.b = d.b[16:]
	}
	o.Contact = d.str()
	o.Envelope = d.bytes()
	if d.err == nil && len(d.b) < wire.CIDLen {
		d.fail("short cid")
	}
	if d.err == nil {
		o.CID = wire.CID(d.b[:wire.CIDLen])
		d.b = d.b[wire.CIDLen:]
	}
	o.Status = OutboxStatus(d.u8())
	retries := d.u64()
	if retries > 1<<32-1 {
		d.fail("retries")
	}
	o.Retries = uint32(retries)
	o.NextAttempt = time.Unix(0, d.i64())
	o.Priority = d.u8()
	n := d.u64()
	if n > uint64(len(d.b)) {
		d.fail("receipt count")
		n = 0
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		o.Receipts = append(o.Receipts, d.bytes())
	}
	o.CreatedAt = time.Unix(0, d.i64())
	if d.err == nil && (o.Status < OutboxQueued || o.Status > OutboxExpired) {
		d.fail("status")
	}
	return o, d.done()
}

func putOutbox(txn *badger.Txn, old, o *OutboxEntry) error {
	if err := checkID("contact", o.Contact); err != nil {
		return err
	}
	if old != nil && old.pending() {
		if err := txn.Delete(dueIndexKey(old)); err != nil {
			return err
		}
	}
	if o.pending() {
		if err := txn.Set(dueIndexKey(o), nil); err != nil {
			return err
		}
	}
	return txn.Set(outboxKey(o.ID), encodeOutbox(o))
}

func getOutbox(txn *badger.Txn, id OutboxID) (OutboxEntry, error) {
	k := outboxKey(id)
	v, err := getValue(txn, k)
	if err != nil {
		return OutboxEntry{}, err
	}
	return decodeOutbox(k, v)
}

// Enqueue records a new outbox entry together with the session state that
// encrypted it (nil: none), in one transaction: after a crash either both
// are stored or neither, so a message is never sent with a ratchet state
// that was not kept, or kept without its message. An existing ID fails with
// ErrExists.
func (c *Client) Enqueue(o OutboxEntry, s *Session) error {
	if o.Status == 0 {
		o.Status = OutboxQueued
	}
	if o.CreatedAt.IsZero() {
		o.CreatedAt = c.now()
	}
	return c.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(outboxKey(o.ID)); err == nil {
			return ErrExists
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if s != nil {
			if err := putSession(txn, s); err != nil {
				return err
			}
		}
		return putOutbox(txn, nil, &o)
	})
}

// Outbox returns one outbox entry, or ErrNotFound.
func (c *Client) Outbox(id OutboxID) (OutboxEntry, error) {
	var o OutboxEntry
	err := c.view(func(txn *badger.Txn) error {
		var err error
		o, err = getOutbox(txn, id)
		return err
	})
	return o, err
}

// UpdateOutbox reads an entry, lets f change it and writes it back, in one
// transaction (status, retries, next attempt, receipts). f must not change
// the ID. If f returns an error nothing is written.
func (c *Client) UpdateOutbox(id OutboxID, f func(*OutboxEntry) error) error {
	return c.update(func(txn *badger.Txn) error {
		old, err := getOutbox(txn, id)
		if err != nil {
			return err
		}
		o := old
		o.Receipts = append([][]byte(nil), old.Receipts...)
		if err := f(&o); err != nil {
			return err
		}
		o.ID = id
		return putOutbox(txn, &old, &o)
	})
}

// DeleteOutbox removes an entry.
func (c *Client) DeleteOutbox(id OutboxID) error {
	return c.update(func(txn *badger.Txn) error {
		old, err := getOutbox(txn, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if old.pending() {
			if err := txn.Delete(dueIndexKey(&old)); err != nil {
				return err
			}
		}
		return txn.Delete(outboxKey(id))
	})
}

// DueOutbox returns up to limit queued or stored entries whose NextAttempt
// is at or before now, highest priority first, then earliest attempt.
func (c *Client) DueOutbox(now time.Time, limit int) ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := c.view(func(txn *badger.Txn) error {
		var ids []OutboxID
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{cDue}})
		for it.Seek([]byte{cDue}); it.ValidForPrefix([]byte{cDue}); it.Next() {
			k := it.Item().Key()
			if len(k) != 26 {
				continue
			}
			if int64(binary.BigEndian.Uint64(k[2:])) > now.UnixNano() {
				continue // a later entry of this priority; lower priorities may be due
			}
			ids = append(ids, OutboxID(k[10:]))
			if limit > 0 && len(ids) >= limit {
				break
			}
		}
		it.Close()
		for _, id := range ids {
			o, err := getOutbox(txn, id)
			if err != nil {
				return err
			}
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// OutboxEntries lists every outbox entry in ID order.
func (c *Client) OutboxEntries() ([]OutboxEntry, error) {
	var out []OutboxEntry
	err := c.scan([]byte{cOutbox}, func(k, v []byte) error {
		o, err := decodeOutbox(k, v)
		if err == nil {
			out = append(out, o)
		}
		return err
	})
	return out, err
}

// ---- received messages, cursor, seen CIDs ----

// Message is a received message of a conversation, ordered by the sender's
// counter inside the ciphertext.
type Message struct {
	Contact    string
	Counter    uint64
	CID        wire.CID
	Body       []byte
	ReceivedAt time.Time
}

func messageKey(contact string, counter uint64, c wire.CID) []byte {
	b := append([]byte{cMessage}, lp(contact)...)
	b = binary.BigEndian.AppendUint64(b, counter)
	return append(b, c[:]...)
}

func encodeMessage(m *Message) []byte {
	e := newEnc()
	e.str(m.Contact)
	e.u64(m.Counter)
	e.b = append(e.b, m.CID[:]...)
	e.bytes(m.Body)
	e.i64(m.ReceivedAt.UnixNano())
	return e.seal(kindMessage)
}

func decodeMessage(k, v []byte) (Message, error) {
	d := newDec(k, v, kindMessage)
	m := Message{Contact: d.str(), Counter: d.u64()}
	if d.err == nil && len(d.b) < wire.CIDLen {
		d.fail("short cid")
	}
	if d.err == nil {
		m.CID = wire.CID(d.b[:wire.CIDLen])
		d.b = d.b[wire.CIDLen:]
	}
	m.Body = d.bytes()
	m.ReceivedAt = time.Unix(0, d.i64())
	return m, d.done()
}

// Messages returns up to limit (≤ 0: all) messages of a conversation with
// counter ≥ from, in counter order.
func (c *Client) Messages(contact string, from uint64, limit int) ([]Message, error) {
	var out []Message
	err := c.view(func(txn *badger.Txn) error {
		prefix := append([]byte{cMessage}, lp(contact)...)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(binary.BigEndian.AppendUint64(bytes.Clone(prefix), from)); it.ValidForPrefix(prefix); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			m, err := decodeMessage(it.Item().KeyCopy(nil), v)
			if err != nil {
				return err
			}
			out = append(out, m)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

func cursorKey(mb wire.Mailbox) []byte { return append([]byte{cCursor}, mb[:]...) }

func seenKey(mb wire.Mailbox, cid wire.CID) []byte {
	return append(append([]byte{cSeen}, mb[:]...), cid[:]...)
}

func getCursor(txn *badger.Txn, mb wire.Mailbox) (wire.Cursor, error) {
	k := cursorKey(mb)
	v, err := getValue(txn, k)
	if errors.Is(err, ErrNotFound) {
		return wire.Cursor{}, nil
	}
	if err != nil {
		return wire.Cursor{}, err
	}
	d := newDec(k, v, kindCursor)
	b := d.bytes()
	if err := d.done(); err != nil {
		return wire.Cursor{}, err
	}
	cur, err := wire.ParseCursor(b)
	if err != nil {
		return wire.Cursor{}, corrupt(k, "cursor: %v", err)
	}
	return cur, nil
}

func putCursor(txn *badger.Txn, mb wire.Mailbox, cur *wire.Cursor) error {
	e := newEnc()
	e.bytes(cur.Marshal())
	return txn.Set(cursorKey(mb), e.seal(kindCursor))
}

// Cursor returns the durable sync cursor of a mailbox (empty if none).
func (c *Client) Cursor(mb wire.Mailbox) (wire.Cursor, error) {
	var cur wire.Cursor
	err := c.view(func(txn *badger.Txn) error {
		var err error
		cur, err = getCursor(txn, mb)
		return err
	})
	return cur, err
}

// AdvanceCursor raises the mailbox's cursor to cover every position of
// to (each origin takes the max), atomically. It never lowers a position.
func (c *Client) AdvanceCursor(mb wire.Mailbox, to *wire.Cursor) error {
	return c.update(func(txn *badger.Txn) error { return advanceCursor(txn, mb, to) })
}

func advanceCursor(txn *badger.Txn, mb wire.Mailbox, to *wire.Cursor) error {
	cur, err := getCursor(txn, mb)
	if err != nil {
		return err
	}
	for _, p := range to.Positions() {
		if err := cur.Advance(p.Origin, p.Seq); err != nil {
			return err
		}
	}
	return putCursor(txn, mb, &cur)
}

func (c *Client) seenEntry(mb wire.Mailbox, cid wire.CID, expiry uint64) *badger.Entry {
	e := newEnc()
	e.u64(expiry)
	en := badger.NewEntry(seenKey(mb, cid), e.seal(kindSeen))
	if expiry > 0 {
		// Badger's TTL runs on the wall clock: convert from the store's
		// clock. A CID past its expiry can never be delivered again, so
		// forgetting it then is safe.
		en.ExpiresAt = uint64(time.Now().Unix() + max(int64(expiry)-c.now().Unix(), 1))
	}
	return en
}

// Seen reports whether a CID of the mailbox was marked seen.
func (c *Client) Seen(mb wire.Mailbox, cid wire.CID) (bool, error) {
	var seen bool
	err := c.view(func(txn *badger.Txn) error {
		_, err := txn.Get(seenKey(mb, cid))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		seen = err == nil
		return err
	})
	return seen, err
}

// MarkSeen records a CID as seen until its expiry (Unix seconds; 0 keeps
// it forever).
func (c *Client) MarkSeen(mb wire.Mailbox, cid wire.CID, expiry uint64) error {
	return c.update(func(txn *badger.Txn) error { return txn.SetEntry(c.seenEntry(mb, cid, expiry)) })
}

// Received is everything one received entry changes.
type Received struct {
	Mailbox wire.Mailbox
	CID     wire.CID
	// Expiry of the entry, for the seen-CID set.
	Expiry uint64
	// Message is the decrypted message to store (nil: nothing to store,
	// e.g. a control message).
	Message *Message
	// Session is the session state the message advanced (nil: none).
	Session *Session
	// Cursor, if set, is merged into the mailbox's cursor (positions only
	// rise).
	Cursor *wire.Cursor
}

// StoreReceived applies one received entry in one transaction: the message,
// the session state it advanced, the CID marked seen and the cursor
// advanced. A CID already seen changes nothing and returns duplicate =
// true, so a redelivered entry is never stored (or decrypted into a
// session) twice.
func (c *Client) StoreReceived(r Received) (duplicate bool, err error) {
	err = c.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(seenKey(r.Mailbox, r.CID)); err == nil {
			duplicate = true
			return nil
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if r.Message != nil {
			m := *r.Message
			if err := checkID("contact", m.Contact); err != nil {
				return err
			}
			if m.ReceivedAt.IsZero() {
				m.ReceivedAt = c.now()
			}
			m.CID = r.CID
			if err := txn.Set(messageKey(m.Contact, m.Counter, m.CID), encodeMessage(&m)); err != nil {
				return err
			}
		}
		if r.Session != nil {
			if err := putSession(txn, r.Session); err != nil {
				return err
			}
		}
		if err := txn.SetEntry(c.seenEntry(r.Mailbox, r.CID, r.Expiry)); err != nil {
			return err
		}
		if r.Cursor != nil {
			return advanceCursor(txn, r.Mailbox, r.Cursor)
		}
		return nil
	})
	return duplicate, err
}
