package ratchet

import "errors"

// Sentinel errors. Every error returned by this package wraps exactly one of
// them, so callers branch with errors.Is. None of them carries secret data.
var (
	// ErrDuplicate is returned by Session.Decrypt for a message that was
	// already decrypted, or whose message key is no longer kept (evicted
	// under Config.MaxSkippedKeys); and by PrivateKeys.Respond for a replayed
	// handshake that used no one-time prekey and was already accepted.
	ErrDuplicate = errors.New("ratchet: duplicate message")

	// ErrAuth is returned when a message that belongs to this session (its
	// header opened) fails authentication, and by Respond and Initiate for
	// every handshake failure: bad bundle or prekey signature, a sealed part
	// that opens with none of the signed prekeys, a bad identity signature,
	// an all-zero X25519 output, or a first message that does not decrypt.
	// Handshake failures deliberately share this one error.
	ErrAuth = errors.New("ratchet: authentication failed")

	// ErrTooManySkipped is returned by Session.Decrypt when a message would
	// make a receiving chain skip more than Config.MaxSkip message keys.
	ErrTooManySkipped = errors.New("ratchet: too many skipped messages")

	// ErrUnknownPrekey is returned by Respond when the handshake names a
	// one-time or last-resort prekey that this party does not hold (already
	// consumed, or rotated away).
	ErrUnknownPrekey = errors.New("ratchet: unknown prekey")

	// ErrUnsupportedVersion is returned by every parser for an unknown
	// version or message type byte.
	ErrUnsupportedVersion = errors.New("ratchet: unsupported version")

	// ErrMalformed is returned by every parser for input of the wrong length
	// or non-canonical form.
	ErrMalformed = errors.New("ratchet: malformed input")

	// ErrNotForSession is returned by Session.Decrypt when the message header
	// opens with none of this session's header keys (or the handshake message
	// belongs to another handshake): the caller should try its next session.
	// It costs at most 2 + Config.MaxOldChains + Config.MaxSkippedChains short AEAD opens to learn.
	ErrNotForSession = errors.New("ratchet: message not for this session")

	// ErrCounterExhausted is returned by Session.Encrypt when the sending
	// chain's uint32 counter would overflow, and by PrivateKeys when prekey
	// IDs run out. The session must be replaced by a new handshake.
	ErrCounterExhausted = errors.New("ratchet: counter exhausted")

	// ErrRandom wraps a failure of the injected random source.
	ErrRandom = errors.New("ratchet: random source failed")
)
