package store

import (
	"encoding/binary"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// Key layout of a client database (ClientDB). Every key starts with a
// one-byte table; integers are big-endian, so byte order is numeric order;
// a contact ID inside a longer key is length-prefixed (len(1)).
//
//	0x00 'v'                               schema version (u64 record)
//	'I'                                    Identity
//	'L'                                    the local sequence number (u64 record)
//	'c' contact                            Contact
//	's' handshake id(32)                   Session
//	'o' len(1) contact counter(8)          OutboxEntry
//	'm' len(1) contact dir(1) counter(8)   Message
//	'r' contact                            RecvState
//	'u' mailbox(34)                        cursor of a mailbox
//	'w' mailbox(34) relay                  cursor of a mailbox at one relay (the relay's peer ID bytes)
//	'n' cid(36)                            seen CID (badger TTL: until it may be forgotten)
//	'p' seq(8)                             PendingEntry
//
// A conversation's history is one prefix scan ('m' ‖ contact), incoming
// then outgoing, each in counter order. The seen set is not keyed by
// mailbox: a CID is the hash of an envelope, and the envelope names its
// mailbox, so a CID belongs to one mailbox.
const (
	cMeta     = 0x00
	cIdentity = 'I'
	cLocalSeq = 'L'
	cContact  = 'c'
	cSession  = 's'
	cOutbox   = 'o'
	cMessage  = 'm'
	cRecv     = 'r'
	cCursor   = 'u'
	cRelayCur = 'w'
	cSeen     = 'n'
	cPending  = 'p'
)

var keyClientSchema = []byte{cMeta, 'v'}

// clientSchemaVersion is the layout version of a client database; a
// database of another version is refused at open.
const clientSchemaVersion = 1

// Record kinds of a client database (the log's kinds are below 20).
const (
	kindClientMeta = 20 + iota
	kindIdentity
	kindLocalSeq
	kindContact
	kindSession
	kindOutbox
	kindMessage
	kindRecv
	kindCursor
	kindSeen
	kindPending
)

// maxClientID bounds a contact ID (it is length-prefixed in keys).
const maxClientID = 255

func lp(s string) []byte { return append([]byte{byte(len(s))}, s...) }

func contactKey(id string) []byte { return append([]byte{cContact}, id...) }
func sessionKey(hid [32]byte) []byte {
	return append([]byte{cSession}, hid[:]...)
}
func recvKey(id string) []byte         { return append([]byte{cRecv}, id...) }
func cursorKey(mb wire.Mailbox) []byte { return append([]byte{cCursor}, mb[:]...) }
func seenKey(c wire.CID) []byte        { return append([]byte{cSeen}, c[:]...) }
func relayCursorKey(mb wire.Mailbox, relay peer.ID) []byte {
	return append(append([]byte{cRelayCur}, mb[:]...), relay...)
}
func pendingKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{cPending}, seq)
}

func outboxKey(contact string, counter uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{cOutbox}, lp(contact)...), counter)
}

// parseOutboxKey returns the contact and counter of an outbox key.
func parseOutboxKey(k []byte) (string, uint64, bool) {
	if len(k) < 2 || k[0] != cOutbox || len(k) != 2+int(k[1])+8 {
		return "", 0, false
	}
	return string(k[2 : 2+k[1]]), binary.BigEndian.Uint64(k[2+k[1]:]), true
}

func messagePrefix(contact string) []byte { return append([]byte{cMessage}, lp(contact)...) }

func messageKey(contact string, dir Direction, counter uint64) []byte {
	return binary.BigEndian.AppendUint64(append(messagePrefix(contact), byte(dir)), counter)
}

// parseMessageKey returns the direction and counter of a message key of a
// contact whose ID is n bytes long.
func parseMessageKey(k []byte, n int) (Direction, uint64, bool) {
	if len(k) != 2+n+9 {
		return 0, 0, false
	}
	return Direction(k[2+n]), binary.BigEndian.Uint64(k[3+n:]), true
}

// Identity is the client's own secret state: its identity and prekeys
// (ratchet.PrivateKeys in its binary form, one-time prekeys included, so
// that a one-time prekey a handshake consumed is marked used in the
// transaction that stores the session it made) and the seed of its mailbox
// key. Both are opaque here.
type Identity struct {
	Keys        []byte
	MailboxSeed []byte
}

// keys(bytes) ‖ mailboxSeed(bytes)
func encodeIdentity(r *Identity) []byte {
	e := newEnc(8 + len(r.Keys) + len(r.MailboxSeed))
	e.bytes(r.Keys)
	e.bytes(r.MailboxSeed)
	return e.seal(kindIdentity)
}

func decodeIdentity(key, v []byte) (*Identity, error) {
	d := newDec(key, v, kindIdentity)
	r := &Identity{Keys: d.bytes(), MailboxSeed: d.bytes()}
	return r, d.done()
}

// Contact is someone the client can message.
type Contact struct {
	// ID names the contact (1…255 bytes; the client derives it from the
	// identity key). It is the record's key.
	ID   string
	Name string
	// IdentityEd25519 and IdentityX25519 are the contact's identity key
	// (ratchet.IdentityKey).
	IdentityEd25519 [32]byte
	IdentityX25519  [32]byte
	// Mailbox is where messages to the contact are deposited.
	Mailbox wire.Mailbox
	// Bundle is the contact's public prekey bundle, if known (from an
	// invite).
	Bundle []byte
	// Hints are relay multiaddrs (binary form) from the contact's invite.
	Hints [][]byte
	// NextCounter is the sender counter of the next payload sent to the
	// contact (SPEC.md §16).
	NextCounter uint64
	// AddedMs is when the contact was added (Unix milliseconds).
	AddedMs uint64
}

// name(bytes) ‖ ed25519(32) ‖ x25519(32) ‖ mailbox(34) ‖ bundle(bytes) ‖
// n(4) ‖ hint(bytes)·n ‖ nextCounter(8) ‖ addedMs(8)
func encodeContact(r *Contact) []byte {
	n := len(r.Name) + len(r.Bundle) + 128 + wire.MailboxLen
	for _, h := range r.Hints {
		n += 4 + len(h)
	}
	e := newEnc(n)
	e.str(r.Name)
	e.fixed(r.IdentityEd25519[:])
	e.fixed(r.IdentityX25519[:])
	e.fixed(r.Mailbox[:])
	e.bytes(r.Bundle)
	e.u32(uint32(len(r.Hints)))
	for _, h := range r.Hints {
		e.bytes(h)
	}
	e.u64(r.NextCounter)
	e.u64(r.AddedMs)
	return e.seal(kindContact)
}

// decodeContact decodes a contact record; the ID is the caller's (the key).
func decodeContact(key, v []byte) (*Contact, error) {
	d := newDec(key, v, kindContact)
	r := &Contact{Name: d.str()}
	d.fixed(r.IdentityEd25519[:])
	d.fixed(r.IdentityX25519[:])
	d.fixed(r.Mailbox[:])
	r.Bundle = d.bytes()
	n := d.u32()
	if uint64(n)*4 > uint64(len(d.b)) {
		d.fail("%d hints in %d bytes", n, len(d.b))
		n = 0
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		r.Hints = append(r.Hints, d.bytes())
	}
	r.NextCounter = d.u64()
	r.AddedMs = d.u64()
	return r, d.done()
}

// Session is a ratchet session with a contact, keyed by its handshake ID.
// A contact may have several (simultaneous initiation).
type Session struct {
	// HandshakeID names the session (ratchet.Session.HandshakeID). It is
	// the record's key.
	HandshakeID [32]byte
	// Contact is the ID of the contact the session is with.
	Contact string
	// Active is the local sequence number of the last message the session
	// encrypted or decrypted: it orders trial decryption.
	Active uint64
	// Retired marks a session that lost simultaneous initiation: it only
	// decrypts messages in flight.
	Retired bool
	// State is the serialised ratchet state, opaque here.
	State []byte
}

// contact(bytes) ‖ active(8) ‖ retired(1) ‖ state(bytes)
func encodeSession(r *Session) []byte {
	e := newEnc(len(r.Contact) + len(r.State) + 17)
	e.str(r.Contact)
	e.u64(r.Active)
	e.bool(r.Retired)
	e.bytes(r.State)
	return e.seal(kindSession)
}

// decodeSession decodes a session record; the handshake ID is the caller's
// (the key).
func decodeSession(key, v []byte) (*Session, error) {
	d := newDec(key, v, kindSession)
	r := &Session{Contact: d.str(), Active: d.u64(), Retired: d.bool(), State: d.bytes()}
	return r, d.done()
}

// Status is the delivery status of an outgoing message (the client's
// Status has the same values).
type Status uint8

// Statuses: queued → stored (a relay's receipt verified) → delivered (the
// recipient's delivery receipt) or expired-undelivered; failed is a
// permanent refusal by the relays.
const (
	StatusQueued Status = iota + 1
	StatusStored
	StatusDelivered
	StatusExpiredUndelivered
	StatusFailed
)

// Direction says who wrote a message (the client's Direction has the same
// values).
type Direction uint8

// Directions.
const (
	Incoming Direction = 1
	Outgoing Direction = 2
)

// OutboxEntry is a payload sealed for a contact, waiting to be deposited,
// or deposited and waiting for its delivery receipt or expiry. It is keyed
// by (Contact, Counter).
type OutboxEntry struct {
	Contact string
	// Counter is the payload's sender counter in the conversation.
	Counter uint64
	Kind    wire.PayloadKind
	// Mailbox is the recipient's mailbox.
	Mailbox  wire.Mailbox
	Envelope []byte
	// CID is the CID of Envelope.
	CID    wire.CID
	Status Status
	// Retries counts the failed deposit attempts so far.
	Retries uint32
	// NextAttemptMs is when the next deposit attempt (queued) or status
	// check (stored) is due, Unix milliseconds.
	NextAttemptMs uint64
	// Seq is the client's local sequence number at enqueue: the order of
	// entries of equal priority.
	Seq uint64
	// Expiry is the envelope's expiry, Unix seconds.
	Expiry uint64
	// Receipt is the relay's signed receipt, once stored.
	Receipt []byte
}

// kind(1) ‖ mailbox(34) ‖ envelope(bytes) ‖ cid(36) ‖ status(1) ‖
// retries(4) ‖ nextAttemptMs(8) ‖ seq(8) ‖ expiry(8) ‖ receipt(bytes)
func encodeOutbox(r *OutboxEntry) []byte {
	e := newEnc(len(r.Envelope) + len(r.Receipt) + 112)
	e.u8(uint8(r.Kind))
	e.fixed(r.Mailbox[:])
	e.bytes(r.Envelope)
	e.fixed(r.CID[:])
	e.u8(uint8(r.Status))
	e.u32(r.Retries)
	e.u64(r.NextAttemptMs)
	e.u64(r.Seq)
	e.u64(r.Expiry)
	e.bytes(r.Receipt)
	return e.seal(kindOutbox)
}

// decodeOutbox decodes an outbox record; Contact and Counter are the
// caller's (the key).
func decodeOutbox(key, v []byte) (*OutboxEntry, error) {
	d := newDec(key, v, kindOutbox)
	r := &OutboxEntry{Kind: wire.PayloadKind(d.u8())}
	d.fixed(r.Mailbox[:])
	r.Envelope = d.bytes()
	d.fixed(r.CID[:])
	r.Status = Status(d.u8())
	r.Retries = d.u32()
	r.NextAttemptMs = d.u64()
	r.Seq = d.u64()
	r.Expiry = d.u64()
	r.Receipt = d.bytes()
	if d.err == nil && !r.Status.valid() {
		d.fail("status %d", r.Status)
	}
	return r, d.done()
}

func (s Status) valid() bool { return s >= StatusQueued && s <= StatusFailed }

func (d Direction) valid() bool { return d == Incoming || d == Outgoing }

// Message is one message of a conversation's history, keyed by (contact,
// Direction, Counter).
type Message struct {
	Direction Direction
	// Counter is the sender's counter (SPEC.md §16).
	Counter uint64
	Body    []byte
	// SentAtMs is the sender's clock, AtMs the client's when it stored the
	// message (Unix milliseconds).
	SentAtMs uint64
	AtMs     uint64
	// Seq is the client's local sequence number when it stored the
	// message: it merges the two directions of a conversation.
	Seq uint64
	// Status is the delivery status of an outgoing message (0 for an
	// incoming one).
	Status Status
	// Late marks an incoming message that arrived after its gap was
	// reported.
	Late bool
	// Released marks an incoming message that was shown (its
	// MessageReceived emitted).
	Released bool
}

// body(bytes) ‖ sentAtMs(8) ‖ atMs(8) ‖ seq(8) ‖ status(1) ‖ late(1) ‖ released(1)
func encodeMessage(r *Message) []byte {
	e := newEnc(len(r.Body) + 31)
	e.bytes(r.Body)
	e.u64(r.SentAtMs)
	e.u64(r.AtMs)
	e.u64(r.Seq)
	e.u8(uint8(r.Status))
	e.bool(r.Late)
	e.bool(r.Released)
	return e.seal(kindMessage)
}

// decodeMessage decodes a message record; Direction and Counter are the
// caller's (the key).
func decodeMessage(key, v []byte) (*Message, error) {
	d := newDec(key, v, kindMessage)
	r := &Message{Body: d.bytes(), SentAtMs: d.u64(), AtMs: d.u64(), Seq: d.u64(), Status: Status(d.u8()),
		Late: d.bool(), Released: d.bool()}
	if d.err == nil && r.Status != 0 && !r.Status.valid() {
		d.fail("status %d", r.Status)
	}
	return r, d.done()
}

// RecvState is the receiving side of a conversation: which of the
// contact's sender counters arrived (SPEC.md §17.5). The client's logic
// reads and changes it; the store keeps it.
type RecvState struct {
	// Next is the lowest counter not yet accounted for: every counter
	// below it arrived or was reported missing.
	Next uint64
	// Above lists the counters above Next that arrived, ascending.
	Above []uint64
	// Missing lists counters reported missing (a bounded list): one that
	// arrives later is delivered as late.
	Missing []uint64
	// HoleSinceMs is when the hole below Above[0] was noticed (Unix
	// milliseconds; 0: none).
	HoleSinceMs uint64
	// Acks are the counters of stored TEXT messages not yet confirmed by a
	// DELIVERY payload.
	Acks []uint64
}

// next(8) ‖ above(u64s) ‖ missing(u64s) ‖ holeSinceMs(8) ‖ acks(u64s)
func encodeRecv(r *RecvState) []byte {
	e := newEnc(28 + 8*(len(r.Above)+len(r.Missing)+len(r.Acks)))
	e.u64(r.Next)
	e.u64s(r.Above)
	e.u64s(r.Missing)
	e.u64(r.HoleSinceMs)
	e.u64s(r.Acks)
	return e.seal(kindRecv)
}

func decodeRecv(key, v []byte) (*RecvState, error) {
	d := newDec(key, v, kindRecv)
	r := &RecvState{Next: d.u64(), Above: d.u64s(), Missing: d.u64s(), HoleSinceMs: d.u64(), Acks: d.u64s()}
	return r, d.done()
}

// PendingEntry is a received entry no session opens yet, kept to be tried
// again; it is keyed by the client's local sequence number, so the oldest
// comes first.
type PendingEntry struct {
	CID      wire.CID
	Envelope []byte
}

// cid(36) ‖ envelope(bytes)
func encodePending(r *PendingEntry) []byte {
	e := newEnc(wire.CIDLen + 4 + len(r.Envelope))
	e.fixed(r.CID[:])
	e.bytes(r.Envelope)
	return e.seal(kindPending)
}

func decodePending(key, v []byte) (*PendingEntry, error) {
	d := newDec(key, v, kindPending)
	r := &PendingEntry{}
	d.fixed(r.CID[:])
	r.Envelope = d.bytes()
	return r, d.done()
}

// cursor(bytes, wire.Cursor.Marshal)
func encodeCursor(c *wire.Cursor) []byte {
	b := c.Marshal()
	e := newEnc(4 + len(b))
	e.bytes(b)
	return e.seal(kindCursor)
}

func decodeCursor(key, v []byte) (wire.Cursor, error) {
	d := newDec(key, v, kindCursor)
	b := d.bytes()
	if err := d.done(); err != nil {
		return wire.Cursor{}, err
	}
	c, err := wire.ParseCursor(b)
	if err != nil {
		return wire.Cursor{}, corrupt(key, "cursor: %v", err)
	}
	return c, nil
}

// A seen mark is an empty record; what counts is that its key exists.
var seenRecord = newEnc(0).seal(kindSeen)
