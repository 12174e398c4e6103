package ratchet

// Config bounds the memory and work a peer can cause. The zero value of
// each field means its default. Config is policy, not state: it is never
// serialised, and may differ between the two parties.
type Config struct {
	// MaxSkip is the largest forward jump within one receiving chain: a
	// message whose counter is more than MaxSkip ahead of the next expected
	// one is refused with ErrTooManySkipped. Default 1000.
	MaxSkip int
	// MaxSkippedKeys caps the message keys kept for skipped messages across
	// all receiving chains of a session. When full, the oldest key is
	// evicted (its message will then decrypt as ErrDuplicate); traffic is
	// never refused because the store is full. Default 2000.
	MaxSkippedKeys int
	// MaxOldChains is how many previous receiving chains (their header key
	// and skipped keys) a session keeps besides the current one, newest
	// first. Default 5.
	MaxOldChains int
	// MaxSkippedChains is how many older receiving chains that still hold
	// skipped keys a session keeps beyond those, newest first: messages
	// sent and not yet arrived, such as one held at a relay while the
	// conversation went on through others for many DH steps. Other old
	// chains are dropped with their keys. With MaxOldChains it bounds the
	// header trial cost: at most 2 + MaxOldChains + MaxSkippedChains AEAD
	// opens. Default 32.
	MaxSkippedChains int
	// MaxReplayRecords caps, per signed prekey, the handshake IDs that
	// PrivateKeys remembers for handshakes that used no one-time prekey, to
	// refuse their replay. The oldest record is evicted. Default 4096.
	MaxReplayRecords int
}

// Default values of Config.
const (
	DefaultMaxSkip          = 1000
	DefaultMaxSkippedKeys   = 2000
	DefaultMaxOldChains     = 5
	DefaultMaxSkippedChains = 32
	DefaultMaxReplayRecords = 4096
)

func (c Config) maxSkip() int          { return orDefault(c.MaxSkip, DefaultMaxSkip) }
func (c Config) maxSkippedKeys() int   { return orDefault(c.MaxSkippedKeys, DefaultMaxSkippedKeys) }
func (c Config) maxOldChains() int     { return orDefault(c.MaxOldChains, DefaultMaxOldChains) }
func (c Config) maxSkippedChains() int { return orDefault(c.MaxSkippedChains, DefaultMaxSkippedChains) }
func (c Config) maxReplayRecords() int { return orDefault(c.MaxReplayRecords, DefaultMaxReplayRecords) }

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}
