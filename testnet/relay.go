package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/cairn-net/cairn/relay"
)

// Errors of member life cycles.
var (
	// ErrDown is returned by Stop and Kill of a relay that is not running.
	ErrDown = errors.New("testnet: relay is down")
	// ErrRunning is returned by Restart of a relay that is running.
	ErrRunning = errors.New("testnet: relay is running")
	// ErrClosed is returned when the cluster was closed.
	ErrClosed = errors.New("testnet: cluster closed")
)

// Relay is one relay of an in-process cluster. Its peer ID, data directory
// and cluster address stay the same across Stop, Kill and Restart.
type Relay struct {
	// Index is the relay's position in Cluster.Relays.
	Index int
	// ID is the relay's peer ID (its key is in DataDir/identity.key).
	ID peer.ID
	// DataDir is the relay's state: identity and store.
	DataDir string

	c    *Cluster
	priv crypto.PrivKey
	link *proxy // the relay's shared link; nil with DirectLinks

	mu          sync.Mutex
	node        *relay.Node
	port        int      // the real listen port, kept across restarts when possible
	clientLinks []*proxy // the clients' own links to this relay
}

func (r *Relay) addClientLink(l *proxy) {
	r.mu.Lock()
	r.clientLinks = append(r.clientLinks, l)
	r.mu.Unlock()
}

// allLinks returns the relay's shared link and the clients' links to it.
func (r *Relay) allLinks() []*proxy {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*proxy
	if r.link != nil {
		out = append(out, r.link)
	}
	return append(out, r.clientLinks...)
}

// setUpstream points every link to the relay at hostport ("": down).
func (r *Relay) setUpstream(hostport string) {
	for _, l := range r.allLinks() {
		l.setUpstream(hostport)
	}
}

// cutLinks closes every connection through the relay's links.
func (r *Relay) cutLinks() {
	for _, l := range r.allLinks() {
		l.cutAll()
	}
}

func (c *Cluster) newRelay(i int) (*Relay, error) {
	dir := filepath.Join(c.dir, fmt.Sprintf("relay-%02d", i))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	priv, err := relay.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, fmt.Errorf("testnet: relay-%02d: %w", i, err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("testnet: relay-%02d: %w", i, err)
	}
	r := &Relay{Index: i, ID: id, DataDir: dir, c: c, priv: priv}
	if c.links != nil {
		if r.link, err = newProxy(c.links, r.key(), memberKey{}); err != nil {
			return nil, fmt.Errorf("testnet: relay-%02d: %w", i, err)
		}
	}
	return r, nil
}

func (r *Relay) key() memberKey { return memberKey{kindRelay, r.Index} }

// String returns "relay-NN".
func (r *Relay) String() string { return r.key().String() }

// Node returns the running relay.Node, or nil while the relay is down.
func (r *Relay) Node() *relay.Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.node
}

// Running reports whether the relay is up.
func (r *Relay) Running() bool { return r.Node() != nil }

// AddrInfo returns the relay's peer ID and its address in the cluster:
// its link, or (with DirectLinks) its own listen address.
func (r *Relay) AddrInfo() peer.AddrInfo {
	if r.link != nil {
		return peer.AddrInfo{ID: r.ID, Addrs: []ma.Multiaddr{r.link.addr}}
	}
	r.mu.Lock()
	port := r.port
	r.mu.Unlock()
	if port == 0 {
		return peer.AddrInfo{ID: r.ID}
	}
	return peer.AddrInfo{ID: r.ID, Addrs: []ma.Multiaddr{tcpAddr(port)}}
}

// Multiaddr returns the relay's cluster address with its /p2p/ part, the
// form client.Config.Bootstrap takes.
func (r *Relay) Multiaddr() string {
	ai := r.AddrInfo()
	if len(ai.Addrs) == 0 {
		return ""
	}
	return ai.Addrs[0].String() + "/p2p/" + r.ID.String()
}

func tcpAddr(port int) ma.Multiaddr {
	return ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port))
}

// config is the relay's configuration: relay.DefaultConfig on 127.0.0.1
// (TCP only, so that links carry everything), the null resource manager
// (bursty local dials), the cluster's gater, clock, logger and R, then
// Options.RelayConfig. A restarted relay gets its mesh neighbours as
// bootstrap peers, like a real relay restarting (a relay's catch-up after
// a restart depends on having them); at the first start the cluster makes
// the mesh itself.
func (r *Relay) config(port int, bootstrap []peer.AddrInfo) relay.Config {
	c := r.c
	cfg := relay.DefaultConfig()
	cfg.DataDir = r.DataDir
	cfg.Identity = r.priv
	cfg.ListenAddrs = []ma.Multiaddr{tcpAddr(port)}
	cfg.BootstrapPeers = bootstrap
	cfg.Logger = c.log.With("node", r.String())
	cfg.Now = c.opts.Now
	cfg.ReplicationFactor = c.opts.R
	cfg.ResourceManager = &network.NullResourceManager{}
	cfg.ConnectionGater = &gater{c: c, self: r.key()}
	cfg.DrainTimeout = 2 * time.Second
	if c.opts.RelayConfig != nil {
		c.opts.RelayConfig(r.Index, &cfg)
	}
	return cfg
}

// start starts the relay on its data directory, on its previous port when
// it had one and the port is free (any port otherwise).
func (r *Relay) start(ctx context.Context, bootstrap []peer.AddrInfo) error {
	r.mu.Lock()
	if r.node != nil {
		r.mu.Unlock()
		return ErrRunning
	}
	port := r.port
	r.mu.Unlock()
	n, err := r.tryStart(ctx, port, bootstrap)
	if err != nil && port != 0 {
		r.c.log.Debug("testnet: previous port unavailable", "relay", r.String(), "port", port, "err", err)
		n, err = r.tryStart(ctx, 0, bootstrap)
	}
	if err != nil {
		return fmt.Errorf("testnet: start %s: %w", r, err)
	}
	port, err = listenPort(n)
	if err != nil {
		_ = n.Close()
		return fmt.Errorf("testnet: start %s: %w", r, err)
	}
	r.mu.Lock()
	r.node, r.port = n, port
	r.mu.Unlock()
	r.setUpstream(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	// A connection whose handshake passed the gater just before a
	// partition began would otherwise slip through: check every
	// connection again once it is added to the host.
	self := r.key()
	n.Host().Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, conn network.Conn) {
			if !r.c.allowed(self, r.c.memberOf(conn.RemotePeer())) {
				go conn.Close()
			}
		},
	})
	r.c.addDirectory(n.Host().Peerstore(), r.ID)
	if r.c.links == nil {
		// Without links the address may have changed: tell the others.
		for _, o := range r.c.Relays {
			if on := o.Node(); on != nil && o != r {
				r.c.addDirectory(on.Host().Peerstore(), o.ID)
			}
		}
	}
	return nil
}

func (r *Relay) tryStart(ctx context.Context, port int, bootstrap []peer.AddrInfo) (*relay.Node, error) {
	n, err := relay.New(r.config(port, bootstrap))
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		_ = n.Close()
		return nil, err
	}
	return n, nil
}

func listenPort(n *relay.Node) (int, error) {
	for _, a := range n.Host().Network().ListenAddresses() {
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		if ta, ok := na.(*net.TCPAddr); ok && ta.Port != 0 {
			return ta.Port, nil
		}
	}
	return 0, fmt.Errorf("no TCP listen address in %v", n.Host().Network().ListenAddresses())
}

// take marks the relay down and returns the node that was running.
func (r *Relay) take() (*relay.Node, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.node
	if n == nil {
		return nil, ErrDown
	}
	r.node = nil
	return n, nil
}

// Stop closes the relay gracefully (relay.Node.Close: in-flight requests
// are drained). Its link then refuses connections until Restart.
func (r *Relay) Stop() error {
	n, err := r.take()
	if err != nil {
		return err
	}
	r.c.logf("stop", "relay", r.String())
	r.setUpstream("")
	err = n.Close()
	r.cutLinks()
	return err
}

// Kill stops the relay as abruptly as one process allows: its link cuts
// every connection through it and refuses new ones, its libp2p host is
// closed (every connection reset, no request drained, no answer sent),
// and only then is the node closed to release its store. What a process
// crash would lose and this does not: the store's in-memory state is
// flushed (badger writes with SyncWrites, so an acknowledged entry is on
// disk either way). ProcCluster kills real processes with SIGKILL.
func (r *Relay) Kill() error {
	n, err := r.take()
	if err != nil {
		return err
	}
	r.c.logf("kill", "relay", r.String())
	r.setUpstream("")
	r.cutLinks()
	_ = n.Host().Close()
	_ = n.Close()
	return nil
}

// Restart starts a stopped or killed relay again on its data directory:
// same peer ID, same cluster address (and the same real port when it is
// free). It reconnects the relay's mesh neighbours, clears the others'
// dial backoffs to it, and waits (bounded by ctx) until its routing table
// is populated again.
func (r *Relay) Restart(ctx context.Context) error {
	if r.c.ctx.Err() != nil {
		return ErrClosed
	}
	var edges [][2]int
	var boot []peer.AddrInfo
	for _, e := range r.c.mesh {
		if e[0] == r.Index || e[1] == r.Index {
			edges = append(edges, e)
			if o := r.c.Relays[e[0]+e[1]-r.Index]; o.Running() {
				boot = append(boot, o.AddrInfo())
			}
		}
	}
	if err := r.start(ctx, boot); err != nil {
		return err
	}
	r.c.logf("restart", "relay", r.String())
	r.c.clearBackoffs()
	r.c.connectEdges(ctx, edges)
	return WaitFor(ctx, func() error {
		n := r.Node()
		if n == nil {
			return ErrDown
		}
		running := 0
		for _, o := range r.c.Relays {
			if o.Running() {
				running++
			}
		}
		want := min(r.c.opts.Ready, running-1)
		if got := n.DHT().RoutingTable().Size(); got < want {
			return fmt.Errorf("%s has %d peers in its routing table, want %d", r, got, want)
		}
		return nil
	}, r.String()+" routing table after restart")
}
