package rpc

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// ErrProtocol is returned when a relay breaks the protocol: an answer out of
// order, an entry the request did not ask for, a frame that does not parse.
// Errors about stamps wrap wire.ErrBadSignature instead.
var ErrProtocol = errors.New("protocol violation")

// ErrClosed is returned by calls on a DepositStream or Subscription that was
// closed, and to pending deposits whose stream ended before their answer.
var ErrClosed = errors.New("stream closed")

// Error is a non-OK status received from a relay. It unwraps to the wire
// sentinel of its status (wire.StatusError), so errors.Is works with the
// sentinels of package wire; the other fields are set only for the statuses
// that name them (SPEC.md §10.1, §11).
type Error struct {
	// Op is the protocol that answered: "info", "deposit", "sync", ….
	Op string
	// Relay is the peer that answered.
	Relay peer.ID
	// Status is the wire status code.
	Status pb.Status
	// Detail is the relay's free-text explanation, if any.
	Detail string
	// RetryAfter is set with RATE_LIMITED (and may be with BUSY).
	RetryAfter time.Duration
	// ReplicaPeers is set with NOT_REPLICA: the replica set the relay
	// computed. Entries that are not valid peer IDs are dropped.
	ReplicaPeers []peer.ID
	// PostageDifficulty is set with POSTAGE_REQUIRED.
	PostageDifficulty int
}

// Error implements error.
func (e *Error) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s: %v", e.Op, wire.StatusError(e.Status))
	if e.RetryAfter > 0 {
		fmt.Fprintf(&sb, " (retry after %v)", e.RetryAfter)
	}
	if e.PostageDifficulty > 0 {
		fmt.Fprintf(&sb, " (difficulty %d)", e.PostageDifficulty)
	}
	if len(e.ReplicaPeers) > 0 {
		fmt.Fprintf(&sb, " (%d replicas named)", len(e.ReplicaPeers))
	}
	if e.Detail != "" {
		// The detail comes from the remote peer: quote it.
		fmt.Fprintf(&sb, ": %q", e.Detail)
	}
	return sb.String()
}

// Unwrap returns the wire sentinel of the status.
func (e *Error) Unwrap() error { return wire.StatusError(e.Status) }

// maxDetail bounds how much of a relay's detail text an Error keeps.
const maxDetail = 256

func newError(op string, relay peer.ID, status pb.Status, detail string, retryAfterMs uint32) *Error {
	if len(detail) > maxDetail {
		detail = detail[:maxDetail]
	}
	return &Error{
		Op:         op,
		Relay:      relay,
		Status:     status,
		Detail:     detail,
		RetryAfter: time.Duration(retryAfterMs) * time.Millisecond,
	}
}

// statusErr returns nil for OK and an *Error otherwise.
func statusErr(op string, relay peer.ID, status pb.Status, detail string, retryAfterMs uint32) error {
	if status == pb.Status_STATUS_OK {
		return nil
	}
	return newError(op, relay, status, detail, retryAfterMs)
}

func parsePeers(raw [][]byte) []peer.ID {
	out := make([]peer.ID, 0, len(raw))
	for _, b := range raw {
		id, err := peer.IDFromBytes(b)
		if err != nil {
			continue
		}
		out = append(out, id)
	}
	return out
}

func protocolErr(op string, format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", op, fmt.Sprintf(format, args...), ErrProtocol)
}
