package wire

import (
	"errors"

	"github.com/cairn-net/cairn/wire/pb"
)

// Sentinel errors. Parsers in this package return ErrMalformed or
// ErrUnsupportedVersion (wrapped with the structure and field at fault); the
// others are the Go side of the wire status codes of SPEC.md §11 and are
// returned by relays and clients through StatusError.
var (
	// ErrMalformed is returned for bytes that do not parse, are out of
	// bounds, are not canonical or have trailing data.
	ErrMalformed = errors.New("malformed")
	// ErrUnsupportedVersion is returned for an unknown version byte.
	ErrUnsupportedVersion = errors.New("unsupported version")
	// ErrTooLarge is returned for an envelope above the relay's limit.
	ErrTooLarge = errors.New("too large")
	// ErrExpiryInvalid is returned for an expiry in the past or beyond the
	// relay's maximum TTL.
	ErrExpiryInvalid = errors.New("expiry invalid")
	// ErrPostageRequired is returned when postage is below the relay's
	// difficulty.
	ErrPostageRequired = errors.New("postage required")
	// ErrMailboxQuota is returned when a mailbox is at its quota.
	ErrMailboxQuota = errors.New("mailbox quota exceeded")
	// ErrStorageFull is returned when the relay's global cap is reached.
	ErrStorageFull = errors.New("storage full")
	// ErrRateLimited is returned when a peer exceeds its rate.
	ErrRateLimited = errors.New("rate limited")
	// ErrAuthFailed is returned for an auth proof that does not verify.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrAuthStale is returned for an auth proof outside the time window.
	ErrAuthStale = errors.New("authentication stale")
	// ErrAuthReplayed is returned for an auth proof already used.
	ErrAuthReplayed = errors.New("authentication replayed")
	// ErrNotReplica is returned by a relay that does not hold a mailbox.
	ErrNotReplica = errors.New("not a replica")
	// ErrSlowConsumer is returned to a subscriber that fell behind.
	ErrSlowConsumer = errors.New("slow consumer")
	// ErrBusy is returned by a relay shedding load.
	ErrBusy = errors.New("busy")
	// ErrShuttingDown is returned by a relay that is closing.
	ErrShuttingDown = errors.New("shutting down")
	// ErrBadSignature is returned for a stamp, receipt or prekey whose
	// signature does not verify.
	ErrBadSignature = errors.New("bad signature")
	// ErrInternal is returned for a relay-side failure.
	ErrInternal = errors.New("internal error")
	// ErrInviteChecksum is returned for an invite string whose checksum
	// does not match (a typo or a truncated copy).
	ErrInviteChecksum = errors.New("invite checksum mismatch")
)

// statusErrors is the one place that maps wire status codes to sentinel
// errors (SPEC.md §11). StatusError and StatusOf both read it.
var statusErrors = [...]struct {
	status pb.Status
	err    error
}{
	{pb.Status_STATUS_MALFORMED, ErrMalformed},
	{pb.Status_STATUS_UNSUPPORTED_VERSION, ErrUnsupportedVersion},
	{pb.Status_STATUS_TOO_LARGE, ErrTooLarge},
	{pb.Status_STATUS_EXPIRY_INVALID, ErrExpiryInvalid},
	{pb.Status_STATUS_POSTAGE_REQUIRED, ErrPostageRequired},
	{pb.Status_STATUS_MAILBOX_QUOTA, ErrMailboxQuota},
	{pb.Status_STATUS_STORAGE_FULL, ErrStorageFull},
	{pb.Status_STATUS_RATE_LIMITED, ErrRateLimited},
	{pb.Status_STATUS_AUTH_FAILED, ErrAuthFailed},
	{pb.Status_STATUS_AUTH_STALE, ErrAuthStale},
	{pb.Status_STATUS_AUTH_REPLAYED, ErrAuthReplayed},
	{pb.Status_STATUS_NOT_REPLICA, ErrNotReplica},
	{pb.Status_STATUS_SLOW_CONSUMER, ErrSlowConsumer},
	{pb.Status_STATUS_BUSY, ErrBusy},
	{pb.Status_STATUS_SHUTTING_DOWN, ErrShuttingDown},
	{pb.Status_STATUS_BAD_SIGNATURE, ErrBadSignature},
	{pb.Status_STATUS_INTERNAL, ErrInternal},
}

// StatusError returns the sentinel error for a wire status: nil for OK,
// ErrMalformed for UNSPECIFIED (a peer must never send it), ErrInternal for a
// code this version does not know.
func StatusError(s pb.Status) error {
	switch s {
	case pb.Status_STATUS_OK:
		return nil
	case pb.Status_STATUS_UNSPECIFIED:
		return ErrMalformed
	}
	for _, se := range statusErrors {
		if se.status == s {
			return se.err
		}
	}
	return ErrInternal
}

// StatusOf returns the wire status for an error: OK for nil, the matching
// code for an error that wraps one of the sentinels, INTERNAL otherwise.
func StatusOf(err error) pb.Status {
	if err == nil {
		return pb.Status_STATUS_OK
	}
	for _, se := range statusErrors {
		if errors.Is(err, se.err) {
			return se.status
		}
	}
	return pb.Status_STATUS_INTERNAL
}
