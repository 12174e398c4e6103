package client_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
)

// copyDir replaces dst with a copy of src.
func copyDir(b testing.TB, src, dst string) {
	b.Helper()
	if err := os.RemoveAll(dst); err != nil {
		b.Fatal(err)
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		b.Fatal(err)
	}
}

func body1K(i int) []byte {
	b := make([]byte, 1024)
	copy(b, fmt.Sprintf("message %06d ", i))
	return b
}

// BenchmarkClientOfflineCatchUp measures a client that was offline while
// 10,000 messages of 1 KiB arrived: from Start until it has synced,
// decrypted and durably stored all of them (the last MessageReceived). Each
// iteration restores the relay's and the recipient's data to the state
// before the catch-up.
func BenchmarkClientOfflineCatchUp(b *testing.B) {
	const n = 10_000
	r := startRelay(b, func(c *relay.Config) { c.MailboxQuotaEntries = 4 * n })
	alice := newClient(b, testConfig(b.TempDir(), addrs(r)))
	bobDir := filepath.Join(b.TempDir(), "bob")
	bobCfg := testConfig(bobDir, addrs(r))
	bobCfg.EventBuffer = 2 * n
	bob, err := client.New(bobCfg)
	if err != nil {
		b.Fatal(err)
	}
	bobAtAlice := introduce(b, alice, bob)
	// Establish the session first (a reply from the recipient), so that
	// the backlog is ratchet messages, as in a running conversation.
	if err := bob.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	sendAll(b, alice, bobAtAlice, []string{"hello"})
	aliceAtBob := contactOf(b, bob, alice)
	waitFor(b, "hello", func() bool { return len(bodies(b, bob, aliceAtBob, client.Incoming)) == 1 })
	sendAll(b, bob, aliceAtBob, []string{"hi"})
	waitBodies(b, alice, bobAtAlice, client.Incoming, []string{"hi"})
	if err := bob.Close(); err != nil {
		b.Fatal(err)
	}
	snap := b.TempDir()
	copyDir(b, bobDir, filepath.Join(snap, "bob"))

	start := time.Now()
	var last client.MessageID
	for i := range n {
		if last, err = alice.Send(context.Background(), bobAtAlice, body1K(i)); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, "all stored", func() bool { return status(b, alice, last) == client.StatusStored })
	b.Logf("setup: %d sends stored in %v", n, time.Since(start))
	// The sender is not part of the measurement.
	if err := alice.Close(); err != nil {
		b.Fatal(err)
	}
	r.stop()
	copyDir(b, r.cfg.DataDir, filepath.Join(snap, "relay"))
	r.start()

	for b.Loop() {
		b.StopTimer()
		r.stop()
		copyDir(b, filepath.Join(snap, "relay"), r.cfg.DataDir)
		r.start()
		copyDir(b, filepath.Join(snap, "bob"), bobDir)
		bob, err := client.New(bobCfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if err := bob.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		got := 0
		var first time.Duration
		for ev := range bob.Events() {
			if _, ok := ev.(client.MessageReceived); ok {
				if got == 0 {
					first = time.Since(t0)
				}
				got++
				if got == n {
					break
				}
			}
		}
		if os.Getenv("CAIRN_BENCH_DETAIL") != "" {
			b.Logf("first message after %v, all after %v", first, time.Since(t0))
		}
		b.StopTimer()
		bob.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/msg")
}

// BenchmarkClientRoundTrip measures a live 1 KiB message from Send at one
// client to MessageReceived at the other, through one relay on loopback.
func BenchmarkClientRoundTrip(b *testing.B) {
	r := startRelay(b, nil)
	alice := newClient(b, testConfig(b.TempDir(), addrs(r)))
	bob := newClient(b, testConfig(b.TempDir(), addrs(r)))
	bobAtAlice := introduce(b, alice, bob)
	// Warm up: the session, the streams, the subscription.
	sendAll(b, alice, bobAtAlice, []string{"hello"})
	aliceAtBob := contactOf(b, bob, alice)
	sendAll(b, bob, aliceAtBob, []string{"hi"})
	waitBodies(b, alice, bobAtAlice, client.Incoming, []string{"hi"})
	waitFor(b, "hello", func() bool { return len(bodies(b, bob, aliceAtBob, client.Incoming)) == 1 })
	for len(bob.Events()) > 0 {
		<-bob.Events()
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		t0 := time.Now()
		if _, err := alice.Send(context.Background(), bobAtAlice, body1K(i)); err != nil {
			b.Fatal(err)
		}
		for ev := range bob.Events() {
			if _, ok := ev.(client.MessageReceived); ok {
				break
			}
		}
		lat = append(lat, time.Since(t0))
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkClientWireBytes counts the bytes both clients' libp2p streams
// carry (both directions, everything: deposits, receipts, pushes, acks,
// delivery receipts, sync and DHT traffic) per 1 KiB message sent, and the
// sender's outgoing bytes per message.
func BenchmarkClientWireBytes(b *testing.B) {
	r := startRelay(b, nil)
	aliceBW, bobBW := metrics.NewBandwidthCounter(), metrics.NewBandwidthCounter()
	mk := func(bw *metrics.BandwidthCounter) *client.Client {
		c, err := client.New(testConfig(b.TempDir(), addrs(r)))
		if err != nil {
			b.Fatal(err)
		}
		client.SetBandwidthReporter(c, bw)
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob := mk(aliceBW), mk(bobBW)
	bobAtAlice := introduce(b, alice, bob)
	sendAll(b, alice, bobAtAlice, []string{"warm-up"})
	aliceAtBob := contactOf(b, bob, alice)
	waitFor(b, "warm-up", func() bool { return len(bodies(b, bob, aliceAtBob, client.Incoming)) == 1 })
	// The counters' totals move once a second (go-flow-metrics' sweeper).
	time.Sleep(1500 * time.Millisecond)
	a0, b0 := aliceBW.GetBandwidthTotals(), bobBW.GetBandwidthTotals()
	sent := 0
	var ids []client.MessageID
	for b.Loop() {
		id, err := alice.Send(context.Background(), bobAtAlice, body1K(sent))
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
		sent++
	}
	b.StopTimer()
	for _, id := range ids {
		waitFor(b, "delivered", func() bool { return status(b, alice, id) == client.StatusDelivered })
	}
	time.Sleep(1500 * time.Millisecond)
	a1, b1 := aliceBW.GetBandwidthTotals(), bobBW.GetBandwidthTotals()
	total := (a1.TotalIn - a0.TotalIn) + (a1.TotalOut - a0.TotalOut) + (b1.TotalIn - b0.TotalIn) + (b1.TotalOut - b0.TotalOut)
	b.ReportMetric(float64(a1.TotalOut-a0.TotalOut)/float64(sent), "sender-out-B/msg")
	b.ReportMetric(float64(b1.TotalIn-b0.TotalIn)/float64(sent), "recipient-in-B/msg")
	b.ReportMetric(float64(total)/float64(sent), "all-B/msg")
	b.StartTimer()
}
