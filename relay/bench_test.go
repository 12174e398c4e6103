package relay

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// benchConfig lifts the quotas out of a throughput benchmark's way.
func benchConfig(c *Config) {
	c.MailboxQuotaEntries = 1 << 40
	c.MailboxQuotaBytes = 1 << 50
	c.StorageCapBytes = 1 << 50
}

// BenchmarkRelayDeposit measures durable deposits with signed receipts: 4
// senders (4 client hosts, one pipelined stream each), 1 KiB envelopes.
// ns/op is per envelope; envelopes/s counts every answer, the tail
// included.
func BenchmarkRelayDeposit(b *testing.B) {
	n := startNode(b, benchConfig)
	const senders = 4
	work := make(chan []byte, 4096)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range senders {
		c := newClient(b, n)
		ds, err := c.OpenDeposit(context.Background(), n.ID())
		if err != nil {
			b.Fatal(err)
		}
		calls := make(chan *rpc.DepositCall, wire.MaxDepositInflight)
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
				calls <- call
			}
		}()
		go func() {
			defer wg.Done()
			for call := range calls {
				if _, err := call.Wait(context.Background()); err != nil {
					failed.Add(1)
				}
			}
			ds.Close()
		}()
		_ = i
	}
	mbs := make([]wire.Mailbox, 64)
	for i := range mbs {
		_, mbs[i] = mailboxKey(b)
	}
	ct := make([]byte, 1024-wire.EnvelopeOverhead)
	var count uint64
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
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d deposits failed", f)
	}
	b.ReportMetric(float64(count)/elapsed.Seconds(), "envelopes/s")
	st := n.Store().Stats()
	if st.Commits > 0 {
		b.ReportMetric(float64(st.CommitOps)/float64(st.Commits), "appends/fsync")
	}
}

// BenchmarkRelaySync measures one client syncing a mailbox of 10,000 stored
// 1 KiB entries from the empty cursor, verifying every entry's stamp with a
// fresh verifier (a new device: no cached roots).
func BenchmarkRelaySync(b *testing.B) {
	n := startNode(b, benchConfig)
	key, mb := mailboxKey(b)
	const entries = 10_000
	fillFast(b, n, mb, entries)
	h := clientHost(b, n)
	var total int
	for b.Loop() {
		c := &rpc.Client{Host: h, Verifier: wire.NewReceiptVerifier(4096)}
		st, err := c.Sync(context.Background(), n.ID(), key, rpc.SyncRequest{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			p, err := st.Next()
			if err != nil {
				b.Fatal(err)
			}
			got += len(p.Entries)
			if p.Done {
				break
			}
		}
		st.Close()
		if got != entries {
			b.Fatalf("synced %d entries", got)
		}
		total += got
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "entries/s")
}

// fillFast deposits count 1 KiB envelopes to mb over 4 streams.
func fillFast(b testing.TB, n *Node, mb wire.Mailbox, count int) {
	var wg sync.WaitGroup
	per := count / 4
	for s := range 4 {
		c := newClient(b, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds, err := c.OpenDeposit(context.Background(), n.ID())
			if err != nil {
				b.Error(err)
				return
			}
			defer ds.Close()
			calls := make([]*rpc.DepositCall, 0, per)
			for i := range per {
				env := envelope(b, mb, 1024, 0, uint64(s*per+i))
				call, err := ds.Send(context.Background(), env)
				if err != nil {
					b.Error(err)
					return
				}
				calls = append(calls, call)
			}
			for _, call := range calls {
				if _, err := call.Wait(context.Background()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkRelayPushLatency measures deposit → subscriber: the time from a
// sender's Send to the entry arriving, verified, at a subscribed device, one
// envelope at a time (1 KiB, durable before the push). It reports p50 and
// p99.
func BenchmarkRelayPushLatency(b *testing.B) {
	n := startNode(b, benchConfig)
	key, mb := mailboxKey(b)
	sub, err := newClient(b, n).Subscribe(context.Background(), n.ID(), key)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	ds, err := newClient(b, n).OpenDeposit(context.Background(), n.ID())
	if err != nil {
		b.Fatal(err)
	}
	defer ds.Close()
	var lat, rlat []time.Duration
	receiptAt := make(chan time.Time, 1)
	var i uint64
	for b.Loop() {
		i++
		env := envelope(b, mb, 1024, 0, i)
		t0 := time.Now()
		call, err := ds.Send(context.Background(), env)
		if err != nil {
			b.Fatal(err)
		}
		go func() { <-call.Done(); receiptAt <- time.Now() }()
		e, ok := <-sub.Entries()
		if !ok {
			b.Fatal(sub.Err())
		}
		lat = append(lat, time.Since(t0))
		if e.Stamp.Seq != i {
			b.Fatalf("pushed seq %d, want %d", e.Stamp.Seq, i)
		}
		rlat = append(rlat, (<-receiptAt).Sub(t0))
	}
	pct := func(l []time.Duration, p float64) float64 {
		slices.Sort(l)
		return float64(l[int(p*float64(len(l)-1))].Microseconds())
	}
	b.ReportMetric(pct(lat, 0.50), "p50-µs")
	b.ReportMetric(pct(lat, 0.99), "p99-µs")
	// The sender's own receipt latency over the same deposits: the part
	// of the push latency that is the durable append (fsync).
	b.ReportMetric(pct(rlat, 0.50), "receipt-p50-µs")
	b.ReportMetric(pct(rlat, 0.99), "receipt-p99-µs")
}
