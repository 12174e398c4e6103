package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Limits of the replicate protocol (SPEC.md §10.9), defined in package wire
// with the other protocol limits.
const (
	MaxReplicateInflight   = wire.MaxReplicateInflight
	MaxReplicateTombstones = wire.MaxReplicateTombstones
)

// ReplicateBatch is the content of one ReplicateRequest: at most
// wire.MaxReplicateBatch entries (each an envelope with its origin stamp)
// and MaxReplicateTombstones tombstones, encoded in at most MaxEntryFrame
// bytes.
type ReplicateBatch struct {
	Entries    []*pb.Entry
	Tombstones []*pb.Tombstone
}

// Len is the number of items: entries plus tombstones.
func (b *ReplicateBatch) Len() int { return len(b.Entries) + len(b.Tombstones) }

// ReplicateCall is one request in flight on a ReplicateStream: a future of
// its answer.
type ReplicateCall struct {
	// ID is the request id on the stream.
	ID uint64
	// Batch is what was sent.
	Batch ReplicateBatch

	done     chan struct{}
	statuses []pb.Status
	err      error
}

// Done is closed when the answer (or a failure) is in.
func (c *ReplicateCall) Done() <-chan struct{} { return c.done }

// Result returns the receiver's statuses, one per entry followed by one per
// tombstone, in the batch's order; call it after Done is closed. A request
// the receiver refused as a whole (its status is not OK) gives an *Error.
func (c *ReplicateCall) Result() ([]pb.Status, error) { return c.statuses, c.err }

// ReplicateStream is a long-lived, pipelined replicate stream from one relay
// to another (SPEC.md §10.9): up to MaxReplicateInflight requests may wait
// for their answers, which arrive in request order. It is safe for
// concurrent use. A stream that fails fails every request in flight; the
// caller opens a new one (replication is idempotent: a known CID is a no-op
// for the receiver). Close or Reset must be called to release it.
type ReplicateStream struct {
	c     *Client
	relay peer.ID
	s     network.Stream
	f     *Framed
	slots chan struct{}

	mu      sync.Mutex
	pending []*ReplicateCall
	err     error
	closing bool
	nextID  uint64
	queue   chan *pb.ReplicateRequest

	readerDone chan struct{}
	writerDone chan struct{}
}

// OpenReplicate opens a replicate stream to relay.
func (c *Client) OpenReplicate(ctx context.Context, relay peer.ID) (*ReplicateStream, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, err := c.Host.NewStream(ctx, relay, wire.ProtocolReplicate)
	if err != nil {
		return nil, fmt.Errorf("replicate: open stream: %w", err)
	}
	r := &ReplicateStream{
		c:          c,
		relay:      relay,
		s:          s,
		f:          NewFramedBuffer(s, MaxControlFrame, LargeWriteBuffer),
		slots:      make(chan struct{}, MaxReplicateInflight),
		queue:      make(chan *pb.ReplicateRequest, MaxReplicateInflight),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		nextID:     1,
	}
	go r.writer()
	go r.reader()
	return r, nil
}

// Relay returns the peer the stream replicates to.
func (r *ReplicateStream) Relay() peer.ID { return r.relay }

// Err returns the error that ended the stream, or nil while it works.
func (r *ReplicateStream) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Send queues one batch and returns its future. It blocks while
// MaxReplicateInflight requests wait for answers. A batch above the
// protocol's limits fails with an error wrapping wire.ErrMalformed and is
// not sent. The batch must not be modified until the call is done.
func (r *ReplicateStream) Send(ctx context.Context, batch ReplicateBatch) (*ReplicateCall, error) {
	if len(batch.Entries) > wire.MaxReplicateBatch || len(batch.Tombstones) > MaxReplicateTombstones || batch.Len() == 0 {
		return nil, fmt.Errorf("replicate: batch of %d entries and %d tombstones: %w", len(batch.Entries), len(batch.Tombstones), wire.ErrMalformed)
	}
	req := &pb.ReplicateRequest{Entries: batch.Entries, Tombstones: batch.Tombstones}
	if n := proto.Size(req) + 16; n > MaxEntryFrame {
		return nil, fmt.Errorf("replicate: batch of %d bytes: %w", n, wire.ErrMalformed)
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("replicate: %w", ctx.Err())
	case <-r.readerDone:
		return nil, r.failure()
	}
	call := &ReplicateCall{Batch: batch, done: make(chan struct{})}
	r.mu.Lock()
	if r.err != nil || r.closing {
		err := r.err
		r.mu.Unlock()
		<-r.slots
		if err == nil {
			err = fmt.Errorf("replicate: %w", ErrClosed)
		}
		return nil, err
	}
	call.ID = r.nextID
	r.nextID++
	req.Id = call.ID
	if len(r.pending) == 0 {
		_ = r.s.SetReadDeadline(time.Now().Add(r.c.timeout()))
	}
	r.pending = append(r.pending, call)
	r.queue <- req // never blocks: at most as many requests as slots
	r.mu.Unlock()
	return call, nil
}

func (r *ReplicateStream) failure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	return fmt.Errorf("replicate: %w", ErrClosed)
}

// writer writes queued requests, flushing when the queue runs dry.
func (r *ReplicateStream) writer() {
	defer close(r.writerDone)
	timeout := r.c.timeout()
	for {
		req, ok := <-r.queue
		if !ok {
			_ = r.s.CloseWrite()
			return
		}
		err := r.f.Buffer(req)
		closed := false
	drain:
		for err == nil {
			select {
			case more, ok := <-r.queue:
				if !ok {
					closed = true
					break drain
				}
				err = r.f.Buffer(more)
			default:
				break drain
			}
		}
		if err == nil {
			err = r.f.Flush(timeout)
		}
		if err != nil {
			r.fail(fmt.Errorf("replicate: write: %w", err))
			_ = r.s.Reset()
			if !closed {
				for range r.queue { // until Close or Reset closes it
				}
			}
			return
		}
		if closed {
			_ = r.s.CloseWrite()
			return
		}
	}
}

// reader matches answers to pending requests in order.
func (r *ReplicateStream) reader() {
	defer close(r.readerDone)
	for {
		var resp pb.ReplicateResponse
		if err := r.f.Read(&resp, 0); err != nil {
			r.mu.Lock()
			n := len(r.pending)
			closing := r.closing
			r.mu.Unlock()
			switch {
			case errors.Is(err, ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed):
				err = protocolErr("replicate", "answer: %v", err)
			case n == 0 && closing:
				err = fmt.Errorf("replicate: %w", ErrClosed)
			default:
				err = fmt.Errorf("replicate: stream ended with %d in flight: %v: %w", n, err, ErrClosed)
			}
			r.fail(err)
			return
		}
		r.mu.Lock()
		if len(r.pending) == 0 {
			r.mu.Unlock()
			r.fail(protocolErr("replicate", "answer id %d with nothing in flight", resp.Id))
			_ = r.s.Reset()
			return
		}
		call := r.pending[0]
		r.pending[0] = nil
		r.pending = r.pending[1:]
		if len(r.pending) > 0 {
			_ = r.s.SetReadDeadline(time.Now().Add(r.c.timeout()))
		} else {
			_ = r.s.SetReadDeadline(time.Time{})
		}
		r.mu.Unlock()
		if resp.Id != call.ID && (resp.Id != 0 || resp.Status == pb.Status_STATUS_OK) {
			r.complete(call, nil, protocolErr("replicate", "answer id %d for request %d", resp.Id, call.ID))
			r.fail(protocolErr("replicate", "answers out of order"))
			_ = r.s.Reset()
			return
		}
		if resp.Status != pb.Status_STATUS_OK {
			// A refusal of the whole request; a receiver that cannot
			// parse a frame answers id 0 and ends the stream.
			r.complete(call, nil, newError("replicate", r.relay, resp.Status, resp.Detail, 0))
			continue
		}
		if len(resp.Statuses) != call.Batch.Len() {
			r.complete(call, nil, protocolErr("replicate", "%d statuses for %d items", len(resp.Statuses), call.Batch.Len()))
			r.fail(protocolErr("replicate", "answer does not match its request"))
			_ = r.s.Reset()
			return
		}
		r.complete(call, resp.Statuses, nil)
	}
}

func (r *ReplicateStream) complete(call *ReplicateCall, statuses []pb.Status, err error) {
	call.statuses, call.err = statuses, err
	close(call.done)
	<-r.slots
}

// fail records the stream's error and fails every pending request.
func (r *ReplicateStream) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	pending := r.pending
	r.pending = nil
	r.mu.Unlock()
	for _, call := range pending {
		r.complete(call, nil, err)
	}
}

// Close stops sending, waits (at most the client's timeout) for the answers
// in flight, and closes the stream.
func (r *ReplicateStream) Close() error {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		<-r.readerDone
		return nil
	}
	r.closing = true
	close(r.queue)
	r.mu.Unlock()
	<-r.writerDone
	timer := time.NewTimer(r.c.timeout())
	defer timer.Stop()
	select {
	case <-r.readerDone:
	case <-timer.C:
		_ = r.s.Reset()
		<-r.readerDone
	}
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	_ = r.s.Close()
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Reset aborts the stream; requests in flight fail with ErrClosed.
func (r *ReplicateStream) Reset() {
	_ = r.s.Reset()
	r.mu.Lock()
	if !r.closing {
		r.closing = true
		close(r.queue)
	}
	r.mu.Unlock()
	<-r.writerDone
	<-r.readerDone
}
