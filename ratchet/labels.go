package ratchet

// Every domain-separation label and version number of the ratchet lives in
// this file. A label names one use of one key; no two uses share a label.
// SPEC.md §15.1 lists the same strings. Changing any of them is a
// new protocol version.
const (
	// labelRoot is the HKDF-SHA256 info of the root KDF (salt = root key,
	// input = DH output, 96 bytes out: root key ‖ chain key ‖ next header key).
	labelRoot = "cairn/v1/ratchet/root"
	// labelChainMessage and labelChainNext are the HMAC-SHA256 inputs of the
	// chain KDF: HMAC(chain key, labelChainMessage) is the message key and
	// HMAC(chain key, labelChainNext) the next chain key.
	labelChainMessage = "cairn/v1/ratchet/chain/message"
	labelChainNext    = "cairn/v1/ratchet/chain/next"

	// labelPQXDH is the HKDF-SHA256 info of the handshake KDF (zero salt,
	// input = 32×0xFF ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4] ‖ KEM shared secret).
	labelPQXDH = "cairn/v1/handshake/pqxdh"
	// labelSeal is the HKDF-SHA256 info prefix of the sealed-sender key.
	labelSeal = "cairn/v1/handshake/seal"
	// labelSessionAD prefixes the SHA-256 input of the session associated data.
	labelSessionAD = "cairn/v1/handshake/ad"
	// labelHandshakeID prefixes the SHA-256 input of a handshake ID.
	labelHandshakeID = "cairn/v1/handshake/id"

	// Signature contexts (Ed25519, message = label ‖ signed bytes).
	labelBundleSig   = "cairn/v1/bundle/signature"
	labelOneTimeSig  = "cairn/v1/one-time-prekey/signature"
	labelIdentitySig = "cairn/v1/identity/x25519"
)

// Version and type bytes. Each hand-encoded structure starts with one of
// these; an unknown value yields ErrUnsupportedVersion.
const (
	// TypeHandshake is the first byte of a handshake message (version 1).
	TypeHandshake byte = 0x01
	// TypeRatchet is the first byte of a ratchet message (version 1).
	TypeRatchet byte = 0x02

	versionBundle      byte = 0x01
	versionOneTime     byte = 0x01
	versionIdentity    byte = 0x01
	versionPrivateKeys byte = 0x01
	versionSession     byte = 0x01
)
