package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// replicate — /cairn/replicate/1.0.0 (SPEC.md §10.9): a long-lived,
// pipelined stream from another replica. ReplicateRequest { id, entries,
// tombstones } → ReplicateResponse { id, statuses } in request order, one
// status per entry then one per tombstone. The reader reads at most
// rpc.MaxReplicateInflight requests ahead of the answers; the processor
// gathers what the reader has passed and imports all its entries with one
// ImportMany (one group commit).
//
// Checks per entry, cheapest first: the envelope and the stamp parse
// (MALFORMED); the sending peer, and this relay, are current or recent
// replicas of the mailbox in this relay's view (NOT_REPLICA); the stamp is
// the valid
// origin stamp of the envelope (BAD_SIGNATURE); the stamp's origin is a
// current or recent replica (NOT_REPLICA); then the import (a known CID is
// OK, a quota or expiry failure gets its status). A tombstone needs only a
// sender that is a current or recent replica.

// maxReplicateGather bounds the requests one import gathers.
const maxReplicateGather = 8

// replicateReq is one request read, with the memory it holds.
type replicateReq struct {
	req      *pb.ReplicateRequest
	reserved int
	resp     *pb.ReplicateResponse // set when refused whole
}

func (n *Node) serveReplicate(in *inbound) {
	if !n.admitRequest(in, nil) {
		return
	}
	f := rpc.NewFramedBuffer(in.s, rpc.MaxEntryFrame, rpc.DefaultWriteBuffer)
	reqs := make(chan replicateReq, rpc.MaxReplicateInflight)
	quit := make(chan struct{})
	stop := context.AfterFunc(n.drainCtx, func() { _ = in.s.SetReadDeadline(time.Now()) })
	defer stop()
	readerDone := make(chan bool, 1)
	go func() { readerDone <- n.replicateReader(in, f, reqs, quit) }()
	ok := n.replicateProcessor(in, f, reqs)
	if !ok {
		close(quit)
		_ = in.s.Reset()
		for r := range reqs {
			n.releaseReplicate(in, r)
		}
	}
	if clean := <-readerDone; clean && ok {
		closeStream(in.s)
	} else {
		_ = in.s.Reset()
	}
}

// replicateReader reads requests until the stream ends; it reports whether
// it ended cleanly.
func (n *Node) replicateReader(in *inbound, f *rpc.Framed, reqs chan<- replicateReq, quit <-chan struct{}) (clean bool) {
	defer close(reqs)
	for {
		req := new(pb.ReplicateRequest)
		err := f.Read(req, n.cfg.DepositIdleTimeout)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return true
			case errors.Is(err, wire.ErrMalformed):
				n.m.reject("replicate", pb.Status_STATUS_MALFORMED)
				select {
				case reqs <- replicateReq{resp: &pb.ReplicateResponse{Status: pb.Status_STATUS_MALFORMED, Detail: "request does not parse"}}:
				case <-quit:
				}
				return true
			case n.draining():
				return true
			default:
				if errors.Is(err, rpc.ErrFrameTooLarge) {
					n.m.reject("replicate", pb.Status_STATUS_MALFORMED)
				}
				return false
			}
		}
		r := replicateReq{req: req}
		switch {
		case len(req.Entries) > wire.MaxReplicateBatch || len(req.Tombstones) > rpc.MaxReplicateTombstones:
			n.m.reject("replicate", pb.Status_STATUS_MALFORMED)
			r.resp = &pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_MALFORMED, Detail: "batch above the limits"}
		default:
			size := proto.Size(req)
			if err := in.s.Scope().ReserveMemory(size, network.ReservationPriorityMedium); err != nil {
				n.m.reject("replicate", pb.Status_STATUS_BUSY)
				r.resp = &pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_BUSY, Detail: "memory"}
			} else {
				r.reserved = size
			}
		}
		select {
		case reqs <- r:
		case <-quit:
			n.releaseReplicate(in, r)
			return false
		}
		if r.resp != nil && r.resp.Status == pb.Status_STATUS_MALFORMED {
			return true
		}
	}
}

func (n *Node) releaseReplicate(in *inbound, r replicateReq) {
	if r.reserved > 0 {
		in.s.Scope().ReleaseMemory(r.reserved)
	}
}

// replicateProcessor imports and answers gathered requests until the
// reader is done; false if writing failed.
func (n *Node) replicateProcessor(in *inbound, f *rpc.Framed, reqs <-chan replicateReq) bool {
	batch := make([]replicateReq, 0, maxReplicateGather)
	for first := range reqs {
		batch = append(batch[:0], first)
	gather:
		for len(batch) < maxReplicateGather {
			select {
			case r, ok := <-reqs:
				if !ok {
					break gather
				}
				batch = append(batch, r)
			default:
				break gather
			}
		}
		resps := n.importReplicated(in.peer, batch)
		var werr error
		for i, r := range batch {
			if werr == nil {
				werr = f.Buffer(resps[i])
			}
			n.releaseReplicate(in, r)
		}
		if werr == nil {
			werr = f.Flush(n.cfg.WriteTimeout)
		}
		if werr != nil {
			in.log.Debug("replicate write failed", "err", werr)
			return false
		}
		for _, resp := range resps {
			if resp.Status == pb.Status_STATUS_MALFORMED {
				return true // the reader ended the stream after it
			}
		}
	}
	return true
}

// peerTrust caches standings per mailbox for one batch.
type peerTrust struct {
	n     *Node
	from  peer.ID
	views map[wire.Mailbox]trustEntry
}

type trustEntry struct {
	from standing
	view *replicaView
}

// get returns the sender's standing for mb; a relay that is itself neither
// a current nor a recent replica of mb treats every sender as a stranger
// (it does not take mailboxes it does not replicate).
func (t *peerTrust) get(mb wire.Mailbox) trustEntry {
	if e, ok := t.views[mb]; ok {
		return e
	}
	st, v := t.n.placer.standingOf(t.n.drainCtx, mb, t.from)
	if st != stranger {
		if self, _ := t.n.placer.standingOf(t.n.drainCtx, mb, t.n.id); self == stranger {
			st = stranger
		}
	}
	e := trustEntry{from: st, view: v}
	t.views[mb] = e
	return e
}

// origin reports whether entries stamped by origin are accepted for mb.
func (t *peerTrust) origin(mb wire.Mailbox, origin peer.ID) bool {
	if origin == t.n.id {
		return true // our own entries, coming back
	}
	if origin == t.from && t.get(mb).from != stranger {
		return true
	}
	st, _ := t.n.placer.standingOf(t.n.drainCtx, mb, origin)
	return st != stranger
}

// importReplicated checks and imports the entries and tombstones of the
// gathered requests and returns their answers, in order.
func (n *Node) importReplicated(from peer.ID, batch []replicateReq) []*pb.ReplicateResponse {
	trust := &peerTrust{n: n, from: from, views: make(map[wire.Mailbox]trustEntry)}
	resps := make([]*pb.ReplicateResponse, len(batch))
	type slot struct{ req, idx int }
	var imports []store.Import
	var slots []slot
	for i, r := range batch {
		if r.resp != nil {
			resps[i] = r.resp
			continue
		}
		req := r.req
		resp := &pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_OK,
			Statuses: make([]pb.Status, len(req.Entries)+len(req.Tombstones))}
		resps[i] = resp
		for j, e := range req.Entries {
			imp, st := n.checkReplicated(trust, e)
			if st != pb.Status_STATUS_OK {
				resp.Statuses[j] = st
				n.m.replicated.WithLabelValues("refused_" + statusName(st)).Inc()
				continue
			}
			imports = append(imports, imp)
			slots = append(slots, slot{i, j})
		}
	}
	if len(imports) > 0 {
		results := n.store.ImportMany(n.workCtx, imports)
		for k, res := range results {
			s := slots[k]
			st := pb.Status_STATUS_OK
			if res.Err != nil {
				st = statusOf(res.Err)
				if st == pb.Status_STATUS_INTERNAL {
					n.log.Error("import failed", "err", res.Err)
				}
				n.m.replicated.WithLabelValues("refused_" + statusName(st)).Inc()
			} else if res.Duplicate {
				n.m.replicated.WithLabelValues("duplicate").Inc()
			} else {
				n.m.replicated.WithLabelValues("received").Inc()
			}
			resps[s.req].Statuses[s.idx] = st
		}
	}
	for i, r := range batch {
		if r.resp != nil || len(r.req.Tombstones) == 0 {
			continue
		}
		base := len(r.req.Entries)
		var ts []store.Tombstone
		var idx []int
		for j, t := range r.req.Tombstones {
			st, tomb := n.checkTombstone(trust, t)
			resps[i].Statuses[base+j] = st
			if st == pb.Status_STATUS_OK {
				ts = append(ts, tomb)
				idx = append(idx, base+j)
			}
		}
		if len(ts) > 0 {
			if _, err := n.store.ImportTombstones(n.workCtx, ts); err != nil {
				n.log.Error("tombstone import failed", "err", err)
				for _, k := range idx {
					resps[i].Statuses[k] = pb.Status_STATUS_INTERNAL
				}
			}
		}
	}
	return resps
}

// checkReplicated runs the checks of one replicated entry.
func (n *Node) checkReplicated(trust *peerTrust, e *pb.Entry) (store.Import, pb.Status) {
	var env wire.Envelope
	if err := env.Unmarshal(e.GetEnvelope()); err != nil {
		return store.Import{}, statusOf(err)
	}
	mb := env.Mailbox
	stamp, err := wire.ParseSignedReceipt(e.GetStamp())
	if err != nil {
		return store.Import{}, statusOf(err)
	}
	if trust.get(mb).from == stranger {
		return store.Import{}, pb.Status_STATUS_NOT_REPLICA
	}
	if stamp.Mailbox != mb {
		return store.Import{}, pb.Status_STATUS_BAD_SIGNATURE
	}
	if err := n.verifier.VerifyFor(stamp, e.Envelope); err != nil {
		return store.Import{}, pb.Status_STATUS_BAD_SIGNATURE
	}
	if !trust.origin(mb, stamp.Origin) {
		return store.Import{}, pb.Status_STATUS_NOT_REPLICA
	}
	return store.Import{Envelope: e.Envelope, Stamp: *stamp}, pb.Status_STATUS_OK
}

// checkTombstone parses one replicated tombstone and checks its sender.
func (n *Node) checkTombstone(trust *peerTrust, t *pb.Tombstone) (pb.Status, store.Tombstone) {
	tomb, stamp, err := tombstoneFromPB(t)
	if err != nil {
		return statusOf(err), store.Tombstone{}
	}
	if trust.get(tomb.Mailbox).from == stranger {
		return pb.Status_STATUS_NOT_REPLICA, store.Tombstone{}
	}
	if err := n.checkOwnerAck(tomb, stamp); err != nil {
		return statusOf(err), store.Tombstone{}
	}
	return pb.Status_STATUS_OK, tomb
}

// checkOwnerAck checks a replicated tombstone (SPEC.md §10.9): it carries
// its mailbox owner's ack of its CID (§6.3) — a replica deletes nothing on
// another replica's word alone — and the stamp that places it is its
// origin's stamp of that very entry, at the tombstone's origin, seq and
// expiry. stamp is t.Stamp parsed (tombstoneFromPB). Errors wrap
// wire.ErrBadSignature.
func (n *Node) checkOwnerAck(t store.Tombstone, stamp *wire.SignedReceipt) error {
	if err := wire.VerifyOwnerAck(n.ackVerifier, t.OwnerAck, t.Mailbox, t.CID); err != nil {
		return fmt.Errorf("tombstone of %s: %v: %w", t.CID, err, wire.ErrBadSignature)
	}
	if stamp.Mailbox != t.Mailbox || stamp.CID != t.CID || stamp.Origin != t.Origin || stamp.Seq != t.Seq || stamp.Expiry != t.Expiry {
		return fmt.Errorf("tombstone of %s: stamp of another entry or place: %w", t.CID, wire.ErrBadSignature)
	}
	if err := n.verifier.Verify(stamp); err != nil {
		return fmt.Errorf("tombstone of %s: stamp: %w", t.CID, err)
	}
	return nil
}

// tombstoneFromPB parses a wire tombstone, and returns its stamp parsed.
// Errors wrap wire.ErrMalformed (or wire.ErrUnsupportedVersion).
func tombstoneFromPB(t *pb.Tombstone) (store.Tombstone, *wire.SignedReceipt, error) {
	mb, err := wire.ParseMailbox(t.GetMailbox())
	if err != nil {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: %w", err)
	}
	c, err := wire.ParseCID(t.GetCid())
	if err != nil {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: %w", err)
	}
	if len(t.GetOrigin()) == 0 || len(t.GetOrigin()) > wire.MaxPeerIDLen || t.GetSeq() == 0 {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: origin or seq: %w", wire.ErrMalformed)
	}
	origin, err := peer.IDFromBytes(t.GetOrigin())
	if err != nil {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: origin: %w", wire.ErrMalformed)
	}
	if n := len(t.GetOwnerAck()); n == 0 || n > wire.MaxOwnerAckLen {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: owner ack of %d bytes: %w", n, wire.ErrMalformed)
	}
	stamp, err := wire.ParseSignedReceipt(t.GetStamp())
	if err != nil {
		return store.Tombstone{}, nil, fmt.Errorf("tombstone: stamp: %w", err)
	}
	return store.Tombstone{Mailbox: mb, CID: c, Origin: origin, Seq: t.GetSeq(), Expiry: t.GetExpiry(),
		OwnerAck: t.GetOwnerAck(), Stamp: t.GetStamp()}, stamp, nil
}
