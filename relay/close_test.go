package relay

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// TestRelayMalformedFrames sends, on every protocol, an oversized frame and
// a frame that is not protobuf: the relay answers MALFORMED or resets the
// stream, and keeps serving others.
func TestRelayMalformedFrames(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	protos := []struct {
		id   protocol.ID
		resp func() proto.Message
	}{
		{wire.ProtocolInfo, func() proto.Message { return &pb.InfoResponse{} }},
		{wire.ProtocolDeposit, func() proto.Message { return &pb.DepositResponse{} }},
		{wire.ProtocolSync, func() proto.Message { return &pb.SyncPage{} }},
		{wire.ProtocolSubscribe, func() proto.Message { return &pb.SubscribeEvent{} }},
		{wire.ProtocolAck, func() proto.Message { return &pb.AckResponse{} }},
		{wire.ProtocolStatus, func() proto.Message { return &pb.StatusResponse{} }},
		{wire.ProtocolPrekeys, func() proto.Message { return &pb.PrekeyResponse{} }},
	}
	statusOfMsg := func(m proto.Message) pb.Status {
		return m.(interface{ GetStatus() pb.Status }).GetStatus()
	}
	for _, p := range protos {
		t.Run(string(p.id), func(t *testing.T) {
			// Oversized: a length prefix of 8 MiB, then a little data.
			s, f := rawStream(t, c.Host, n.ID(), p.id, rpc.MaxEntryFrame)
			s.Write([]byte{0x80, 0x80, 0x80, 0x04, 1, 2, 3})
			resp := p.resp()
			if err := f.Read(resp, 5*time.Second); err == nil {
				t.Fatalf("oversized frame answered %v", resp)
			}
			// Not protobuf: a tag with wire type 7.
			s, f = rawStream(t, c.Host, n.ID(), p.id, rpc.MaxEntryFrame)
			s.Write([]byte{2, 0x0f, 0x01})
			s.CloseWrite()
			resp = p.resp()
			if err := f.Read(resp, 5*time.Second); err != nil {
				t.Fatalf("garbage frame: no answer: %v", err)
			}
			if st := statusOfMsg(resp); st != pb.Status_STATUS_MALFORMED {
				t.Fatalf("garbage frame answered %v", st)
			}
			// A truncated frame then EOF: a reset or close, no answer.
			s, f = rawStream(t, c.Host, n.ID(), p.id, rpc.MaxEntryFrame)
			s.Write([]byte{50, 1, 2})
			s.CloseWrite()
			if err := f.Read(p.resp(), 5*time.Second); err == nil {
				t.Fatal("truncated frame answered")
			}
			// The relay still serves.
			if _, err := c.Info(ctxT(t), n.ID()); err != nil {
				t.Fatalf("info after malformed frames: %v", err)
			}
		})
	}
	if v := counterValue(t, n, "cairn_relay_rejects_total"); v < float64(2*len(protos)) {
		t.Fatalf("rejects metric %v", v)
	}
}

// TestRelayCloseDrains closes a relay under load: every deposit answered
// OK is durable (a restarted relay on the same data dir holds exactly those
// entries), subscribers are told SHUTTING_DOWN, and nothing leaks (TestMain
// checks goroutines).
func TestRelayCloseDrains(t *testing.T) {
	cfg := testConfig(t)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	sub, err := c.Subscribe(ctxT(t), n.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	subDone := make(chan struct{})
	go func() { // a device that keeps up
		for range sub.Entries() {
		}
		close(subDone)
	}()
	ds, err := c.OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	stored := make(chan []wire.CID, 1)
	go func() {
		var ok []wire.CID
		var calls []*rpc.DepositCall
		for i := 0; i < 5000; i++ {
			call, err := ds.Send(ctxT(t), envelope(t, mb, 1024, 0, uint64(i)))
			if err != nil {
				break
			}
			calls = append(calls, call)
		}
		for _, call := range calls {
			if res, err := call.Wait(ctxT(t)); err == nil && !res.Duplicate {
				ok = append(ok, call.CID)
			}
		}
		stored <- ok
	}()
	waitFor(t, "deposits flowing", func() bool { return n.Store().Stats().Entries > 100 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	acked := <-stored
	ds.Reset()
	// The subscriber was told.
	<-subDone
	var e *rpc.Error
	if err := sub.Err(); !errors.As(err, &e) || e.Status != pb.Status_STATUS_SHUTTING_DOWN {
		t.Fatalf("subscriber ended with %v, want SHUTTING_DOWN", err)
	}
	sub.Close()
	// Restart on the same data dir: same identity, every OK deposit there.
	n2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if n2.ID() != n.ID() {
		t.Fatal("identity changed across restart")
	}
	// Every acknowledged entry is there. (Entries stored whose answer
	// was lost in the closing connection may be there too: the sender
	// retries and gets Duplicate.)
	if len(acked) == 0 {
		t.Fatal("no deposit was acknowledged before Close")
	}
	if got := n2.Store().Stats().Entries; got < int64(len(acked)) {
		t.Fatalf("restarted relay holds %d entries, %d were acknowledged", got, len(acked))
	}
	for i := 0; i < len(acked); i += wire.MaxStatusCIDs {
		c2 := newClient(t, n2)
		states, err := c2.Status(ctxT(t), n2.ID(), mb, acked[i:min(i+wire.MaxStatusCIDs, len(acked))])
		if err != nil {
			t.Fatal(err)
		}
		for j, st := range states {
			if st != pb.EntryState_ENTRY_STATE_STORED {
				t.Fatalf("acknowledged entry %d is %v after restart", i+j, st)
			}
		}
	}
}

// TestRelayCloseRefusesNewRequests checks SHUTTING_DOWN on streams that
// arrive while the relay drains.
func TestRelayCloseRefusesNewRequests(t *testing.T) {
	n := startNode(t, func(c *Config) { c.DrainTimeout = 2 * time.Second })
	c := newClient(t, n)
	// Hold the drain open with a deposit stream that has sent nothing.
	s, _ := rawStream(t, c.Host, n.ID(), wire.ProtocolDeposit, rpc.MaxControlFrame)
	s.Write(nil)
	waitFor(t, "deposit stream served", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.streams) == 1
	})
	done := make(chan error)
	// The idle deposit stream ends at once: reading stops on drain.
	go func() { done <- n.Close() }()
	waitFor(t, "closing", n.draining)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := c.Info(ctxT(t), n.ID()); err == nil {
		t.Fatal("closed relay answered")
	}
}
