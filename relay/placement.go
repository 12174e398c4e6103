package relay

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Placement decides whether this relay accepts deposits for a mailbox
// (SPEC.md §14): iff it is in the mailbox's replica set in its own view, or
// it knows fewer than R relays. Accepts is called once per deposit, on the
// deposit path; it should answer from a cache.
type Placement interface {
	// Accepts reports whether the relay takes deposits for mailbox; when
	// it does not, replicas is the replica set it computed (the peers a
	// NOT_REPLICA answer names).
	Accepts(mailbox wire.Mailbox) (ok bool, replicas []peer.ID)
}

// Forwarder receives what this relay stores, beside its own replication.
// Both methods are called on the store's commit path (Stored from its commit
// goroutine): they must not block and must copy what they keep beyond the
// call.
type Forwarder interface {
	// Stored is called once for every entry that became durable here,
	// deposited or imported, in commit order.
	Stored(e store.StoredEntry)
	// Tombstoned is called with the tombstones an ack left.
	Tombstoned(ts []store.Tombstone)
}

// Placement of mailboxes (SPEC.md §14). A mailbox's replica set is the R
// DHT server peers closest to its DHT key: what GetClosestPeers finds, plus
// this relay (the lookup never returns the caller), sorted by XOR distance
// to SHA-256(key) with kb.SortClosestPeers. The placer keeps each mailbox's
// view for ReplicaCacheTTL. Churn — a peer entering or leaving the routing
// table, a relay identified or disconnected — bumps a generation; a view of
// an older generation is checked against the routing table's own estimate
// before use (cheap, local) and looked up again only if the two differ, so a
// join far from a mailbox's key costs that mailbox nothing.
//
// Lookups are deduplicated per mailbox and bounded (MaxReplicaLookups in
// flight, ReplicaLookupTimeout each); when the bound is reached, or a lookup
// fails, the routing table's estimate is used.
//
// The placer also remembers, for every mailbox it replicates, when it last
// saw each peer in the replica set: a peer seen within ReplicaGrace is a
// recent replica (SPEC.md §10.9).

// replicaView is one view of a mailbox's replica set.
type replicaView struct {
	// peers are the relays closest to the key, closest first, this relay
	// included: at most 2R of them.
	peers []peer.ID
	r     int
	// few: the relay knows fewer than R relays.
	few bool
	// at is when the view was computed (wall clock), gen the churn
	// generation it was last checked at.
	at  time.Time
	gen uint64
	// lookedUp: the view comes from a DHT lookup, not the routing table.
	lookedUp bool
}

// replicas returns the replica set: the first R peers.
func (v *replicaView) replicas() []peer.ID { return v.peers[:min(v.r, len(v.peers))] }

// isReplica reports whether p is in the replica set.
func (v *replicaView) isReplica(p peer.ID) bool { return slices.Contains(v.replicas(), p) }

// isNeighbour reports whether p is among the 2R closest relays.
func (v *replicaView) isNeighbour(p peer.ID) bool { return slices.Contains(v.peers, p) }

// others returns the replica set without self.
func (v *replicaView) others(self peer.ID) []peer.ID {
	out := make([]peer.ID, 0, v.r)
	for _, p := range v.replicas() {
		if p != self {
			out = append(out, p)
		}
	}
	return out
}

// dhtLookup is what the placer needs of the DHT (*dht.IpfsDHT).
type dhtLookup interface {
	GetClosestPeers(ctx context.Context, key string) ([]peer.ID, error)
	RoutingTable() *kb.RoutingTable
}

// maxCachedViews bounds the placer's cache.
const maxCachedViews = 1 << 16

// minRecheck is how old a view must be before a trust check that fails on
// it looks the replica set up again.
const minRecheck = time.Second

type placer struct {
	self    peer.ID
	r       int
	ttl     time.Duration
	timeout time.Duration
	grace   time.Duration
	clock   func() time.Time // the relay's clock, for ReplicaGrace
	d       dhtLookup
	ctx     context.Context // ends when the node closes
	onView  func(lookedUp bool)

	gen atomic.Uint64
	sem chan struct{}

	wg sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	cache   map[wire.Mailbox]*replicaView
	flights map[wire.Mailbox]*flight
	history map[wire.Mailbox]map[peer.ID]time.Time
}

type flight struct {
	done chan struct{}
	v    *replicaView
}

func newPlacer(n *Node, d dhtLookup) *placer {
	return &placer{
		self:    n.id,
		r:       n.cfg.ReplicationFactor,
		ttl:     n.cfg.ReplicaCacheTTL,
		timeout: n.cfg.ReplicaLookupTimeout,
		grace:   n.cfg.ReplicaGrace,
		clock:   n.now,
		d:       d,
		ctx:     n.drainCtx,
		sem:     make(chan struct{}, n.cfg.MaxReplicaLookups),
		cache:   make(map[wire.Mailbox]*replicaView),
		flights: make(map[wire.Mailbox]*flight),
		history: make(map[wire.Mailbox]map[peer.ID]time.Time),
		onView:  func(bool) {},
	}
}

// churn invalidates every view: each is checked again before its next use.
func (p *placer) churn() { p.gen.Add(1) }

// Accepts implements Placement: the rule of SPEC.md §14.
func (p *placer) Accepts(mb wire.Mailbox) (bool, []peer.ID) {
	v := p.get(p.ctx, mb)
	return v.few || v.isReplica(p.self), v.replicas()
}

// estimate computes a view from the routing table alone.
func (p *placer) estimate(mb wire.Mailbox) *replicaView {
	key := kb.ConvertKey(mb.DHTKey())
	rt := p.d.RoutingTable()
	near := rt.NearestPeers(key, 2*p.r)
	return p.build(near, key, rt.Size(), false)
}

// build sorts candidates and self into a view.
func (p *placer) build(cands []peer.ID, key kb.ID, known int, lookedUp bool) *replicaView {
	all := make([]peer.ID, 0, len(cands)+1)
	all = append(all, p.self)
	for _, c := range cands {
		if c != p.self && !slices.Contains(all, c) {
			all = append(all, c)
		}
	}
	sorted := kb.SortClosestPeers(all, key)
	if len(sorted) > 2*p.r {
		sorted = sorted[:2*p.r]
	}
	return &replicaView{
		peers:    sorted,
		r:        p.r,
		few:      max(known, len(all)-1)+1 < p.r,
		at:       time.Now(),
		gen:      p.gen.Load(),
		lookedUp: lookedUp,
	}
}

// fresh returns the cached view if it may be used: young enough, looked up
// in the DHT unless estimates are allowed, and of the current generation
// or confirmed by the routing table's estimate.
func (p *placer) fresh(mb wire.Mailbox, allowEstimate bool) *replicaView {
	p.mu.Lock()
	v := p.cache[mb]
	p.mu.Unlock()
	if v == nil || time.Since(v.at) >= p.ttl || (!v.lookedUp && !allowEstimate) {
		return nil
	}
	g := p.gen.Load()
	p.mu.Lock()
	cur := v.gen
	p.mu.Unlock()
	if cur == g {
		return v
	}
	est := p.estimate(mb)
	if est.few != v.few || !slices.Equal(est.replicas(), v.replicas()) {
		return nil
	}
	p.mu.Lock()
	v.gen = g
	p.mu.Unlock()
	p.remember(mb, v)
	return v
}

// cached returns a view without waiting for the network: the cached one if
// it may be used, else the routing table's estimate, cached meanwhile, and
// a lookup is started in the background if a lookup slot is free.
func (p *placer) cached(mb wire.Mailbox) *replicaView {
	if v := p.fresh(mb, true); v != nil {
		return v
	}
	est := p.estimate(mb)
	p.mu.Lock()
	if !p.closed && p.flights[mb] == nil && len(p.sem) < cap(p.sem)/2 {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.lookup(p.ctx, mb)
		}()
	}
	if old := p.cache[mb]; old == nil || time.Since(old.at) >= p.ttl || !old.lookedUp {
		p.store(mb, est)
	}
	p.mu.Unlock()
	return est
}

// close waits for background lookups; the node's context has ended.
func (p *placer) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
}

// get returns a view, looking the replica set up if the cached view may
// not be used.
func (p *placer) get(ctx context.Context, mb wire.Mailbox) *replicaView {
	if v := p.fresh(mb, false); v != nil {
		return v
	}
	return p.lookup(ctx, mb)
}

// refresh looks the replica set up now, unless the cached view is younger
// than minRecheck.
func (p *placer) refresh(ctx context.Context, mb wire.Mailbox) *replicaView {
	p.mu.Lock()
	v := p.cache[mb]
	p.mu.Unlock()
	if v != nil && v.lookedUp && time.Since(v.at) < minRecheck {
		if f := p.fresh(mb, false); f != nil {
			return f
		}
	}
	return p.lookup(ctx, mb)
}

// lookup runs (or joins) a DHT lookup of mb's replica set and caches the
// result; without a free lookup slot, or if the lookup finds no peer, it
// returns the routing table's estimate.
func (p *placer) lookup(ctx context.Context, mb wire.Mailbox) *replicaView {
	p.mu.Lock()
	if f := p.flights[mb]; f != nil {
		p.mu.Unlock()
		select {
		case <-f.done:
			if f.v != nil {
				return f.v
			}
		case <-ctx.Done():
		}
		return p.estimate(mb)
	}
	select {
	case p.sem <- struct{}{}:
	default:
		p.mu.Unlock()
		return p.estimate(mb)
	}
	f := &flight{done: make(chan struct{})}
	p.flights[mb] = f
	p.mu.Unlock()

	gen := p.gen.Load()
	key := mb.DHTKey()
	// The lookup keeps the caller's values (query-event listeners) but
	// not its cancellation: other callers may wait for it too.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
	stop := context.AfterFunc(p.ctx, cancel)
	var found []peer.ID
	var err error
	if p.d.RoutingTable().Size() > 0 {
		found, err = p.d.GetClosestPeers(lctx, key)
	}
	stop()
	cancel()
	var v *replicaView
	if err == nil && len(found) > 0 {
		v = p.build(found, kb.ConvertKey(key), 0, true)
		v.gen = gen
		p.onView(true)
	} else {
		v = p.estimate(mb)
		p.onView(false)
	}
	p.mu.Lock()
	p.store(mb, v)
	f.v = v
	delete(p.flights, mb)
	p.mu.Unlock()
	close(f.done)
	<-p.sem
	p.remember(mb, v)
	return v
}

// store caches v; the caller holds mu.
func (p *placer) store(mb wire.Mailbox, v *replicaView) {
	if _, ok := p.cache[mb]; !ok && len(p.cache) >= maxCachedViews {
		for k, old := range p.cache {
			if time.Since(old.at) >= p.ttl {
				delete(p.cache, k)
			}
		}
		for k := range p.cache { // random order
			if len(p.cache) < maxCachedViews*7/8 {
				break
			}
			delete(p.cache, k)
		}
	}
	p.cache[mb] = v
}

// remember records the replicas of a looked-up view in which this relay is
// one of them (or of any view while it knows fewer than R relays): the
// history of ReplicaGrace.
func (p *placer) remember(mb wire.Mailbox, v *replicaView) {
	if !v.few && (!v.lookedUp || !v.isReplica(p.self)) {
		return
	}
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.history[mb]
	if h == nil {
		h = make(map[peer.ID]time.Time, p.r)
		p.history[mb] = h
	}
	for _, q := range v.replicas() {
		h[q] = now
	}
}

// recent reports whether q was seen in mb's replica set within
// ReplicaGrace.
func (p *placer) recent(mb wire.Mailbox, q peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.history[mb][q]
	return ok && p.clock().Sub(at) <= p.grace
}

// recentReplicas lists the peers seen in mb's replica set within
// ReplicaGrace.
func (p *placer) recentReplicas(mb wire.Mailbox) []peer.ID {
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []peer.ID
	for q, at := range p.history[mb] {
		if now.Sub(at) <= p.grace {
			out = append(out, q)
		}
	}
	return out
}

// prune forgets history older than ReplicaGrace.
func (p *placer) prune() {
	now := p.clock()
	p.mu.Lock()
	defer p.mu.Unlock()
	for mb, h := range p.history {
		for q, at := range h {
			if now.Sub(at) > p.grace {
				delete(h, q)
			}
		}
		if len(h) == 0 {
			delete(p.history, mb)
		}
	}
	for mb, v := range p.cache {
		if time.Since(v.at) >= p.ttl {
			delete(p.cache, mb)
		}
	}
}

// standing is how a peer stands for a mailbox in this relay's view.
type standing int

const (
	stranger standing = iota // neither a replica nor a recent one
	recentReplica
	currentReplica
)

// standingOf returns q's standing for mb. If the cached view does not
// make q a replica, the set is looked up again first (at most once per
// minRecheck), so a peer that just joined is not refused on a stale view.
func (p *placer) standingOf(ctx context.Context, mb wire.Mailbox, q peer.ID) (standing, *replicaView) {
	v := p.get(ctx, mb)
	if !v.isReplica(q) && !(v.few && v.isNeighbour(q)) {
		v = p.refresh(ctx, mb)
	}
	switch {
	case v.isReplica(q), v.few && v.isNeighbour(q):
		return currentReplica, v
	case p.recent(mb, q):
		return recentReplica, v
	}
	return stranger, v
}

var _ Placement = (*placer)(nil)
