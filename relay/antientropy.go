package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/cairn-net/cairn/wire"
)

// Anti-entropy (SPEC.md §10.10). One goroutine runs passes; a pass
// reconciles with peers, one reconcile stream per peer, up to
// maxPeerSessions peers at once. A stream starts with a summary exchange
// (one item per mailbox the two share, so that equal replicas cost one
// range and its answer whatever the number of mailboxes), then reconciles
// the mailboxes the summary found differing and those due on their own. A
// peer gets a summary exchange when:
//   - the periodic pass (every AntiEntropyInterval) runs;
//   - the peer (re)connected (identified as a relay) or entered the
//     routing table — so a relay that joins closer to a mailbox is sent it
//     by the replicas that notice it, and a restarted replica is brought up
//     to date;
//   - a peer left the routing table (replica sets changed).
//
// A (mailbox, peer) pair is due on its own when forwarding dropped
// something of the mailbox for the peer (a full queue, an unreachable peer,
// a refused request), and while catching up.
//
// A relay reconciles only the mailboxes it is a current or recent replica
// of (ReplicaGrace); a relay that fell out of a replica set keeps serving
// what it holds but stops reconciling it when the grace has passed.
//
// Catching up: a relay that starts with mailboxes in its store waits (up to
// CatchUpWait, if it has bootstrap peers) for its routing table, then
// passes over its mailboxes, retrying every second, until each has been
// reconciled with at least one other replica (or has none); until then
// Health reports ErrCatchingUp.

// ErrCatchingUp is returned by Health while a relay that started with
// mailboxes has not yet reconciled each of them with another replica.
var ErrCatchingUp = errors.New("relay: catching up with the other replicas")

// maxPeerSessions bounds the reconcile streams one pass runs at once.
const maxPeerSessions = 4

// catchUpRetry is the period of passes while catching up.
const catchUpRetry = time.Second

type pairKey struct {
	mb wire.Mailbox
	p  peer.ID
}

type antiEntropy struct {
	n    *Node
	kick chan struct{}

	mu      sync.Mutex
	kicked  map[peer.ID]bool
	full    bool
	dirty   map[peer.ID]map[wire.Mailbox]bool
	pending map[wire.Mailbox]bool // catching up

	synced atomic.Bool
	passes atomic.Uint64
}

func newAntiEntropy(n *Node) *antiEntropy {
	return &antiEntropy{
		n:      n,
		kick:   make(chan struct{}, 1),
		kicked: make(map[peer.ID]bool),
		dirty:  make(map[peer.ID]map[wire.Mailbox]bool),
	}
}

func (a *antiEntropy) signal() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// peerJoined schedules reconciliation of every shared mailbox with p.
func (a *antiEntropy) peerJoined(p peer.ID) {
	a.mu.Lock()
	a.kicked[p] = true
	a.mu.Unlock()
	a.signal()
}

// peerLeft schedules a pass: replica sets that lost p gained another
// relay, which has not been reconciled with yet.
func (a *antiEntropy) peerLeft() {
	a.mu.Lock()
	a.full = true
	a.mu.Unlock()
	a.signal()
}

// markDirty records that forwarding to p dropped something of mb. It does
// not start a pass: the next one (periodic, or when p reconnects) takes it.
func (a *antiEntropy) markDirty(p peer.ID, mb wire.Mailbox) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.dirty[p]
	if d == nil {
		d = make(map[wire.Mailbox]bool)
		a.dirty[p] = d
	}
	d[mb] = true
}

// reconciled records a completed session with p for mb, in either
// direction.
func (a *antiEntropy) reconciled(mb wire.Mailbox, p peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending != nil && a.pending[mb] {
		delete(a.pending, mb)
		if len(a.pending) == 0 {
			a.synced.Store(true)
		}
	}
}

// catchingUp returns how many mailboxes still wait for their first
// reconciliation since the start.
func (a *antiEntropy) catchingUp() int {
	if a.synced.Load() {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(1, len(a.pending))
}

// start decides whether the relay must catch up; it runs before the node
// serves.
func (a *antiEntropy) start() {
	pending := make(map[wire.Mailbox]bool)
	for info := range a.n.store.Mailboxes() {
		if info.Entries+info.Tombstones > 0 {
			pending[info.Mailbox] = true
		}
	}
	a.mu.Lock()
	a.pending = pending
	a.mu.Unlock()
	if len(pending) == 0 {
		a.synced.Store(true)
	}
}

func (a *antiEntropy) run() {
	n := a.n
	defer n.bg.Done()
	if !a.synced.Load() && len(n.cfg.BootstrapPeers) > 0 {
		deadline := time.Now().Add(n.cfg.CatchUpWait)
		for n.dht.RoutingTable().Size() == 0 && time.Now().Before(deadline) {
			select {
			case <-n.drainCtx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-n.drainCtx.Done():
			return
		case <-timer.C:
			a.pass(true)
			if a.synced.Load() {
				timer.Reset(n.cfg.AntiEntropyInterval)
			} else {
				timer.Reset(min(catchUpRetry, n.cfg.AntiEntropyInterval))
			}
		case <-a.kick:
			a.pass(false)
		}
	}
}

// pass runs one round of reconciliations.
func (a *antiEntropy) pass(periodic bool) {
	n := a.n
	ctx := n.drainCtx
	a.mu.Lock()
	kicked, dirty, full := a.kicked, a.dirty, a.full || periodic
	a.kicked, a.dirty, a.full = make(map[peer.ID]bool), make(map[peer.ID]map[wire.Mailbox]bool), false
	pending := make(map[wire.Mailbox]bool, len(a.pending))
	for mb := range a.pending {
		pending[mb] = true
	}
	a.mu.Unlock()
	a.passes.Add(1)
	if periodic {
		a.redial()
	}

	work := make(map[peer.ID][]wire.Mailbox)
	summarize := make(map[peer.ID]bool)
	shared := make(map[peer.ID][]wire.Mailbox) // what a summary with each peer covers
	queued := make(map[pairKey]bool)
	add := func(p peer.ID, mb wire.Mailbox) {
		k := pairKey{mb, p}
		if !queued[k] {
			queued[k] = true
			work[p] = append(work[p], mb)
		}
	}
	if full || len(kicked) > 0 || len(pending) > 0 {
		for info := range n.store.Mailboxes() {
			mb := info.Mailbox
			if info.Entries+info.Tombstones == 0 {
				continue
			}
			var v *replicaView
			if pending[mb] {
				v = n.placer.get(ctx, mb)
			} else {
				v = n.placer.cached(mb)
			}
			others := n.reconcilePeers(mb, v)
			if len(others) == 0 {
				a.caughtUp(mb) // not ours to replicate, or no other replica: nothing to catch up
				continue
			}
			for _, p := range others {
				shared[p] = append(shared[p], mb)
				switch {
				case pending[mb]:
					// Catching up: each mailbox on its own, with the
					// replica set looked up.
					add(p, mb)
				case full || kicked[p]:
					// One summary exchange finds every mailbox that
					// differs (SPEC.md §10.10); equal ones cost nothing
					// more.
					summarize[p] = true
				}
			}
		}
	}
	for p, mbs := range dirty {
		for mb := range mbs {
			add(p, mb)
		}
	}
	peers := make(map[peer.ID]bool, len(work)+len(summarize))
	for p := range work {
		peers[p] = true
	}
	for p := range summarize {
		peers[p] = true
	}
	if len(peers) == 0 {
		return
	}
	sem := make(chan struct{}, maxPeerSessions)
	var wg sync.WaitGroup
	for p := range peers {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var sum []wire.Mailbox
			if summarize[p] {
				sum = shared[p]
				if sum == nil {
					sum = []wire.Mailbox{}
				}
			}
			a.session(ctx, p, work[p], sum)
		}()
	}
	wg.Wait()
}

// reconcilePeers returns the peers this relay reconciles mb with, given its
// view v of mb's replica set: none unless it replicates mb itself (a
// current or recent replica); else the other replicas of v and those seen
// within ReplicaGrace that v lost (a partition, a restart), which are the
// ones a split replica set heals with.
func (n *Node) reconcilePeers(mb wire.Mailbox, v *replicaView) []peer.ID {
	if !v.few && !v.isReplica(n.id) && !n.placer.recent(mb, n.id) {
		return nil
	}
	others := v.others(n.id)
	for _, p := range n.placer.recentReplicas(mb) {
		if p != n.id && !slices.Contains(others, p) {
			others = append(others, p)
		}
	}
	return others
}

// replicates says whether this relay replicates mb in its cached view (a
// current or recent replica).
func (n *Node) replicates(mb wire.Mailbox) bool {
	v := n.placer.cached(mb)
	return v.few || v.isReplica(n.id) || n.placer.recent(mb, n.id)
}

// sharedWith returns the mailboxes a summary exchange with p covers: those
// this relay holds anything of and reconciles with p in its cached views
// (SPEC.md §10.10).
func (n *Node) sharedWith(p peer.ID) []wire.Mailbox {
	var out []wire.Mailbox
	for info := range n.store.Mailboxes() {
		if info.Entries+info.Tombstones == 0 {
			continue
		}
		if slices.Contains(n.reconcilePeers(info.Mailbox, n.placer.cached(info.Mailbox)), p) {
			out = append(out, info.Mailbox)
		}
	}
	return out
}

// redial connects to the bootstrap peers the relay is not connected to
// while its routing table holds fewer than R−1 relays: after a partition
// emptied the table, nothing else would bring the relays together again
// before the DHT's own (slow) recovery.
func (a *antiEntropy) redial() {
	n := a.n
	if len(n.cfg.BootstrapPeers) == 0 || n.dht.RoutingTable().Size() >= n.cfg.ReplicationFactor-1 {
		return
	}
	var wg sync.WaitGroup
	for _, ai := range n.cfg.BootstrapPeers {
		if ai.ID == n.id || n.host.Network().Connectedness(ai.ID) == network.Connected {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(n.drainCtx, 5*time.Second)
			defer cancel()
			_ = n.host.Connect(ctx, ai)
		}()
	}
	wg.Wait()
}

// session reconciles with p — first a summary exchange over shared, if it
// is not nil, then mbs and the mailboxes the summary found differing — and
// marks what did not complete for the next pass.
func (a *antiEntropy) session(ctx context.Context, p peer.ID, mbs, shared []wire.Mailbox) {
	n := a.n
	start := time.Now()
	mbs, results, rs, err := n.reconcileWith(ctx, p, mbs, shared)
	if rs != nil {
		n.m.reconcileBytes.WithLabelValues("sent").Add(float64(rs.BytesSent()))
		n.m.reconcileBytes.WithLabelValues("received").Add(float64(rs.BytesReceived()))
	}
	done, recv, sent := 0, 0, 0
	for i, r := range results {
		recv += r.received
		sent += r.sent
		switch {
		case r.done:
			done++
		case r.refused != nil:
			// The peer does not see itself (or us) as a replica: views
			// differ for now; the periodic pass tries again.
		default:
			a.markDirty(p, mbs[i])
		}
	}
	if err != nil && ctx.Err() == nil {
		n.log.Debug("reconcile failed", "peer", p.ShortString(), "mailboxes", len(mbs), "done", done, "err", err)
		return
	}
	if recv+sent > 0 {
		n.log.Debug("reconciled", "peer", p.ShortString(), "mailboxes", len(mbs), "received", recv, "sent", sent,
			"took", time.Since(start).Round(time.Millisecond))
	}
}

// caughtUp marks a mailbox that needs no catching up.
func (a *antiEntropy) caughtUp(mb wire.Mailbox) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending != nil && a.pending[mb] {
		delete(a.pending, mb)
		if len(a.pending) == 0 {
			a.synced.Store(true)
		}
	}
}

// watchPeers follows the host's events: a relay identified (a new or
// renewed connection) and a relay disconnected are churn for the placer;
// an identified relay is also due for reconciliation.
func (n *Node) watchPeers(sub event.Subscription) {
	defer n.bg.Done()
	defer sub.Close()
	for {
		select {
		case <-n.drainCtx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtPeerIdentificationCompleted:
				if isRelay(ev.Protocols) {
					n.placer.churn()
					n.ae.peerJoined(ev.Peer)
				}
			case event.EvtPeerConnectednessChanged:
				if ev.Connectedness != network.Connected && n.dht.RoutingTable().Find(ev.Peer) != "" {
					n.placer.churn()
				}
			}
		}
	}
}

// onRoutingTable is called by the routing table (under its lock) when a
// peer enters or leaves it.
func (n *Node) onRoutingTable(p peer.ID, added bool) {
	n.placer.churn()
	if added {
		n.ae.peerJoined(p)
	} else {
		n.ae.peerLeft()
	}
}

func isRelay(protos []protocol.ID) bool {
	for _, p := range protos {
		if p == wire.ProtocolReplicate {
			return true
		}
	}
	return false
}

// ReplicaSet returns the replica set of mailbox in this relay's view (SPEC.md
// §14), closest first, looking it up in the DHT unless a cached view may be
// used.
func (n *Node) ReplicaSet(ctx context.Context, mailbox wire.Mailbox) ([]peer.ID, error) {
	if n.placer == nil {
		return nil, ErrNotRunning
	}
	v := n.placer.get(ctx, mailbox)
	return append([]peer.ID(nil), v.replicas()...), nil
}

// LookupReplicaSet looks the replica set of mailbox up in the DHT now,
// without the cache, and returns it closest first.
func (n *Node) LookupReplicaSet(ctx context.Context, mailbox wire.Mailbox) ([]peer.ID, error) {
	if n.placer == nil {
		return nil, ErrNotRunning
	}
	v := n.placer.lookup(ctx, mailbox)
	if !v.lookedUp {
		return append([]peer.ID(nil), v.replicas()...), fmt.Errorf("relay: lookup found no peer; routing table estimate")
	}
	return append([]peer.ID(nil), v.replicas()...), nil
}
