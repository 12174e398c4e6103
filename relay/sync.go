package relay

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// sync — /cairn/sync/1.0.0 (SPEC.md §10.4): one Authenticated SyncRequest
// (op 1), then SyncPage frames until the one with done = true. Each page is
// one store read that seeks to the resume position (the last entry sent),
// so a page costs what it returns, never a re-read of the mailbox. Between
// pages a draining relay ends the stream with SHUTTING_DOWN; the client
// resumes elsewhere from its durable cursor.

// syncParams is a parsed, authenticated sync request.
type syncParams struct {
	mailbox wire.Mailbox
	cursor  wire.Cursor
	after   *wire.Position
	limit   int
}

func parseSyncRequest(req *pb.SyncRequest, mb wire.Mailbox) (syncParams, error) {
	p := syncParams{mailbox: mb, limit: int(req.Limit)}
	if len(req.Cursor) > 0 {
		c, err := wire.ParseCursor(req.Cursor)
		if err != nil {
			return p, fmt.Errorf("sync: %w", err)
		}
		p.cursor = c
	}
	switch {
	case len(req.AfterOrigin) > 0:
		if len(req.AfterOrigin) > wire.MaxPeerIDLen {
			return p, fmt.Errorf("sync: resume origin: %w", wire.ErrMalformed)
		}
		origin, err := peer.IDFromBytes(req.AfterOrigin)
		if err != nil {
			return p, fmt.Errorf("sync: resume origin: %w", wire.ErrMalformed)
		}
		p.after = &wire.Position{Origin: origin, Seq: req.AfterSeq}
	case req.AfterSeq != 0:
		return p, fmt.Errorf("sync: resume seq without origin: %w", wire.ErrMalformed)
	}
	return p, nil
}

func (n *Node) serveSync(in *inbound) {
	if !n.admitRequest(in, replySync) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var a pb.Authenticated
	if !n.readRequest(in, f, &a, replySync) {
		return
	}
	var req pb.SyncRequest
	mb, err := authenticate(n.id, wire.AuthSync, &a, &req, n.now(), n.replay)
	if err != nil {
		n.answerErr(in, f, replySync, err)
		return
	}
	p, err := parseSyncRequest(&req, mb)
	if err != nil {
		n.answerErr(in, f, replySync, err)
		return
	}
	n.streamPages(in, f, p)
}

// streamPages writes the pages of one sync.
func (n *Node) streamPages(in *inbound, f *rpc.Framed, p syncParams) {
	sent := 0
	after := p.after
	for {
		if n.draining() {
			n.answer(in, f, replySync(pb.Status_STATUS_SHUTTING_DOWN, "relay is closing", 0), pb.Status_STATUS_SHUTTING_DOWN)
			return
		}
		maxEntries := n.cfg.MaxPageEntries
		if p.limit > 0 {
			maxEntries = min(maxEntries, p.limit-sent)
		}
		page, err := n.store.Read(p.mailbox, &p.cursor, after, maxEntries, n.cfg.MaxPageBytes)
		if err == nil && page.More && len(page.Entries) == 0 {
			err = fmt.Errorf("store returned an empty page with more to come")
		}
		if err != nil {
			n.answerErr(in, f, replySync, fmt.Errorf("sync: read: %v: %w", err, wire.ErrInternal))
			return
		}
		for _, c := range page.Corrupt {
			in.log.Warn("corrupt entry skipped in sync", "err", c)
		}
		sent += len(page.Entries)
		done := !page.More || (p.limit > 0 && sent >= p.limit)
		msg, err := syncPage(page, done)
		if err != nil {
			n.answerErr(in, f, replySync, fmt.Errorf("sync: %v: %w", err, wire.ErrInternal))
			return
		}
		if done {
			n.answer(in, f, msg, pb.Status_STATUS_OK)
			n.m.syncs.Inc()
			n.m.syncEntries.Add(float64(len(page.Entries)))
			n.m.syncLat.Observe(time.Since(in.start).Seconds())
			return
		}
		if err := f.Write(msg, n.cfg.WriteTimeout); err != nil {
			in.log.Debug("sync write failed", "err", err)
			_ = in.s.Reset()
			return
		}
		n.m.syncEntries.Add(float64(len(page.Entries)))
		last := page.Entries[len(page.Entries)-1].Stamp
		after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
	}
}

func syncPage(page store.Page, done bool) (*pb.SyncPage, error) {
	msg := &pb.SyncPage{
		Status:     pb.Status_STATUS_OK,
		Entries:    make([]*pb.Entry, len(page.Entries)),
		Watermarks: make([]*pb.Position, len(page.Watermarks)),
		Done:       done,
	}
	entries := make([]pb.Entry, len(page.Entries))
	for i := range page.Entries {
		stamp, err := page.Entries[i].Stamp.Marshal()
		if err != nil {
			return nil, err
		}
		entries[i].Envelope = page.Entries[i].Envelope
		entries[i].Stamp = stamp
		msg.Entries[i] = &entries[i]
	}
	wms := make([]pb.Position, len(page.Watermarks))
	for i, w := range page.Watermarks {
		wms[i].Origin = []byte(w.Origin)
		wms[i].Seq = w.Seq
		msg.Watermarks[i] = &wms[i]
	}
	return msg, nil
}
