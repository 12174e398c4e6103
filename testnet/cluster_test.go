package testnet_test

import (
	"testing"
	"time"

	"github.com/cairn-net/cairn/testnet"
)

// A 5-relay cluster comes up with every relay's routing table holding
// every other relay, and every relay connected to the others.
func TestClusterUp(t *testing.T) {
	start := time.Now()
	c := testnet.New(t, testnet.WithRelays(5), testnet.WithLogger(testLogger()))
	t.Logf("5 relays ready in %v (seed %d)", time.Since(start).Round(time.Millisecond), c.Seed())
	if len(c.Relays) != 5 {
		t.Fatalf("%d relays", len(c.Relays))
	}
	seen := map[string]bool{}
	for _, r := range c.Relays {
		n := r.Node()
		if n == nil {
			t.Fatalf("%s not running", r)
		}
		if n.ID() != r.ID || seen[r.ID.String()] {
			t.Fatalf("%s: peer ID %s (handle says %s)", r, n.ID(), r.ID)
		}
		seen[r.ID.String()] = true
		if got := n.DHT().RoutingTable().Size(); got != 4 {
			t.Errorf("%s: routing table has %d peers, want 4", r, got)
		}
		for _, o := range c.Relays {
			if o != r && !c.Connected(r, o) {
				t.Errorf("%s not connected to %s", r, o)
			}
		}
		if err := n.Health(t.Context()); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
	if c.LinkStats().Conns == 0 {
		t.Error("no connection went through the links")
	}
}
