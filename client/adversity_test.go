package client_test

import (
	"context"
	"crypto/rand"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// mailboxEntries returns the envelopes a relay holds for a mailbox.
func mailboxEntries(t *testing.T, r *testRelay, mb wire.Mailbox) [][]byte {
	t.Helper()
	page, err := r.node.Store().Read(mb, nil, nil, 1000, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range page.Entries {
		out = append(out, e.Envelope)
	}
	return out
}

// rawDeposit deposits envelopes with a bare libp2p host, as anybody can.
func rawDeposit(t *testing.T, r *testRelay, envs ...[]byte) {
	t.Helper()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New), libp2p.Muxer(yamux.ID, yamux.DefaultTransport), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ai, err := peer.AddrInfoFromP2pAddr(ma.StringCast(r.addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.Connect(ctx, *ai); err != nil {
		t.Fatal(err)
	}
	ds, err := rpc.New(h).OpenDeposit(ctx, ai.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	for _, e := range envs {
		if _, err := ds.Deposit(ctx, e); err != nil {
			t.Fatalf("deposit: %v", err)
		}
	}
}

func envelopeWith(t *testing.T, mb wire.Mailbox, ct []byte, postage uint64) []byte {
	t.Helper()
	e := wire.Envelope{Mailbox: mb, Expiry: uint64(time.Now().Add(time.Hour).Unix()), Postage: postage, Ciphertext: ct}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Corrupted, forged and replayed envelopes deposited into a mailbox are
// rejected without harming the session, and never shown.
func TestClientRejectsForgedAndReplayed(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobDir := t.TempDir()
	bob, err := client.New(testConfig(bobDir, addrs(r)))
	if err != nil {
		t.Fatal(err)
	}
	bobAtAlice := introduce(t, alice, bob)
	mb := bob.Mailbox()
	ids := sendAll(t, alice, bobAtAlice, []string{"one", "two"})
	waitFor(t, "stored", func() bool { return status(t, alice, ids[1]) == client.StatusStored })
	real := mailboxEntries(t, r, mb)
	if len(real) != 2 {
		t.Fatalf("%d entries at the relay", len(real))
	}
	one, _ := wire.ParseEnvelope(real[0])
	two, _ := wire.ParseEnvelope(real[1])

	random := func(first byte, n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		b[0] = first
		return b
	}
	tampered := slices.Clone(two.Ciphertext)
	tampered[len(tampered)-1] ^= 1
	tamperedHeader := slices.Clone(one.Ciphertext)
	tamperedHeader[len(tamperedHeader)/2] ^= 0x80
	rawDeposit(t, r,
		envelopeWith(t, mb, random(0x02, 300), 0),     // a ratchet message of no session
		envelopeWith(t, mb, random(0x01, 3000), 0),    // a handshake of nobody
		envelopeWith(t, mb, tampered, 0),              // a real message, one bit flipped
		envelopeWith(t, mb, tamperedHeader, 0),        // a real handshake, one bit flipped
		envelopeWith(t, mb, one.Ciphertext, 12345),    // a replay under a new CID
		envelopeWith(t, mb, two.Ciphertext, 777),      // another
		real[0],                                       // an exact replay (the relay dedups)
		envelopeWith(t, mb, []byte{0x03, 1, 2, 3}, 0), // an unknown type
		envelopeWith(t, mb, []byte{0x02}, 0),          // too short
	)

	if err := bob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob.Close() })
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"one", "two"})
	if err := bob.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The session works on: both ways.
	sendAll(t, alice, bobAtAlice, []string{"three"})
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"one", "two", "three"})
	sendAll(t, bob, aliceAtBob, []string{"reply"})
	waitBodies(t, alice, bobAtAlice, client.Incoming, []string{"reply"})
	if n := len(bob.Contacts()); n != 1 {
		t.Fatalf("%d contacts after forged handshakes, want 1", n)
	}
	// Replaying everything again (now acked at the relay) changes nothing.
	rawDeposit(t, r, real...)
	if err := bob.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	sendAll(t, alice, bobAtAlice, []string{"four"})
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"one", "two", "three", "four"})
}

// A missing message is reported as a gap once every reachable replica was
// synced and the grace period passed; the messages after it are then
// delivered, and the missing one (the conversation's first, carrying the
// handshake) is still delivered, late, when it turns up.
func TestClientGapThenLate(t *testing.T) {
	rs := startCluster(t, 2, nil)
	x, y := rs[0], rs[1]
	alice := newClient(t, testConfig(t.TempDir(), addrs(rs...)))
	bob, err := client.New(testConfig(t.TempDir(), addrs(rs...)))
	if err != nil {
		t.Fatal(err)
	}
	bobAtAlice := introduce(t, alice, bob)

	y.stop()
	id1 := sendAll(t, alice, bobAtAlice, []string{"m1"})[0]
	waitFor(t, "m1 stored", func() bool { return status(t, alice, id1) == client.StatusStored })
	x.stop()
	y.start()
	id2 := sendAll(t, alice, bobAtAlice, []string{"m2"})[0]
	waitFor(t, "m2 stored", func() bool { return status(t, alice, id2) == client.StatusStored })

	if err := bob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bob.Close() })
	var got []string
	for ev := range bob.Events() {
		switch ev := ev.(type) {
		case client.GapDetected:
			if ev.From != 1 || ev.To != 1 {
				t.Fatalf("gap %d…%d, want 1…1", ev.From, ev.To)
			}
			got = append(got, "gap")
			x.start()
			if err := bob.Sync(context.Background()); err != nil {
				t.Fatal(err)
			}
		case client.MessageReceived:
			s := string(ev.Message.Body)
			if ev.Message.Late {
				s += " late"
			}
			got = append(got, s)
		}
		if len(got) == 3 {
			break
		}
	}
	if want := []string{"gap", "m2", "m1 late"}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	aliceAtBob := contactOf(t, bob, alice)
	if b := bodies(t, bob, aliceAtBob, client.Incoming); !slices.Equal(b, []string{"m1", "m2"}) {
		t.Fatalf("history %v", b)
	}
}

// testClock is real time plus an offset that tests move forward.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// A message whose recipient never comes back becomes expired-undelivered
// after its TTL, confirmed by the relay's status protocol; one that never
// left the outbox (every relay down) expires too.
func TestClientExpiredUndelivered(t *testing.T) {
	clk := &testClock{}
	r := startRelay(t, func(c *relay.Config) { c.Now = clk.Now })
	cfg := testConfig(t.TempDir(), addrs(r))
	cfg.Now = clk.Now
	cfg.TTL = time.Hour
	alice := newClient(t, cfg)
	bob, err := client.New(testConfig(t.TempDir(), addrs(r)))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	bobAtAlice := introduce(t, alice, bob)
	stored := sendAll(t, alice, bobAtAlice, []string{"never read"})[0]
	waitFor(t, "stored", func() bool { return status(t, alice, stored) == client.StatusStored })
	r.stop()
	queued := sendAll(t, alice, bobAtAlice, []string{"never sent"})[0]
	clk.Advance(30 * time.Minute)
	if st := status(t, alice, queued); st != client.StatusQueued {
		t.Fatalf("status before expiry %v", st)
	}
	if st := status(t, alice, stored); st != client.StatusStored {
		t.Fatalf("status before expiry %v", st)
	}
	clk.Advance(31 * time.Minute)
	r.start()
	_ = alice.Sync(context.Background()) // wakes the outbox now
	waitFor(t, "expired-undelivered", func() bool {
		return status(t, alice, stored) == client.StatusExpiredUndelivered && status(t, alice, queued) == client.StatusExpiredUndelivered
	})
}

// Both sides start a session at the same time (each sends before it has
// the other's first message); the sessions converge and the conversation
// goes on in both directions.
func TestClientSimultaneousInitiation(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	aliceAtBob := introduce(t, bob, alice)
	r.stop()
	sendAll(t, alice, bobAtAlice, msgs("a", 1, 3))
	sendAll(t, bob, aliceAtBob, msgs("b", 1, 3))
	r.start()
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 3))
	waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("b", 1, 3))
	for round := range 3 {
		sendAll(t, alice, bobAtAlice, msgs("a", 4+round, 4+round))
		sendAll(t, bob, aliceAtBob, msgs("b", 4+round, 4+round))
		waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 4+round))
		waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("b", 1, 4+round))
	}
}

// Close stops every goroutine the client started (network loops, libp2p,
// DHT, badger).
func TestClientCloseLeaksNothing(t *testing.T) {
	before := goleak.IgnoreCurrent()
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	sendAll(t, alice, bobAtAlice, msgs("a", 1, 3))
	waitBodies(t, bob, contactOf(t, bob, alice), client.Incoming, msgs("a", 1, 3))
	for _, c := range []*client.Client{alice, bob} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	r.stop()
	goleak.VerifyNone(t, append(leaktest.Options(), before)...)
}
