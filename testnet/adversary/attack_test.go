package adversary

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// attackMix is a combined attack on one relay by hostile peers, each kind
// from its own peers (Sybil): every kind exceeds what one peer may do.
type attackMix struct {
	// Pace multiplies each attacker's per-peer rate limit (PeerRequestRate
	// or PeerDepositRate) to give its offered rate; 0 means unpaced (as
	// fast as answers come).
	Pace float64
	// RequestFlooders send status and info requests.
	RequestFlooders int
	// DepositFlooders deposit 1 KiB envelopes into mailboxes of their own.
	DepositFlooders int
	// SlowSubscribers subscribe to one mailbox and never read; one more
	// peer deposits 16 KiB envelopes into it at the deposit pace.
	SlowSubscribers int
	// Malformed sends oversized and garbage frames on every protocol, and
	// stale and replayed auth proofs.
	Malformed bool
	// StreamHolder keeps MaxStreamsPerPeer streams open with half a frame
	// each.
	StreamHolder bool
}

// attack is a running attackMix.
type attack struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	got    tally
}

// stop ends the attack and returns what the relay answered.
func (a *attack) stop() *tally {
	a.cancel()
	a.wg.Wait()
	return &a.got
}

// pacer sleeps to keep a loop at rate per second (no-op when rate ≤ 0).
type pacer struct {
	rate float64
	t0   time.Time
	n    int
}

func (p *pacer) wait(ctx context.Context) bool {
	if p.rate <= 0 {
		return ctx.Err() == nil
	}
	if p.t0.IsZero() {
		p.t0 = time.Now()
	}
	p.n++
	at := p.t0.Add(time.Duration(float64(p.n) / p.rate * float64(time.Second)))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(at)):
		return true
	}
}

func startAttack(t testing.TB, r *relay.Node, m attackMix) *attack {
	t.Helper()
	cfg := r.Config()
	ctx, cancel := context.WithCancel(context.Background())
	a := &attack{cancel: cancel}
	peers := func(n int) []*Hostile {
		var hs []*Hostile
		for range n {
			h := hostile(t, r)
			h.RPC.Timeout = 10 * time.Second
			hs = append(hs, h)
		}
		return hs
	}
	reqRate := m.Pace * float64(cfg.PeerRequestRate)
	depRate := m.Pace * float64(cfg.PeerDepositRate)
	note := func(err error) {
		if ctx.Err() != nil {
			return
		}
		name, _ := outcome(err)
		a.got.add(name)
	}
	for i, h := range peers(m.RequestFlooders) {
		a.wg.Go(func() {
			_, mb := NewMailboxKey()
			p := pacer{rate: reqRate}
			for p.wait(ctx) {
				if i%2 == 0 {
					_, err := h.RPC.Status(ctx, r.ID(), mb, nil)
					note(err)
				} else {
					_, err := h.RPC.Info(ctx, r.ID())
					note(err)
				}
			}
		})
	}
	for _, h := range peers(m.DepositFlooders) {
		a.wg.Go(func() {
			l := &Load{Clients: []*rpc.Client{h.RPC}, Relay: r.ID(), Size: 1024, Mailboxes: 4}
			for ctx.Err() == nil {
				var res *LoadResult
				if depRate > 0 {
					res, _ = l.Open(ctx, depRate, 250*time.Millisecond)
				} else {
					res, _ = l.Closed(ctx, 500)
				}
				if ctx.Err() == nil && res != nil {
					a.got.mu.Lock()
					if a.got.m == nil {
						a.got.m = map[string]int{}
					}
					a.got.m["deposit-OK"] += res.OK
					a.got.m["deposit-RATE_LIMITED"] += res.RateLimited
					a.got.m["deposit-other"] += res.OtherStatus + res.Busy
					a.got.m["deposit-NO_ANSWER"] += res.NoAnswer
					a.got.mu.Unlock()
				}
			}
		})
	}
	if m.SlowSubscribers > 0 {
		key, mb := NewMailboxKey()
		for _, h := range peers(m.SlowSubscribers) {
			s, f, err := h.Open(ctx, wire.ProtocolSubscribe, rpc.MaxEntryFrame)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Write(auth(t, key, wire.AuthSubscribe, r.ID(), &pb.SubscribeRequest{Mailbox: mb[:]}), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			a.wg.Go(func() {
				<-ctx.Done()
				_ = s.Reset()
			})
		}
		feeder := peers(1)[0]
		a.wg.Go(func() {
			ds, err := feeder.RPC.OpenDeposit(ctx, r.ID())
			if err != nil {
				return
			}
			defer ds.Reset()
			p := pacer{rate: min(depRate, 200)}
			if depRate <= 0 {
				p.rate = 200
			}
			for p.wait(ctx) {
				call, err := ds.Send(ctx, Envelope(mb, 16<<10, 0))
				if err != nil {
					return
				}
				go func() {
					_, err := call.Wait(ctx)
					if name, _ := outcome(err); ctx.Err() == nil {
						a.got.add("feeder-" + name)
					}
				}()
			}
		})
	}
	if m.Malformed {
		h := peers(1)[0]
		key, mb := NewMailboxKey()
		stale, err := ProofAt(key, wire.AuthSync, r.ID(), &pb.SyncRequest{Mailbox: mb[:]}, time.Now().Add(-2*wire.AuthWindow), [16]byte{1})
		if err != nil {
			t.Fatal(err)
		}
		garbage := []byte{2, 0x0f, 0x01}
		protos := []struct {
			id   protocol.ID
			raw  []byte
			resp proto.Message
		}{
			{wire.ProtocolInfo, garbage, &pb.InfoResponse{}},
			{wire.ProtocolDeposit, LengthPrefix(wire.MaxDepositFrame + 1), &pb.DepositResponse{}},
			{wire.ProtocolSync, Frame(stale), &pb.SyncPage{}},
			{wire.ProtocolSubscribe, garbage, &pb.SubscribeEvent{}},
			{wire.ProtocolAck, LengthPrefix(wire.MaxControlFrame + 1), &pb.AckResponse{}},
			{wire.ProtocolStatus, garbage, &pb.StatusResponse{}},
			{wire.ProtocolPrekeys, garbage, &pb.PrekeyResponse{}},
			{wire.ProtocolReplicate, garbage, &pb.ReplicateResponse{}},
			{wire.ProtocolReconcile, garbage, &pb.ReconcileMessage{}},
		}
		a.wg.Go(func() {
			p := pacer{rate: reqRate}
			for i := 0; p.wait(ctx); i++ {
				c := protos[i%len(protos)]
				resp := proto.Clone(c.resp)
				err := h.Exchange(ctx, c.id, c.raw, resp)
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					a.got.add("malformed-reset")
				} else {
					a.got.add("malformed-" + statusOf(resp).String())
				}
			}
		})
	}
	if m.StreamHolder {
		h := peers(1)[0]
		for range cfg.MaxStreamsPerPeer {
			s, _, err := h.Open(ctx, wire.ProtocolStatus, rpc.MaxControlFrame)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = s.Write([]byte{100, 0x0a})
			a.wg.Go(func() {
				<-ctx.Done()
				_ = s.Reset()
			})
		}
	}
	return a
}

// TestHostileHonestServedDuringAttack runs every attack of this file at
// once against one relay — request and deposit floods from Sybil peers,
// never-reading subscribers, malformed
// frames and stale proofs on every protocol, a peer holding its whole
// stream allowance (each flooder at five times its per-peer rate) — while two honest clients converse through it: every
// message arrives once, in order, each side sees its messages delivered,
// and an honest rpc round trip works. (The throughput ratio is measured by
// BenchmarkHonestUnderAttack.) The heap the relay holds stays within what
// its config allows these attackers.
func TestHostileHonestServedDuringAttack(t *testing.T) {
	n := StartNet(t, NetOptions{Relays: 1, R: 1, Clients: 2, RelayConfig: func(_ int, c *relay.Config) {
		c.ResourceManager = nil
		c.PeerDepositRate, c.PeerDepositBurst = 200, 200
		c.SubscriberQueueBytes = 512 << 10
		c.WriteTimeout = 2 * time.Second
	}})
	r := n.Relays[0]
	alice, bob := n.Clients[0], n.Clients[1]
	recA, recB := record(alice), record(bob)
	bobAtAlice, aliceAtBob := introduce(t, alice, bob)
	mix := attackMix{Pace: 5, RequestFlooders: 4, DepositFlooders: 2, SlowSubscribers: 4, Malformed: true, StreamHolder: true}
	base := Measure(RelayHeap)
	a := startAttack(t, r, mix)
	// The honest clients start once every attack is being refused.
	eventually(t, "the attack in full swing", func() error {
		for _, k := range []string{pb.Status_STATUS_RATE_LIMITED.String(), "deposit-RATE_LIMITED", "malformed-reset", "malformed-" + pb.Status_STATUS_AUTH_STALE.String()} {
			if a.got.get(k) == 0 {
				return fmt.Errorf("no %s yet", k)
			}
		}
		return nil
	})
	var toBob, toAlice []string
	for i := range 10 {
		toBob = append(toBob, fmt.Sprintf("a→b %d", i))
		toAlice = append(toAlice, fmt.Sprintf("b→a %d", i))
	}
	idsA := send(t, alice, bobAtAlice, toBob...)
	idsB := send(t, bob, aliceAtBob, toAlice...)
	checkShown(t, bob, recB, aliceAtBob, toBob, false)
	checkShown(t, alice, recA, bobAtAlice, toAlice, false)
	eventually(t, "delivery receipts", func() error {
		for _, id := range idsA {
			if st := status(t, alice, id); st != client.StatusDelivered {
				return fmt.Errorf("%s: %v", id, st)
			}
		}
		for _, id := range idsB {
			if st := status(t, bob, id); st != client.StatusDelivered {
				return fmt.Errorf("%s: %v", id, st)
			}
		}
		return nil
	})
	honestRoundTrip(t, r)
	during := Measure(RelayHeap)
	got := a.stop()
	after := Measure(RelayHeap)
	t.Logf("attack answers: %v", got)
	// Memory: what the config lets the relay hold for these attackers —
	// each deposit stream's budget, each subscriber's queue, a control
	// frame per stream the holder may keep open — and 8 MiB of slack (the
	// honest clients' streams, admission state, the replay cache).
	cfg := r.Config()
	bound := uint64(mix.DepositFlooders+1)*uint64(cfg.DepositStreamBytes) +
		uint64(mix.SlowSubscribers)*uint64(cfg.SubscriberQueueBytes) +
		uint64(cfg.MaxStreamsPerPeer)*rpc.MaxControlFrame + 8<<20
	for _, m := range []struct {
		name string
		mem  Memory
	}{{"during", during}, {"after", after}} {
		if m.mem.Attributed > base.Attributed+bound {
			t.Errorf("%s the attack the relay holds %d B of heap (base %d B), bound %d B", m.name, m.mem.Attributed, base.Attributed, bound)
		}
	}
	t.Logf("relay-held heap: base %d KiB, during %d KiB, after %d KiB (bound +%d KiB); heap in use %d → %d → %d MiB; RSS %d → %d → %d MiB",
		base.Attributed>>10, during.Attributed>>10, after.Attributed>>10, bound>>10,
		base.HeapInuse>>20, during.HeapInuse>>20, after.HeapInuse>>20, base.RSS>>20, during.RSS>>20, after.RSS>>20)
	if got.get("NO_ANSWER")+got.get("deposit-NO_ANSWER") > 0 {
		t.Errorf("attack requests without an answer: %v", got)
	}
}
