package relay

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestRelayInfo(t *testing.T) {
	n := startNode(t, func(c *Config) { c.PostageDifficulty = 3 })
	c := newClient(t, n)
	info, err := c.Info(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	want := rpc.Info{
		Version: Version, MaxEnvelopeBytes: 65536, DefaultTTL: 7 * 24 * time.Hour, MaxTTL: 30 * 24 * time.Hour,
		PostageDifficulty: 3, ReplicationFactor: 3, MaxPageEntries: 512, ReceiptQuorum: 1,
	}
	if *info != want {
		t.Fatalf("info = %+v, want %+v", *info, want)
	}
}

func TestRelayIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("identity.key mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("identity changed across loads")
	}
	// A node without Identity uses DataDir's key: same peer ID twice.
	cfg := testConfig(t)
	cfg.DataDir = dir
	n1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n1.Close()
	n2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n2.Close()
	if n1.ID() != n2.ID() {
		t.Fatal("peer ID changed across restarts")
	}
}

func TestRelayConfigValidation(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no data dir":      func(c *Config) { c.DataDir = "" },
		"envelope too big": func(c *Config) { c.MaxEnvelopeBytes = wire.MaxEnvelope + 1 },
		"ttl":              func(c *Config) { c.MaxTTL = c.DefaultTTL - 1 },
		"postage":          func(c *Config) { c.PostageDifficulty = 41 },
		"quorum above R":   func(c *Config) { c.ReceiptQuorum = 4 },
		"no quorum":        func(c *Config) { c.ReceiptQuorum = 0 },
		"anti-entropy":     func(c *Config) { c.AntiEntropyInterval = 0 },
		"streams":          func(c *Config) { c.MaxStreamsPerPeer = 0 },
		"secp256k1 identity": func(c *Config) {
			k, _, err := crypto.GenerateSecp256k1Key(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			c.Identity = k
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			mod(&cfg)
			if _, err := New(cfg); !errors.Is(err, errConfig) {
				t.Fatalf("New = %v, want a config error", err)
			}
		})
	}
}

func TestRelayHealth(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Health(ctxT(t)); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("health before start = %v", err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := n.Health(ctxT(t)); err != nil {
		t.Fatalf("health = %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Health(ctxT(t)); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("health after close = %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}

func TestRelayRequestRateLimit(t *testing.T) {
	n := startNode(t, func(c *Config) { c.PeerRequestRate = 0.01; c.PeerRequestBurst = 2 })
	c := newClient(t, n)
	for i := range 2 {
		if _, err := c.Info(ctxT(t), n.ID()); err != nil {
			t.Fatalf("info %d: %v", i, err)
		}
	}
	_, err := c.Info(ctxT(t), n.ID())
	var e *rpc.Error
	if !errors.As(err, &e) || e.Status != pb.Status_STATUS_RATE_LIMITED || !errors.Is(err, wire.ErrRateLimited) {
		t.Fatalf("third info = %v, want RATE_LIMITED", err)
	}
	// InfoResponse has no retry field; status does.
	_, err = c.Status(ctxT(t), n.ID(), wire.Mailbox{0x12, 0x20}, nil)
	if !errors.As(err, &e) || e.Status != pb.Status_STATUS_RATE_LIMITED || e.RetryAfter <= 0 {
		t.Fatalf("status = %v, want RATE_LIMITED with retry_after", err)
	}
	// Another peer is not affected.
	c2 := newClient(t, n)
	if _, err := c2.Info(ctxT(t), n.ID()); err != nil {
		t.Fatalf("other peer: %v", err)
	}
}

func TestRelayStreamCap(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxStreamsPerPeer = 2 })
	c := newClient(t, n)
	key, _ := mailboxKey(t)
	var subs []*rpc.Subscription
	for range 2 {
		sub, err := c.Subscribe(ctxT(t), n.ID(), key)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	_, err := c.Info(ctxT(t), n.ID())
	if !errors.Is(err, wire.ErrBusy) {
		t.Fatalf("third stream = %v, want BUSY", err)
	}
	subs[0].Close()
	waitFor(t, "stream released", func() bool {
		_, err := c.Info(ctxT(t), n.ID())
		return err == nil
	})
	subs[1].Close()
}
