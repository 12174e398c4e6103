package adversary

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// Net is a small cluster on 127.0.0.1 for adversarial tests: honest
// relay.Nodes, at most one Rogue, and clients, every relay of them in one
// DHT. With R equal to the number of relays every relay is a replica of
// every mailbox.
type Net struct {
	Relays  []*relay.Node
	Rogue   *Rogue
	Clients []*client.Client
	// ClientConfigs are the configurations the clients were made with
	// (their data directories and at-rest keys).
	ClientConfigs []client.Config
	// Logs holds each honest relay's log output (debug level) when
	// NetOptions.CaptureLogs is set.
	Logs []*SyncBuffer
	// ClientLogs holds each client's log output (debug level) when
	// NetOptions.CaptureClientLogs is set.
	ClientLogs []*SyncBuffer

	opts NetOptions
	dir  string
}

// NetOptions configure a Net.
type NetOptions struct {
	// Relays is the number of honest relays (default 2).
	Relays int
	// R is the replication factor of relays and clients (default: every
	// relay, the rogue included).
	R int
	// RogueKey, if set, chooses the rogue's key once the clients exist
	// (their mailboxes are known then); nil starts no rogue.
	RogueKey func(clients []*client.Client, honest []peer.ID) crypto.PrivKey
	// Clients is the number of clients (default 0).
	Clients int
	// RelayConfig adjusts each honest relay's configuration.
	RelayConfig func(i int, cfg *relay.Config)
	// ClientConfig adjusts each client's configuration.
	ClientConfig func(i int, cfg *client.Config)
	// CaptureLogs sends each honest relay's logs, at debug level, to a
	// buffer in Net.Logs.
	CaptureLogs bool
	// CaptureClientLogs sends each client's logs, at debug level, to a
	// buffer in Net.ClientLogs (tests read why a client refused
	// something).
	CaptureClientLogs bool
	// Now is the clock of relays and clients (nil: time.Now).
	Now func() time.Time
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Bytes returns a copy of what was written.
func (s *SyncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// StartNet builds a Net for a test and closes it in t.Cleanup.
func StartNet(t testing.TB, o NetOptions) *Net {
	t.Helper()
	if o.Relays == 0 {
		o.Relays = 2
	}
	n := &Net{opts: o, dir: t.TempDir()}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("adversary net close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), testnet.DefaultTimeout)
	defer cancel()
	if err := n.start(ctx); err != nil {
		t.Fatalf("adversary net: %v", err)
	}
	return n
}

func (n *Net) r() int {
	if n.opts.R > 0 {
		return n.opts.R
	}
	total := n.opts.Relays
	if n.opts.RogueKey != nil {
		total++
	}
	return total
}

// RelayConfig returns the configuration StartNet gives honest relay i.
func (n *Net) RelayConfig(i int) relay.Config {
	cfg := relay.DefaultConfig()
	cfg.DataDir = filepath.Join(n.dir, fmt.Sprintf("relay-%02d", i))
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.ReplicationFactor = n.r()
	cfg.ResourceManager = &network.NullResourceManager{}
	cfg.DrainTimeout = 2 * time.Second
	cfg.AntiEntropyInterval = 2 * time.Second
	cfg.CatchUpWait = time.Second
	cfg.Now = n.opts.Now
	if n.opts.RelayConfig != nil {
		n.opts.RelayConfig(i, &cfg)
	}
	return cfg
}

func (n *Net) start(ctx context.Context) error {
	for i := range n.opts.Relays {
		cfg := n.RelayConfig(i)
		if cfg.Logger == nil {
			cfg.Logger = debugLogger()
		}
		if n.opts.CaptureLogs {
			buf := &SyncBuffer{}
			n.Logs = append(n.Logs, buf)
			cfg.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		node, err := relay.New(cfg)
		if err != nil {
			return err
		}
		if err := node.Start(ctx); err != nil {
			_ = node.Close()
			return err
		}
		n.Relays = append(n.Relays, node)
	}
	for i, a := range n.Relays {
		for _, b := range n.Relays[i+1:] {
			if err := a.Host().Connect(ctx, b.AddrInfo()); err != nil {
				return fmt.Errorf("connect relays: %w", err)
			}
		}
	}
	for i := range n.opts.Clients {
		cfg := n.ClientConfig(i)
		if n.opts.CaptureClientLogs {
			buf := &SyncBuffer{}
			n.ClientLogs = append(n.ClientLogs, buf)
			cfg.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		c, err := client.New(cfg)
		if err != nil {
			return err
		}
		n.Clients = append(n.Clients, c)
		n.ClientConfigs = append(n.ClientConfigs, cfg)
	}
	if n.opts.RogueKey != nil {
		var honest []peer.ID
		for _, r := range n.Relays {
			honest = append(honest, r.ID())
		}
		rg, err := NewRogue(n.opts.RogueKey(n.Clients, honest))
		if err != nil {
			return err
		}
		n.Rogue = rg
		for _, r := range n.Relays {
			if err := rg.Connect(ctx, r.AddrInfo()); err != nil {
				return fmt.Errorf("connect rogue: %w", err)
			}
		}
	}
	want := len(n.Relays) - 1
	if n.Rogue != nil {
		want++
	}
	if err := testnet.WaitFor(ctx, func() error {
		for i, r := range n.Relays {
			if got := r.DHT().RoutingTable().Size(); got < want {
				return fmt.Errorf("relay %d has %d peers in its routing table, want %d", i, got, want)
			}
		}
		if n.Rogue != nil {
			if got := n.Rogue.DHT().RoutingTable().Size(); got < len(n.Relays) {
				return fmt.Errorf("rogue has %d peers in its routing table, want %d", got, len(n.Relays))
			}
		}
		return nil
	}, "routing tables"); err != nil {
		return err
	}
	for _, c := range n.Clients {
		if err := c.Start(ctx); err != nil {
			return err
		}
	}
	for _, c := range n.Clients {
		if err := c.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// ClientConfig returns a configuration like the one StartNet gives client
// i (ClientConfigs has the ones it gave): an on-disk database with a fresh
// at-rest key, the honest relays as bootstrap,
// and timings short enough for tests.
func (n *Net) ClientConfig(i int) client.Config {
	key := make([]byte, 32)
	_, _ = crand.Read(key)
	var boot []string
	for _, r := range n.Relays {
		ai := r.AddrInfo()
		boot = append(boot, ai.Addrs[0].String()+"/p2p/"+ai.ID.String())
	}
	cfg := client.Config{
		DataDir:           filepath.Join(n.dir, fmt.Sprintf("client-%02d", i)),
		EncryptionKey:     key,
		Bootstrap:         boot,
		Name:              fmt.Sprintf("client-%02d", i),
		Now:               n.opts.Now,
		Logger:            debugLogger(),
		ReplicationFactor: n.r(),
		RetryMin:          50 * time.Millisecond,
		RetryMax:          time.Second,
		GapGrace:          time.Second,
		SyncInterval:      2 * time.Second,
		Timeout:           5 * time.Second,
		EventBuffer:       4096,
	}
	if n.opts.ClientConfig != nil {
		n.opts.ClientConfig(i, &cfg)
	}
	return cfg
}

// Dir returns the net's base directory (relay-NN/ and client-NN/ in it).
func (n *Net) Dir() string { return n.dir }

// StopRelays closes every honest relay (their stores then flush and can be
// opened by others).
func (n *Net) StopRelays() error {
	var errs []error
	for _, r := range n.Relays {
		if err := r.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close stops clients, the rogue and the honest relays.
func (n *Net) Close() error {
	var errs []error
	for _, c := range n.Clients {
		if err := c.Close(); err != nil && !errors.Is(err, client.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if n.Rogue != nil {
		if err := n.Rogue.Close(); err != nil {
			errs = append(errs, fmt.Errorf("rogue: %w", err))
		}
	}
	if err := n.StopRelays(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ClosestKey returns a fresh Ed25519 libp2p key whose peer ID is closer to
// mailbox mb's DHT key than every peer of others: a relay with it is first
// in the mailbox's replica set.
func ClosestKey(mb wire.Mailbox, others []peer.ID) crypto.PrivKey {
	target := kb.ConvertKey(mb.DHTKey())
	for {
		priv, _, err := crypto.GenerateEd25519Key(crand.Reader)
		if err != nil {
			panic(err)
		}
		id, err := peer.IDFromPrivateKey(priv)
		if err != nil {
			panic(err)
		}
		ids := append([]peer.ID{id}, others...)
		if kb.SortClosestPeers(ids, target)[0] == id {
			return priv
		}
	}
}

// ReplicaOrder returns peers sorted by distance to mb's DHT key, closest
// first (the order of a replica set, SPEC.md §14).
func ReplicaOrder(mb wire.Mailbox, peers []peer.ID) []peer.ID {
	return kb.SortClosestPeers(append([]peer.ID(nil), peers...), kb.ConvertKey(mb.DHTKey()))
}

// debugLogger logs to stderr at debug level when CAIRN_TEST_LOG is set.
func debugLogger() *slog.Logger {
	if os.Getenv("CAIRN_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
