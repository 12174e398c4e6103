package testnet_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// Benchmarks of whole clusters (issue 8). Each runs real relays and
// clients on 127.0.0.1 in this process, without links (DirectLinks: no
// proxy hop), badger in a temp dir with synchronous commits. Commands and
// results: BENCHMARKS.md.

// benchEnvelope is a 1 KiB envelope for mb, distinct by counter.
func benchEnvelope(b *testing.B, mb wire.Mailbox, counter uint64) []byte {
	ct := make([]byte, 1024-wire.EnvelopeOverhead)
	for i := range 8 {
		ct[i] = byte(counter >> (8 * i))
	}
	env, err := (&wire.Envelope{Mailbox: mb, Ciphertext: ct}).Marshal()
	if err != nil {
		b.Fatal(err)
	}
	return env
}

// BenchmarkClusterDeposit: deposit throughput into a 3-relay cluster
// (R = 3). Four senders (four hosts), each with one pipelined deposit
// stream per relay, deposit 1 KiB envelopes for 64 mailboxes, each to the
// closest relay of its mailbox's replica set; every receipt is verified.
// One op is one acknowledged deposit.
func BenchmarkClusterDeposit(b *testing.B) {
	c := testnet.New(b, testnet.WithRelays(3), testnet.WithDirectLinks())
	const senders, mailboxes = 4, 64
	mbs := make([]wire.Mailbox, mailboxes)
	first := make([]*testnet.Relay, mailboxes)
	for i := range mbs {
		_, mbs[i] = mailboxKey(b)
		first[i] = c.ReplicaSet(mbs[i])[0]
	}
	type sender struct {
		streams map[*testnet.Relay]*rpc.DepositStream
	}
	ctx := context.Background()
	ss := make([]sender, senders)
	for i := range ss {
		cl := rpcTo(b, addrInfos(c)...)
		ss[i].streams = map[*testnet.Relay]*rpc.DepositStream{}
		for _, r := range c.Relays {
			ds, err := cl.OpenDeposit(ctx, r.ID)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { ds.Close() })
			ss[i].streams[r] = ds
		}
	}
	// Envelopes are made before the clock runs.
	const pool = 1 << 16
	envs := make([][]byte, pool)
	dest := make([]*testnet.Relay, pool)
	for i := range envs {
		envs[i] = benchEnvelope(b, mbs[i%mailboxes], uint64(i))
		dest[i] = first[i%mailboxes]
	}
	var calls []*rpc.DepositCall
	var next uint64
	start := time.Now()
	n := 0
	for b.Loop() {
		i := int(next % pool)
		if next >= pool {
			// Past the pool the envelopes are duplicates: make fresh ones.
			envs[i] = benchEnvelope(b, mbs[i%mailboxes], next)
		}
		s := ss[int(next)%senders]
		call, err := s.streams[dest[i]].Send(ctx, envs[i])
		if err != nil {
			b.Fatal(err)
		}
		calls = append(calls, call)
		next++
		n++
		if len(calls) >= 4096 {
			waitCalls(b, calls)
			calls = calls[:0]
		}
	}
	waitCalls(b, calls)
	el := time.Since(start)
	b.ReportMetric(float64(n)/el.Seconds(), "deposits/s")
}

func addrInfos(c *testnet.Cluster) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, r := range c.Relays {
		out = append(out, r.AddrInfo())
	}
	return out
}

func waitCalls(b *testing.B, calls []*rpc.DepositCall) {
	for _, call := range calls {
		res, err := call.Wait(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if res.Receipt == nil && !res.Duplicate {
			b.Fatal("no receipt")
		}
	}
}

// pair makes two new clients of c and introduces them: a accepts b's
// invite and sends the first message, which b receives; it returns b's
// contact ID at a.
func pair(b *testing.B, c *testnet.Cluster) (a, bb *testnet.Client, bAtA client.ContactID) {
	ctx := context.Background()
	a, err := c.AddClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	bb, err = c.AddClient(ctx)
	if err != nil {
		b.Fatal(err)
	}
	bAtA = introduce(b, a.Client(), bb.Client())
	if _, err := a.Client().Send(ctx, bAtA, []byte("hello")); err != nil {
		b.Fatal(err)
	}
	aAtB := contactOf(b, bb.Client(), a.Client())
	waitBodies(b, bb.Client(), aAtB, client.Incoming, []string{"hello"})
	// Its ack has left, so the relays dropped "hello": a backlog of
	// 10,000 then fits the relays' mailbox quota (10,000 entries).
	if err := bb.Client().Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return a, bb, bAtA
}

// countReceived counts MessageReceived events (and what EventsDropped
// says was dropped) until want, or ctx ends.
func countReceived(ctx context.Context, cl *client.Client, want int) error {
	got := 0
	for got < want {
		select {
		case ev, ok := <-cl.Events():
			if !ok {
				return errors.New("events closed")
			}
			switch ev := ev.(type) {
			case client.MessageReceived:
				got++
			case client.EventsDropped:
				got += ev.Count
			}
		case <-ctx.Done():
			return fmt.Errorf("received %d of %d: %w", got, want, ctx.Err())
		}
	}
	return nil
}

// BenchmarkClusterCatchUp10k: offline catch-up through a 3-relay cluster.
// A client is offline while its contact sends 10,000 messages of 1 KiB
// (all stored: receipts in); one op is bringing it online (client.New on
// its data directory and Start) until all 10,000 were received
// (decrypted, durably stored, reported). Each op prepares a fresh backlog
// with the clock stopped: run it with -benchtime=Nx.
func BenchmarkClusterCatchUp10k(b *testing.B) {
	const backlog = 10_000
	c := testnet.New(b, testnet.WithRelays(3), testnet.WithDirectLinks(),
		testnet.WithClientConfig(func(i int, cfg *client.Config) { cfg.EventBuffer = 1 << 15 }))
	body := make([]byte, 1024)
	ctx := context.Background()
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		alice, bob, bobAtAlice := pair(b, c)
		if err := bob.Offline(); err != nil {
			b.Fatal(err)
		}
		var last client.MessageID
		for i := range backlog {
			copy(body, strconv.Itoa(i))
			id, err := alice.Client().Send(ctx, bobAtAlice, body)
			if err != nil {
				b.Fatal(err)
			}
			last = id
		}
		testnet.Eventually(b, func() error {
			h, err := alice.Client().History(bobAtAlice)
			if err != nil {
				return err
			}
			queued := 0
			for _, m := range h {
				if m.Direction == client.Outgoing && m.Status == client.StatusQueued {
					queued++
				}
			}
			if queued > 0 {
				return fmt.Errorf("%d messages still queued (last %s)", queued, last)
			}
			return nil
		}, "the backlog to be stored")
		if err := alice.Offline(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := bob.Online(ctx); err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := countReceived(wctx, bob.Client(), backlog)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		b.StopTimer()
		if err := bob.Offline(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/catch-up")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N*backlog), "µs/msg")
}

// BenchmarkClusterLiveLatency: live delivery through a 3-relay cluster.
// One op is one 1 KiB message from Send at one client to MessageReceived
// at the other (online, subscribed), one message at a time. Reports the
// percentiles of the op's latency.
func BenchmarkClusterLiveLatency(b *testing.B) {
	c := testnet.New(b, testnet.WithRelays(3), testnet.WithDirectLinks(),
		testnet.WithClientConfig(func(i int, cfg *client.Config) { cfg.EventBuffer = 1 << 12 }))
	alice, bob, bobAtAlice := pair(b, c)
	ctx := context.Background()
	body := make([]byte, 1024)
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := alice.Client().Send(ctx, bobAtAlice, body); err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := countReceived(wctx, bob.Client(), 1)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	p := func(q float64) float64 {
		return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.90), "p90-ms")
	b.ReportMetric(p(0.99), "p99-ms")
}

// BenchmarkDHT100: a 100-relay in-process network (the fast recipe:
// TCP on 127.0.0.1, null resource manager, XOR-closest 20 + 8 random
// neighbours). One op is one GetClosestPeers lookup of a random key from a
// random relay; it also reports how many lookups found the key's true 3
// closest relays, the start-up time, and memory per relay (Go heap in use
// and the process's RSS, divided by 100).
func BenchmarkDHT100(b *testing.B) {
	const n = 100
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rssBefore := rssKiB()
	start := time.Now()
	c := testnet.New(b, testnet.WithRelays(n), testnet.WithDirectLinks(), testnet.WithSeed(1))
	up := time.Since(start)
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	rss := rssKiB()
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	exact, lookups := 0, 0
	var lat []time.Duration
	for b.Loop() {
		_, mb := mailboxKey(b)
		from := c.Relays[rng.IntN(n)]
		t0 := time.Now()
		got, err := lookupReplicaSet(ctx, from, mb, 3)
		lat = append(lat, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		lookups++
		want := c.ReplicaSet(mb)
		if len(got) == 3 && got[0] == want[0].ID && got[1] == want[1].ID && got[2] == want[2].ID {
			exact++
		}
	}
	b.ReportMetric(up.Seconds(), "s-startup")
	b.ReportMetric(float64(exact)/float64(lookups), "exact-R-set")
	b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n/(1<<20), "heap-MiB/relay")
	b.ReportMetric(float64(rss-rssBefore)/n/1024, "rss-MiB/relay")
	b.ReportMetric(float64(runtime.NumGoroutine())/n, "goroutines/relay")
	reportPercentiles(b, lat)
}

// rssKiB returns this process's resident set size in KiB (Linux), or 0.
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}
