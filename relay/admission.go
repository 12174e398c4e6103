package relay

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// admission holds per-peer admission state: the deposit and request token
// buckets (SPEC.md §12 PeerDepositRate, PeerRequestRate) and the count of
// the peer's open cairn streams (MaxStreamsPerPeer). A peer's state lives
// while it has streams open and until its buckets are full again, so the
// table is bounded by the connections the resource manager admits.
type admission struct {
	depositRate, requestRate   rate.Limit
	depositBurst, requestBurst int
	maxStreams                 int

	mu    sync.Mutex
	peers map[peer.ID]*peerState
}

// peerState is one peer's admission state. The limiters lock themselves;
// streams is guarded by admission.mu.
type peerState struct {
	deposit *rate.Limiter
	request *rate.Limiter
	streams int
	subs    int // live subscriptions (the connection is protected while > 0)
}

func newAdmission(c *Config) *admission {
	return &admission{
		depositRate:  c.PeerDepositRate,
		depositBurst: c.PeerDepositBurst,
		requestRate:  c.PeerRequestRate,
		requestBurst: c.PeerRequestBurst,
		maxStreams:   c.MaxStreamsPerPeer,
		peers:        make(map[peer.ID]*peerState),
	}
}

// acquireStream counts a new inbound stream of p; it returns nil if p is at
// MaxStreamsPerPeer.
func (a *admission) acquireStream(p peer.ID) *peerState {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.peers[p]
	if ps == nil {
		ps = &peerState{
			deposit: rate.NewLimiter(a.depositRate, a.depositBurst),
			request: rate.NewLimiter(a.requestRate, a.requestBurst),
		}
		a.peers[p] = ps
	}
	if ps.streams >= a.maxStreams {
		return nil
	}
	ps.streams++
	return ps
}

func (a *admission) releaseStream(p peer.ID) {
	a.mu.Lock()
	if ps := a.peers[p]; ps != nil && ps.streams > 0 {
		ps.streams--
	}
	a.mu.Unlock()
}

// addSub counts a subscription of p and reports whether it is the first.
func (a *admission) addSub(ps *peerState) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps.subs++
	return ps.subs == 1
}

// dropSub uncounts a subscription and reports whether it was the last.
func (a *admission) dropSub(ps *peerState) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps.subs--
	return ps.subs == 0
}

// take takes one token from lim at now; if none is available it takes
// nothing and says how long until one is.
func take(lim *rate.Limiter, now time.Time) (ok bool, retryAfter time.Duration) {
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	d := r.DelayFrom(now)
	if d == 0 {
		return true, 0
	}
	r.CancelAt(now)
	return false, d
}

// sweep forgets peers without streams whose buckets are full: forgetting
// them loses nothing.
func (a *admission) sweep(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for p, ps := range a.peers {
		if ps.streams == 0 && ps.subs == 0 &&
			ps.deposit.TokensAt(now) >= float64(a.depositBurst) &&
			ps.request.TokensAt(now) >= float64(a.requestBurst) {
			delete(a.peers, p)
		}
	}
}

// size returns how many peers have state (for metrics and tests).
func (a *admission) size() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.peers)
}

// retryMs converts a delay to the wire's retry_after_ms, rounding up and
// saturating.
func retryMs(d time.Duration) uint32 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms < 1 {
		ms = 1
	}
	if ms > 1<<31 {
		ms = 1 << 31
	}
	return uint32(ms)
}
