package relay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// BenchmarkReplicatedDeposit measures deposits acknowledged after all three
// replicas hold them: three relays in one process on loopback, R = 3,
// ReceiptQuorum = 3, 1 KiB envelopes to 64 mailboxes (every relay is a
// replica of each), six senders (two per relay, each its own client host
// and one pipelined stream). ns/op is per envelope; every answer must say
// replicas = 3.
func BenchmarkReplicatedDeposit(b *testing.B) {
	for _, q := range []int{3, 1} {
		b.Run(fmt.Sprintf("quorum=%d", q), func(b *testing.B) {
			nodes := startCluster(b, 3, func(_ int, c *Config) {
				benchConfig(c)
				c.ReceiptQuorum = q
				c.QuorumTimeout = 30 * time.Second
				c.AntiEntropyInterval = time.Minute // the default
			})
			benchReplicatedDeposit(b, nodes, q)
		})
	}
}

func benchReplicatedDeposit(b *testing.B, nodes []*Node, quorum int) {
	const senders = 6
	work := make(chan []byte, 4096)
	var wg sync.WaitGroup
	var failed, short, busy atomic.Int64
	for i := range senders {
		target := nodes[i%len(nodes)]
		c := newClient(b, target)
		ds, err := c.OpenDeposit(context.Background(), target.ID())
		if err != nil {
			b.Fatal(err)
		}
		type sent struct {
			call *rpc.DepositCall
			env  []byte
		}
		calls := make(chan sent, wire.MaxDepositInflight)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(calls)
			for env := range work {
				call, err := ds.Send(context.Background(), env)
				if err != nil {
					failed.Add(1)
					continue
				}
				calls <- sent{call, env}
			}
		}()
		go func() {
			defer wg.Done()
			for c := range calls {
				res, retries, err := waitRetryingBusy(ds, c.call, c.env)
				busy.Add(int64(retries))
				if err != nil {
					failed.Add(1)
					continue
				}
				if res.Replicas < quorum {
					short.Add(1)
				}
			}
			ds.Close()
		}()
	}
	mbs := make([]wire.Mailbox, 64)
	for i := range mbs {
		_, mbs[i] = mailboxKey(b)
	}
	ct := make([]byte, 1024-wire.EnvelopeOverhead)
	var count uint64
	cpu0 := processCPU()
	start := time.Now()
	for b.Loop() {
		count++
		ct[0], ct[1], ct[2], ct[3], ct[4] = byte(count), byte(count>>8), byte(count>>16), byte(count>>24), byte(count>>32)
		e := wire.Envelope{Mailbox: mbs[count%64], Ciphertext: ct}
		env, _ := e.Marshal()
		work <- env
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d deposits failed", f)
	}
	if s := short.Load(); s > 0 {
		b.Fatalf("%d deposits answered with fewer than %d replicas", s, quorum)
	}
	b.ReportMetric(float64(count)/elapsed.Seconds(), "envelopes/s")
	b.ReportMetric(float64(busy.Load()), "busy-retries")
	// CPU time of the whole process (three relays and six clients) per
	// envelope: what the machine's load does not change.
	b.ReportMetric(float64(cpu.Microseconds())/float64(count), "cpu-µs/envelope")
	var dropped, sessions, lookups float64
	for _, n := range nodes {
		dropped += metricSum(n, "cairn_relay_replicate_dropped_total")
		sessions += metricSum(n, "cairn_relay_reconcile_sessions_total")
		lookups += metricSum(n, "cairn_relay_replica_lookups_total")
	}
	b.ReportMetric(dropped, "forwards-dropped")
	b.ReportMetric(sessions, "reconciles")
	b.ReportMetric(lookups, "lookups")
	var commits, ops uint64
	for _, n := range nodes {
		st := n.Store().Stats()
		commits += st.Commits
		ops += st.CommitOps
	}
	if commits > 0 {
		b.ReportMetric(float64(ops)/float64(commits), "ops/fsync")
	}
}

// metricSum sums a counter family of a node's registry (0 if it has no
// sample yet).
func metricSum(n *Node, name string) float64 {
	mfs, _ := n.Registry().Gather()
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// processCPU returns the user and system CPU time of this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLocateReplicaSet measures how long a relay takes to find a
// mailbox's replica set with a DHT lookup (the placer's path, cache
// bypassed) in a network of 100 relays in this process, built with the
// fast local-cluster recipe (each relay connected to its 20 XOR-closest
// relays and 8 random ones, no automatic refresh). It reports the median
// and 90th percentile, how many relays a lookup sent a query to, and the
// fraction of lookups that found exactly the 3 closest relays.
func BenchmarkLocateReplicaSet(b *testing.B) {
	const size = 100
	nodes := make([]*Node, size)
	for i := range nodes {
		nodes[i] = startNode(b, func(c *Config) {
			c.ResourceManager = &network.NullResourceManager{}
			c.AntiEntropyInterval = time.Hour
			c.DHTOptions = []dht.Option{dht.DisableAutoRefresh()}
		})
	}
	all := ids(nodes)
	rng := rand.New(rand.NewPCG(100, 3))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, n := range nodes {
		near := kb.SortClosestPeers(slices.DeleteFunc(slices.Clone(all), func(p peer.ID) bool { return p == n.ID() }), kb.ConvertPeerID(n.ID()))
		targets := near[:20]
		for range 8 {
			targets = append(targets, all[rng.IntN(size)])
		}
		for _, p := range targets {
			if p == n.ID() {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = n.Host().Connect(ctx, byID(nodes, p).AddrInfo())
			}()
		}
	}
	wg.Wait()
	waitFor(b, "routing tables of at least 20", func() bool {
		for _, n := range nodes {
			if n.DHT().RoutingTable().Size() < 20 {
				return false
			}
		}
		return true
	})
	var durations []time.Duration
	contacted, exact := 0, 0
	for b.Loop() {
		_, mb := mailboxKey(b)
		n := nodes[rng.IntN(size)]
		base, cancel := context.WithCancel(context.Background())
		ctx, events := routing.RegisterForQueryEvents(base)
		seen := make(map[peer.ID]bool)
		done := make(chan struct{})
		go func() {
			for ev := range events {
				if ev.Type == routing.SendingQuery {
					seen[ev.ID] = true
				}
			}
			close(done)
		}()
		start := time.Now()
		v := n.placer.lookup(ctx, mb)
		durations = append(durations, time.Since(start))
		cancel() // closes events
		<-done
		if !v.lookedUp {
			b.Fatal("lookup found no peer")
		}
		got := v.replicas()
		contacted += len(seen)
		if slices.Equal(got, closest(all, mb, 3)) {
			exact++
		}
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(durations[len(durations)*9/10].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(contacted)/float64(len(durations)), "relays-contacted")
	b.ReportMetric(float64(exact)/float64(len(durations)), "exact-top3")
}

// BenchmarkReconcileProtocol measures anti-entropy over the real protocol
// between two relays that hold one mailbox of 1,000,000 common entries and
// differ by 10 (5 only on each side): the bytes of every frame both ways
// (length prefixes included; the 10 entries with their stamps are part of
// it) and the turn frames. Receivers count but do not store what they
// receive, so the difference stays for every iteration. The setup appends
// and imports 2,000,000 entries (a few minutes).
func BenchmarkReconcileProtocol(b *testing.B) {
	const common, unique = 1_000_000, 5
	nodes := make([]*Node, 2)
	for i := range nodes {
		nodes[i] = startNode(b, func(c *Config) {
			benchConfig(c)
			c.AntiEntropyInterval = time.Hour
			c.ResourceManager = &network.NullResourceManager{}
		})
	}
	a, o := nodes[0], nodes[1]
	_, mb := mailboxKey(b)
	ctx := context.Background()
	batch := make([]store.Deposit, 0, 1024)
	for i := 0; i < common; i++ {
		batch = append(batch, store.Deposit{Envelope: envelope(b, mb, 64, 0, uint64(i))})
		if len(batch) == cap(batch) || i == common-1 {
			for _, r := range a.Store().AppendMany(ctx, batch) {
				if r.Err != nil {
					b.Fatal(r.Err)
				}
			}
			batch = batch[:0]
		}
	}
	var after *wire.Position
	for {
		page, err := a.Store().Read(mb, nil, after, 4096, 0)
		if err != nil {
			b.Fatal(err)
		}
		imps := make([]store.Import, len(page.Entries))
		for i, e := range page.Entries {
			imps[i] = store.Import(e)
		}
		for _, r := range o.Store().ImportMany(ctx, imps) {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
		if !page.More {
			break
		}
		last := page.Entries[len(page.Entries)-1].Stamp
		after = &wire.Position{Origin: last.Origin, Seq: last.Seq}
	}
	for i := range unique {
		for j, n := range nodes {
			if _, err := n.Store().Append(ctx, store.Deposit{Envelope: envelope(b, mb, 64, 0, uint64(2*common+10*i+j))}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, n := range nodes {
		n.reconcileNoImport = true
		if _, err := n.Store().RangeFingerprint(mb, store.SetEntries, nil, nil); err != nil { // load the index
			b.Fatal(err)
		}
	}
	connectAll(b, nodes)
	var bytes, frames, items int64
	for b.Loop() {
		_, res, rs, err := a.reconcileWith(ctx, o.ID(), []wire.Mailbox{mb}, nil)
		if err != nil || !res[0].done {
			b.Fatalf("reconcile: %v %+v", err, res[0])
		}
		bytes += rs.BytesSent() + rs.BytesReceived()
		frames += int64(res[0].frames)
		items += int64(res[0].received + res[0].sent)
	}
	n := int64(b.N)
	b.ReportMetric(float64(bytes/n), "bytes/reconcile")
	b.ReportMetric(float64(frames/n), "frames")
	b.ReportMetric(float64(items/n), "items-moved")
}
