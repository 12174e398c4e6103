package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// ReconcileStream is the initiator's side of a reconcile stream (SPEC.md
// §10.10): the transport of a sequence of exchanges, one per (mailbox, set),
// whose turns the caller drives (package relay does, with its store and the
// relay/reconcile engine). It frames and bounds every message, applies the
// client's timeout to each read and write, and counts the bytes of the
// frames both ways. It is not safe for concurrent use.
type ReconcileStream struct {
	c     *Client
	relay peer.ID
	cs    *countingStream
	f     *Framed
	stop  func() bool
	once  sync.Once
}

// countingStream counts the bytes read from and written to a stream.
type countingStream struct {
	network.Stream
	read, written atomic.Int64
}

func (s *countingStream) Read(b []byte) (int, error) {
	n, err := s.Stream.Read(b)
	s.read.Add(int64(n))
	return n, err
}

func (s *countingStream) Write(b []byte) (int, error) {
	n, err := s.Stream.Write(b)
	s.written.Add(int64(n))
	return n, err
}

// OpenReconcile opens a reconcile stream to relay. The stream lives until
// Close or Reset, or until ctx ends (then it is reset).
func (c *Client) OpenReconcile(ctx context.Context, relay peer.ID) (*ReconcileStream, error) {
	octx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, err := c.Host.NewStream(octx, relay, wire.ProtocolReconcile)
	if err != nil {
		return nil, fmt.Errorf("reconcile: open stream: %w", err)
	}
	cs := &countingStream{Stream: s}
	r := &ReconcileStream{c: c, relay: relay, cs: cs, f: NewFramedBuffer(cs, MaxEntryFrame, LargeWriteBuffer)}
	r.stop = context.AfterFunc(ctx, func() { _ = s.Reset() })
	return r, nil
}

// Relay returns the responder.
func (r *ReconcileStream) Relay() peer.ID { return r.relay }

// Send writes one message within the client's timeout. Buffer a message
// first (Buffer) to send several in one flush.
func (r *ReconcileStream) Send(m *pb.ReconcileMessage) error {
	if err := r.f.Write(m, r.c.timeout()); err != nil {
		return fmt.Errorf("reconcile: write: %w", err)
	}
	return nil
}

// Buffer queues one message without flushing; Send or Flush writes it. A
// message larger than the buffer goes out at once, within the client's
// timeout.
func (r *ReconcileStream) Buffer(m *pb.ReconcileMessage) error {
	r.f.SetWriteTimeout(r.c.timeout())
	if err := r.f.Buffer(m); err != nil {
		return fmt.Errorf("reconcile: write: %w", err)
	}
	return nil
}

// Flush writes what Buffer queued, within the client's timeout.
func (r *ReconcileStream) Flush() error {
	if err := r.f.Flush(r.c.timeout()); err != nil {
		return fmt.Errorf("reconcile: write: %w", err)
	}
	return nil
}

// Recv reads the responder's next message within the client's timeout.
// A message with a status other than OK is returned as it is: check it with
// Refusal. A frame that is oversized or does not parse gives an error
// wrapping ErrProtocol; the end of the stream gives io.EOF.
func (r *ReconcileStream) Recv() (*pb.ReconcileMessage, error) {
	var m pb.ReconcileMessage
	if err := r.f.Read(&m, r.c.timeout()); err != nil {
		switch {
		case errors.Is(err, ErrFrameTooLarge), errors.Is(err, wire.ErrMalformed):
			return nil, protocolErr("reconcile", "message: %v", err)
		case errors.Is(err, io.EOF):
			return nil, io.EOF
		}
		return nil, fmt.Errorf("reconcile: read: %w", err)
	}
	return &m, nil
}

// Refusal returns nil for a message with status OK and an *Error (which
// unwraps to the status's sentinel, e.g. wire.ErrNotReplica) otherwise.
func (r *ReconcileStream) Refusal(m *pb.ReconcileMessage) error {
	return statusErr("reconcile", r.relay, m.GetStatus(), m.GetDetail(), 0)
}

// BytesSent and BytesReceived count the frame bytes (length prefixes
// included) written to and read from the stream so far.
func (r *ReconcileStream) BytesSent() int64     { return r.cs.written.Load() }
func (r *ReconcileStream) BytesReceived() int64 { return r.cs.read.Load() }

// Close ends the stream cleanly: a write close-half, then it waits (at most
// the client's timeout) for the responder to close its side. A message the
// responder sends instead is a protocol violation.
func (r *ReconcileStream) Close() error {
	var err error
	r.once.Do(func() {
		if !r.stop() {
			err = fmt.Errorf("reconcile: %w", ErrClosed)
			return
		}
		_ = r.cs.CloseWrite()
		var m pb.ReconcileMessage
		rerr := r.f.Read(&m, r.c.timeout())
		switch {
		case errors.Is(rerr, io.EOF):
			_ = r.cs.Close()
		case rerr == nil:
			err = protocolErr("reconcile", "message after the last exchange")
			_ = r.cs.Reset()
		default:
			err = fmt.Errorf("reconcile: close: %w", rerr)
			_ = r.cs.Reset()
		}
	})
	return err
}

// Reset aborts the stream.
func (r *ReconcileStream) Reset() {
	r.once.Do(func() {
		r.stop()
		_ = r.cs.Reset()
	})
}
