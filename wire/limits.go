package wire

import "time"

// Protocol limits fixed by version 1 (SPEC.md §12). A peer that exceeds one of
// them is malformed. Relay policy (quotas, rates, TTLs) lives in relay.Config.
const (
	// MaxCiphertext is the largest ciphertext an envelope may carry.
	MaxCiphertext = 262144
	// EnvelopeOverhead is the size of an envelope without its ciphertext.
	EnvelopeOverhead = 55
	// MaxEnvelope is the largest envelope version 1 allows.
	MaxEnvelope = EnvelopeOverhead + MaxCiphertext
	// MaxReceiptBatch is the most receipts one signature may cover.
	MaxReceiptBatch = 1024
	// MaxCursorOrigins is the most origins a cursor may list.
	MaxCursorOrigins = 64
	// MaxPeerIDLen bounds every peer ID carried in a hand-encoded structure.
	MaxPeerIDLen = 64
	// MaxControlFrame is the largest protobuf frame without entries.
	MaxControlFrame = 64 << 10
	// MaxEntryFrame is the largest protobuf frame that carries entries.
	MaxEntryFrame = 4 << 20
	// MaxDepositFrame is the largest DepositRequest frame: the largest
	// envelope plus room for the request's other fields.
	MaxDepositFrame = MaxEnvelope + 64
	// MaxDepositInflight is how many deposits a sender may have unanswered
	// on one stream.
	MaxDepositInflight = 256
	// MaxAckCIDs is the most CIDs one ack may list.
	MaxAckCIDs = 1024
	// MaxOwnerAckLen is the longest Owner ack encoding (SPEC.md §6.3): a
	// batch of MaxAckCIDs has inclusion paths of up to 10 nodes.
	MaxOwnerAckLen = 1 + 32 + 2 + 2 + 1 + 32*10 + 64
	// MaxStatusCIDs is the most CIDs one status request may list.
	MaxStatusCIDs = 256
	// MaxPrekeyUpload is the most one-time prekeys one upload may carry.
	MaxPrekeyUpload = 100
	// MaxReplicateBatch is the most entries one replicate request may carry.
	MaxReplicateBatch = 256
	// MaxReplicateInflight is how many replicate requests a sender may have
	// unanswered on one stream.
	MaxReplicateInflight = 16
	// MaxReplicateTombstones is the most tombstones one replicate request
	// may carry.
	MaxReplicateTombstones = 1024
	// AuthWindow is how far an auth proof's time may be from the relay's.
	AuthWindow = 60 * time.Second
	// MaxPostageDifficulty is the highest postage difficulty in bits.
	MaxPostageDifficulty = 40
	// MaxInviteBundle bounds the public bundle inside an invite.
	MaxInviteBundle = 4096
	// MaxInviteName bounds an invite's display name in bytes.
	MaxInviteName = 64
	// MaxInviteHints is the most relay hints an invite may carry.
	MaxInviteHints = 8
)
