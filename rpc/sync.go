package rpc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// SyncRequest says what a sync asks for (SPEC.md §10.4).
type SyncRequest struct {
	// Cursor is the client's durable cursor: entries it covers are not
	// sent.
	Cursor wire.Cursor
	// After, if not nil, is the resume position of an interrupted sync of
	// the same cursor: entries at or before it in (origin, seq) order are
	// skipped.
	After *wire.Position
	// Limit caps the number of entries (0: no limit).
	Limit int
}

// SyncPage is one verified page of a sync.
type SyncPage struct {
	// Entries are in (origin, seq) order, each verified.
	Entries []Entry
	// Watermarks are the relay's W(o) for the origins this page finished
	// or ended inside (on the last page, every origin it knows). A client
	// that has durably stored every entry of origin o returned by this
	// sync with seq ≤ W(o) may advance its cursor to W(o) (SPEC.md §7).
	Watermarks []wire.Position
	// Done marks the last page of the stream.
	Done bool
}

// SyncStream reads the pages of one sync. Next returns them in order, then
// io.EOF. It is not safe for concurrent use.
type SyncStream struct {
	c       *Client
	relay   peer.ID
	mailbox wire.Mailbox
	cursor  wire.Cursor
	s       network.Stream
	f       *Framed
	stop    func() bool

	last     wire.Position
	haveLast bool
	count    int
	limit    int
	done     bool
	err      error
	once     sync.Once
}

// Sync starts a sync of the key's mailbox on relay. Read the pages with
// Next; Close the stream when done (or to abandon it).
func (c *Client) Sync(ctx context.Context, relay peer.ID, key ed25519.PrivateKey, req SyncRequest) (*SyncStream, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sync: mailbox key: %w", wire.ErrMalformed)
	}
	if req.Limit < 0 {
		return nil, fmt.Errorf("sync: limit %d: %w", req.Limit, wire.ErrMalformed)
	}
	mb := wire.MailboxOf(key.Public().(ed25519.PublicKey))
	body := &pb.SyncRequest{Mailbox: mb[:], Cursor: req.Cursor.Marshal(), Limit: uint32(req.Limit)}
	st := &SyncStream{c: c, relay: relay, mailbox: mb, cursor: req.Cursor.Clone(), limit: req.Limit}
	if req.After != nil {
		if len(req.After.Origin) == 0 || len(req.After.Origin) > wire.MaxPeerIDLen {
			return nil, fmt.Errorf("sync: resume origin: %w", wire.ErrMalformed)
		}
		body.AfterOrigin = []byte(req.After.Origin)
		body.AfterSeq = req.After.Seq
		st.last, st.haveLast = *req.After, true
	}
	auth, err := c.authenticate(key, wire.AuthSync, relay, body)
	if err != nil {
		return nil, fmt.Errorf("sync: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, err := c.Host.NewStream(octx, relay, wire.ProtocolSync)
	if err != nil {
		return nil, fmt.Errorf("sync: open stream: %w", err)
	}
	st.s = s
	st.f = NewFramed(s, MaxEntryFrame)
	// The stream outlives this call's context only as far as the caller's.
	st.stop = context.AfterFunc(ctx, func() { _ = s.Reset() })
	// A write error is not final: the relay may have answered without
	// reading (rate limit, shutdown), and Next reads that answer.
	_ = st.f.Write(auth, c.timeout())
	_ = s.CloseWrite()
	return st, nil
}

// Next returns the next verified page, or io.EOF after the last one. A
// non-OK status is returned as an *Error; a bad entry as an error wrapping
// wire.ErrBadSignature or ErrProtocol. After an error the stream is done:
// resume with a new Sync from the durable cursor and LastPosition.
func (st *SyncStream) Next() (*SyncPage, error) {
	if st.err != nil {
		return nil, st.err
	}
	if st.done {
		return nil, io.EOF
	}
	page, err := st.next()
	if err != nil {
		st.err = err
		_ = st.s.Reset()
		return nil, err
	}
	if page.Done {
		st.done = true
	}
	return page, nil
}

func (st *SyncStream) next() (*SyncPage, error) {
	var m pb.SyncPage
	if err := st.f.Read(&m, st.c.timeout()); err != nil {
		if errors.Is(err, ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed) {
			return nil, protocolErr("sync", "page: %v", err)
		}
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("sync: stream ended before the last page: %w", io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("sync: read: %w", err)
	}
	if err := statusErr("sync", st.relay, m.Status, m.Detail, m.RetryAfterMs); err != nil {
		return nil, err
	}
	page := &SyncPage{Entries: make([]Entry, 0, len(m.Entries)), Done: m.Done}
	v := st.c.receiptVerifier()
	for _, pe := range m.Entries {
		e, err := VerifyEntry(v, pe, st.mailbox)
		if err != nil {
			return nil, fmt.Errorf("sync: %w", err)
		}
		pos := e.Position()
		if st.cursor.Covers(pos.Origin, pos.Seq) {
			return nil, protocolErr("sync", "entry %s:%d is covered by the cursor", pos.Origin.ShortString(), pos.Seq)
		}
		if st.haveLast && comparePos(pos, st.last) <= 0 {
			return nil, protocolErr("sync", "entry %s:%d out of order", pos.Origin.ShortString(), pos.Seq)
		}
		st.last, st.haveLast = pos, true
		page.Entries = append(page.Entries, e)
	}
	st.count += len(page.Entries)
	if st.limit > 0 && st.count > st.limit {
		return nil, protocolErr("sync", "%d entries for a limit of %d", st.count, st.limit)
	}
	wm, err := positionsFromPB(m.Watermarks)
	if err != nil {
		return nil, protocolErr("sync", "%v", err)
	}
	page.Watermarks = wm
	return page, nil
}

// LastPosition returns the position of the last entry received (or the
// request's resume position): the After of a resumed sync.
func (st *SyncStream) LastPosition() (wire.Position, bool) { return st.last, st.haveLast }

// Close ends the stream; it is safe to call more than once.
func (st *SyncStream) Close() error {
	st.once.Do(func() {
		if st.stop() {
			if st.done {
				_ = st.s.Close()
			} else {
				_ = st.s.Reset()
			}
		}
	})
	return nil
}
