package adversary

import (
	"testing"
	"time"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
)

// loadClients returns n rpc clients of n fresh peers connected to r.
func loadClients(t testing.TB, r *relay.Node, n int, timeout time.Duration) []*rpc.Client {
	t.Helper()
	var cs []*rpc.Client
	for range n {
		h := hostile(t, r)
		h.RPC.Timeout = timeout
		cs = append(cs, h.RPC)
	}
	return cs
}

// capacity measures r's deposit capacity: loadPeers senders, 1 KiB
// envelopes, as fast as r answers, for about d: the rate of OK answers.
// Closed-loop senders keep their whole window in flight, more than the
// relay admits ahead of its store (MaxStoreBacklog), so some deposits are
// answered BUSY, each with a retry_after; nothing else may go wrong.
func capacity(t testing.TB, r *relay.Node, cs []*rpc.Client, d time.Duration) float64 {
	t.Helper()
	l := &Load{Clients: cs, Relay: r.ID(), Size: 1024, Mailboxes: 8}
	healthy := func(res *LoadResult) bool {
		return res.OK > 0 && res.OK+res.Busy == res.Sent && res.NoRetryAfter == 0
	}
	// A short probe sizes the run that lasts about d.
	probe, err := l.Closed(ctxT(t), 500)
	if err != nil || !healthy(probe) {
		t.Fatalf("probe: %+v %v", summary(probe), err)
	}
	n := max(500, int(probe.Rate()*d.Seconds())/len(cs))
	res, err := l.Closed(ctxT(t), n)
	if err != nil || !healthy(res) {
		t.Fatalf("capacity run: %+v %v", summary(res), err)
	}
	t.Logf("capacity %.0f/s (%d of %d deposits answered BUSY)", res.Rate(), res.Busy, res.Sent)
	return res.Rate()
}

func summary(r *LoadResult) LoadResult {
	x := *r
	x.Latencies = nil
	return x
}

// loadPeers is the number of senders of the load tests: each offers its
// share of the load, within the default PeerDepositRate (a crowd, or
// Sybil senders, rather than one peer above its rate: flood_test.go has
// that case).
const loadPeers = 8

// overload drives r at twice capacity c for d from cs, then at 80 % of
// what it sustained (at most c) for recover, and returns both results and
// the relay-held heap before and during the overload.
func overload(t testing.TB, r *relay.Node, cs []*rpc.Client, c float64, d, recover time.Duration) (over, after *LoadResult, base, during Memory) {
	t.Helper()
	l := &Load{Clients: cs, Relay: r.ID(), Size: 1024, Mailboxes: 8}
	base = Measure(RelayHeap)
	done := make(chan struct{})
	var mid Memory
	go func() {
		defer close(done)
		time.Sleep(d / 2)
		mid = Measure(RelayHeap)
	}()
	over, err := l.Open(ctxT(t), 2*c, d)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	during = mid
	// Recovery at 80 % of what the relay sustained: the closed-loop
	// capacity c may overestimate what it sustains under an open load.
	after, err = l.Open(ctxT(t), 0.8*min(c, over.Rate()), recover)
	if err != nil {
		t.Fatal(err)
	}
	return over, after, base, during
}

// A relay driven at twice its measured deposit capacity (measured first,
// on the same relay) by senders within their per-peer rates keeps
// accepting (no collapse: at least a quarter of its capacity here, the benchmark
// reports the ratio), answers every deposit
// (OK, or a refusal with retry_after; nothing times out at the client's
// default timeout), holds at most its per-stream budgets in memory, and
// once the load drops to 80 % of capacity accepts most of what is offered
// (at least 80 %: while the overload's backlog drains, and when the
// closed-loop capacity overestimates the open-loop one on a busy machine,
// it answers the rest BUSY with a retry_after; seen: 0 – 9 %). Whether
// it sheds the excess without slowing the senders down is
// TestKnownBugLoadNotShed.
func TestLoadOverloadAndRecovery(t *testing.T) {
	r := oneRelay(t, nil)
	cs := loadClients(t, r, loadPeers, client10s)
	c := capacity(t, r, cs, 2*time.Second)
	over, after, base, during := overload(t, r, cs, c, 3*time.Second, 2*time.Second)
	t.Logf("capacity %.0f/s; at 2×: %+v, OK rate %.0f/s, p50 %v, p99 %v; after, at 80 %%: OK %d of %d, p99 %v",
		c, summary(over), over.Rate(), over.Quantile(.5), over.Quantile(.99), after.OK, after.Sent, after.Quantile(.99))
	if over.NoAnswer > 0 || over.OtherStatus > 0 || over.NoRetryAfter > 0 {
		t.Errorf("at 2× capacity: %d unanswered, %d other statuses, %d refusals without retry_after", over.NoAnswer, over.OtherStatus, over.NoRetryAfter)
	}
	// No collapse. (BenchmarkLoad reports the ratio; here the bound is
	// loose, since other work on a shared machine moves both figures: at
	// load ≈ 25 one run accepted 0.45 of the capacity it had measured.)
	if over.Rate() < 0.25*c {
		t.Errorf("at 2× capacity the relay accepted %.0f/s, below a quarter of its capacity %.0f/s", over.Rate(), c)
	}
	bound := uint64(loadPeers)*uint64(relay.DefaultConfig().DepositStreamBytes) + 1<<20
	if during.Attributed > base.Attributed+bound {
		t.Errorf("relay-held heap %d B during the overload (base %d B), bound %d B", during.Attributed, base.Attributed, bound)
	}
	if after.OK+after.Busy != after.Sent || after.NoRetryAfter > 0 || after.OK < after.Sent*4/5 {
		t.Errorf("after the overload, at 80 %% of capacity: %d of %d deposits accepted (want ≥ 80 %%, the rest BUSY), %d BUSY, %d refusals without retry_after", after.OK, after.Sent, after.Busy, after.NoRetryAfter)
	}
	// That the backlog drained shows above: at 80 % nearly everything is
	// accepted. The latencies are timings, reported, not checked (they
	// failed a "p99 after < half of p99 during" check in 3 of 8 runs on a
	// shared machine): BenchmarkLoad measures them.
	t.Logf("p99 latency during the overload %v, after it %v", over.Quantile(.99), after.Quantile(.99))
	t.Logf("relay-held heap: base %d KiB, during %d KiB (bound +%d KiB)", base.Attributed>>10, during.Attributed>>10, bound>>10)
}

// client10s is the client's default timeout (client.DefaultTimeout).
const client10s = client.DefaultTimeout
