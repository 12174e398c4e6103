package testnet_test

import (
	"context"
	"slices"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// lookupReplicaSet is what a relay computes for a mailbox (SPEC.md §14):
// GetClosestPeers plus itself, re-sorted, the first R.
func lookupReplicaSet(ctx context.Context, r *testnet.Relay, mb wire.Mailbox, n int) ([]peer.ID, error) {
	ps, err := r.Node().DHT().GetClosestPeers(ctx, mb.DHTKey())
	if err != nil {
		return nil, err
	}
	ps = kb.SortClosestPeers(append(ps, r.ID), kb.ConvertKey(mb.DHTKey()))
	return ps[:min(n, len(ps))], nil
}

// A large cluster comes up within the start-up bound (100 relays; 30
// under the race detector, which makes everything several times slower
// and bigger), every routing table holds at least 20 peers, and DHT
// lookups from several relays find every mailbox's true replica set.
func TestClusterScale(t *testing.T) {
	n := 100
	if raceEnabled {
		n = 30
	}
	start := time.Now()
	c := testnet.New(t, testnet.WithRelays(n), testnet.WithDirectLinks(), testnet.WithSeed(42))
	t.Logf("%d relays ready in %v", n, time.Since(start).Round(time.Millisecond))
	for _, r := range c.Relays {
		if got := r.Node().DHT().RoutingTable().Size(); got < 20 {
			t.Errorf("%s: routing table %d < 20", r, got)
		}
	}
	misses := 0
	for k := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, mb := mailboxKey(t)
		want := c.ReplicaSet(mb)
		wantIDs := make([]peer.ID, len(want))
		for i, r := range want {
			wantIDs[i] = r.ID
		}
		from := c.Relays[(k*37)%n]
		t0 := time.Now()
		got, err := lookupReplicaSet(ctx, from, mb, c.R())
		t.Logf("lookup %d from %s took %v", k, from, time.Since(t0).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("lookup from %s: %v", from, err)
		}
		if !slices.Equal(got, wantIDs) {
			misses++
			t.Logf("lookup %d from %s: %v, want %v", k, from, got, wantIDs)
		}
	}
	if misses > 0 {
		t.Errorf("%d of 10 lookups missed the true replica set", misses)
	}
}
