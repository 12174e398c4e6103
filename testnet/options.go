package testnet

import (
	"log/slog"
	"time"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
)

// Options configure a cluster. The zero value is a 3-relay cluster with no
// clients, R = 3, in a temporary directory.
type Options struct {
	// Relays is the number of relays (default 3).
	Relays int
	// Clients is the number of clients (default 0).
	Clients int
	// R is the replication factor given to relays and clients (default 3,
	// capped at Relays).
	R int
	// Dir is the base directory: relay-NN/ and client-NN/ are made in it
	// and kept at Close. Empty: a temporary directory removed at Close
	// (New uses t.TempDir()).
	Dir string
	// Seed drives every random choice of the cluster: the random mesh
	// neighbours and the links' jitter and drops. Zero picks one at random;
	// Cluster.Seed reports it so a failure can be replayed.
	Seed uint64
	// Now is the clock of every relay and client (nil: time.Now). Clients
	// sign auth proofs with it, so it must stay within the relays' auth
	// window of their clock: give both the same clock.
	Now func() time.Time
	// Logger receives the cluster's own log lines and, with a "node"
	// attribute, the relays' and clients' logs. Nil discards them.
	Logger *slog.Logger
	// RelayConfig, if set, adjusts each relay's configuration after the
	// cluster filled it in (index i, 0-based). It runs again on restarts.
	RelayConfig func(i int, cfg *relay.Config)
	// ClientConfig, if set, adjusts each client's configuration.
	ClientConfig func(i int, cfg *client.Config)
	// DirectLinks makes members dial the relays' own addresses instead of
	// links: no proxy hop (benchmarks), but Delay and DropRate faults are
	// unavailable (partitions still apply to relays and clients).
	DirectLinks bool
	// Neighbors and RandomNeighbors shape the initial mesh: each relay
	// connects to its Neighbors XOR-closest relays and RandomNeighbors
	// others drawn with Seed (defaults 20 and 8).
	Neighbors, RandomNeighbors int
	// Ready is the routing-table size every relay must reach before the
	// cluster is ready (default min(Relays-1, 20)).
	Ready int
}

// Option changes Options; New takes them.
type Option func(*Options)

// WithRelays sets the number of relays.
func WithRelays(n int) Option { return func(o *Options) { o.Relays = n } }

// WithClients sets the number of clients.
func WithClients(n int) Option { return func(o *Options) { o.Clients = n } }

// WithR sets the replication factor of relays and clients.
func WithR(r int) Option { return func(o *Options) { o.R = r } }

// WithDir keeps the cluster's state in dir instead of a temporary one.
func WithDir(dir string) Option { return func(o *Options) { o.Dir = dir } }

// WithSeed fixes the seed of the cluster's random choices.
func WithSeed(seed uint64) Option { return func(o *Options) { o.Seed = seed } }

// WithClock gives every relay and client the clock now.
func WithClock(now func() time.Time) Option { return func(o *Options) { o.Now = now } }

// WithLogger sends the cluster's, relays' and clients' logs to l.
func WithLogger(l *slog.Logger) Option { return func(o *Options) { o.Logger = l } }

// WithRelayConfig adjusts each relay's configuration.
func WithRelayConfig(f func(i int, cfg *relay.Config)) Option {
	return func(o *Options) { o.RelayConfig = f }
}

// WithClientConfig adjusts each client's configuration.
func WithClientConfig(f func(i int, cfg *client.Config)) Option {
	return func(o *Options) { o.ClientConfig = f }
}

// WithDirectLinks connects members without links (see Options.DirectLinks).
func WithDirectLinks() Option { return func(o *Options) { o.DirectLinks = true } }

func (o *Options) defaults() {
	if o.Relays == 0 {
		o.Relays = 3
	}
	if o.R == 0 {
		o.R = 3
	}
	o.R = min(o.R, o.Relays)
	if o.Neighbors == 0 {
		o.Neighbors = 20
	}
	if o.RandomNeighbors == 0 {
		o.RandomNeighbors = 8
	}
	if o.Ready == 0 {
		o.Ready = min(o.Relays-1, 20)
	}
}
