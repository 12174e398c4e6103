package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// inbound is one served stream.
type inbound struct {
	s     network.Stream
	peer  peer.ID
	ps    *peerState
	name  string // protocol short name for metrics and logs
	start time.Time
	log   *slog.Logger
}

// replyFunc builds a protocol's status-only answer.
type replyFunc func(st pb.Status, detail string, retryMs uint32) proto.Message

// protocolSpec describes one served protocol.
type protocolSpec struct {
	id    protocol.ID
	name  string
	reply replyFunc // nil: refusals reset the stream (deposit)
	serve func(*inbound)
}

func (n *Node) registerHandlers() {
	for _, p := range []protocolSpec{
		{wire.ProtocolInfo, "info", replyInfo, n.serveInfo},
		{wire.ProtocolDeposit, "deposit", nil, n.serveDeposit},
		{wire.ProtocolSync, "sync", replySync, n.serveSync},
		{wire.ProtocolSubscribe, "subscribe", replySubscribe, n.serveSubscribe},
		{wire.ProtocolAck, "ack", replyAck, n.serveAck},
		{wire.ProtocolStatus, "status", replyStatus, n.serveStatus},
		{wire.ProtocolPrekeys, "prekeys", replyPrekeys, n.servePrekeys},
		{wire.ProtocolReplicate, "replicate", nil, n.serveReplicate},
		{wire.ProtocolReconcile, "reconcile", replyReconcile, n.serveReconcile},
	} {
		n.host.SetStreamHandler(p.id, func(s network.Stream) { n.serve(s, p) })
	}
}

// serve admits a stream and runs its handler: the service scope, the
// shutdown check, the per-peer stream cap, then the handler.
func (n *Node) serve(s network.Stream, p protocolSpec) {
	if err := s.Scope().SetService(ServiceName); err != nil {
		_ = s.Reset()
		return
	}
	in := &inbound{s: s, peer: s.Conn().RemotePeer(), name: p.name, start: time.Now()}
	n.m.requests.WithLabelValues(p.name).Inc()
	if !n.track(s) {
		n.refuse(in, p.reply, pb.Status_STATUS_SHUTTING_DOWN, "relay is closing", 0)
		return
	}
	defer n.untrack(s)
	ps := n.adm.acquireStream(in.peer)
	if ps == nil {
		n.refuse(in, p.reply, pb.Status_STATUS_BUSY, "too many streams", 0)
		return
	}
	defer n.adm.releaseStream(in.peer)
	in.ps = ps
	in.log = n.log.With("proto", p.name, "peer", in.peer.ShortString())
	g := n.m.streamsOpen.WithLabelValues(p.name)
	g.Inc()
	defer g.Dec()
	p.serve(in)
}

// refuse answers a stream with a status before reading anything, or resets
// it for protocols without a single answer.
func (n *Node) refuse(in *inbound, reply replyFunc, st pb.Status, detail string, retryMs uint32) {
	n.m.reject(in.name, st)
	if reply == nil {
		_ = in.s.Reset()
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	if err := f.Write(reply(st, detail, retryMs), time.Second); err != nil {
		_ = in.s.Reset()
		return
	}
	closeStream(in.s)
}

// admitRequest takes a request token of the peer (PeerRequestRate); if
// none is left it answers RATE_LIMITED and returns false.
func (n *Node) admitRequest(in *inbound, reply replyFunc) bool {
	ok, retry := take(in.ps.request, n.now())
	if !ok {
		n.refuse(in, reply, pb.Status_STATUS_RATE_LIMITED, "request rate", retryMs(retry))
		return false
	}
	return true
}

// readRequest reads a one-shot request within StreamIdleTimeout; Close
// interrupts the wait. On failure it has already answered or reset the
// stream and returns false.
func (n *Node) readRequest(in *inbound, f *rpc.Framed, m proto.Message, reply replyFunc) bool {
	stop := context.AfterFunc(n.drainCtx, func() { _ = in.s.SetReadDeadline(time.Now()) })
	err := f.Read(m, n.cfg.StreamIdleTimeout)
	stop()
	switch {
	case err == nil:
		return true
	case errors.Is(err, wire.ErrMalformed):
		n.answer(in, f, reply(pb.Status_STATUS_MALFORMED, "request does not parse", 0), pb.Status_STATUS_MALFORMED)
	case n.draining() && !errors.Is(err, io.EOF):
		n.answer(in, f, reply(pb.Status_STATUS_SHUTTING_DOWN, "relay is closing", 0), pb.Status_STATUS_SHUTTING_DOWN)
	default:
		// Oversized frame (SPEC.md §10.1: refuse and reset), idle
		// timeout, or the peer went away.
		if errors.Is(err, rpc.ErrFrameTooLarge) {
			n.m.reject(in.name, pb.Status_STATUS_MALFORMED)
		}
		_ = in.s.Reset()
	}
	return false
}

// answer writes a one-shot protocol's final answer and closes the stream.
func (n *Node) answer(in *inbound, f *rpc.Framed, m proto.Message, st pb.Status) {
	if st != pb.Status_STATUS_OK {
		n.m.reject(in.name, st)
	}
	if err := f.Write(m, n.cfg.WriteTimeout); err != nil {
		_ = in.s.Reset()
		return
	}
	closeStream(in.s)
	n.m.latency.WithLabelValues(in.name).Observe(time.Since(in.start).Seconds())
}

// answerErr answers with the status of err (wire.StatusOf) and a detail
// that is safe to send: the error text, except for internal failures.
func (n *Node) answerErr(in *inbound, f *rpc.Framed, reply replyFunc, err error) {
	st := statusOf(err)
	detail := err.Error()
	switch st {
	case pb.Status_STATUS_INTERNAL:
		in.log.Error("request failed", "err", err)
		detail = "internal error"
	case pb.Status_STATUS_AUTH_FAILED, pb.Status_STATUS_AUTH_STALE, pb.Status_STATUS_AUTH_REPLAYED:
		n.m.authFailures.WithLabelValues(statusName(st)).Inc()
		in.log.Debug("auth refused", "err", err)
	}
	n.answer(in, f, reply(st, detail, 0), st)
}

func replyInfo(st pb.Status, _ string, _ uint32) proto.Message {
	return &pb.InfoResponse{Status: st}
}

func replySync(st pb.Status, detail string, retryMs uint32) proto.Message {
	return &pb.SyncPage{Status: st, Detail: detail, RetryAfterMs: retryMs}
}

func replySubscribe(st pb.Status, detail string, retryMs uint32) proto.Message {
	return &pb.SubscribeEvent{Status: st, Detail: detail, RetryAfterMs: retryMs}
}

func replyAck(st pb.Status, detail string, retryMs uint32) proto.Message {
	return &pb.AckResponse{Status: st, Detail: detail, RetryAfterMs: retryMs}
}

func replyStatus(st pb.Status, detail string, retryMs uint32) proto.Message {
	return &pb.StatusResponse{Status: st, Detail: detail, RetryAfterMs: retryMs}
}

func replyPrekeys(st pb.Status, detail string, retryMs uint32) proto.Message {
	return &pb.PrekeyResponse{Status: st, Detail: detail, RetryAfterMs: retryMs}
}
