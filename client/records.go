package client

import (
	"slices"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/store"
)

// The client's state is stored by package store (store.ClientDB): the
// record types (store.Contact, store.Session, store.OutboxEntry,
// store.Message, store.RecvState, store.PendingEntry, store.Identity), their
// versioned, checksummed encodings and the key layout live there. The
// client keeps the records it schedules and decrypts with in memory (every
// contact, session, receive state and outbox entry, loaded by New) and
// writes each change in the transaction of the step that made it. What
// stays here is logic: the receive-state algorithm of SPEC.md §17.5 below,
// and the parsed ratchet state of a session.

// sessionRec is a session with its parsed ratchet state. Session.State is
// filled from sess when the session is written (record).
type sessionRec struct {
	store.Session
	sess *ratchet.Session
}

// record returns the session as stored.
func (r *sessionRec) record() (*store.Session, error) {
	blob, err := r.sess.MarshalBinary()
	if err != nil {
		return nil, err
	}
	s := r.Session
	s.State = blob
	return &s, nil
}

// parseSession makes a sessionRec of a stored session.
func parseSession(s *store.Session) (*sessionRec, error) {
	sess, err := ratchet.ParseSession(s.State, ratchet.Config{})
	if err != nil {
		return nil, err
	}
	r := &sessionRec{Session: *s, sess: sess}
	r.State = nil
	r.HandshakeID = sess.HandshakeID()
	return r, nil
}

// contactOf returns the ID of a stored contact.
func contactOf(r *store.Contact) ContactID { return ContactID(r.ID) }

func identityOf(r *store.Contact) ratchet.IdentityKey {
	return ratchet.IdentityKey{Ed25519: r.IdentityEd25519, X25519: r.IdentityX25519}
}

func publicContact(r *store.Contact) Contact {
	return Contact{ID: contactOf(r), Name: r.Name, Identity: identityOf(r), Mailbox: r.Mailbox, AddedAt: msTime(r.AddedMs)}
}

// counterState classifies an arriving counter.
type counterState uint8

const (
	counterNew    counterState = iota // not seen before
	counterLate                       // reported missing, now arrived
	counterReplay                     // already arrived
)

// maxMissing bounds RecvState.Missing.
const maxMissing = 4096

func newRecvState() *store.RecvState { return &store.RecvState{Next: 1} }

// arrive records counter c in a conversation's receive state and says what
// it is.
func arrive(r *store.RecvState, c uint64) counterState {
	if c < r.Next {
		if i := slices.Index(r.Missing, c); i >= 0 {
			r.Missing = slices.Delete(r.Missing, i, i+1)
			return counterLate
		}
		return counterReplay
	}
	i, found := slices.BinarySearch(r.Above, c)
	if found {
		return counterReplay
	}
	r.Above = slices.Insert(r.Above, i, c)
	return counterNew
}

// release advances Next over the counters that arrived in order and returns
// them.
func release(r *store.RecvState) []uint64 {
	var out []uint64
	for len(r.Above) > 0 && r.Above[0] == r.Next {
		out = append(out, r.Next)
		r.Above = r.Above[1:]
		r.Next++
	}
	return out
}

func msTime(ms uint64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms))
}
