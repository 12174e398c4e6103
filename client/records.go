package client

import (
	"encoding/binary"
	"slices"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/wire"
)

// Key layout of the client's database. Every key starts with a one-letter
// table name and a slash.
//
//	m/keys                      ratchet.PrivateKeys (identity and prekeys)
//	m/mbox                      mailbox Ed25519 seed
//	m/cursor                    wire.Cursor of the own mailbox
//	m/seq                       last local sequence number
//	c/<contact>                 contactRec
//	s/<handshake id 32>         sessionRec
//	o/<contact>/<counter u64>   outboxRec
//	h/<contact>/<dir><counter>  msgRec (history)
//	r/<contact>                 recvRec
//	x/<cid 36>                  seen CID (with TTL)
//	p/<local seq u64>           pendingRec: an entry that fits no session yet
var (
	keyKeys    = []byte("m/keys")
	keyMailbox = []byte("m/mbox")
	keyCursor  = []byte("m/cursor")
	keySeq     = []byte("m/seq")

	prefixContact = []byte("c/")
	prefixSession = []byte("s/")
	prefixOutbox  = []byte("o/")
	prefixHistory = []byte("h/")
	prefixRecv    = []byte("r/")
	prefixSeen    = []byte("x/")
	prefixPending = []byte("p/")
)

func keyContact(id ContactID) []byte { return append(slices.Clone(prefixContact), id...) }
func keySession(hid [32]byte) []byte { return append(slices.Clone(prefixSession), hid[:]...) }
func keyRecv(id ContactID) []byte    { return append(slices.Clone(prefixRecv), id...) }
func keySeen(c wire.CID) []byte      { return append(slices.Clone(prefixSeen), c[:]...) }
func keyPending(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(slices.Clone(prefixPending), seq)
}

func keyOutbox(id ContactID, counter uint64) []byte {
	k := append(slices.Clone(prefixOutbox), id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, counter)
}

func historyPrefix(id ContactID) []byte {
	k := append(slices.Clone(prefixHistory), id...)
	return append(k, '/')
}

func keyHistory(id ContactID, dir Direction, counter uint64) []byte {
	k := append(historyPrefix(id), byte(dir))
	return binary.BigEndian.AppendUint64(k, counter)
}

// contactRec is a stored contact.
type contactRec struct {
	id       ContactID
	name     string
	identity ratchet.IdentityKey
	mailbox  wire.Mailbox
	bundle   []byte   // their public bundle, if known (from an invite)
	hints    [][]byte // relay multiaddrs from their invite
	// next is the counter of the next payload this client sends them.
	next    uint64
	addedMs uint64
}

func (r *contactRec) marshal() []byte {
	e := newEnc(256 + len(r.bundle))
	e.str(string(r.id))
	e.str(r.name)
	e.b = append(e.b, r.identity.Ed25519[:]...)
	e.b = append(e.b, r.identity.X25519[:]...)
	e.b = append(e.b, r.mailbox[:]...)
	e.bytes(r.bundle)
	e.u32(uint32(len(r.hints)))
	for _, h := range r.hints {
		e.bytes(h)
	}
	e.u64(r.next)
	e.u64(r.addedMs)
	return e.b
}

func parseContactRec(b []byte) (*contactRec, error) {
	d := newDec(b)
	r := &contactRec{}
	r.id = ContactID(d.str())
	r.name = d.str()
	d.fixed(r.identity.Ed25519[:])
	d.fixed(r.identity.X25519[:])
	d.fixed(r.mailbox[:])
	r.bundle = d.bytes()
	n := int(d.u32())
	if n > wire.MaxInviteHints {
		n, d.err = 0, errCorruptRecord
	}
	for range n {
		r.hints = append(r.hints, d.bytes())
	}
	r.next = d.u64()
	r.addedMs = d.u64()
	return r, d.done("contact")
}

func (r *contactRec) public() Contact {
	return Contact{ID: r.id, Name: r.name, Identity: r.identity, Mailbox: r.mailbox, AddedAt: msTime(r.addedMs)}
}

// sessionRec is a stored ratchet session with one contact.
type sessionRec struct {
	contact ContactID
	hid     [32]byte
	sess    *ratchet.Session
	// active orders trial decryption: the local sequence number of the
	// last message the session encrypted or decrypted.
	active  uint64
	retired bool
}

func (r *sessionRec) marshal() ([]byte, error) {
	blob, err := r.sess.MarshalBinary()
	if err != nil {
		return nil, err
	}
	e := newEnc(len(blob) + 64)
	e.str(string(r.contact))
	e.u64(r.active)
	e.bool(r.retired)
	e.bytes(blob)
	return e.b, nil
}

func parseSessionRec(b []byte) (*sessionRec, error) {
	d := newDec(b)
	r := &sessionRec{}
	r.contact = ContactID(d.str())
	r.active = d.u64()
	r.retired = d.bool()
	blob := d.bytes()
	if err := d.done("session"); err != nil {
		return nil, err
	}
	s, err := ratchet.ParseSession(blob, ratchet.Config{})
	if err != nil {
		return nil, err
	}
	r.sess = s
	r.hid = s.HandshakeID()
	return r, nil
}

// outboxRec is a payload waiting to be deposited, or deposited and waiting
// for its delivery receipt or expiry.
type outboxRec struct {
	contact  ContactID
	counter  uint64
	kind     wire.PayloadKind
	mailbox  wire.Mailbox // the recipient's mailbox
	envelope []byte
	cid      wire.CID
	status   Status
	attempts uint32
	nextMs   uint64 // next deposit attempt (queued) or status check (stored)
	seq      uint64 // local sequence number: order among equals
	expiry   uint64 // envelope expiry, Unix seconds
	receipt  []byte // signed receipt, once stored
}

func (r *outboxRec) marshal() []byte {
	e := newEnc(len(r.envelope) + len(r.receipt) + 192)
	e.str(string(r.contact))
	e.u64(r.counter)
	e.u8(uint8(r.kind))
	e.b = append(e.b, r.mailbox[:]...)
	e.bytes(r.envelope)
	e.b = append(e.b, r.cid[:]...)
	e.u8(uint8(r.status))
	e.u32(r.attempts)
	e.u64(r.nextMs)
	e.u64(r.seq)
	e.u64(r.expiry)
	e.bytes(r.receipt)
	return e.b
}

func parseOutboxRec(b []byte) (*outboxRec, error) {
	d := newDec(b)
	r := &outboxRec{}
	r.contact = ContactID(d.str())
	r.counter = d.u64()
	r.kind = wire.PayloadKind(d.u8())
	d.fixed(r.mailbox[:])
	r.envelope = d.bytes()
	d.fixed(r.cid[:])
	r.status = Status(d.u8())
	r.attempts = d.u32()
	r.nextMs = d.u64()
	r.seq = d.u64()
	r.expiry = d.u64()
	r.receipt = d.bytes()
	return r, d.done("outbox")
}

// msgRec is one message of a conversation's history.
type msgRec struct {
	dir      Direction
	counter  uint64
	body     []byte
	sentAtMs uint64
	atMs     uint64
	seq      uint64 // local sequence number: merges the two directions
	status   Status // outgoing only
	late     bool
	released bool // incoming: MessageReceived was emitted (or due)
}

func (r *msgRec) marshal() []byte {
	e := newEnc(len(r.body) + 48)
	e.u8(uint8(r.dir))
	e.u64(r.counter)
	e.bytes(r.body)
	e.u64(r.sentAtMs)
	e.u64(r.atMs)
	e.u64(r.seq)
	e.u8(uint8(r.status))
	e.bool(r.late)
	e.bool(r.released)
	return e.b
}

func parseMsgRec(b []byte) (*msgRec, error) {
	d := newDec(b)
	r := &msgRec{}
	r.dir = Direction(d.u8())
	r.counter = d.u64()
	r.body = d.bytes()
	r.sentAtMs = d.u64()
	r.atMs = d.u64()
	r.seq = d.u64()
	r.status = Status(d.u8())
	r.late = d.bool()
	r.released = d.bool()
	return r, d.done("message")
}

// recvRec is the receiving side of a conversation: which of the contact's
// counters arrived (SPEC.md §16).
type recvRec struct {
	// next is the lowest counter not yet accounted for: every counter
	// below it arrived or was reported missing (a gap).
	next uint64
	// above lists counters above next that arrived, ascending.
	above []uint64
	// missing lists counters reported missing (bounded, newest kept): one
	// that arrives later is delivered as Late.
	missing []uint64
	// holeSinceMs is when the current hole below above[0] was noticed.
	holeSinceMs uint64
	// acks are the counters of stored TEXT messages not yet confirmed by
	// a DELIVERY payload.
	acks []uint64
}

// maxMissing bounds recvRec.missing.
const maxMissing = 4096

func newRecvRec() *recvRec { return &recvRec{next: 1} }

func (r *recvRec) marshal() []byte {
	e := newEnc(32 + 8*(len(r.above)+len(r.missing)+len(r.acks)))
	e.u64(r.next)
	e.u64s(r.above)
	e.u64s(r.missing)
	e.u64(r.holeSinceMs)
	e.u64s(r.acks)
	return e.b
}

func parseRecvRec(b []byte) (*recvRec, error) {
	d := newDec(b)
	r := &recvRec{}
	r.next = d.u64()
	r.above = d.u64s()
	r.missing = d.u64s()
	r.holeSinceMs = d.u64()
	r.acks = d.u64s()
	return r, d.done("receive state")
}

// counterState classifies an arriving counter.
type counterState uint8

const (
	counterNew    counterState = iota // not seen before
	counterLate                       // reported missing, now arrived
	counterReplay                     // already arrived
)

// arrive records counter c and says what it is.
func (r *recvRec) arrive(c uint64) counterState {
	if c < r.next {
		if i := slices.Index(r.missing, c); i >= 0 {
			r.missing = slices.Delete(r.missing, i, i+1)
			return counterLate
		}
		return counterReplay
	}
	i, found := slices.BinarySearch(r.above, c)
	if found {
		return counterReplay
	}
	r.above = slices.Insert(r.above, i, c)
	return counterNew
}

// release advances next over the counters that arrived in order and
// returns them.
func (r *recvRec) release() []uint64 {
	var out []uint64
	for len(r.above) > 0 && r.above[0] == r.next {
		out = append(out, r.next)
		r.above = r.above[1:]
		r.next++
	}
	return out
}

// pendingRec is an entry that fits no session yet.
type pendingRec struct {
	cid      wire.CID
	envelope []byte
}

func (r *pendingRec) marshal() []byte {
	e := newEnc(len(r.envelope) + 48)
	e.b = append(e.b, r.cid[:]...)
	e.bytes(r.envelope)
	return e.b
}

func parsePendingRec(b []byte) (*pendingRec, error) {
	d := newDec(b)
	r := &pendingRec{}
	d.fixed(r.cid[:])
	r.envelope = d.bytes()
	return r, d.done("pending entry")
}

func msTime(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}
