package relay

import (
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire/pb"
)

// info — /cairn/info/1.0.0 (SPEC.md §10.2): one InfoRequest, one
// InfoResponse with the relay's limits and policy. Unauthenticated,
// rate-limited per peer.

func (n *Node) infoResponse() *pb.InfoResponse {
	c := &n.cfg
	return &pb.InfoResponse{
		Status:            pb.Status_STATUS_OK,
		Version:           c.Version,
		MaxEnvelopeBytes:  uint32(c.MaxEnvelopeBytes),
		DefaultTtlSeconds: uint64(c.DefaultTTL.Seconds()),
		MaxTtlSeconds:     uint64(c.MaxTTL.Seconds()),
		PostageDifficulty: uint32(c.PostageDifficulty),
		ReplicationFactor: uint32(c.ReplicationFactor),
		MaxPageEntries:    uint32(c.MaxPageEntries),
		ReceiptQuorum:     uint32(c.ReceiptQuorum),
	}
}

func (n *Node) serveInfo(in *inbound) {
	if !n.admitRequest(in, replyInfo) {
		return
	}
	f := rpc.NewFramed(in.s, rpc.MaxControlFrame)
	var req pb.InfoRequest
	if !n.readRequest(in, f, &req, replyInfo) {
		return
	}
	n.answer(in, f, n.infoResponse(), pb.Status_STATUS_OK)
}
