package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Errors returned by the Client's methods.
var (
	// ErrUnknownContact is returned for a ContactID this client does not
	// know.
	ErrUnknownContact = errors.New("client: unknown contact")
	// ErrUnknownMessage is returned by Message for an ID this client does
	// not hold.
	ErrUnknownMessage = errors.New("client: unknown message")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("client: closed")
	// ErrNotStarted is returned by Sync before Start.
	ErrNotStarted = errors.New("client: not started")
	// ErrTooLarge is returned by Send for a body that would not fit in an
	// envelope the relays accept.
	ErrTooLarge = errors.New("client: message too large")
	// ErrSelf is returned by AcceptInvite for this client's own invite.
	ErrSelf = errors.New("client: invite is this client's own")
	// ErrNoRelay is returned by Sync when no replica of the mailbox could
	// be reached.
	ErrNoRelay = errors.New("client: no relay reachable")
)

// ContactID names a contact. It is derived from the contact's identity key
// (the same on every device that knows the contact) and is safe to show.
type ContactID string

func contactIDOf(k ratchet.IdentityKey) ContactID {
	h := sha256.New()
	h.Write([]byte("cairn/v1/contact-id\x00"))
	h.Write(k.Ed25519[:])
	h.Write(k.X25519[:])
	return ContactID(hex.EncodeToString(h.Sum(nil)[:16]))
}

// MessageID names a message in this client's store. Treat it as opaque.
type MessageID string

// Contact is someone this client can message.
type Contact struct {
	ID ContactID
	// Name is the name from their invite, or empty for a contact who
	// wrote first.
	Name string
	// Identity is the contact's identity key; compare it out of band to
	// verify the contact (Fingerprint gives a printable form).
	Identity ratchet.IdentityKey
	// Mailbox is where messages to the contact are deposited.
	Mailbox wire.Mailbox
	// AddedAt is when this client learned of the contact.
	AddedAt time.Time
}

// Fingerprint returns a printable fingerprint of the contact's identity
// key, for out-of-band comparison.
func (c Contact) Fingerprint() string {
	sum := sha256.Sum256(append(c.Identity.Ed25519[:], c.Identity.X25519[:]...))
	return hex.EncodeToString(sum[:10])
}

// Status is the delivery status of a sent message.
type Status uint8

// Statuses of a sent message. A message moves from StatusQueued to
// StatusStored (a relay's signed receipt was verified), then to
// StatusDelivered (the recipient's encrypted delivery receipt arrived) or
// StatusExpiredUndelivered (its expiry passed without one, confirmed with
// the relays where reachable). StatusFailed is a permanent refusal by the
// relays (an envelope they will never accept).
const (
	StatusQueued             = Status(store.StatusQueued)
	StatusStored             = Status(store.StatusStored)
	StatusDelivered          = Status(store.StatusDelivered)
	StatusExpiredUndelivered = Status(store.StatusExpiredUndelivered)
	StatusFailed             = Status(store.StatusFailed)
)

func (s Status) String() string {
	switch s {
	case StatusQueued:
		return "queued"
	case StatusStored:
		return "stored"
	case StatusDelivered:
		return "delivered"
	case StatusExpiredUndelivered:
		return "expired-undelivered"
	case StatusFailed:
		return "failed"
	}
	return "unknown"
}

// Direction says who wrote a message.
type Direction uint8

// Directions.
const (
	Incoming = Direction(store.Incoming)
	Outgoing = Direction(store.Outgoing)
)

// Message is one message of a conversation.
type Message struct {
	ID        MessageID
	Contact   ContactID
	Direction Direction
	// Counter is the sender's counter in this conversation (SPEC.md §16):
	// a conversation is ordered by it within each direction.
	Counter uint64
	Body    []byte
	// SentAt is the sender's clock, for display only.
	SentAt time.Time
	// At is when this client stored the message (sent or received).
	At time.Time
	// Seq is the order in which this client stored its messages, across
	// every conversation: it grows with each message stored (a message
	// held back by a gap keeps the Seq of its arrival). History merges a
	// conversation's two directions by it; an app merges conversations
	// by it (each conversation keeping its own order) for an inbox in the
	// order messages arrived. It is local to this client's store.
	Seq uint64
	// Status is the delivery status of an outgoing message.
	Status Status
	// Late is set on an incoming message that arrived after a gap before
	// it had been reported (GapDetected).
	Late bool
}

// Event is one of MessageReceived, StatusChanged, GapDetected,
// ContactAdded and EventsDropped.
type Event interface{ isEvent() }

// MessageReceived reports a new incoming message. Within a conversation
// these events come in the sender's counter order, except for Late
// messages.
type MessageReceived struct{ Message Message }

// StatusChanged reports a new status of a sent message.
type StatusChanged struct {
	ID      MessageID
	Contact ContactID
	Status  Status
}

// GapDetected reports sender counters From…To (inclusive) of a
// conversation that could not be found on any reachable replica within
// Config.GapGrace. The messages after the gap are delivered; a missing
// message that turns up later is delivered with Late set.
type GapDetected struct {
	Contact  ContactID
	From, To uint64
}

// ContactAdded reports a contact this client learned of: from an accepted
// invite, or from someone who wrote first.
type ContactAdded struct{ Contact Contact }

// EventsDropped reports that Count events were dropped because the Events
// channel was full. Everything they reported is in the store: re-read
// History and statuses.
type EventsDropped struct{ Count int }

func (MessageReceived) isEvent() {}
func (StatusChanged) isEvent()   {}
func (GapDetected) isEvent()     {}
func (ContactAdded) isEvent()    {}
func (EventsDropped) isEvent()   {}
