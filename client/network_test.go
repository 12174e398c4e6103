package client_test

import (
	"cmp"
	"context"
	"slices"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/wire"
)

// startCluster starts n relays that know each other (each bootstraps from
// the ones before it).
func startCluster(t *testing.T, n int, mod func(*relay.Config)) []*testRelay {
	t.Helper()
	var rs []*testRelay
	for range n {
		var boot []peer.AddrInfo
		for _, r := range rs {
			ai, err := peer.AddrInfoFromP2pAddr(ma.StringCast(r.addr))
			if err != nil {
				t.Fatal(err)
			}
			boot = append(boot, *ai)
		}
		rs = append(rs, startRelay(t, func(c *relay.Config) {
			c.BootstrapPeers = boot
			if mod != nil {
				mod(c)
			}
		}))
	}
	return rs
}

// Two clients converse both ways while the recipient is offline for part
// of it (closed, then opened again from its data directory).
func TestClientConverseWithRecipientOffline(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobDir := t.TempDir()
	bob := newClient(t, testConfig(bobDir, addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	sendAll(t, alice, bobAtAlice, msgs("a", 1, 10))
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 10))
	sendAll(t, bob, aliceAtBob, msgs("b", 1, 5))
	waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("b", 1, 5))

	// Bob goes offline; Alice keeps writing.
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	ids := sendAll(t, alice, bobAtAlice, msgs("a", 11, 60))
	waitFor(t, "stored", func() bool { return status(t, alice, ids[len(ids)-1]) == client.StatusStored })
	if st := status(t, alice, ids[0]); st != client.StatusStored {
		t.Fatalf("status of a message to an offline recipient: %v, want stored", st)
	}

	// Bob comes back, catches up, and answers.
	bob = newClient(t, testConfig(bobDir, addrs(r)))
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 60))
	sendAll(t, bob, aliceAtBob, msgs("b", 6, 10))
	waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("b", 1, 10))
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
	waitBodies(t, alice, bobAtAlice, client.Outgoing, msgs("a", 1, 60))
}

// A delivery receipt turns a message's status to delivered, and the
// sender's events say so in order: stored, then delivered.
func TestClientDeliveryReceipt(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	id, err := alice.Send(context.Background(), bobAtAlice, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	var seen []client.Status
	for ev := range alice.Events() {
		if sc, ok := ev.(client.StatusChanged); ok && sc.ID == id {
			seen = append(seen, sc.Status)
			if sc.Status == client.StatusDelivered {
				break
			}
		}
	}
	if !slices.Equal(seen, []client.Status{client.StatusStored, client.StatusDelivered}) {
		t.Fatalf("status events %v, want [stored delivered]", seen)
	}
	if st := status(t, alice, id); st != client.StatusDelivered {
		t.Fatalf("status %v", st)
	}
	// Bob saw a contact added, then the message.
	var got []string
	for ev := range bob.Events() {
		switch ev := ev.(type) {
		case client.ContactAdded:
			got = append(got, "contact")
		case client.MessageReceived:
			got = append(got, string(ev.Message.Body))
		}
		if len(got) == 2 {
			break
		}
	}
	if !slices.Equal(got, []string{"contact", "hello"}) {
		t.Fatalf("recipient events %v", got)
	}
}

// Relays are killed and restarted during a conversation: with R−1 of the
// R replicas down, sending and syncing still work; with all down, messages
// stay queued and go out when the relays return.
func TestClientRelaysDownAndBack(t *testing.T) {
	rs := startCluster(t, 3, nil)
	all := addrs(rs...)
	alice := newClient(t, testConfig(t.TempDir(), all))
	bob := newClient(t, testConfig(t.TempDir(), all))
	bobAtAlice := introduce(t, alice, bob)
	sendAll(t, alice, bobAtAlice, msgs("a", 1, 5))
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 5))

	// R−1 down, in both orders of who is left.
	wantA, wantB := msgs("a", 1, 5), []string(nil)
	for round, left := range []int{2, 0} {
		for i, r := range rs {
			if i != left {
				r.stop()
			}
		}
		a := msgs("a", 6+10*round, 15+10*round)
		b := msgs("b", 1+10*round, 5+10*round)
		wantA, wantB = append(wantA, a...), append(wantB, b...)
		sendAll(t, alice, bobAtAlice, a)
		sendAll(t, bob, aliceAtBob, b)
		waitBodies(t, bob, aliceAtBob, client.Incoming, wantA)
		waitBodies(t, alice, bobAtAlice, client.Incoming, wantB)
		for _, r := range rs {
			r.start()
		}
	}

	// All down: messages stay queued, then go out when the relays return.
	for _, r := range rs {
		r.stop()
	}
	a, b := msgs("a", 100, 109), msgs("b", 100, 104)
	wantA, wantB = append(wantA, a...), append(wantB, b...)
	ids := sendAll(t, alice, bobAtAlice, a)
	sendAll(t, bob, aliceAtBob, b)
	if err := alice.Sync(context.Background()); err == nil {
		t.Fatal("Sync with every relay down did not fail")
	}
	for _, id := range ids {
		if st := status(t, alice, id); st != client.StatusQueued {
			t.Fatalf("status with every relay down: %v", st)
		}
	}
	for _, r := range rs {
		r.start()
	}
	waitBodies(t, bob, aliceAtBob, client.Incoming, wantA)
	waitBodies(t, alice, bobAtAlice, client.Incoming, wantB)
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
}

// trio starts a relay and three clients; alice and carol accept bob's
// invite.
func trio(t *testing.T) (bob, alice, carol *client.Client, bobAtAlice, bobAtCarol client.ContactID) {
	t.Helper()
	r := startRelay(t, nil)
	bob = newClient(t, testConfig(t.TempDir(), addrs(r)))
	alice = newClient(t, testConfig(t.TempDir(), addrs(r)))
	carol = newClient(t, testConfig(t.TempDir(), addrs(r)))
	return bob, alice, carol, introduce(t, alice, bob), introduce(t, carol, bob)
}

// One client talks with two others at once: trial decryption picks the
// right session for every message, and each conversation keeps its order.
func TestClientSeveralContacts(t *testing.T) {
	bob, alice, carol, bobAtAlice, bobAtCarol := trio(t)
	for i := 1; i <= 20; i++ {
		sendAll(t, alice, bobAtAlice, msgs("a", i, i))
		sendAll(t, carol, bobAtCarol, msgs("c", i, i))
	}
	aliceAtBob, carolAtBob := contactOf(t, bob, alice), contactOf(t, bob, carol)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 20))
	waitBodies(t, bob, carolAtBob, client.Incoming, msgs("c", 1, 20))
	for i := 1; i <= 10; i++ {
		sendAll(t, bob, aliceAtBob, msgs("ba", i, i))
		sendAll(t, bob, carolAtBob, msgs("bc", i, i))
		sendAll(t, alice, bobAtAlice, msgs("a", 20+i, 20+i))
	}
	waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("ba", 1, 10))
	waitBodies(t, carol, bobAtCarol, client.Incoming, msgs("bc", 1, 10))
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 30))
}

// Relays that require postage get it: the outbox solves the advertised
// difficulty before depositing.
func TestClientPostage(t *testing.T) {
	r := startRelay(t, func(c *relay.Config) { c.PostageDifficulty = 10 })
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	ids := sendAll(t, alice, bobAtAlice, msgs("a", 1, 3))
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 3))
	sendAll(t, bob, aliceAtBob, []string{"b"})
	waitBodies(t, alice, bobAtAlice, client.Incoming, []string{"b"})
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
}

// refuseAll is a relay placement that takes no deposits and names other
// replicas (NOT_REPLICA, SPEC.md §14).
type refuseAll struct{ replicas []peer.ID }

func (r refuseAll) Accepts(wire.Mailbox) (bool, []peer.ID) { return false, r.replicas }

// A relay that is not a replica of the recipient's mailbox answers
// NOT_REPLICA; the sender deposits at the replica it names, found through
// the DHT, and the recipient syncs it from there.
func TestClientNotReplica(t *testing.T) {
	rs := startCluster(t, 2, nil)
	bobCfg := testConfig(t.TempDir(), nil)
	bob0, err := client.New(bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	invite, err := bob0.Invite()
	if err != nil {
		t.Fatal(err)
	}
	mb := bob0.Mailbox()
	bob0.Close()

	// The relay closest to Bob's mailbox refuses it and names the other.
	ids := []peer.ID{rs[0].node.ID(), rs[1].node.ID()}
	a, b := rs[0], rs[1]
	if kb.SortClosestPeers(ids, kb.ConvertKey(mb.DHTKey()))[0] != ids[0] {
		a, b = b, a
	}
	a.stop()
	a.cfg.Placement = refuseAll{replicas: []peer.ID{b.node.ID()}}
	a.cfg.BootstrapPeers = []peer.AddrInfo{b.node.AddrInfo()}
	a.start()
	waitFor(t, "relays to know each other", func() bool { return a.node.DHT().RoutingTable().Size() > 0 })

	// The clients bootstrap from the refusing relay only; the DHT and the
	// NOT_REPLICA answers lead them to the other.
	alice := newClient(t, testConfig(t.TempDir(), addrs(a)))
	ct, err := alice.AcceptInvite(invite)
	if err != nil {
		t.Fatal(err)
	}
	sent := sendAll(t, alice, ct.ID, msgs("a", 1, 5))
	bobCfg.Bootstrap = addrs(a)
	bob := newClient(t, bobCfg)
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 5))
	for _, id := range sent {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
	if n := a.node.Store().Stats().Appends; n != 0 {
		t.Fatalf("the refusing relay appended %d entries", n)
	}
	if n := b.node.Store().Stats().Appends; n < 5 {
		t.Fatalf("the named replica appended %d entries, want ≥ 5", n)
	}
	if n := rejects(t, a, "NOT_REPLICA"); n == 0 {
		t.Fatal("the refusing relay answered no NOT_REPLICA")
	}
}

// rejects returns how many requests a relay answered with a status (its
// cairn_relay_rejects_total, label "reason").
func rejects(t *testing.T, r *testRelay, status string) float64 {
	t.Helper()
	mfs, err := r.node.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "cairn_relay_rejects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == status {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

// Message.Seq is the order in which a client stored its messages across
// conversations: merged by it, two conversations read in arrival order.
func TestClientMessageSeqAcrossContacts(t *testing.T) {
	bob, alice, carol, bobAtAlice, bobAtCarol := trio(t)
	sendAll(t, alice, bobAtAlice, []string{"a1"})
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"a1"})
	sendAll(t, carol, bobAtCarol, []string{"c1"})
	carolAtBob := contactOf(t, bob, carol)
	waitBodies(t, bob, carolAtBob, client.Incoming, []string{"c1"})
	sendAll(t, alice, bobAtAlice, []string{"a2"})
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"a1", "a2"})

	var all []client.Message
	for _, id := range []client.ContactID{aliceAtBob, carolAtBob} {
		h, err := bob.History(id)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, h...)
	}
	slices.SortFunc(all, func(a, b client.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	var got []string
	for _, m := range all {
		got = append(got, string(m.Body))
	}
	if want := []string{"a1", "c1", "a2"}; !slices.Equal(got, want) {
		t.Fatalf("bob's messages by Seq: %q, want %q", got, want)
	}
}
