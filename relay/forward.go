package relay

import (
	"context"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Forwarding (SPEC.md §10.9): the origin of an entry sends it, with its
// stamp, to the other replicas of its mailbox, and the relay that took an
// ack sends its tombstones. Each destination peer has a bounded queue and
// one goroutine that owns a long-lived, pipelined /cairn/replicate stream
// (rpc.ReplicateStream): it takes up to MaxReplicateBatch entries from the
// queue per request and keeps up to rpc.MaxReplicateInflight requests in
// flight. Nothing on the deposit path waits for a peer: the store's commit
// hook only appends to queues. A full queue drops what does not fit, a
// request that fails twice is dropped, and a peer that cannot be reached
// is backed off; each drop marks (mailbox, peer) for anti-entropy, which
// reconciles the pair as soon as the peer answers again.

// fwdItem is one entry or tombstone to forward.
type fwdItem struct {
	mb    wire.Mailbox
	cid   wire.CID
	entry *pb.Entry // shared by every destination; never modified
	tomb  *pb.Tombstone
	size  int
	tries int
}

type replicator struct {
	n *Node

	mu     sync.Mutex
	closed bool
	peers  map[peer.ID]*peerQueue
	wg     sync.WaitGroup

	quorum *quorumTracker
}

// peerQueue is the forwarding queue of one destination.
type peerQueue struct {
	r  *replicator
	id peer.ID

	mu        sync.Mutex
	items     []fwdItem
	bytes     int
	running   bool
	failures  int
	downUntil time.Time
	wake      chan struct{}
}

func newReplicator(n *Node) *replicator {
	return &replicator{n: n, peers: make(map[peer.ID]*peerQueue), quorum: newQuorumTracker()}
}

// stored is the commit hook's part: forward an entry this relay is the
// origin of to the other replicas (in the placer's cached view: no
// waiting), and register its quorum wait.
func (r *replicator) stored(e store.StoredEntry) {
	if e.Stamp.Origin != r.n.id {
		return // imported: its origin forwards it
	}
	mb := e.Stamp.Mailbox
	v := r.n.placer.cached(mb)
	targets := v.others(r.n.id)
	if r.n.cfg.ReceiptQuorum > 1 {
		need := min(r.n.cfg.ReceiptQuorum, len(targets)+1) - 1
		r.quorum.expect(e.Stamp.CID, need)
	}
	if len(targets) == 0 {
		return
	}
	stamp, err := e.Stamp.Marshal()
	if err != nil {
		r.n.log.Error("stored entry's stamp does not encode", "err", err)
		return
	}
	it := fwdItem{mb: mb, cid: e.Stamp.CID, entry: &pb.Entry{Envelope: e.Envelope, Stamp: stamp}, size: len(e.Envelope) + len(stamp) + 8}
	for _, p := range targets {
		r.enqueue(p, it)
	}
}

// tombstoned forwards the tombstones an ack left here to the other
// replicas of their mailboxes.
func (r *replicator) tombstoned(ts []store.Tombstone) {
	for _, t := range ts {
		v := r.n.placer.cached(t.Mailbox)
		it := fwdItem{mb: t.Mailbox, cid: t.CID, tomb: tombstoneToPB(t), size: 128 + len(t.OwnerAck) + len(t.Stamp)}
		for _, p := range v.others(r.n.id) {
			r.enqueue(p, it)
		}
	}
}

func tombstoneToPB(t store.Tombstone) *pb.Tombstone {
	return &pb.Tombstone{Mailbox: t.Mailbox[:], Cid: t.CID[:], Origin: []byte(t.Origin), Seq: t.Seq, Expiry: t.Expiry, OwnerAck: t.OwnerAck, Stamp: t.Stamp}
}

func (r *replicator) queue(p peer.ID) *peerQueue {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := r.peers[p]
	if q == nil {
		q = &peerQueue{r: r, id: p, wake: make(chan struct{}, 1)}
		r.peers[p] = q
	}
	return q
}

// enqueue adds it to p's queue without blocking; what does not fit is
// dropped and left to anti-entropy.
func (r *replicator) enqueue(p peer.ID, it fwdItem) {
	q := r.queue(p)
	q.mu.Lock()
	if len(q.items) >= r.n.cfg.ReplicateQueue || q.bytes+it.size > r.n.cfg.ReplicateQueueBytes || time.Now().Before(q.downUntil) {
		q.mu.Unlock()
		r.dropped(p, it)
		return
	}
	q.items = append(q.items, it)
	q.bytes += it.size
	start := !q.running
	if start {
		r.mu.Lock()
		if r.closed {
			start = false
		} else {
			q.running = true
			r.wg.Add(1)
		}
		r.mu.Unlock()
	}
	q.mu.Unlock()
	if start {
		go q.run()
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// dropped counts an item that will not be forwarded and marks its mailbox
// for anti-entropy with p.
func (r *replicator) dropped(p peer.ID, it fwdItem) {
	r.n.m.replicateDropped.Inc()
	r.n.ae.markDirty(p, it.mb)
}

// close stops the queues' goroutines (the node's context has ended) and
// waits for them.
func (r *replicator) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}

// forwardIdle is how long a queue's goroutine keeps its stream open
// without work.
const forwardIdle = 30 * time.Second

// maxForwardBytes bounds the entry bytes of one replicate request.
const maxForwardBytes = 1 << 20

// take removes the next request's worth of items from the queue. The
// items are returned in the order of the request's statuses: entries, then
// tombstones.
func (q *peerQueue) take() (rpc.ReplicateBatch, []fwdItem) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var b rpc.ReplicateBatch
	var entries, tombs []fwdItem
	size, n := 0, 0
	for _, it := range q.items {
		if it.entry != nil && len(b.Entries) >= wire.MaxReplicateBatch ||
			it.tomb != nil && len(b.Tombstones) >= rpc.MaxReplicateTombstones ||
			n > 0 && size+it.size > maxForwardBytes {
			break
		}
		if it.entry != nil {
			b.Entries = append(b.Entries, it.entry)
			entries = append(entries, it)
		} else {
			b.Tombstones = append(b.Tombstones, it.tomb)
			tombs = append(tombs, it)
		}
		size += it.size
		n++
	}
	clear(q.items[:n])
	q.items = q.items[n:]
	q.bytes -= size
	if len(q.items) == 0 {
		q.items = nil
	}
	return b, append(entries, tombs...)
}

// sent is one request in flight with the items it carries.
type sent struct {
	call  *rpc.ReplicateCall
	items []fwdItem
}

// run forwards the queue until it has been idle for forwardIdle or the
// node closes.
func (q *peerQueue) run() {
	r := q.r
	n := r.n
	defer r.wg.Done()
	var s *rpc.ReplicateStream
	var inflight []sent
	idle := time.NewTimer(forwardIdle)
	defer idle.Stop()
	closeStream := func() {
		if s != nil {
			s.Reset()
			s = nil
		}
	}
	defer func() {
		closeStream()
		for _, x := range inflight {
			for _, it := range x.items {
				r.dropped(q.id, it)
			}
		}
	}()
	// requeue puts the items of a failed request back in front once, and
	// drops those already retried.
	requeue := func(items []fwdItem) {
		var again []fwdItem
		for _, it := range items {
			if it.tries >= 1 {
				r.dropped(q.id, it)
				continue
			}
			it.tries++
			again = append(again, it)
		}
		q.mu.Lock()
		q.items = append(again, q.items...)
		for _, it := range again {
			q.bytes += it.size
		}
		q.mu.Unlock()
	}
	for {
		// Send while the window has room and the queue has items.
		for len(inflight) < rpc.MaxReplicateInflight {
			q.mu.Lock()
			empty := len(q.items) == 0
			q.mu.Unlock()
			if empty || n.drainCtx.Err() != nil {
				break
			}
			if s == nil {
				var err error
				s, err = n.rpc.OpenReplicate(n.drainCtx, q.id)
				if err != nil {
					q.unreachable(err)
					return
				}
			}
			b, items := q.take()
			call, err := s.Send(n.drainCtx, b)
			if err != nil {
				closeStream()
				requeue(items)
				break
			}
			inflight = append(inflight, sent{call: call, items: items})
		}
		var oldest <-chan struct{}
		if len(inflight) > 0 {
			oldest = inflight[0].call.Done()
		}
		select {
		case <-oldest:
			x := inflight[0]
			inflight = inflight[1:]
			statuses, err := x.call.Result()
			if err != nil {
				// The stream failed (every request in flight fails with
				// it) or the request was refused as a whole.
				closeStream()
				requeue(x.items)
				continue
			}
			q.mu.Lock()
			q.failures = 0
			q.mu.Unlock()
			for i, st := range statuses {
				it := x.items[i]
				if st == pb.Status_STATUS_OK {
					if it.entry != nil {
						r.quorum.ack(it.cid)
						n.m.replicated.WithLabelValues("sent").Inc()
					}
					continue
				}
				n.m.replicated.WithLabelValues("refused_" + statusName(st)).Inc()
				n.ae.markDirty(q.id, it.mb)
			}
			if !idle.Stop() {
				select {
				case <-idle.C:
				default:
				}
			}
			idle.Reset(forwardIdle)
		case <-q.wake:
		case <-idle.C:
			q.mu.Lock()
			if len(q.items) == 0 && len(inflight) == 0 {
				q.running = false
				q.mu.Unlock()
				return
			}
			q.mu.Unlock()
			idle.Reset(forwardIdle)
		case <-n.drainCtx.Done():
			q.mu.Lock()
			left := q.items
			q.items, q.bytes, q.running = nil, 0, false
			q.mu.Unlock()
			for _, it := range left {
				r.dropped(q.id, it)
			}
			return
		}
	}
}

// unreachable handles a failure to open a stream: the queue is dropped
// (anti-entropy will reconcile its mailboxes with the peer) and the peer is
// backed off, so deposits do not queue for a dead replica.
func (q *peerQueue) unreachable(err error) {
	q.mu.Lock()
	left := q.items
	q.items, q.bytes, q.running = nil, 0, false
	q.failures++
	backoff := min(10*time.Second, 100*time.Millisecond<<min(q.failures-1, 7))
	q.downUntil = time.Now().Add(backoff)
	q.mu.Unlock()
	q.r.n.log.Debug("replica unreachable", "peer", q.id.ShortString(), "err", err, "backoff", backoff)
	for _, it := range left {
		q.r.dropped(q.id, it)
	}
}

// quorumTracker counts, for each new entry this relay is the origin of,
// how many other replicas acknowledged it, while its deposit waits
// (ReceiptQuorum > 1). The commit hook says how many acknowledgements the
// entry needs (expect); the deposit path waits (wait) and then forgets it.
// Either may come first.
type quorumTracker struct {
	mu sync.Mutex
	m  map[wire.CID]*quorumWait
}

type quorumWait struct {
	need    int // -1 until expect
	got     int
	done    chan struct{}
	created time.Time
}

func newQuorumTracker() *quorumTracker { return &quorumTracker{m: make(map[wire.CID]*quorumWait)} }

func (t *quorumTracker) entry(c wire.CID) *quorumWait {
	w := t.m[c]
	if w == nil {
		w = &quorumWait{need: -1, done: make(chan struct{}), created: time.Now()}
		t.m[c] = w
	}
	return w
}

func (w *quorumWait) check() {
	if w.need >= 0 && w.got >= w.need {
		select {
		case <-w.done:
		default:
			close(w.done)
		}
	}
}

// expect records that c needs need acknowledgements.
func (t *quorumTracker) expect(c wire.CID, need int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.entry(c)
	w.need = need
	w.check()
}

// ack counts one replica's acknowledgement of c, if a deposit may wait
// for it.
func (t *quorumTracker) ack(c wire.CID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w := t.m[c]; w != nil {
		w.got++
		w.check()
	}
}

// wait waits until the entries cids reach their quorum or deadline passes,
// then forgets them and returns how many replicas (this relay included)
// held each.
func (t *quorumTracker) wait(ctx context.Context, cids []wire.CID, deadline time.Time) []int {
	t.mu.Lock()
	ws := make([]*quorumWait, len(cids))
	for i, c := range cids {
		ws[i] = t.entry(c)
	}
	t.mu.Unlock()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	expired := false
	for _, w := range ws {
		if expired {
			break
		}
		select {
		case <-w.done:
		case <-timer.C:
			expired = true
		case <-ctx.Done():
			expired = true
		}
	}
	out := make([]int, len(cids))
	t.mu.Lock()
	for i, c := range cids {
		out[i] = 1 + ws[i].got
		delete(t.m, c)
	}
	t.mu.Unlock()
	return out
}

// sweep forgets waits older than age (deposits that never came for them).
func (t *quorumTracker) sweep(age time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c, w := range t.m {
		if time.Since(w.created) > age {
			delete(t.m, c)
		}
	}
}
