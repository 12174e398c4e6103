package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"golang.org/x/time/rate"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Config is a relay's whole configuration: identity and network, the relay
// policy of SPEC.md §12 (every limit, with its documented default in
// DefaultConfig), and the seams for replication. It is a value: package
// relay reads no flags, environment or files except the node's own state in
// DataDir.
type Config struct {
	// Identity is the relay's libp2p key; it must be Ed25519 (SPEC.md §1).
	// Nil means: load DataDir/identity.key, or create it (mode 0600).
	Identity crypto.PrivKey
	// DataDir holds the node's state: identity.key and the store (store/).
	// Required.
	DataDir string
	// ListenAddrs are the multiaddrs to listen on (TCP and QUIC).
	// Default: /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1.
	ListenAddrs []ma.Multiaddr
	// AnnounceAddrs, if set, are the multiaddrs the relay advertises
	// instead of its listen addresses: what identify sends its peers (and
	// its signed peer record holds), so what the DHT hands out to others
	// who look for it, and what Node.AddrInfo returns. For a relay behind
	// a port forward or a proxy, or a testnet whose relays listen on one
	// address and are reached on another. Empty: the listen addresses.
	AnnounceAddrs []ma.Multiaddr
	// BootstrapPeers seed the DHT. Empty: none (never the IPFS ones).
	BootstrapPeers []peer.AddrInfo
	// Logger receives structured logs. Nil discards them.
	Logger *slog.Logger
	// Version is the software version advertised by info.
	Version string
	// Now is the clock of expiries, auth windows and receipts. Nil means
	// time.Now. (Tests move it.)
	Now func() time.Time

	// MaxEnvelopeBytes is the largest envelope accepted (TOO_LARGE above),
	// at most wire.MaxEnvelope. Default 65,536.
	MaxEnvelopeBytes int
	// DefaultTTL applies to envelopes with expiry 0. Default 7 days.
	DefaultTTL time.Duration
	// MaxTTL bounds an envelope's expiry: (now, now+MaxTTL]. Default 30
	// days.
	MaxTTL time.Duration
	// PostageDifficulty is the proof-of-work difficulty in bits (0: none,
	// at most wire.MaxPostageDifficulty). Default 0.
	PostageDifficulty int
	// MailboxQuotaBytes and MailboxQuotaEntries bound one mailbox's live
	// entries (envelope bytes, count). Defaults 64 MiB and 10,000.
	MailboxQuotaBytes   int64
	MailboxQuotaEntries int64
	// StorageCapBytes bounds all live envelope bytes; above it the store
	// evicts (SPEC.md §13). Default 10 GiB.
	StorageCapBytes int64
	// PeerDepositRate and PeerDepositBurst bound each peer's deposits
	// (token bucket). Defaults 10,000/s, burst 20,000.
	PeerDepositRate  rate.Limit
	PeerDepositBurst int
	// PeerRequestRate and PeerRequestBurst bound each peer's requests of
	// every other protocol (one stream is one request). Defaults 50/s,
	// burst 200.
	PeerRequestRate  rate.Limit
	PeerRequestBurst int
	// MaxStreamsPerPeer bounds a peer's concurrent inbound streams of
	// cairn protocols (BUSY or a reset above it). Default 64.
	MaxStreamsPerPeer int
	// MaxPageEntries and MaxPageBytes bound one sync page. Defaults 512
	// and 1 MiB.
	MaxPageEntries int
	MaxPageBytes   int
	// MaxSubscribersPerMailbox bounds live subscriptions of one mailbox
	// (BUSY above). Default 32.
	MaxSubscribersPerMailbox int
	// SubscriberQueue and SubscriberQueueBytes bound each subscriber's
	// queue of pushes (SLOW_CONSUMER when full). Defaults 256 entries and
	// 4 MiB.
	SubscriberQueue      int
	SubscriberQueueBytes int
	// KeepaliveInterval is how long a subscription may be idle before the
	// relay sends a keepalive. Default 15 s.
	KeepaliveInterval time.Duration
	// StreamIdleTimeout is how long a relay waits for a complete frame
	// (a request) on a stream. Default 60 s.
	StreamIdleTimeout time.Duration
	// DepositIdleTimeout is StreamIdleTimeout for deposit streams.
	// Default 5 min.
	DepositIdleTimeout time.Duration
	// WriteTimeout bounds every write (a response, a page, a push).
	// Default 10 s.
	WriteTimeout time.Duration
	// MaxReplayCache bounds the auth replay cache (BUSY when full).
	// Default 65,536.
	MaxReplayCache int
	// MaxStoredPrekeys bounds the one-time prekeys kept per kind per
	// mailbox. Default 200.
	MaxStoredPrekeys int
	// FateRetention is how long after expiry a CID's fate is remembered.
	// Default 7 days.
	FateRetention time.Duration
	// ReplicationFactor (R) is the replica set size (SPEC.md §14).
	// Default 3.
	ReplicationFactor int
	// ReceiptQuorum is how many replicas (this relay included) must hold a
	// new entry before its deposit is answered, 1 … ReplicationFactor
	// (SPEC.md §10.3). Above 1 the answer waits for the other replicas'
	// replicate answers, at most QuorumTimeout; its replicas field says how
	// many held the entry. Default 1.
	ReceiptQuorum int
	// QuorumTimeout bounds the wait for ReceiptQuorum; an entry that is
	// not held by enough replicas by then is answered OK with the count
	// reached (it is durable here, and replication goes on). Default 5 s.
	QuorumTimeout time.Duration
	// ReplicaGrace is how long a former replica is still trusted for
	// replication (SPEC.md §10.9). Default 1 h.
	ReplicaGrace time.Duration
	// ReplicaCacheTTL is how long a replica set found with a DHT lookup
	// is reused (SPEC.md §14); churn in the routing table makes the relay
	// check it earlier. Default 1 min.
	ReplicaCacheTTL time.Duration
	// ReplicaLookupTimeout bounds one DHT lookup of a replica set (a
	// deposit for a mailbox whose set is not cached waits for it).
	// Default 5 s.
	ReplicaLookupTimeout time.Duration
	// MaxReplicaLookups bounds the DHT lookups of replica sets in flight;
	// beyond it the relay uses its routing table's estimate. Default 32.
	MaxReplicaLookups int
	// ReplicateQueue and ReplicateQueueBytes bound the entries and
	// tombstones waiting to be forwarded to one replica (envelope bytes);
	// what does not fit is dropped and left to anti-entropy. Defaults
	// 8,192 and 16 MiB.
	ReplicateQueue      int
	ReplicateQueueBytes int
	// AntiEntropyInterval is the period of anti-entropy: every interval
	// the relay reconciles each mailbox it replicates with each other
	// replica not reconciled with during the interval (SPEC.md §10.10).
	// It also reconciles with a replica as soon as it (re)connects.
	// Default 1 min.
	AntiEntropyInterval time.Duration
	// CatchUpWait is how long a starting relay that holds mailboxes and has
	// bootstrap peers waits for its routing table to fill before its first
	// anti-entropy pass; until that pass has reconciled every mailbox with
	// another replica, Health reports ErrCatchingUp. Default 1 min.
	CatchUpWait time.Duration
	// ReconcileIDThreshold, ReconcileBranching and MaxReconcileRounds
	// tune anti-entropy (SPEC.md §10.10). Defaults 32, 16, 64.
	ReconcileIDThreshold int
	ReconcileBranching   int
	MaxReconcileRounds   int
	// SummaryRate bounds the summary exchanges (SPEC.md §10.10) this relay
	// answers per second from all peers together, on top of one a second
	// from each peer: each costs a pass over the relay's mailboxes, and a
	// peer's identity is free, so the per-peer bound alone does not bound
	// the work. More are answered BUSY. Default 8 (a relay's honest
	// replicas start one each per AntiEntropyInterval and when they join
	// or leave).
	SummaryRate rate.Limit

	// DepositStreamBytes bounds the envelope bytes one deposit stream may
	// have read and not yet answered; the relay stops reading the stream
	// above it (backpressure). Default 4 MiB.
	DepositStreamBytes int
	// MaxConnections bounds connections (the resource manager's system
	// limit; the connection manager trims above 90% of it). Default 4,096.
	MaxConnections int
	// MaxMemoryBytes is the resource manager's memory limit for libp2p
	// (stream buffers, in-flight deposits). Default 1 GiB.
	MaxMemoryBytes int64
	// DrainTimeout bounds how long Close waits for in-flight requests
	// before resetting their streams. Default 10 s.
	DrainTimeout time.Duration
	// GCInterval is the period of the store's expiry sweep and value-log
	// GC. Default 1 min; negative disables it.
	GCInterval time.Duration
	// MaxCommitBatch bounds one group commit of the store (one fsync, one
	// receipt signature). Default 256.
	MaxCommitBatch int
	// MaxStoreBacklog bounds the work queued ahead of the store, in
	// operations: deposits admitted on every stream and not yet handed to
	// the store, plus the store's own queue (appends, replicated entries,
	// acks, sweeps submitted and not yet committed). A deposit that would
	// go above it is answered BUSY with retry_after_ms ≈ the time the
	// queued work takes to commit (SPEC.md §10.3), so that senders above
	// the relay's capacity are told to back off or try another replica
	// instead of waiting behind flow control. Default 1,024 = 4 ×
	// MaxCommitBatch: four full commits, so about four commit times of
	// waiting (10–60 ms each measured here), and four senders with full
	// deposit windows (wire.MaxDepositInflight each) are never refused.
	// At least MaxCommitBatch.
	MaxStoreBacklog int
	// StoreMemoryBytes is the store's memory budget
	// (store.LogOptions.MemoryBudget): badger's two memtables (1/4 each),
	// its table-index cache (1/4) and the reconciliation indexes (1/4,
	// least recently used dropped). The store unmaps badger's
	// memory-mapped files from the process every second, and sooner when
	// its file-backed memory (RssFile) grows a quarter of the budget (the
	// pages stay in the page cache); running compactions' buffers and
	// output tables come on top.
	// Default 128 MiB; at least 16 MiB.
	StoreMemoryBytes int64

	// ResourceManager, if set, replaces the resource manager derived from
	// this Config (tests that need bursts pass network.NullResourceManager).
	ResourceManager network.ResourceManager
	// ConnectionGater, if set, vets every connection of the host (testnet
	// partitions relays with it; operators may block peers).
	ConnectionGater connmgr.ConnectionGater
	// Placement, if set, replaces the relay's own decision of which
	// mailboxes it accepts deposits for (SPEC.md §14: the R relays closest
	// to the mailbox's key in the DHT). Replication and anti-entropy still
	// follow the DHT's replica sets.
	Placement Placement
	// Forwarder, if set, also receives every entry stored here and every
	// tombstone left by an ack, besides the relay's own replication.
	Forwarder Forwarder

	// DHTOptions are appended to the node's own DHT options (server mode,
	// the /cairn protocol prefix, no providers or values, BootstrapPeers),
	// so they may override them: a testnet passes dht.DisableAutoRefresh()
	// for a fast local cluster. Options that change the protocol prefix or
	// the mode take the relay out of the cairn DHT (SPEC.md §14).
	DHTOptions []dht.Option
}

// Version is the software version a relay advertises when Config.Version is
// empty.
const Version = "cairn-relay/0.1.0"

// DefaultConfig returns the defaults of SPEC.md §12. DataDir must still be
// set.
func DefaultConfig() Config {
	return Config{
		ListenAddrs: []ma.Multiaddr{
			ma.StringCast("/ip4/0.0.0.0/tcp/4001"),
			ma.StringCast("/ip4/0.0.0.0/udp/4001/quic-v1"),
		},
		Version:                  Version,
		MaxEnvelopeBytes:         65536,
		DefaultTTL:               7 * 24 * time.Hour,
		MaxTTL:                   30 * 24 * time.Hour,
		PostageDifficulty:        0,
		MailboxQuotaBytes:        64 << 20,
		MailboxQuotaEntries:      10_000,
		StorageCapBytes:          10 << 30,
		PeerDepositRate:          10_000,
		PeerDepositBurst:         20_000,
		PeerRequestRate:          50,
		PeerRequestBurst:         200,
		MaxStreamsPerPeer:        64,
		MaxPageEntries:           512,
		MaxPageBytes:             1 << 20,
		MaxSubscribersPerMailbox: 32,
		SubscriberQueue:          256,
		SubscriberQueueBytes:     4 << 20,
		KeepaliveInterval:        15 * time.Second,
		StreamIdleTimeout:        60 * time.Second,
		DepositIdleTimeout:       5 * time.Minute,
		WriteTimeout:             10 * time.Second,
		MaxReplayCache:           65_536,
		MaxStoredPrekeys:         200,
		FateRetention:            7 * 24 * time.Hour,
		ReplicationFactor:        3,
		ReceiptQuorum:            1,
		QuorumTimeout:            5 * time.Second,
		ReplicaGrace:             time.Hour,
		ReplicaCacheTTL:          time.Minute,
		ReplicaLookupTimeout:     5 * time.Second,
		MaxReplicaLookups:        32,
		ReplicateQueue:           8192,
		ReplicateQueueBytes:      16 << 20,
		AntiEntropyInterval:      time.Minute,
		CatchUpWait:              time.Minute,
		ReconcileIDThreshold:     32,
		ReconcileBranching:       16,
		MaxReconcileRounds:       64,
		SummaryRate:              8,
		DepositStreamBytes:       4 << 20,
		MaxConnections:           4096,
		MaxMemoryBytes:           1 << 30,
		DrainTimeout:             10 * time.Second,
		GCInterval:               time.Minute,
		MaxCommitBatch:           256,
		MaxStoreBacklog:          1024,
		StoreMemoryBytes:         store.DefaultMemoryBudget,
	}
}

// errConfig wraps every configuration error.
var errConfig = errors.New("relay config")

func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errConfig, fmt.Sprintf(format, args...))
	}
	for _, a := range c.AnnounceAddrs {
		if len(a.Bytes()) == 0 {
			return bad("AnnounceAddrs holds an empty multiaddr")
		}
	}
	switch {
	case c.DataDir == "":
		return bad("DataDir is required")
	case c.MaxEnvelopeBytes <= wire.EnvelopeOverhead || c.MaxEnvelopeBytes > wire.MaxEnvelope:
		return bad("MaxEnvelopeBytes %d not in (%d, %d]", c.MaxEnvelopeBytes, wire.EnvelopeOverhead, wire.MaxEnvelope)
	case c.DefaultTTL <= 0 || c.MaxTTL < c.DefaultTTL:
		return bad("need 0 < DefaultTTL (%v) ≤ MaxTTL (%v)", c.DefaultTTL, c.MaxTTL)
	case c.PostageDifficulty < 0 || c.PostageDifficulty > wire.MaxPostageDifficulty:
		return bad("PostageDifficulty %d not in [0, %d]", c.PostageDifficulty, wire.MaxPostageDifficulty)
	case c.MailboxQuotaBytes <= 0 || c.MailboxQuotaEntries <= 0 || c.StorageCapBytes <= 0:
		return bad("quotas and the storage cap must be positive")
	case c.PeerDepositRate <= 0 || c.PeerDepositBurst < 1 || c.PeerRequestRate <= 0 || c.PeerRequestBurst < 1:
		return bad("peer rates and bursts must be positive")
	case c.MaxStreamsPerPeer < 1:
		return bad("MaxStreamsPerPeer must be positive")
	case c.MaxPageEntries < 1 || c.MaxPageBytes < 1:
		return bad("page bounds must be positive")
	case c.MaxPageBytes > wire.MaxEntryFrame/2:
		return bad("MaxPageBytes %d above half of MaxEntryFrame", c.MaxPageBytes)
	case c.MaxSubscribersPerMailbox < 1 || c.SubscriberQueue < 1 || c.SubscriberQueueBytes < c.MaxEnvelopeBytes:
		return bad("subscriber limits must be positive, with SubscriberQueueBytes ≥ MaxEnvelopeBytes")
	case c.KeepaliveInterval <= 0 || c.StreamIdleTimeout <= 0 || c.DepositIdleTimeout <= 0 || c.WriteTimeout <= 0:
		return bad("timeouts must be positive")
	case c.MaxReplayCache < 1:
		return bad("MaxReplayCache must be positive")
	case c.MaxStoredPrekeys < 1:
		return bad("MaxStoredPrekeys must be positive")
	case c.FateRetention < 0:
		return bad("FateRetention must not be negative")
	case c.ReplicationFactor < 1:
		return bad("ReplicationFactor must be positive")
	case c.ReceiptQuorum < 1 || c.ReceiptQuorum > c.ReplicationFactor:
		return bad("ReceiptQuorum %d not in [1, ReplicationFactor %d]", c.ReceiptQuorum, c.ReplicationFactor)
	case c.QuorumTimeout <= 0 || c.ReplicaGrace < 0 || c.ReplicaCacheTTL <= 0 || c.ReplicaLookupTimeout <= 0 ||
		c.AntiEntropyInterval <= 0 || c.CatchUpWait < 0:
		return bad("replication timeouts and intervals must be positive")
	case c.MaxReplicaLookups < 1 || c.ReplicateQueue < 1 || c.ReplicateQueueBytes < c.MaxEnvelopeBytes:
		return bad("MaxReplicaLookups and ReplicateQueue must be positive, ReplicateQueueBytes ≥ MaxEnvelopeBytes")
	case c.ReconcileIDThreshold < 1 || c.ReconcileBranching < 2 || c.MaxReconcileRounds < 2:
		return bad("reconcile tuning: threshold ≥ 1, branching ≥ 2, rounds ≥ 2")
	case c.SummaryRate <= 0:
		return bad("SummaryRate must be positive")
	case c.DepositStreamBytes < c.MaxEnvelopeBytes:
		return bad("DepositStreamBytes must be at least MaxEnvelopeBytes")
	case c.MaxConnections < 1 || c.MaxMemoryBytes < 1<<20:
		return bad("MaxConnections and MaxMemoryBytes too small")
	case c.DrainTimeout <= 0:
		return bad("DrainTimeout must be positive")
	case c.MaxCommitBatch < 1 || c.MaxCommitBatch > wire.MaxReceiptBatch:
		return bad("MaxCommitBatch %d not in [1, %d]", c.MaxCommitBatch, wire.MaxReceiptBatch)
	case c.MaxStoreBacklog < c.MaxCommitBatch:
		return bad("MaxStoreBacklog %d below MaxCommitBatch %d", c.MaxStoreBacklog, c.MaxCommitBatch)
	case c.StoreMemoryBytes < store.MinMemoryBudget:
		return bad("StoreMemoryBytes %d below %d", c.StoreMemoryBytes, store.MinMemoryBudget)
	}
	return nil
}
