package testnet

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
)

// Client is one client of a cluster: a data directory and an at-rest key
// of its own, and a client.Client while it is online.
type Client struct {
	// Index is the client's position in Cluster.Clients.
	Index int
	// DataDir is the client's database directory.
	DataDir string
	// EncryptionKey is the client's at-rest key (32 random bytes).
	EncryptionKey []byte

	c     *Cluster
	links []*proxy // the client's own link to each relay; nil with DirectLinks

	mu sync.Mutex
	cl *client.Client
}

func (c *Cluster) newClient(i int) (*Client, error) {
	dir := filepath.Join(c.dir, fmt.Sprintf("client-%02d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	key := make([]byte, 32)
	if _, err := crand.Read(key); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	cl := &Client{Index: i, DataDir: dir, EncryptionKey: key, c: c}
	if c.links != nil {
		for _, r := range c.Relays {
			l, err := newProxy(c.links, r.key(), cl.key())
			if err != nil {
				cl.closeLinks()
				return nil, fmt.Errorf("testnet: %s: %w", cl, err)
			}
			l.setUpstream(r.link.upstreamAddr())
			r.addClientLink(l)
			cl.links = append(cl.links, l)
		}
	}
	return cl, nil
}

func (cl *Client) closeLinks() {
	for _, l := range cl.links {
		l.close()
	}
}

func (cl *Client) key() memberKey { return memberKey{kindClient, cl.Index} }

// String returns "client-NN".
func (cl *Client) String() string { return cl.key().String() }

// Client returns the online client.Client, or nil while offline.
func (cl *Client) Client() *client.Client {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.cl
}

// Bootstrap returns the relay addresses the client is given: its own
// links, or (with DirectLinks) the relays' addresses.
func (cl *Client) Bootstrap() []string {
	out := make([]string, 0, len(cl.c.Relays))
	for j, r := range cl.c.Relays {
		if cl.links != nil {
			out = append(out, cl.links[j].addr.String()+"/p2p/"+r.ID.String())
		} else {
			out = append(out, r.Multiaddr())
		}
	}
	return out
}

// Config returns the client's configuration: its data directory and key,
// its bootstrap relays, the cluster's R, clock and logger, retry and sync
// timings short enough for tests, then Options.ClientConfig. Online adds
// the cluster's connection gater (in front of any gater ClientConfig set).
func (cl *Client) Config() client.Config {
	c := cl.c
	cfg := client.Config{
		DataDir:           cl.DataDir,
		EncryptionKey:     cl.EncryptionKey,
		Bootstrap:         cl.Bootstrap(),
		Name:              cl.String(),
		Logger:            c.log.With("node", cl.String()),
		Now:               c.opts.Now,
		ReplicationFactor: c.opts.R,
		RetryMin:          50 * time.Millisecond,
		RetryMax:          2 * time.Second,
		GapGrace:          2 * time.Second,
		SyncInterval:      5 * time.Second,
		Timeout:           5 * time.Second,
		EventBuffer:       4096,
	}
	if c.opts.ClientConfig != nil {
		c.opts.ClientConfig(cl.Index, &cfg)
	}
	return cfg
}

// Online opens the client on its data directory and starts it (it does
// not wait for any relay, like client.Start: call WaitReady on it for
// that). The cluster learns the client's peer IDs (PeerID and
// SenderPeerID) before it starts, so partitions apply to both its hosts
// from their first dial. It is a no-op when the
// client is online.
func (cl *Client) Online(ctx context.Context) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.cl != nil {
		return nil
	}
	if cl.c.ctx.Err() != nil {
		return ErrClosed
	}
	cfg := cl.Config()
	cfg.ConnectionGater = &clientGater{c: cl.c, self: cl.key(), inner: cfg.ConnectionGater}
	x, err := client.New(cfg)
	if err != nil {
		return fmt.Errorf("testnet: %s: %w", cl, err)
	}
	cl.c.setClientPeers(x, cl.key())
	if err := x.Start(ctx); err != nil {
		_ = x.Close()
		cl.c.setClientPeers(x, memberKey{})
		return fmt.Errorf("testnet: %s: %w", cl, err)
	}
	cl.cl = x
	cl.c.logf("online", "client", cl.String())
	return nil
}

// Offline closes the client (client.Client.Close: its outbox and state
// stay in DataDir); Online brings it back. It is a no-op when offline.
func (cl *Client) Offline() error {
	cl.mu.Lock()
	x := cl.cl
	cl.cl = nil
	cl.mu.Unlock()
	if x == nil {
		return nil
	}
	cl.c.logf("offline", "client", cl.String())
	err := x.Close()
	cl.c.setClientPeers(x, memberKey{})
	return err
}

// setClientPeers attributes a client's peer IDs (client.Client.PeerID and
// SenderPeerID: its two hosts) to member m (zero: forget them).
func (c *Cluster) setClientPeers(x *client.Client, m memberKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range []peer.ID{x.PeerID(), x.SenderPeerID()} {
		if m.zero() {
			delete(c.clientPeers, p)
		} else {
			c.clientPeers[p] = m
		}
	}
}
