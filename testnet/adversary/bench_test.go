package adversary

import (
	"context"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
)

// honest is a set of honest senders, each on its own pipelined deposit
// stream into its own mailbox: Send queues one 1 KiB deposit on the next
// stream (blocking only while that stream has wire.MaxDepositInflight
// deposits in flight), Wait collects every answer.
type honest struct {
	// lims pace each stream's sends (nil: unpaced): never above the
	// relay's per-peer rate, even after falling behind.
	lims    []*rate.Limiter
	streams []*rpc.DepositStream
	gens    []*envelopes
	calls   []chan *rpc.DepositCall
	wg      sync.WaitGroup
	mu      sync.Mutex
	ok, bad int
	why     tally
	i       int
}

func newHonest(b testing.TB, r *relay.Node, peers int) *honest {
	h := &honest{}
	for range peers {
		p := hostile(b, r)
		ds, err := p.RPC.OpenDeposit(context.Background(), r.ID())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(ds.Reset)
		l := &Load{Size: 1024, Mailboxes: 32}
		h.streams = append(h.streams, ds)
		h.gens = append(h.gens, l.newEnvelopes())
		h.calls = append(h.calls, nil)
	}
	return h
}

// start begins a measurement.
func (h *honest) start() {
	h.ok, h.bad, h.i = 0, 0, 0
	for i := range h.calls {
		ch := make(chan *rpc.DepositCall, 4*1024)
		h.calls[i] = ch
		h.wg.Go(func() {
			for c := range ch {
				_, err := c.Wait(context.Background())
				h.mu.Lock()
				if err == nil {
					h.ok++
				} else {
					h.bad++
					name, _ := outcome(err)
					h.why.add(name)
				}
				h.mu.Unlock()
			}
		})
	}
}

func (h *honest) send(b testing.TB) {
	k := h.i % len(h.streams)
	h.i++
	if h.lims != nil {
		_ = h.lims[k].Wait(context.Background())
	}
	c, err := h.streams[k].Send(context.Background(), h.gens[k].next())
	if err != nil {
		b.Fatal(err)
	}
	h.calls[k] <- c
}

// wait collects every answer of the measurement and returns the accepted
// and refused counts.
func (h *honest) wait() (ok, bad int) {
	for _, ch := range h.calls {
		close(ch)
	}
	h.wg.Wait()
	return h.ok, h.bad
}

// honestRate is the honest clients' offered load in BenchmarkHonestUnderAttack:
// 4 peers at 2,000 deposits/s each, within their per-peer rate (2,500/s).
const honestRate = 8000

// BenchmarkHonestUnderAttack measures the deposit throughput of honest
// clients (4 peers, pipelined, 1 KiB, offering honestRate in all, each
// within its per-peer rate) first alone, then while every attack of
// attack_test.go runs from Sybil peers, each attacker offering Pace times
// its per-peer rate. One b.Loop iteration is one honest deposit (sent on
// the next client's stream; answers are collected as they come, so the
// honest clients keep their streams full). It reports honest-unloaded/s, honest-attacked/s and their
// ratio (the target is ≥ 0.8), and what the attackers got through.
//
// Relay policy: PeerDepositRate 2,500/s (burst 2,500), PeerRequestRate
// 50/s (burst 200, the default), the rest default.
func BenchmarkHonestUnderAttack(b *testing.B) {
	for _, bc := range []struct {
		name string
		mix  attackMix
	}{
		{"requests-10x", attackMix{Pace: 10, RequestFlooders: 8, Malformed: true, StreamHolder: true}},
		{"subscribers", attackMix{Pace: 1, SlowSubscribers: 16}},
		{"deposits-2x", attackMix{Pace: 2, DepositFlooders: 4}},
		{"all-2x", attackMix{Pace: 2, RequestFlooders: 4, DepositFlooders: 4, SlowSubscribers: 4, Malformed: true, StreamHolder: true}},
		{"all-10x", attackMix{Pace: 10, RequestFlooders: 4, DepositFlooders: 4, SlowSubscribers: 4, Malformed: true, StreamHolder: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var unloaded float64
			r := oneRelay(b, func(c *relay.Config) {
				c.PeerDepositRate, c.PeerDepositBurst = 2500, 2500
				c.SubscriberQueueBytes = 512 << 10
				c.WriteTimeout = 2 * time.Second
			})
			hs := newHonest(b, r, 4)
			for range hs.streams {
				hs.lims = append(hs.lims, rate.NewLimiter(honestRate/4, 100))
			}
			// Unloaded: a fixed number of deposits (after a warm-up).
			const unloadedN = 20000
			for _, n := range []int{2000, unloadedN} {
				hs.start()
				t0 := time.Now()
				for range n {
					hs.send(b)
				}
				if ok, bad := hs.wait(); ok != n || bad != 0 {
					b.Fatalf("unloaded: %d accepted, %d refused of %d", ok, bad, n)
				}
				if n == unloadedN {
					unloaded = float64(n) / time.Since(t0).Seconds()
				}
			}

			a := startAttack(b, r, bc.mix)
			time.Sleep(500 * time.Millisecond) // let every attacker start
			hs.start()
			t0 := time.Now()
			for b.Loop() {
				hs.send(b)
			}
			ok, bad := hs.wait()
			attacked := float64(ok) / time.Since(t0).Seconds()
			b.ReportMetric(honestRate, "honest-offered/s")
			b.ReportMetric(float64(bad), "honest-refused")
			got := a.stop()
			b.ReportMetric(unloaded, "honest-unloaded/s")
			b.ReportMetric(attacked, "honest-attacked/s")
			b.ReportMetric(attacked/unloaded, "ratio")
			b.Logf("attackers got: %v; honest refusals: %v", got, &hs.why)
		})
	}
}

// BenchmarkLoad measures a relay's sustained deposit capacity (8 senders,
// 1 KiB, closed loop, 8 s: long enough for badger's memtable flushes to
// count), then offers twice that for 8 s (open loop, each sender within
// the default PeerDepositRate), then 80 % of it for 4 s. It reports
// the capacity, the accepted rate under overload and its ratio to the
// capacity, the share shed with a status, the p99 latency and how far the
// senders fell behind (flow control), and the rate accepted afterwards.
// One b.Loop iteration is one whole cycle: run it with -benchtime=1x.
func BenchmarkLoad(b *testing.B) {
	for b.Loop() {
		func() {
			r := oneRelay(b, nil)
			cs := loadClients(b, r, loadPeers, client10s)
			c := capacity(b, r, cs, 8*time.Second)
			base := Measure(RelayHeap)
			over, after, _, during := overload(b, r, cs, c, 8*time.Second, 4*time.Second)
			b.ReportMetric(c, "capacity/s")
			b.ReportMetric(over.Rate(), "overload-accepted/s")
			b.ReportMetric(over.Rate()/c, "overload-ratio")
			b.ReportMetric(float64(over.RateLimited+over.Busy)/float64(over.Sent), "shed-share")
			b.ReportMetric(float64(over.NoAnswer), "timeouts")
			b.ReportMetric(over.Quantile(.99).Seconds()*1000, "overload-p99-ms")
			b.ReportMetric(over.Lateness.Seconds()*1000, "senders-behind-ms")
			b.ReportMetric(after.Rate(), "after-accepted/s")
			b.ReportMetric(after.Rate()/(0.8*c), "after-ratio")
			b.ReportMetric(after.Quantile(.99).Seconds()*1000, "after-p99-ms")
			b.ReportMetric(float64(int64(during.Attributed)-int64(base.Attributed))/(1<<20), "relay-heap-delta-MiB")
			b.ReportMetric(float64(during.HeapInuse)/(1<<20), "heap-inuse-MiB")
		}()
	}
}
