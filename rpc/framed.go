package rpc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
)

// Frame limits of each protocol's messages (SPEC.md §10.1). A reader refuses
// a longer frame before allocating it (pbio returns io.ErrShortBuffer) and
// resets the stream.
const (
	// MaxControlFrame bounds frames that carry no entries.
	MaxControlFrame = wire.MaxControlFrame
	// MaxEntryFrame bounds frames that carry entries (sync pages,
	// subscribe events, replicate and reconcile messages).
	MaxEntryFrame = wire.MaxEntryFrame
	// MaxDepositFrame bounds a DepositRequest: the largest envelope version
	// 1 allows plus room for the id and the protobuf field headers.
	MaxDepositFrame = wire.MaxDepositFrame
)

// ErrFrameTooLarge is returned by Framed.Read for a frame above the limit.
// The caller resets the stream.
var ErrFrameTooLarge = errors.New("frame too large")

// Framed is a libp2p stream with cairn's framing: unsigned-varint-delimited
// protobuf messages (libp2p pbio), reads bounded by a per-stream limit,
// writes buffered until Flush, and deadlines set per operation. Reads and
// writes may run in two goroutines; each direction is not safe for
// concurrent use by itself.
type Framed struct {
	s  network.Stream
	r  pbio.ReadCloser
	bw *bufio.Writer
	w  pbio.WriteCloser

	readDeadline  time.Time
	writeDeadline time.Time
}

// Write buffer sizes: small by default (a relay holds one per idle
// subscriber), larger for streams that answer in bursts (deposit answers).
const (
	DefaultWriteBuffer = 4 << 10
	LargeWriteBuffer   = 32 << 10
)

// NewFramed wraps s with a DefaultWriteBuffer; frames read from it may be
// at most maxRead bytes.
func NewFramed(s network.Stream, maxRead int) *Framed {
	return NewFramedBuffer(s, maxRead, DefaultWriteBuffer)
}

// NewFramedBuffer is NewFramed with a write buffer of writeBuffer bytes.
// A write larger than the buffer goes out directly.
func NewFramedBuffer(s network.Stream, maxRead, writeBuffer int) *Framed {
	bw := bufio.NewWriterSize(s, writeBuffer)
	return &Framed{
		s:  s,
		r:  pbio.NewDelimitedReader(s, maxRead),
		bw: bw,
		w:  pbio.NewDelimitedWriter(bw),
	}
}

// Stream returns the underlying stream.
func (f *Framed) Stream() network.Stream { return f.s }

// deadlineSlack is how stale a deadline may get before it is moved: moving
// a deadline costs a timer reset, so it is moved only when it would fall
// more than timeout/8 short of the requested one.
func needsMove(cur, want time.Time, timeout time.Duration) bool {
	return cur.IsZero() || want.Sub(cur) > timeout/8
}

// SetReadTimeout makes the next reads fail if no frame completes within
// timeout (zero: no deadline).
func (f *Framed) SetReadTimeout(timeout time.Duration) {
	if timeout <= 0 {
		if !f.readDeadline.IsZero() {
			f.readDeadline = time.Time{}
			_ = f.s.SetReadDeadline(time.Time{})
		}
		return
	}
	want := time.Now().Add(timeout)
	if needsMove(f.readDeadline, want, timeout) {
		f.readDeadline = want
		_ = f.s.SetReadDeadline(want)
	}
}

// SetWriteTimeout bounds the next writes and flushes (zero: no deadline).
func (f *Framed) SetWriteTimeout(timeout time.Duration) {
	if timeout <= 0 {
		if !f.writeDeadline.IsZero() {
			f.writeDeadline = time.Time{}
			_ = f.s.SetWriteDeadline(time.Time{})
		}
		return
	}
	want := time.Now().Add(timeout)
	if needsMove(f.writeDeadline, want, timeout) {
		f.writeDeadline = want
		_ = f.s.SetWriteDeadline(want)
	}
}

// Read reads one frame into m within timeout (zero: no deadline). An
// oversized frame gives ErrFrameTooLarge; a frame that does not parse gives
// an error wrapping wire.ErrMalformed; the end of the stream gives io.EOF.
func (f *Framed) Read(m proto.Message, timeout time.Duration) error {
	f.SetReadTimeout(timeout)
	err := f.r.ReadMsg(m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.ErrShortBuffer):
		return ErrFrameTooLarge
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return err
	}
	var perr interface{ Timeout() bool }
	if errors.As(err, &perr) || isStreamErr(err) {
		return err
	}
	// Anything else is proto.Unmarshal failing on the frame's bytes.
	return fmt.Errorf("frame: %v: %w", err, wire.ErrMalformed)
}

func isStreamErr(err error) bool {
	var se *network.StreamError
	return errors.As(err, &se) || errors.Is(err, network.ErrReset)
}

// Buffer queues m for writing without flushing.
func (f *Framed) Buffer(m proto.Message) error { return f.w.WriteMsg(m) }

// BufferRaw queues an already delimited frame (varint length ‖ message).
func (f *Framed) BufferRaw(frame []byte) error {
	_, err := f.bw.Write(frame)
	return err
}

// Buffered returns how many bytes wait in the write buffer.
func (f *Framed) Buffered() int { return f.bw.Buffered() }

// Flush writes out what is buffered within timeout (zero: no deadline).
func (f *Framed) Flush(timeout time.Duration) error {
	if f.bw.Buffered() == 0 {
		return nil
	}
	f.SetWriteTimeout(timeout)
	return f.bw.Flush()
}

// Write writes m and flushes within timeout.
func (f *Framed) Write(m proto.Message, timeout time.Duration) error {
	f.SetWriteTimeout(timeout)
	if err := f.w.WriteMsg(m); err != nil {
		return err
	}
	return f.bw.Flush()
}

// AppendFrame appends the delimited encoding of m (varint length ‖
// message) to b, for a frame written to many streams (BufferRaw).
func AppendFrame(b []byte, m proto.Message) ([]byte, error) {
	n := proto.Size(m)
	b = appendUvarint(b, uint64(n))
	return proto.MarshalOptions{}.MarshalAppend(b, m)
}

func appendUvarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}
