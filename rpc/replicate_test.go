package rpc

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func replicateBatch(entries, tombs int) ReplicateBatch {
	var b ReplicateBatch
	for range entries {
		b.Entries = append(b.Entries, &pb.Entry{Envelope: []byte{1}, Stamp: []byte{2}})
	}
	for range tombs {
		b.Tombstones = append(b.Tombstones, &pb.Tombstone{Seq: 1})
	}
	return b
}

// A pipelined replicate stream: answers arrive in order, one status per
// item; a request refused whole gives an *Error; the others still succeed.
func TestRPCReplicatePipelined(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolReplicate, func(s network.Stream, _ *Framed) {
		f := NewFramed(s, MaxEntryFrame)
		for {
			var req pb.ReplicateRequest
			if err := f.Read(&req, 5*time.Second); err != nil {
				s.Close()
				return
			}
			resp := &pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_OK}
			if req.Id == 2 {
				resp.Status = pb.Status_STATUS_BUSY
			} else {
				for range len(req.Entries) + len(req.Tombstones) {
					resp.Statuses = append(resp.Statuses, pb.Status_STATUS_NOT_REPLICA)
				}
				resp.Statuses[0] = pb.Status_STATUS_OK
			}
			if err := f.Write(resp, time.Second); err != nil {
				return
			}
		}
	})
	rs, err := c.OpenReplicate(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	var calls []*ReplicateCall
	for i := range 5 {
		call, err := rs.Send(context.Background(), replicateBatch(1+i, i))
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	for i, call := range calls {
		<-call.Done()
		statuses, err := call.Result()
		if call.ID != uint64(i+1) {
			t.Fatalf("call %d has id %d", i, call.ID)
		}
		if i == 1 {
			if !errors.Is(err, wire.ErrBusy) {
				t.Fatalf("refused request: %v", err)
			}
			continue
		}
		if err != nil || len(statuses) != 1+2*i || statuses[0] != pb.Status_STATUS_OK || (i > 0 && statuses[1] != pb.Status_STATUS_NOT_REPLICA) {
			t.Fatalf("call %d: %v %v", i, statuses, err)
		}
	}
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Send(context.Background(), replicateBatch(1, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

// Limits are checked before sending; an answer with the wrong number of
// statuses is a protocol violation that fails the stream; a reset fails
// what is in flight.
func TestRPCReplicateErrors(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolReplicate, func(s network.Stream, _ *Framed) {
		f := NewFramed(s, MaxEntryFrame)
		var req pb.ReplicateRequest
		if err := f.Read(&req, 5*time.Second); err != nil {
			return
		}
		if len(req.Entries) == 3 {
			s.Reset() // the relay went away
			return
		}
		f.Write(&pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_OK}, time.Second)
		io.Copy(io.Discard, s)
	})
	rs, err := c.OpenReplicate(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []ReplicateBatch{replicateBatch(wire.MaxReplicateBatch+1, 0), replicateBatch(0, MaxReplicateTombstones+1), {},
		{Entries: []*pb.Entry{{Envelope: make([]byte, MaxEntryFrame)}}}} {
		if _, err := rs.Send(context.Background(), b); !errors.Is(err, wire.ErrMalformed) {
			t.Fatalf("batch of %d/%d: %v", len(b.Entries), len(b.Tombstones), err)
		}
	}
	call, err := rs.Send(context.Background(), replicateBatch(2, 0))
	if err != nil {
		t.Fatal(err)
	}
	<-call.Done()
	if _, err := call.Result(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("no statuses: %v", err)
	}
	if _, err := rs.Send(context.Background(), replicateBatch(1, 0)); err == nil {
		t.Fatal("send on a failed stream")
	}
	rs.Reset()

	rs, err = c.OpenReplicate(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	call, err = rs.Send(context.Background(), replicateBatch(3, 0))
	if err != nil {
		t.Fatal(err)
	}
	<-call.Done()
	if _, err := call.Result(); !errors.Is(err, ErrClosed) {
		t.Fatalf("reset stream: %v", err)
	}
	rs.Reset()
}

// A reconcile stream carries messages both ways, counts their bytes, hands
// a refusal to the caller as a message (Refusal maps it), and closes
// cleanly when the responder closes after the initiator's close-half.
func TestRPCReconcileStream(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolReconcile, func(s network.Stream, _ *Framed) {
		f := NewFramed(s, MaxEntryFrame)
		for {
			var m pb.ReconcileMessage
			if err := f.Read(&m, 5*time.Second); err != nil {
				s.CloseWrite()
				s.Close()
				return
			}
			reply := &pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: m.Mailbox, Set: m.Set, Done: true}
			if len(m.Mailbox) == 1 {
				reply = &pb.ReconcileMessage{Status: pb.Status_STATUS_NOT_REPLICA, Mailbox: m.Mailbox, Detail: "no"}
			}
			if err := f.Write(reply, time.Second); err != nil {
				return
			}
		}
	})
	rs, err := c.OpenReconcile(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	first := &pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: make([]byte, 34),
		Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_FINGERPRINT, Fingerprint: make([]byte, 16), Count: 1000}}}
	if err := rs.Send(first); err != nil {
		t.Fatal(err)
	}
	m, err := rs.Recv()
	if err != nil || !m.Done || rs.Refusal(m) != nil {
		t.Fatalf("answer %v %v", m, err)
	}
	if err := rs.Buffer(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if err := rs.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err = rs.Recv()
	if err != nil || !errors.Is(rs.Refusal(m), wire.ErrNotReplica) {
		t.Fatalf("refusal %v %v", m, err)
	}
	want := int64(proto.Size(first) + 1 + proto.Size(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: []byte{1}}) + 1)
	if rs.BytesSent() != want || rs.BytesReceived() == 0 {
		t.Fatalf("bytes sent %d (want %d), received %d", rs.BytesSent(), want, rs.BytesReceived())
	}
	if err := rs.Close(); err != nil {
		t.Fatal(err)
	}
}

// Recv refuses an oversized or unparseable frame as a protocol violation.
func TestRPCReconcileMalformed(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolReconcile, func(s network.Stream, _ *Framed) {
		s.Write([]byte{2, 0x0f, 0x01})
		s.Close()
	})
	rs, err := c.OpenReconcile(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Reset()
	if _, err := rs.Recv(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("recv: %v", err)
	}
}
