package client

import (
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	ma "github.com/multiformats/go-multiaddr"
)

// Defaults of the zero-valued fields of Config.
const (
	DefaultTTL               = 7 * 24 * time.Hour
	DefaultReplicationFactor = 3
	DefaultRetryMin          = time.Second
	DefaultRetryMax          = 5 * time.Minute
	DefaultPrekeyLowWater    = 10
	DefaultPrekeyBatch       = 25
	DefaultGapGrace          = time.Minute
	DefaultSyncInterval      = 5 * time.Minute
	DefaultEventBuffer       = 256
	DefaultReplicaCacheTTL   = time.Minute
	DefaultTimeout           = 10 * time.Second
	DefaultMaxPending        = 256
)

// Config configures a Client. Its zero value works: an in-memory,
// unencrypted client with no bootstrap relays (useful in tests and
// examples only — a real app sets DataDir, EncryptionKey and Bootstrap).
// Zero-valued durations and counts select the defaults above.
type Config struct {
	// DataDir is the directory of the client's database. Empty means an
	// in-memory database: identity, contacts and messages are lost at
	// Close.
	DataDir string
	// EncryptionKey, when set, must be 32 bytes: the database is encrypted
	// at rest with it (AES-256). The app keeps the key (a platform
	// keystore); the same key must be given on every start.
	EncryptionKey []byte
	// Bootstrap lists relays as multiaddrs with a /p2p/ component, e.g.
	// "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…". The client joins the DHT
	// through them, falls back to them when the DHT knows fewer than
	// ReplicationFactor relays, and puts them as hints in its invites.
	Bootstrap []string
	// Name is the display name suggested in this client's invites.
	Name string
	// Logger receives the client's logs; nil discards them. Secrets and
	// message contents are never logged.
	Logger *slog.Logger
	// Now is the clock (envelope expiries, auth proofs, retry schedule);
	// nil means time.Now. Message order never depends on it. Auth proofs
	// carry it, so it must stay within 60 s of the relays' clocks
	// (SPEC.md §8).
	Now func() time.Time
	// Rand is the randomness of every key, nonce and jitter; nil means
	// crypto/rand. Tests may inject a deterministic reader.
	Rand io.Reader

	// TTL is how long relays keep a sent message: its envelope expiry is
	// now + TTL. A message not delivered by then becomes
	// StatusExpiredUndelivered. Relays refuse TTLs above their maximum
	// (30 days by default).
	TTL time.Duration
	// ReplicationFactor is R, the size of a mailbox's replica set.
	ReplicationFactor int
	// RetryMin and RetryMax bound the exponential backoff of deposit
	// retries (with jitter: each delay is drawn from [d/2, d]).
	RetryMin, RetryMax time.Duration
	// PrekeyLowWater: when a relay of this client's replica set holds
	// fewer one-time prekeys of a kind than this, PrekeyBatch more are
	// uploaded to it.
	PrekeyLowWater int
	PrekeyBatch    int
	// GapGrace is how long a missing sender counter may stay missing,
	// after every reachable replica was synced, before GapDetected is
	// emitted and the messages after it are released.
	GapGrace time.Duration
	// SyncInterval is the period of the background full sync (a live
	// subscription delivers in between).
	SyncInterval time.Duration
	// EventBuffer is the capacity of the Events channel.
	EventBuffer int
	// ReplicaCacheTTL is how long a mailbox's replica set is cached.
	ReplicaCacheTTL time.Duration
	// Timeout bounds each call to a relay.
	Timeout time.Duration
	// MaxPending bounds the entries kept because they fit no session yet
	// (the oldest is dropped beyond it). Each is tried on every session
	// after each sync round, so the bound is also a bound on that work.
	MaxPending int

	// ConnectionGater, if set, is the connection gater of the client's
	// libp2p host: it may refuse dials to relays and connections with
	// them. It is for test networks (package testnet partitions clients
	// with it) and for apps that must keep the client off some relays; a
	// refused relay counts as unreachable. Nil allows every connection.
	ConnectionGater connmgr.ConnectionGater
}

// withDefaults returns a copy with defaults filled in, or an error for an
// invalid value.
func (c Config) withDefaults() (Config, []ma.Multiaddr, error) {
	if len(c.EncryptionKey) != 0 && len(c.EncryptionKey) != 32 {
		return c, nil, fmt.Errorf("client: EncryptionKey is %d bytes, want 32", len(c.EncryptionKey))
	}
	var addrs []ma.Multiaddr
	for _, s := range c.Bootstrap {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return c, nil, fmt.Errorf("client: bootstrap %q: %w", s, err)
		}
		if _, err := a.ValueForProtocol(ma.P_P2P); err != nil {
			return c, nil, fmt.Errorf("client: bootstrap %q has no /p2p/ component", s)
		}
		addrs = append(addrs, a)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.TTL, DefaultTTL)
	defInt(&c.ReplicationFactor, DefaultReplicationFactor)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	if c.RetryMax < c.RetryMin {
		c.RetryMax = c.RetryMin
	}
	defInt(&c.PrekeyLowWater, DefaultPrekeyLowWater)
	defInt(&c.PrekeyBatch, DefaultPrekeyBatch)
	def(&c.GapGrace, DefaultGapGrace)
	def(&c.SyncInterval, DefaultSyncInterval)
	defInt(&c.EventBuffer, DefaultEventBuffer)
	def(&c.ReplicaCacheTTL, DefaultReplicaCacheTTL)
	def(&c.Timeout, DefaultTimeout)
	defInt(&c.MaxPending, DefaultMaxPending)
	return c, addrs, nil
}
