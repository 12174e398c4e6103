package client_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cairn-net/cairn/client"
)

// A message held at one replica while the conversation goes on through
// another, for more DH ratchet steps than the recipient's session keeps
// receiving chains by age (ratchet.DefaultMaxOldChains), is still
// delivered when that replica comes back. The chaos soak (seed 1, 5 min)
// lost two messages with relay receipts this way: stored only at a relay
// cut from the others, they reached the recipient about 10 s late, after
// the chain that held their skipped keys had been dropped; no session
// opened them, so they were kept pending (and acked) for ever.
func TestClientMessageDelayedAcrossRatchetSteps(t *testing.T) {
	rs := startCluster(t, 2, nil)
	x, y := rs[0], rs[1]
	alice := newClient(t, testConfig(t.TempDir(), addrs(rs...)))
	bobDir := t.TempDir()
	bob := newClient(t, testConfig(bobDir, addrs(rs...)))
	bobAtAlice := introduce(t, alice, bob)
	sendAll(t, alice, bobAtAlice, []string{"hello"})
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"hello"})
	sendAll(t, bob, aliceAtBob, []string{"hi"})
	waitBodies(t, alice, bobAtAlice, client.Incoming, []string{"hi"})

	// "held" is stored at x only while bob is offline; then x goes down,
	// y comes back, and so does bob.
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	y.stop()
	id := sendAll(t, alice, bobAtAlice, []string{"held"})[0]
	waitFor(t, "held stored", func() bool { return status(t, alice, id) == client.StatusStored })
	x.stop()
	y.start()
	bob = newClient(t, testConfig(bobDir, addrs(rs...)))

	// Round trips through y: each one is a new receiving chain at bob.
	const rounds = 8
	var fromBob []string
	for i := 1; i <= rounds; i++ {
		a, b := fmt.Sprintf("a-%d", i), fmt.Sprintf("b-%d", i)
		sendAll(t, alice, bobAtAlice, []string{a})
		waitFor(t, a, func() bool { return slices.Contains(bodies(t, bob, aliceAtBob, client.Incoming), a) })
		sendAll(t, bob, aliceAtBob, []string{b})
		fromBob = append(fromBob, b)
		waitBodies(t, alice, bobAtAlice, client.Incoming, append([]string{"hi"}, fromBob...))
	}

	// x comes back: bob fetches "held" from it and must be able to open it.
	x.start()
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(bodies(t, bob, aliceAtBob, client.Incoming), "held") {
		if time.Now().After(deadline) {
			t.Fatalf("held (stored at x) never delivered; bob has %v", bodies(t, bob, aliceAtBob, client.Incoming))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = bob.Sync(ctx)
		cancel()
		time.Sleep(200 * time.Millisecond)
	}
	waitFor(t, "held delivered at alice", func() bool { return status(t, alice, id) == client.StatusDelivered })
	if got, want := len(bodies(t, bob, aliceAtBob, client.Incoming)), 2+rounds; got != want {
		t.Fatalf("bob has %d messages from alice, want %d", got, want)
	}
}
