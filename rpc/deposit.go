package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// DepositResult is a relay's answer to an accepted deposit.
type DepositResult struct {
	// Receipt is the verified origin stamp of the stored entry. For a new
	// entry its origin is the relay. For a duplicate it is the stamp of
	// whichever relay first took the envelope: its signature proves only
	// that this origin stored the entry, so a caller relies on it only if
	// the origin is a replica of the mailbox (SPEC.md §17.3). It is nil
	// only for a duplicate of an entry the relay says it no longer holds
	// (acked or expired there; Client.Status tells which) — the relay's
	// word alone.
	Receipt *wire.SignedReceipt
	// Duplicate is true if the relay already knew the CID and stored
	// nothing.
	Duplicate bool
	// Replicas is how many replicas (the relay included) held the entry
	// when the relay answered.
	Replicas int
}

// DepositCall is one deposit in flight on a DepositStream: a future of its
// answer.
type DepositCall struct {
	// ID is the request id on the stream.
	ID uint64
	// CID is the envelope's content ID.
	CID wire.CID

	mailbox wire.Mailbox
	done    chan struct{}
	res     *DepositResult
	err     error
}

// Done is closed when the answer (or a failure) is in.
func (d *DepositCall) Done() <-chan struct{} { return d.done }

// Result returns the outcome; call it after Done is closed.
func (d *DepositCall) Result() (*DepositResult, error) { return d.res, d.err }

// Wait waits for the outcome or the end of ctx.
func (d *DepositCall) Wait(ctx context.Context) (*DepositResult, error) {
	select {
	case <-d.done:
		return d.res, d.err
	case <-ctx.Done():
		return nil, fmt.Errorf("deposit: %w", ctx.Err())
	}
}

// DepositStream is a long-lived, pipelined deposit stream to one relay
// (SPEC.md §10.3): up to wire.MaxDepositInflight deposits may wait for their
// answers, which arrive in request order. It is safe for concurrent use.
// A stream that fails fails every deposit in flight; the caller opens a new
// one and sends them again (a deposit is idempotent: the relay answers a
// known CID with Duplicate). Close (or Reset) must be called to release the
// stream and its two goroutines.
type DepositStream struct {
	c     *Client
	relay peer.ID
	s     network.Stream
	f     *Framed
	slots chan struct{}

	mu      sync.Mutex
	pending []*DepositCall // in request order
	err     error          // set once the stream failed or closed
	closing bool
	nextID  uint64
	queue   chan *pb.DepositRequest

	readerDone chan struct{}
	writerDone chan struct{}
}

// OpenDeposit opens a deposit stream to relay.
func (c *Client) OpenDeposit(ctx context.Context, relay peer.ID) (*DepositStream, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, err := c.Host.NewStream(ctx, relay, wire.ProtocolDeposit)
	if err != nil {
		return nil, fmt.Errorf("deposit: open stream: %w", err)
	}
	d := &DepositStream{
		c:          c,
		relay:      relay,
		s:          s,
		f:          NewFramedBuffer(s, MaxControlFrame, LargeWriteBuffer),
		slots:      make(chan struct{}, wire.MaxDepositInflight),
		queue:      make(chan *pb.DepositRequest, wire.MaxDepositInflight),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		nextID:     1,
	}
	go d.writer()
	go d.reader()
	return d, nil
}

// Relay returns the peer the stream deposits to.
func (d *DepositStream) Relay() peer.ID { return d.relay }

// Send queues one envelope (its exact bytes, SPEC.md §3) and returns its
// future. It blocks while wire.MaxDepositInflight deposits wait for answers.
// The envelope must not be modified until the call is done.
func (d *DepositStream) Send(ctx context.Context, envelope []byte) (*DepositCall, error) {
	mb, err := wire.EnvelopeMailbox(envelope)
	if err != nil {
		return nil, fmt.Errorf("deposit: %w", err)
	}
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("deposit: %w", ctx.Err())
	case <-d.readerDone:
		return nil, d.failure()
	}
	call := &DepositCall{CID: wire.CIDOf(envelope), mailbox: mb, done: make(chan struct{})}
	d.mu.Lock()
	if d.err != nil || d.closing {
		err := d.err
		d.mu.Unlock()
		<-d.slots
		if err == nil {
			err = fmt.Errorf("deposit: %w", ErrClosed)
		}
		return nil, err
	}
	call.ID = d.nextID
	d.nextID++
	if len(d.pending) == 0 {
		_ = d.s.SetReadDeadline(time.Now().Add(d.c.timeout()))
	}
	d.pending = append(d.pending, call)
	// Never blocks: the queue holds at most as many requests as there
	// are slots. Enqueuing under mu keeps write order = pending order.
	d.queue <- &pb.DepositRequest{Id: call.ID, Envelope: envelope}
	d.mu.Unlock()
	return call, nil
}

// Deposit sends one envelope and waits for its answer.
func (d *DepositStream) Deposit(ctx context.Context, envelope []byte) (*DepositResult, error) {
	call, err := d.Send(ctx, envelope)
	if err != nil {
		return nil, err
	}
	return call.Wait(ctx)
}

func (d *DepositStream) failure() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.err != nil {
		return d.err
	}
	return fmt.Errorf("deposit: %w", ErrClosed)
}

// writer writes queued requests, flushing when the queue runs dry, so that
// deposits sent together share Noise and yamux frames. It ends when Close or
// Reset closes the queue.
func (d *DepositStream) writer() {
	defer close(d.writerDone)
	timeout := d.c.timeout()
	for {
		req, ok := <-d.queue
		if !ok {
			_ = d.s.CloseWrite()
			return
		}
		err := d.f.Buffer(req)
		closed := false
	drain:
		for err == nil {
			select {
			case more, ok := <-d.queue:
				if !ok {
					closed = true
					break drain
				}
				err = d.f.Buffer(more)
			default:
				break drain
			}
		}
		if err == nil {
			err = d.f.Flush(timeout)
		}
		if err != nil {
			d.fail(fmt.Errorf("deposit: write: %w", err))
			_ = d.s.Reset()
			if !closed {
				for range d.queue { // until Close or Reset closes it
				}
			}
			return
		}
		if closed {
			_ = d.s.CloseWrite()
			return
		}
	}
}

// reader matches answers to pending deposits in order.
func (d *DepositStream) reader() {
	defer close(d.readerDone)
	v := d.c.receiptVerifier()
	for {
		var resp pb.DepositResponse
		if err := d.f.Read(&resp, 0); err != nil {
			d.mu.Lock()
			n := len(d.pending)
			d.mu.Unlock()
			if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed) {
				err = protocolErr("deposit", "answer: %v", err)
			} else if n == 0 && d.isClosing() {
				err = nil // a clean end after Close
			} else {
				err = fmt.Errorf("deposit: stream ended with %d in flight: %v: %w", n, err, ErrClosed)
			}
			if err == nil {
				err = fmt.Errorf("deposit: %w", ErrClosed)
			}
			d.fail(err)
			return
		}
		d.mu.Lock()
		if len(d.pending) == 0 {
			d.mu.Unlock()
			d.fail(protocolErr("deposit", "answer id %d with nothing in flight", resp.Id))
			_ = d.s.Reset()
			return
		}
		call := d.pending[0]
		d.pending[0] = nil
		d.pending = d.pending[1:]
		if len(d.pending) > 0 {
			_ = d.s.SetReadDeadline(time.Now().Add(d.c.timeout()))
		} else {
			_ = d.s.SetReadDeadline(time.Time{})
		}
		d.mu.Unlock()
		if resp.Id != call.ID {
			d.complete(call, nil, protocolErr("deposit", "answer id %d for request %d", resp.Id, call.ID))
			d.fail(protocolErr("deposit", "answers out of order"))
			_ = d.s.Reset()
			return
		}
		res, err := d.result(v, call, &resp)
		d.complete(call, res, err)
	}
}

func (d *DepositStream) result(v *wire.ReceiptVerifier, call *DepositCall, resp *pb.DepositResponse) (*DepositResult, error) {
	if resp.Status != pb.Status_STATUS_OK {
		e := newError("deposit", d.relay, resp.Status, resp.Detail, resp.RetryAfterMs)
		e.PostageDifficulty = int(resp.PostageDifficulty)
		if len(resp.ReplicaPeers) > 0 {
			e.ReplicaPeers = parsePeers(resp.ReplicaPeers)
		}
		return nil, e
	}
	res := &DepositResult{Duplicate: resp.Duplicate, Replicas: int(resp.Replicas)}
	if len(resp.Receipt) == 0 {
		if !resp.Duplicate {
			return nil, protocolErr("deposit", "OK without a receipt")
		}
		return res, nil
	}
	r, err := wire.ParseSignedReceipt(resp.Receipt)
	if err != nil {
		return nil, fmt.Errorf("deposit: receipt: %w", err)
	}
	if r.CID != call.CID || r.Mailbox != call.mailbox {
		return nil, fmt.Errorf("deposit: receipt for another envelope: %w", wire.ErrBadSignature)
	}
	if !resp.Duplicate && r.Origin != d.relay {
		return nil, fmt.Errorf("deposit: new entry's receipt from origin %s, not the relay: %w", r.Origin, wire.ErrBadSignature)
	}
	if err := v.Verify(r); err != nil {
		return nil, fmt.Errorf("deposit: receipt: %w", err)
	}
	res.Receipt = r
	return res, nil
}

func (d *DepositStream) complete(call *DepositCall, res *DepositResult, err error) {
	call.res, call.err = res, err
	close(call.done)
	<-d.slots
}

func (d *DepositStream) isClosing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closing
}

// fail records the stream's error and fails every pending deposit.
func (d *DepositStream) fail(err error) {
	d.mu.Lock()
	if d.err == nil {
		d.err = err
	}
	pending := d.pending
	d.pending = nil
	d.mu.Unlock()
	for _, call := range pending {
		d.complete(call, nil, err)
	}
}

// Close stops sending, waits (at most the client's timeout) for the answers
// to every deposit in flight, and closes the stream. It returns nil if every
// deposit got its answer.
func (d *DepositStream) Close() error {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		<-d.readerDone
		return nil
	}
	d.closing = true
	close(d.queue)
	d.mu.Unlock()
	<-d.writerDone
	timer := time.NewTimer(d.c.timeout())
	defer timer.Stop()
	select {
	case <-d.readerDone:
	case <-timer.C:
		_ = d.s.Reset()
		<-d.readerDone
	}
	d.mu.Lock()
	err := d.err
	d.mu.Unlock()
	_ = d.s.Close()
	if errors.Is(err, ErrClosed) {
		// The stream's clean end; deposits that failed got their error.
		return nil
	}
	return err
}

// Reset aborts the stream; deposits in flight fail with ErrClosed.
func (d *DepositStream) Reset() {
	_ = d.s.Reset()
	d.mu.Lock()
	if !d.closing {
		d.closing = true
		close(d.queue)
	}
	d.mu.Unlock()
	<-d.writerDone
	<-d.readerDone
}
