package testnet_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// holderNames names the relays holding an entry, sorted.
func holderNames(c *testnet.Cluster, mb wire.Mailbox, cid wire.CID) []string {
	var out []string
	for _, r := range c.Holders(mb, cid) {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

func names(rs []*testnet.Relay) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	slices.Sort(out)
	return out
}

// The relays' own placement agrees with ReplicaSet (computed from the
// peer IDs alone): a deposit at a mailbox's closest relay is accepted and
// replicated to exactly the R relays ReplicaSet names.
func TestReplicaSetMatchesPlacement(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(6), testnet.WithR(3))
	cl := rpcTo(t, addrInfosT(c)...)
	for i := range 6 {
		_, mb := mailboxKey(t)
		set := c.ReplicaSet(mb)
		if len(set) != 3 {
			t.Fatalf("replica set of %d", len(set))
		}
		cid := deposit(t, cl, set[0].ID, mb, i, 1)[0]
		want := names(set)
		testnet.Eventually(t, func() error {
			if got := holderNames(c, mb, cid); !slices.Equal(got, want) {
				return fmt.Errorf("held by %v", got)
			}
			return nil
		}, fmt.Sprintf("entry %d held by its replica set %v", i, want))
		if n := c.CountReplicas(mb, cid); n != 3 {
			t.Fatalf("CountReplicas %d", n)
		}
	}
}

// A replica killed while entries arrive gets them back after Restart
// (anti-entropy with the other replicas), and keeps what it had.
func TestKilledReplicaCatchesUp(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(5), testnet.WithR(3))
	cl := rpcTo(t, addrInfosT(c)...)
	_, mb := mailboxKey(t)
	set := c.ReplicaSet(mb)
	before := deposit(t, cl, set[0].ID, mb, 0, 5)
	for _, cid := range before {
		testnet.Eventually(t, testnet.Cond(func() bool { return c.CountReplicas(mb, cid) == 3 }, "not on 3 replicas"),
			"replication before the kill")
	}
	victim := set[2]
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	during := deposit(t, cl, set[0].ID, mb, 5, 5)
	if err := victim.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, cid := range append(before, during...) {
		testnet.Eventually(t, func() error {
			if _, err := victim.Node().Store().Get(mb, cid); err != nil {
				return fmt.Errorf("%s: %w", victim, err)
			}
			return nil
		}, "the restarted replica to hold every entry")
	}
}
