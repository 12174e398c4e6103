package relay

import (
	"errors"
	"sync"
	"time"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// subscribe — /cairn/subscribe/1.0.0 (SPEC.md §10.5): one Authenticated
// SubscribeRequest (op 2), then SubscribeEvent frames: {status OK} first,
// then one per entry stored for the mailbox after the subscription started,
// and a keepalive after every KeepaliveInterval without a write.
//
// Fan-out: the store calls onStored from its commit goroutine for every
// durable entry; the hub encodes the event frame once and appends it to the
// bounded queue of each subscriber of that mailbox, never blocking. Each
// subscriber's own goroutine writes its queue. A subscriber whose queue is
// full (SubscriberQueue entries or SubscriberQueueBytes) is removed from the
// hub at once, sent SLOW_CONSUMER (best effort) and closed; the others are
// not affected.

// hub holds the live subscriptions, by mailbox.
type hub struct {
	n        *Node
	maxPerMB int

	mu   sync.RWMutex
	subs map[wire.Mailbox][]*subscriber
}

func newHub(n *Node) *hub {
	return &hub{n: n, maxPerMB: n.cfg.MaxSubscribersPerMailbox, subs: make(map[wire.Mailbox][]*subscriber)}
}

// push is one queued event frame.
type push struct {
	frame    []byte
	storedAt time.Time
}

// subscriber is one live subscription.
type subscriber struct {
	mailbox  wire.Mailbox
	maxN     int
	maxBytes int

	mu    sync.Mutex
	queue []push
	bytes int
	slow  bool
	wake  chan struct{} // capacity 1
}

// add registers sub; false if the mailbox has MaxSubscribersPerMailbox.
func (h *hub) add(sub *subscriber) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.subs[sub.mailbox]
	if len(list) >= h.maxPerMB {
		return false
	}
	// Copy on write: publish iterates a snapshot without the lock.
	next := make([]*subscriber, len(list), len(list)+1)
	copy(next, list)
	h.subs[sub.mailbox] = append(next, sub)
	return true
}

// remove unregisters sub (idempotent).
func (h *hub) remove(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := h.subs[sub.mailbox]
	for i, s := range list {
		if s == sub {
			next := make([]*subscriber, 0, len(list)-1)
			next = append(next, list[:i]...)
			next = append(next, list[i+1:]...)
			if len(next) == 0 {
				delete(h.subs, sub.mailbox)
			} else {
				h.subs[sub.mailbox] = next
			}
			return
		}
	}
}

func (h *hub) count(mb wire.Mailbox) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.subs[mb])
}

// publish queues an entry for every subscriber of its mailbox. It never
// blocks: it is called from the store's commit goroutine.
func (h *hub) publish(e store.StoredEntry, storedAt time.Time) {
	h.mu.RLock()
	list := h.subs[e.Stamp.Mailbox]
	h.mu.RUnlock()
	if len(list) == 0 {
		return
	}
	stamp, err := e.Stamp.Marshal()
	if err != nil {
		h.n.log.Error("stored entry's stamp does not encode", "err", err)
		return
	}
	frame, err := rpc.AppendFrame(nil, &pb.SubscribeEvent{
		Status: pb.Status_STATUS_OK,
		Entry:  &pb.Entry{Envelope: e.Envelope, Stamp: stamp},
	})
	if err != nil {
		h.n.log.Error("push does not encode", "err", err)
		return
	}
	for _, sub := range list {
		if ok, cut := sub.enqueue(push{frame: frame, storedAt: storedAt}); !ok {
			h.remove(sub)
			if cut {
				h.n.m.slowConsumers.Inc()
			}
		}
	}
}

// enqueue adds p to the queue; ok is false if the subscriber is slow, and
// cut is true if this push made it so.
func (sub *subscriber) enqueue(p push) (ok, cut bool) {
	sub.mu.Lock()
	ok = !sub.slow
	if ok {
		if len(sub.queue) >= sub.maxN || sub.bytes+len(p.frame) > sub.maxBytes {
			sub.slow = true
			sub.queue = nil
			sub.bytes = 0
			ok, cut = false, true
		} else {
			sub.queue = append(sub.queue, p)
			sub.bytes += len(p.frame)
		}
	}
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default:
	}
	return ok, cut
}

// take empties the queue.
func (sub *subscriber) take(into []push) ([]push, bool) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	into = append(into[:0], sub.queue...)
	clear(sub.queue)
	sub.queue = sub.queue[:0]
	sub.bytes = 0
	return into, sub.slow
}

// onStored is the store's OnStored hook: live pushes and replication.
func (n *Node) onStored(e store.StoredEntry) {
	n.hub.publish(e, time.Now())
	if n.placer != nil {
		n.repl.stored(e)
	}
	if n.cfg.Forwarder != nil {
		n.cfg.Forwarder.Stored(e)
	}
}

func (n *Node) serveSubscribe(in *inbound) {
	if !n.admitRequest(in, replySubscribe) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var a pb.Authenticated
	if !n.readRequest(in, f, &a, replySubscribe) {
		return
	}
	var req pb.SubscribeRequest
	mb, err := authenticate(n.id, wire.AuthSubscribe, &a, &req, n.now(), n.replay)
	if err != nil {
		n.answerErr(in, f, replySubscribe, err)
		return
	}
	sub := &subscriber{
		mailbox:  mb,
		maxN:     n.cfg.SubscriberQueue,
		maxBytes: n.cfg.SubscriberQueueBytes,
		wake:     make(chan struct{}, 1),
	}
	if !n.hub.add(sub) {
		n.answer(in, f, replySubscribe(pb.Status_STATUS_BUSY, "too many subscribers for this mailbox", 0), pb.Status_STATUS_BUSY)
		return
	}
	defer n.hub.remove(sub)
	n.m.subscribers.Inc()
	defer n.m.subscribers.Dec()
	// Keep the connection through the connection manager's trims while
	// the peer has a subscription.
	const tag = "cairn-subscribe"
	if n.adm.addSub(in.ps) {
		n.host.ConnManager().Protect(in.peer, tag)
	}
	defer func() {
		if n.adm.dropSub(in.ps) {
			n.host.ConnManager().Unprotect(in.peer, tag)
		}
	}()

	if err := f.Write(&pb.SubscribeEvent{Status: pb.Status_STATUS_OK}, n.cfg.WriteTimeout); err != nil {
		_ = in.s.Reset()
		return
	}
	// The client sends nothing after its request; a frame or the end of
	// the stream ends the subscription.
	peerDone := make(chan error, 1)
	go func() {
		// Only this goroutine reads from now on; the handler only writes.
		var extra pb.SubscribeRequest
		peerDone <- f.Read(&extra, 0)
	}()
	n.pushLoop(in, f, sub, peerDone)
	<-peerDone
	closeStream(in.s)
}

// shutdownLinger bounds how long a closing relay waits for a subscriber to
// close its side after the SHUTTING_DOWN status.
const shutdownLinger = 2 * time.Second

// pushLoop writes the subscriber's queue until the subscription ends.
func (n *Node) pushLoop(in *inbound, f *rpc.Framed, sub *subscriber, peerDone chan error) {
	keepalive := time.NewTimer(n.cfg.KeepaliveInterval)
	defer keepalive.Stop()
	ka := &pb.SubscribeEvent{Status: pb.Status_STATUS_OK, KeepaliveMs: uint64(n.cfg.KeepaliveInterval / time.Millisecond)}
	var batch []push
	end := func(st pb.Status, detail string) {
		n.hub.remove(sub)
		n.m.reject("subscribe", st)
		// Best effort, with a short deadline: the peer may be the
		// reason for the end.
		if err := f.Write(replySubscribe(st, detail, 0), time.Second); err != nil {
			_ = in.s.Reset()
			return
		}
		closeStream(in.s)
	}
	for {
		select {
		case <-sub.wake:
			var slow bool
			batch, slow = sub.take(batch)
			if slow {
				in.log.Debug("slow subscriber dropped")
				end(pb.Status_STATUS_SLOW_CONSUMER, "subscriber queue full")
				return
			}
			if len(batch) == 0 {
				continue
			}
			var err error
			for i := range batch {
				// WriteTimeout bounds each push, not the whole batch.
				f.SetWriteTimeout(n.cfg.WriteTimeout)
				if err = f.BufferRaw(batch[i].frame); err != nil {
					break
				}
			}
			if err == nil {
				err = f.Flush(n.cfg.WriteTimeout)
			}
			if err != nil {
				in.log.Debug("push write failed", "err", err)
				_ = in.s.Reset()
				return
			}
			now := time.Now()
			for i := range batch {
				n.m.pushLat.Observe(now.Sub(batch[i].storedAt).Seconds())
				batch[i] = push{}
			}
			n.m.pushes.Add(float64(len(batch)))
			keepalive.Reset(n.cfg.KeepaliveInterval)
		case <-keepalive.C:
			if err := f.Write(ka, n.cfg.WriteTimeout); err != nil {
				_ = in.s.Reset()
				return
			}
			keepalive.Reset(n.cfg.KeepaliveInterval)
		case err := <-peerDone:
			peerDone <- err // for the caller
			if err == nil {
				// A frame after the request is not part of the protocol.
				end(pb.Status_STATUS_MALFORMED, "unexpected frame")
				return
			}
			if errors.Is(err, rpc.ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed) {
				_ = in.s.Reset()
				return
			}
			// The subscriber closed its side or went away.
			closeStream(in.s)
			return
		case <-n.drainCtx.Done():
			// The relay is closing: say so, half-close, and let the
			// subscriber read the status and close its side (serveSubscribe
			// waits for that, at most shutdownLinger) before the host
			// closes the connection, which would reset it (with unread
			// data, e.g. deposits, a TCP close is a reset) and lose the
			// status on the way.
			n.hub.remove(sub)
			n.m.reject("subscribe", pb.Status_STATUS_SHUTTING_DOWN)
			if err := f.Write(replySubscribe(pb.Status_STATUS_SHUTTING_DOWN, "relay is closing", 0), time.Second); err != nil {
				_ = in.s.Reset()
				return
			}
			_ = in.s.CloseWrite()
			_ = in.s.SetReadDeadline(time.Now().Add(shutdownLinger))
			return
		}
	}
}
