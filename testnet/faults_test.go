package testnet_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/testnet"
)

// A partition closes the connections across the cut and refuses new ones
// (dials and protocol calls); healing restores both.
func TestPartitionAndHeal(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(5), testnet.WithLogger(testLogger()))
	r := c.Relays
	left, right := []testnet.Member{r[0], r[1]}, []testnet.Member{r[2], r[3], r[4]}
	c.Partition(left, right)

	across := func(a, b *testnet.Relay) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := rpc.New(a.Node().Host()).Info(forceDial(ctx), b.ID)
		return err
	}
	for _, a := range r[:2] {
		for _, b := range r[2:] {
			if c.Connected(a, b) || c.Connected(b, a) {
				t.Errorf("%s and %s still connected across the cut", a, b)
			}
			if err := across(a, b); err == nil {
				t.Errorf("info %s → %s across the cut succeeded", a, b)
			}
			if err := across(b, a); err == nil {
				t.Errorf("info %s → %s across the cut succeeded", b, a)
			}
		}
	}
	// Within each side everything still works.
	if err := across(r[0], r[1]); err != nil {
		t.Errorf("info within the left side: %v", err)
	}
	if err := across(r[4], r[2]); err != nil {
		t.Errorf("info within the right side: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}

	c.Heal()
	testnet.Eventually(t, func() error {
		for _, a := range r[:2] {
			for _, b := range r[2:] {
				if err := across(a, b); err != nil {
					return err
				}
			}
		}
		return nil
	}, "calls across the healed cut")
	if err := c.WaitRouting(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// A single Cut blocks one pair only.
func TestCutOnePair(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3))
	a, b, x := c.Relays[0], c.Relays[1], c.Relays[2]
	c.Cut(a, b)
	if c.Reachable(a, b) || !c.Reachable(a, x) || !c.Reachable(b, x) {
		t.Fatal("Reachable disagrees with the cut")
	}
	ctx := ctxT(t)
	if _, err := rpc.New(a.Node().Host()).Info(forceDial(ctx), b.ID); err == nil {
		t.Error("info across a cut pair succeeded")
	}
	if _, err := rpc.New(a.Node().Host()).Info(forceDial(ctx), x.ID); err != nil {
		t.Errorf("info to a relay not cut: %v", err)
	}
	c.Heal()
	testnet.Eventually(t, func() error {
		_, err := rpc.New(a.Node().Host()).Info(forceDial(ctx), b.ID)
		return err
	}, "info after heal")
}

// A killed relay restarts with the same peer ID, at the same cluster
// address, with every entry it had acknowledged.
func TestKillRestartKeepsIdentityAndEntries(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3))
	r := c.Relays[1]
	cl := rpcTo(t, r.AddrInfo())
	_, mb := mailboxKey(t)
	cids := deposit(t, cl, r.ID, mb, 0, 50)
	addr := r.Multiaddr()

	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if r.Running() || r.Node() != nil {
		t.Fatal("killed relay still running")
	}
	if err := r.Kill(); !errors.Is(err, testnet.ErrDown) {
		t.Fatalf("second kill: %v, want ErrDown", err)
	}
	if _, err := cl.Info(forceDial(ctxT(t)), r.ID); err == nil {
		t.Fatal("info to a killed relay succeeded")
	}
	if err := r.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if r.Node().ID() != r.ID || r.Multiaddr() != addr {
		t.Fatalf("restarted as %s at %s, was %s at %s", r.Node().ID(), r.Multiaddr(), r.ID, addr)
	}
	for i, cid := range cids {
		if _, err := r.Node().Store().Get(mb, cid); err != nil {
			t.Fatalf("entry %d after restart: %v", i, err)
		}
	}
	if n := c.CountReplicas(mb, cids[0]); n < 1 {
		t.Fatalf("CountReplicas %d", n)
	}
	// The same client reaches it again at the same address.
	testnet.Eventually(t, func() error {
		_, err := cl.Info(forceDial(ctxT(t)), r.ID)
		return err
	}, "info to the restarted relay")
	more := deposit(t, cl, r.ID, mb, 50, 5)
	if len(more) != 5 {
		t.Fatal("deposit after restart")
	}
	// A graceful stop and restart too.
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, cid := range append(cids, more...) {
		if _, err := r.Node().Store().Get(mb, cid); err != nil {
			t.Fatalf("entry after stop and restart: %v", err)
		}
	}
}

// Delay on a relay's links is observable: a call to the delayed relay
// finishes after a concurrent one to an undelayed relay, and the links
// count delayed chunks only while a delay is set. (Round-trip times are
// logged, never asserted.)
func TestLinkDelayObservable(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3))
	fast, slow := c.Relays[0], c.Relays[1]
	cl := rpcTo(t, fast.AddrInfo(), slow.AddrInfo())
	ctx := ctxT(t)
	info := func(r *testnet.Relay) (time.Duration, error) {
		start := time.Now()
		_, err := cl.Info(ctx, r.ID)
		return time.Since(start), err
	}
	// Warm connections up, measure the baseline.
	base, err := info(slow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := info(fast); err != nil {
		t.Fatal(err)
	}
	if d := c.LinkStats().Delayed; d != 0 {
		t.Fatalf("%d chunks delayed before any fault", d)
	}

	const delay = 150 * time.Millisecond
	c.SetFault(slow, testnet.LinkFault{Delay: delay})
	before := c.LinkStats().Delayed
	const rounds = 5
	slowLast := 0
	var slowRTT time.Duration
	for range rounds {
		order := make(chan string, 2)
		go func() {
			d, err := info(slow)
			if err != nil {
				t.Error(err)
			}
			slowRTT = d
			order <- "slow"
		}()
		if _, err := info(fast); err != nil {
			t.Fatal(err)
		}
		order <- "fast"
		if first := <-order; first == "fast" {
			slowLast++
		}
		<-order
	}
	if slowLast != rounds {
		t.Errorf("the delayed relay answered first in %d of %d rounds", rounds-slowLast, rounds)
	}
	if c.LinkStats().Delayed <= before {
		t.Error("no chunk was delayed")
	}
	t.Logf("info round trip to the relay: %v before, %v with a one-way delay of %v", base, slowRTT, delay)

	c.ClearFaults()
	before = c.LinkStats().Delayed
	if _, err := info(slow); err != nil {
		t.Fatal(err)
	}
	if d := c.LinkStats().Delayed - before; d != 0 {
		t.Fatalf("%d chunks delayed after ClearFaults", d)
	}
}

// DropRate 1 cuts every connection that carries a byte; clearing it lets
// calls through again. The cut shows in the links' counters.
func TestLinkDrop(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3), testnet.WithSeed(7))
	r := c.Relays[2]
	cl := rpcTo(t, r.AddrInfo())
	if _, err := cl.Info(ctxT(t), r.ID); err != nil {
		t.Fatal(err)
	}
	c.SetFault(r, testnet.LinkFault{DropRate: 1})
	before := c.LinkStats().Dropped
	if _, err := cl.Info(forceDial(ctxT(t)), r.ID); err == nil {
		t.Fatal("info through a link that drops everything succeeded")
	}
	if c.LinkStats().Dropped == before {
		t.Fatal("no connection counted as dropped")
	}
	c.SetFault(r, testnet.LinkFault{})
	testnet.Eventually(t, func() error {
		_, err := cl.Info(forceDial(ctxT(t)), r.ID)
		return err
	}, "info once the link is clean")
}

// A pair fault applies to the links between that pair only: the relays'
// gaters tell the links who is on each side of a relay-to-relay
// connection.
func TestPairFaultOnlyThatPair(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3))
	a, b, x := c.Relays[0], c.Relays[1], c.Relays[2]
	call := func(from, to *testnet.Relay) {
		t.Helper()
		if _, err := rpc.New(from.Node().Host()).Info(ctxT(t), to.ID); err != nil {
			t.Fatal(err)
		}
	}
	call(a, b)
	call(a, x)
	call(b, x)
	c.SetPairFault(a, b, testnet.LinkFault{Delay: 20 * time.Millisecond})
	for _, p := range [][2]*testnet.Relay{{a, x}, {x, a}, {b, x}, {x, b}} {
		before := c.PairStats(p[0], p[1])
		call(p[0], p[1])
		after := c.PairStats(p[0], p[1])
		if after.Chunks == before.Chunks {
			t.Errorf("%s → %s: no chunk counted", p[0], p[1])
		}
		if after.Delayed != 0 {
			t.Errorf("%s → %s: %d chunks delayed by a fault of the pair %s–%s", p[0], p[1], after.Delayed, a, b)
		}
	}
	for _, p := range [][2]*testnet.Relay{{a, b}, {b, a}} {
		before := c.PairStats(a, b).Delayed
		call(p[0], p[1])
		if c.PairStats(a, b).Delayed == before {
			t.Errorf("%s → %s: nothing delayed", p[0], p[1])
		}
	}
}

// Options reach every member: R, the clock, relay and client tweaks.
func TestOptionsReachMembers(t *testing.T) {
	skew := 42 * time.Second
	now := func() time.Time { return time.Now().Add(skew) }
	c := testnet.New(t, testnet.WithRelays(2), testnet.WithClients(1), testnet.WithR(2), testnet.WithClock(now),
		testnet.WithRelayConfig(func(i int, cfg *relay.Config) { cfg.MaxPageEntries = 100 + i }),
		testnet.WithClientConfig(func(i int, cfg *client.Config) { cfg.Name = "tweaked" }))
	for i, r := range c.Relays {
		cfg := r.Node().Config()
		if cfg.ReplicationFactor != 2 || cfg.MaxPageEntries != 100+i || cfg.Now == nil || time.Until(cfg.Now()) < skew/2 {
			t.Errorf("%s: R %d, MaxPageEntries %d, clock set %v", r, cfg.ReplicationFactor, cfg.MaxPageEntries, cfg.Now != nil)
		}
	}
	cfg := c.Clients[0].Config()
	if cfg.ReplicationFactor != 2 || cfg.Name != "tweaked" || cfg.Now == nil || len(cfg.Bootstrap) != 2 || len(cfg.EncryptionKey) != 32 {
		t.Errorf("client config %+v", cfg)
	}
	if c.R() != 2 {
		t.Errorf("R() = %d", c.R())
	}
}

// connsFrom counts the connections the running relays have from peer p.
func connsFrom(c *testnet.Cluster, p peer.ID) int {
	n := 0
	for _, r := range c.Relays {
		if node := r.Node(); node != nil {
			n += len(node.Host().Network().ConnsToPeer(p))
		}
	}
	return n
}

// Clients are partitioned exactly, with links or without (DirectLinks):
// an isolated client has no connection to any relay and cannot sync; a
// client that comes online while isolated never connects; healing brings
// both back.
func TestPartitionClients(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			opts := []testnet.Option{testnet.WithRelays(3), testnet.WithClients(2), testnet.WithLogger(testLogger())}
			if direct {
				opts = append(opts, testnet.WithDirectLinks())
			}
			c := testnet.New(t, opts...)
			alice, bob := c.Clients[0], c.Clients[1]
			if n := connsFrom(c, alice.Client().PeerID()); n == 0 {
				t.Fatal("an online client has no connection to any relay")
			}

			c.Isolate(alice)
			if n := connsFrom(c, alice.Client().PeerID()); n != 0 {
				t.Fatalf("%d connections from the isolated client", n)
			}
			if err := alice.Client().Sync(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
				t.Fatalf("sync of an isolated client: %v, want ErrNoRelay", err)
			}
			if err := bob.Offline(); err != nil {
				t.Fatal(err)
			}
			c.Partition([]testnet.Member{alice}, []testnet.Member{bob})
			if err := bob.Online(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if err := bob.Client().WaitReady(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
				t.Fatalf("WaitReady of a client isolated before it started: %v, want ErrNoRelay", err)
			}
			if n := connsFrom(c, bob.Client().PeerID()); n != 0 {
				t.Fatalf("%d connections from a client isolated before it started", n)
			}

			c.Heal()
			for _, cl := range []*testnet.Client{alice, bob} {
				if err := cl.Client().WaitReady(ctxT(t)); err != nil {
					t.Fatalf("%s after heal: %v", cl, err)
				}
			}
			bobAtAlice := introduce(t, alice.Client(), bob.Client())
			send(t, alice.Client(), bobAtAlice, "after heal")
			waitBodies(t, bob.Client(), contactOf(t, bob.Client(), alice.Client()), client.Incoming, []string{"after heal"})

			// The deposit went out from alice's sender host (SenderPeerID):
			// the partition blocks that host too.
			if n := connsFrom(c, alice.Client().SenderPeerID()); n == 0 {
				t.Fatal("no connection from the client's sender host after a deposit")
			}
			c.Isolate(alice)
			id := send(t, alice.Client(), bobAtAlice, "while isolated")
			time.Sleep(time.Second) // retries every 50 ms and more
			if n := connsFrom(c, alice.Client().SenderPeerID()) + connsFrom(c, alice.Client().PeerID()); n != 0 {
				t.Fatalf("%d connections from the isolated client's hosts", n)
			}
			if st := status(t, alice.Client(), id); st != client.StatusQueued {
				t.Fatalf("a message sent while isolated is %v, want queued", st)
			}
		})
	}
}
