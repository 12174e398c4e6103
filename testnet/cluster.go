package testnet

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// DefaultTimeout bounds New's start-up and the waits of the helpers that
// take a testing.TB. It only turns a hang into a failure: nothing depends
// on how long a condition takes.
const DefaultTimeout = 2 * time.Minute

// Cluster is a local cairn network in this process: relays bootstrapped
// into one DHT and clients, all on 127.0.0.1, with faults on demand.
// Create it with New (tests) or Start; Close stops everything.
type Cluster struct {
	// Relays and Clients are the members, by index. Relays never changes
	// after Start; AddClient appends to Clients (do not call it while
	// another goroutine reads Clients). A member's state (running,
	// online) changes with faults.
	Relays  []*Relay
	Clients []*Client

	opts    Options
	seed    uint64
	dir     string
	tempDir bool
	log     *slog.Logger
	links   *linkNet // nil with DirectLinks

	ctx    context.Context
	cancel context.CancelFunc

	mu          sync.Mutex
	relayIdx    map[peer.ID]int
	clientPeers map[peer.ID]memberKey
	part        partition
	mesh        [][2]int
	meshSet     map[[2]int]bool
	closed      bool

	// building is set while the initial mesh is made: relays may then
	// dial only their planned neighbours (see Start).
	building atomic.Bool
}

// New starts a cluster for a test: it fails the test if the cluster does
// not come up within DefaultTimeout, and closes it in t.Cleanup.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	var o Options
	for _, f := range opts {
		f(&o)
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	c, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("testnet close: %v", err)
		}
	})
	return c
}

// Start builds a cluster and returns once every relay's routing table is
// populated (Options.Ready) and every client is started and online
// (client.Client.WaitReady). ctx bounds the start; on failure everything
// started is closed again.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	o.defaults()
	if o.Relays < 1 || o.Clients < 0 || o.R < 1 {
		return nil, errors.New("testnet: need at least one relay, R ≥ 1 and no negative counts")
	}
	if o.Seed == 0 {
		var b [8]byte
		_, _ = crand.Read(b[:])
		o.Seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	c := &Cluster{
		opts:        o,
		seed:        o.Seed,
		dir:         o.Dir,
		log:         o.Logger,
		relayIdx:    map[peer.ID]int{},
		clientPeers: map[peer.ID]memberKey{},
		part:        partition{cuts: map[[2]memberKey]bool{}},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "cairn-testnet-"); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		c.tempDir = true
	}
	if !o.DirectLinks {
		c.links = newLinkNet(o.Seed)
	}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	start := time.Now()

	// Identities first: the gaters and the mesh need every peer ID.
	for i := range o.Relays {
		r, err := c.newRelay(i)
		if err != nil {
			return nil, err
		}
		c.Relays = append(c.Relays, r)
		c.relayIdx[r.ID] = i
	}
	c.mesh = c.planMesh()
	c.meshSet = map[[2]int]bool{}
	for _, e := range c.mesh {
		c.meshSet[e] = true
	}

	// While the mesh is made, the relays' DHTs refresh their routing
	// tables (relay.Config has no way to turn auto-refresh off) and each
	// refresh lookup would dial every peer it hears of: at 100 relays
	// that is a storm of handshakes that takes minutes on two cores. So
	// until the routing tables are ready, relays may dial only their
	// planned neighbours; lookups run over the mesh's connections.
	c.building.Store(true)

	if err := c.parallel(ctx, o.Relays, func(ctx context.Context, i int) error {
		return c.Relays[i].start(ctx, nil)
	}); err != nil {
		return nil, err
	}
	c.log.Info("testnet: relays started", "took", time.Since(start).Round(time.Millisecond))
	c.connectMesh(ctx)
	c.log.Info("testnet: mesh connected", "edges", len(c.mesh), "took", time.Since(start).Round(time.Millisecond))
	if err := WaitFor(ctx, c.routingReady, "relays' routing tables"); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	c.building.Store(false)
	c.log.Info("testnet relays ready", "relays", o.Relays, "seed", o.Seed, "took", time.Since(start).Round(time.Millisecond))

	for i := range o.Clients {
		cl, err := c.newClient(i)
		if err != nil {
			return nil, err
		}
		c.Clients = append(c.Clients, cl)
		if err := cl.Online(ctx); err != nil {
			return nil, err
		}
	}
	for _, cl := range c.Clients {
		if err := cl.Client().WaitReady(ctx); err != nil {
			return nil, fmt.Errorf("testnet: %s: %w", cl, err)
		}
	}
	return c, nil
}

// AddClient adds a client to the cluster (the next index, its own data
// directory, key and links) and brings it online.
func (c *Cluster) AddClient(ctx context.Context) (*Client, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	i := len(c.Clients)
	c.mu.Unlock()
	cl, err := c.newClient(i)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.Clients = append(c.Clients, cl)
	c.mu.Unlock()
	return cl, cl.Online(ctx)
}

// Seed returns the seed of the cluster's random choices (Options.Seed).
func (c *Cluster) Seed() uint64 { return c.seed }

// Dir returns the cluster's base directory.
func (c *Cluster) Dir() string { return c.dir }

// R returns the replication factor.
func (c *Cluster) R() int { return c.opts.R }

// Close stops every client and relay (relays gracefully), closes the
// links and removes a temporary base directory. It returns the first
// error; it is safe to call more than once.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, cl := range c.Clients {
		wg.Go(func() {
			if err := cl.Offline(); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", cl, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, r := range c.Relays {
		wg.Go(func() {
			if err := r.Stop(); err != nil && !errors.Is(err, ErrDown) {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", r, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, r := range c.Relays {
		if r.link != nil {
			r.link.close()
		}
	}
	for _, cl := range c.Clients {
		for _, l := range cl.links {
			l.close()
		}
	}
	if c.tempDir {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("testnet: close: %w", errors.Join(errs...))
	}
	return nil
}

func (c *Cluster) logf(msg string, args ...any) { c.log.Info("testnet: "+msg, args...) }

// parallel runs f for 0…n-1 on a few goroutines and returns the first
// error.
func (c *Cluster) parallel(parent context.Context, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	work := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(n, parallelism) {
		wg.Go(func() {
			for i := range work {
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if first == nil {
		return parent.Err()
	}
	return first
}

// planMesh picks the initial connections: each relay to its Neighbors
// XOR-closest relays plus RandomNeighbors others drawn with the seed.
// Each unordered pair appears once.
func (c *Cluster) planMesh() [][2]int {
	ids := make([]peer.ID, len(c.Relays))
	for i, r := range c.Relays {
		ids[i] = r.ID
	}
	rng := rand.New(rand.NewPCG(c.seed, 0x6d657368))
	seen := map[[2]int]bool{}
	var edges [][2]int
	add := func(a, b int) {
		if a == b {
			return
		}
		e := [2]int{min(a, b), max(a, b)}
		if !seen[e] {
			seen[e] = true
			edges = append(edges, e)
		}
	}
	for i, id := range ids {
		others := slices.DeleteFunc(slices.Clone(ids), func(p peer.ID) bool { return p == id })
		sorted := kb.SortClosestPeers(others, kb.ConvertPeerID(id))
		k := min(c.opts.Neighbors, len(sorted))
		for _, p := range sorted[:k] {
			add(i, c.relayIdx[p])
		}
		rest := sorted[k:]
		for _, j := range rng.Perm(len(rest))[:min(c.opts.RandomNeighbors, len(rest))] {
			add(i, c.relayIdx[rest[j]])
		}
	}
	return edges
}

// connectMesh makes the planned connections that are missing between
// running relays the partition allows (best effort).
func (c *Cluster) connectMesh(ctx context.Context) {
	c.connectEdges(ctx, c.mesh)
}

func (c *Cluster) connectEdges(ctx context.Context, edges [][2]int) {
	_ = c.parallel(ctx, len(edges), func(ctx context.Context, k int) error {
		a, b := c.Relays[edges[k][0]], c.Relays[edges[k][1]]
		na, nb := a.Node(), b.Node()
		if na == nil || nb == nil || !c.allowed(a.key(), b.key()) {
			return nil
		}
		h := na.Host()
		if len(h.Network().ConnsToPeer(b.ID)) > 0 {
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := h.Connect(cctx, b.AddrInfo()); err != nil {
			c.log.Debug("testnet: mesh connect", "from", a.String(), "to", b.String(), "err", err)
		}
		return nil
	})
}

// clearBackoffs forgets the relays' dial backoffs, so that a peer that
// failed during a fault is dialed again at once.
func (c *Cluster) clearBackoffs() {
	for _, r := range c.Relays {
		n := r.Node()
		if n == nil {
			continue
		}
		sw, ok := n.Host().Network().(*swarm.Swarm)
		if !ok {
			continue
		}
		for _, o := range c.Relays {
			sw.Backoff().Clear(o.ID)
		}
	}
}

// routingReady reports, as an error naming the first laggard, whether
// every running relay's routing table holds at least Options.Ready peers
// (fewer when relays are down).
func (c *Cluster) routingReady() error {
	running := 0
	for _, r := range c.Relays {
		if r.Running() {
			running++
		}
	}
	want := min(c.opts.Ready, running-1)
	for _, r := range c.Relays {
		n := r.Node()
		if n == nil {
			continue
		}
		if got := n.DHT().RoutingTable().Size(); got < want {
			return fmt.Errorf("%s has %d peers in its routing table, want %d", r, got, want)
		}
	}
	return nil
}

// WaitRouting waits until every running relay's routing table is
// populated again (after a restart or a heal).
func (c *Cluster) WaitRouting(ctx context.Context) error {
	return WaitFor(ctx, c.routingReady, "relays' routing tables")
}

// addDirectory puts every relay's cluster address in h's peerstore for
// good, so that DHT answers carry it and dials find it.
func (c *Cluster) addDirectory(ps peerstore.Peerstore, self peer.ID) {
	for _, r := range c.Relays {
		if r.ID == self {
			continue
		}
		if ai := r.AddrInfo(); len(ai.Addrs) > 0 {
			ps.AddAddrs(r.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		}
	}
}

// RelayByID returns the relay with peer ID id, or nil.
func (c *Cluster) RelayByID(id peer.ID) *Relay {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.relayIdx[id]; ok {
		return c.Relays[i]
	}
	return nil
}

// ReplicaSet returns the mailbox's true replica set: the R relays of the
// cluster closest to its DHT key in the XOR metric (SPEC.md §14), closest
// first, computed from every relay's peer ID, running or not, without
// asking the DHT.
func (c *Cluster) ReplicaSet(mb wire.Mailbox) []*Relay {
	ids := make([]peer.ID, len(c.Relays))
	for i, r := range c.Relays {
		ids[i] = r.ID
	}
	sorted := kb.SortClosestPeers(ids, kb.ConvertKey(mb.DHTKey()))
	out := make([]*Relay, 0, c.opts.R)
	for _, p := range sorted[:c.opts.R] {
		out = append(out, c.RelayByID(p))
	}
	return out
}

// Holders returns the running relays whose store holds the live entry cid
// of mailbox mb.
func (c *Cluster) Holders(mb wire.Mailbox, cid wire.CID) []*Relay {
	var out []*Relay
	for _, r := range c.Relays {
		n := r.Node()
		if n == nil || n.Store() == nil {
			continue
		}
		if _, err := n.Store().Get(mb, cid); err == nil {
			out = append(out, r)
		} else if !errors.Is(err, store.ErrNotFound) {
			c.log.Debug("testnet: holder lookup", "relay", r.String(), "err", err)
		}
	}
	return out
}

// CountReplicas returns how many running relays hold the live entry.
func (c *Cluster) CountReplicas(mb wire.Mailbox, cid wire.CID) int {
	return len(c.Holders(mb, cid))
}

// Connected reports whether relays a and b have a connection between them
// (seen from a).
func (c *Cluster) Connected(a, b *Relay) bool {
	n := a.Node()
	return n != nil && len(n.Host().Network().ConnsToPeer(b.ID)) > 0
}

// SetFault sets the fault of every link of m (in both directions); a pair
// fault set with SetPairFault takes precedence. The zero LinkFault clears
// it. It panics with DirectLinks, which has no links.
func (c *Cluster) SetFault(m Member, f LinkFault) {
	c.mustLinks()
	c.links.mu.Lock()
	if f.zero() {
		delete(c.links.node, m.key())
	} else {
		c.links.node[m.key()] = f
	}
	c.links.mu.Unlock()
	c.logf("link fault", "member", m.String(), "fault", fmt.Sprintf("%+v", f))
}

// SetPairFault sets the fault of the links between a and b only.
func (c *Cluster) SetPairFault(a, b Member, f LinkFault) {
	c.mustLinks()
	c.links.mu.Lock()
	if f.zero() {
		delete(c.links.pair, pairOf(a.key(), b.key()))
	} else {
		c.links.pair[pairOf(a.key(), b.key())] = f
	}
	c.links.mu.Unlock()
	c.logf("link fault", "a", a.String(), "b", b.String(), "fault", fmt.Sprintf("%+v", f))
}

// ClearFaults makes every link perfect again.
func (c *Cluster) ClearFaults() {
	if c.links == nil {
		return
	}
	c.links.mu.Lock()
	clear(c.links.node)
	clear(c.links.pair)
	c.links.mu.Unlock()
}

// LinkStats returns the links' counters (zero with DirectLinks).
func (c *Cluster) LinkStats() LinkStats {
	if c.links == nil {
		return LinkStats{}
	}
	return c.links.stats()
}

// PairStats returns the chunks forwarded, delayed and dropped on the
// links between a and b (once the relay's gater attributed the
// connection; zero with DirectLinks).
func (c *Cluster) PairStats(a, b Member) LinkStats {
	if c.links == nil {
		return LinkStats{}
	}
	return c.links.pairStats(a.key(), b.key())
}

func (c *Cluster) mustLinks() {
	if c.links == nil {
		panic("testnet: link faults need links (Options.DirectLinks is set)")
	}
}

// parallelism bounds the goroutines of Cluster.parallel. Connections are
// mostly waiting (handshakes, identify) until the CPUs are busy: 64 made
// a 100-relay mesh twice as fast as 16 on two cores.
var parallelism = 64
