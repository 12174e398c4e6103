package relay

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestRelaySubscribeTwentyDevices(t *testing.T) {
	n := startNode(t, nil)
	key, mb := mailboxKey(t)
	const devices, count = 20, 60
	subs := make([]*rpc.Subscription, devices)
	for i := range devices {
		c := newClient(t, n) // one host per device
		sub, err := c.Subscribe(ctxT(t), n.ID(), key)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}
	// An entry of another mailbox is not pushed.
	_, other := mailboxKey(t)
	sender := newClient(t, n)
	fill(t, sender, n, other, 1, 200, 1000)
	envs := fill(t, sender, n, mb, count, 500, 0)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for i, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range count {
				select {
				case e, ok := <-sub.Entries():
					if !ok {
						errs <- sub.Err()
						return
					}
					if string(e.Envelope) != string(envs[j]) {
						errs <- errors.New("entry out of order or foreign")
						return
					}
				case <-time.After(20 * time.Second):
					errs <- errors.New("timeout")
					return
				}
			}
			_ = i
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, sub := range subs {
		sub.Close()
		if err := sub.Err(); err != nil {
			t.Fatalf("after Close: %v", err)
		}
	}
	waitFor(t, "subscriptions gone", func() bool { return n.hub.count(mb) == 0 })
}

func TestRelaySubscribeSlowConsumer(t *testing.T) {
	n := startNode(t, func(c *Config) {
		// The byte bound decides: 16 MiB ≈ 136 entries of 120 KiB. A
		// group commit hands the hub a burst of up to a deposit stream's
		// budget (DepositStreamBytes / 120 KiB ≈ 34 entries), and the
		// reading subscriber may lag some more on a loaded machine; the
		// one that never reads overflows after its stream's flow-control
		// window. The write timeout is long so that the overflow, not a
		// write deadline, is what cuts the slow one.
		c.SubscriberQueue = 1024
		c.SubscriberQueueBytes = 16 << 20
		c.MaxEnvelopeBytes = 128 << 10
		c.WriteTimeout = 30 * time.Second
	})
	key, mb := mailboxKey(t)
	fast, err := newClient(t, n).Subscribe(ctxT(t), n.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	// The slow device subscribes on a raw stream and never reads.
	slowHost := clientHost(t, n)
	a, err := rpc.Authenticate(key, wire.AuthSubscribe, n.ID(), &pb.SubscribeRequest{Mailbox: mb[:]}, time.Now(), randReader{})
	if err != nil {
		t.Fatal(err)
	}
	s, f := rawStream(t, slowHost, n.ID(), wire.ProtocolSubscribe, rpc.MaxEntryFrame)
	if err := f.Write(a, time.Second); err != nil {
		t.Fatal(err)
	}
	var first pb.SubscribeEvent
	if err := f.Read(&first, 5*time.Second); err != nil || first.Status != pb.Status_STATUS_OK {
		t.Fatalf("slow subscribe: %v %v", first.Status, err)
	}
	waitFor(t, "two subscribers", func() bool { return n.hub.count(mb) == 2 })
	// 36 MiB of pushes: far beyond the stream's flow-control window and
	// the queue's bytes.
	const count = 300
	sender := newClient(t, n)
	done := make(chan [][]byte)
	go func() { done <- fill(t, sender, n, mb, count, 120<<10, 0) }()
	for j := range count {
		select {
		case _, ok := <-fast.Entries():
			if !ok {
				t.Fatalf("fast subscriber ended after %d: %v", j, fast.Err())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("fast subscriber stalled at %d", j)
		}
	}
	<-done
	waitFor(t, "slow subscriber dropped", func() bool { return n.hub.count(mb) == 1 })
	// What the slow device reads ends with SLOW_CONSUMER (best effort)
	// or a reset; never more than what was queued before the cut.
	got := 0
	for {
		var ev pb.SubscribeEvent
		if err := f.Read(&ev, 10*time.Second); err != nil {
			break
		}
		if ev.Status == pb.Status_STATUS_SLOW_CONSUMER {
			break
		}
		got++
	}
	if got >= count {
		t.Fatalf("slow subscriber got all %d entries", got)
	}
	s.Reset()
	if v := counterValue(t, n, "cairn_relay_slow_consumers_total"); v != 1 {
		t.Fatalf("slow consumers metric %v", v)
	}
}

func TestRelaySubscribeLimits(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.MaxSubscribersPerMailbox = 2
		c.KeepaliveInterval = 50 * time.Millisecond
		c.StreamIdleTimeout = 200 * time.Millisecond // applies to the request only
	})
	c := newClient(t, n)
	c.SubscribeIdle = 500 * time.Millisecond
	key, mb := mailboxKey(t)
	s1, err := c.Subscribe(ctxT(t), n.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	s2, err := c.Subscribe(ctxT(t), n.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Subscribe(ctxT(t), n.ID(), key)
	if !errors.Is(err, wire.ErrBusy) {
		t.Fatalf("third subscriber: %v, want BUSY", err)
	}
	s2.Close()
	waitFor(t, "slot freed", func() bool {
		s3, err := c.Subscribe(ctxT(t), n.ID(), key)
		if err == nil {
			s3.Close()
		}
		return err == nil
	})
	// Keepalives keep an idle subscription alive past the client's idle
	// limit and the relay's StreamIdleTimeout; then a push still arrives.
	time.Sleep(time.Second)
	envs := fill(t, c, n, mb, 1, 100, 0)
	select {
	case e, ok := <-s1.Entries():
		if !ok {
			t.Fatalf("idle subscription ended: %v", s1.Err())
		}
		if string(e.Envelope) != string(envs[0]) {
			t.Fatal("wrong entry")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no push after an idle second")
	}
}
