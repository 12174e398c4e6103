package relay

import (
	"container/heap"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// replayCache remembers the (mailbox key, nonce) of every accepted auth
// proof until its time + AuthWindow has passed (SPEC.md §8). It holds at
// most max live entries; when full, a new proof is refused with BUSY rather
// than accepted unrecorded.
type replayCache struct {
	mu     sync.Mutex
	max    int
	seen   map[wire.ReplayKey]time.Time
	expiry replayHeap
}

type replayItem struct {
	key wire.ReplayKey
	at  time.Time
}

// replayHeap is a min-heap of entries by expiry.
type replayHeap []replayItem

func (h replayHeap) Len() int           { return len(h) }
func (h replayHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h replayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *replayHeap) Push(x any)        { *h = append(*h, x.(replayItem)) }
func (h *replayHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: make(map[wire.ReplayKey]time.Time)}
}

// record checks and records a proof's key. It returns wire.ErrAuthReplayed
// for a key it holds and wire.ErrBusy when full.
func (c *replayCache) record(k wire.ReplayKey, expires, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.expiry) > 0 && !c.expiry[0].at.After(now) {
		it := heap.Pop(&c.expiry).(replayItem)
		delete(c.seen, it.key)
	}
	if _, ok := c.seen[k]; ok {
		return fmt.Errorf("auth proof: %w", wire.ErrAuthReplayed)
	}
	if len(c.seen) >= c.max {
		return fmt.Errorf("auth replay cache full: %w", wire.ErrBusy)
	}
	c.seen[k] = expires
	heap.Push(&c.expiry, replayItem{key: k, at: expires})
	return nil
}

func (c *replayCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// mailboxOf is implemented by the request bodies that name a mailbox.
type mailboxOf interface {
	proto.Message
	GetMailbox() []byte
}

// authenticate runs SPEC.md §8 on an Authenticated request, cheap checks
// first: the proof parses; op, relay and time window (AUTH_STALE) hold; the
// body digest matches; only then is body parsed into req, its mailbox
// checked against the proof's key, the signature verified, and the replay
// cache consulted (AUTH_REPLAYED; BUSY when full). Nothing is recorded for a
// proof that fails. It returns the request's mailbox.
func authenticate(self peer.ID, op wire.AuthOp, a *pb.Authenticated, req mailboxOf, now time.Time, rc *replayCache) (wire.Mailbox, error) {
	p, err := authenticateProof(self, op, a, req, now, rc)
	if err != nil {
		return wire.Mailbox{}, err
	}
	return p.Mailbox(), nil
}

// authenticateProof is authenticate returning the verified proof.
func authenticateProof(self peer.ID, op wire.AuthOp, a *pb.Authenticated, req mailboxOf, now time.Time, rc *replayCache) (*wire.AuthProof, error) {
	p, err := wire.ParseAuthProof(a.GetProof())
	if err != nil {
		return nil, fmt.Errorf("auth proof: %v: %w", err, wire.ErrAuthFailed)
	}
	if p.Op != op {
		return nil, fmt.Errorf("auth proof: op %d for op %d: %w", p.Op, op, wire.ErrAuthFailed)
	}
	if p.Relay != self {
		return nil, fmt.Errorf("auth proof: addressed to another relay: %w", wire.ErrAuthFailed)
	}
	if d := now.Sub(time.UnixMilli(int64(p.TimeMs))); d > wire.AuthWindow || d < -wire.AuthWindow {
		return nil, fmt.Errorf("auth proof: time off by %v: %w", d.Round(time.Second), wire.ErrAuthStale)
	}
	if sha256.Sum256(a.GetBody()) != p.BodyDigest {
		return nil, fmt.Errorf("auth proof: body digest: %w", wire.ErrAuthFailed)
	}
	if err := proto.Unmarshal(a.GetBody(), req); err != nil {
		return nil, fmt.Errorf("request body: %v: %w", err, wire.ErrMalformed)
	}
	mb, err := wire.ParseMailbox(req.GetMailbox())
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	// Verify repeats the cheap checks (negligible) and adds the address
	// and the signature.
	if err := p.Verify(op, self, mb, a.GetBody(), now); err != nil {
		return nil, err
	}
	if err := rc.record(p.ReplayKey(), p.ReplayExpiry(), now); err != nil {
		return nil, err
	}
	return p, nil
}
