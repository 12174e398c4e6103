package client_test

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	kb "github.com/libp2p/go-libp2p-kbucket"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/wire"
)

// waitMesh waits until every relay's routing table holds every other
// relay, so that every relay computes the true replica sets.
func waitMesh(t *testing.T, rs []*testRelay) {
	t.Helper()
	waitFor(t, "relays' routing tables", func() bool {
		for _, r := range rs {
			if r.node.DHT().RoutingTable().Size() < len(rs)-1 {
				return false
			}
		}
		return true
	})
}

// byDistance returns the relays sorted by XOR distance to the mailbox's
// DHT key, closest first: the first R are its replica set (SPEC.md §14).
func byDistance(rs []*testRelay, mb wire.Mailbox) []*testRelay {
	ids := make([]peer.ID, len(rs))
	idx := map[peer.ID]*testRelay{}
	for i, r := range rs {
		ids[i] = r.node.ID()
		idx[ids[i]] = r
	}
	var out []*testRelay
	for _, p := range kb.SortClosestPeers(ids, kb.ConvertKey(mb.DHTKey())) {
		out = append(out, idx[p])
	}
	return out
}

// clusterAndIdentity starts n relays that know each other and makes an
// identity (offline, no bootstrap relay yet) whose config, invite and
// relays by distance to its mailbox it returns.
func clusterAndIdentity(t *testing.T, n int) (rs []*testRelay, cfg client.Config, invite string, near []*testRelay) {
	t.Helper()
	rs = startCluster(t, n, nil)
	waitMesh(t, rs)
	cfg = testConfig(t.TempDir(), nil)
	mb, invite := newIdentity(t, cfg)
	return rs, cfg, invite, byDistance(rs, mb)
}

// newIdentity makes a client on dir, offline, and returns its mailbox and
// invite.
func newIdentity(t *testing.T, cfg client.Config) (wire.Mailbox, string) {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	inv, err := c.Invite()
	if err != nil {
		t.Fatal(err)
	}
	return c.Mailbox(), inv
}

// gauge returns the value of a relay's gauge.
func gauge(t *testing.T, r *testRelay, name string) float64 {
	t.Helper()
	mfs, err := r.node.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
			return sum
		}
	}
	return 0
}

// subscriptions returns the relays of rs with a live subscription, with
// their count.
func subscriptions(t *testing.T, rs []*testRelay) map[*testRelay]int {
	t.Helper()
	out := map[*testRelay]int{}
	for _, r := range rs {
		if g := gauge(t, r, "cairn_relay_subscribers"); g > 0 {
			out[r] = int(g)
		}
	}
	return out
}

// subscribedAt waits until exactly one relay of rs has a subscriber, once,
// and returns it.
func subscribedAt(t *testing.T, rs []*testRelay) *testRelay {
	t.Helper()
	var at *testRelay
	waitFor(t, "one subscription", func() bool {
		for r, n := range subscriptions(t, rs) {
			if at != nil || n != 1 {
				at = nil
				return false
			}
			at = r
		}
		return at != nil
	})
	return at
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A client that knows only a relay which is not a replica of its mailbox
// syncs the true replica set in its first Sync, called right after Start:
// Sync waits until the client is online and asks the DHT, instead of
// syncing the bootstrap relay alone (which holds nothing of the mailbox).
func TestClientFirstSyncUsesDHTReplicaSet(t *testing.T) {
	rs, bobCfg, invite, near := clusterAndIdentity(t, 6)
	far := near[len(near)-1]

	alice := newClient(t, testConfig(t.TempDir(), addrs(rs...)))
	ct, err := alice.AcceptInvite(invite)
	if err != nil {
		t.Fatal(err)
	}
	want := msgs("a", 1, 5)
	ids := sendAll(t, alice, ct.ID, want)
	for _, id := range ids {
		waitFor(t, "stored", func() bool { return status(t, alice, id) == client.StatusStored })
	}
	if n := far.node.Store().Stats().Appends; n != 0 {
		t.Fatalf("the relay farthest from the mailbox stored %d entries", n)
	}

	bobCfg.Bootstrap = addrs(far)
	bobCfg.SyncInterval = time.Hour
	bob := newClient(t, bobCfg)
	if err := bob.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	cts := bob.Contacts()
	if len(cts) != 1 {
		t.Fatalf("after the first Sync bob knows %d contacts, want 1 (alice)", len(cts))
	}
	if got := bodies(t, bob, cts[0].ID, client.Incoming); !slices.Equal(got, want) {
		t.Fatalf("after the first Sync: %q, want %q", got, want)
	}
}

// WaitReady returns once the client is online; its live subscription is
// then on the closest replica of its mailbox, never on the bootstrap relay
// that is not a replica, and a message sent afterwards arrives without any
// sync round being due (SyncInterval is an hour).
func TestClientWaitReadySubscribesOnReplica(t *testing.T) {
	rs, bobCfg, invite, near := clusterAndIdentity(t, 6)
	far := near[len(near)-1]

	bobCfg.Bootstrap = addrs(far)
	bobCfg.SyncInterval = time.Hour
	bob := newClient(t, bobCfg)
	if err := bob.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if at := subscribedAt(t, rs); at != near[0] {
		t.Fatalf("subscribed at %s (distance rank %d), want the closest replica %s", at.node.ID(), slices.Index(near, at), near[0].node.ID())
	}

	alice := newClient(t, testConfig(t.TempDir(), addrs(rs...)))
	ct, err := alice.AcceptInvite(invite)
	if err != nil {
		t.Fatal(err)
	}
	sendAll(t, alice, ct.ID, []string{"live"})
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"live"})
}

// closerKeys returns n relay keys whose peer IDs are closer to the
// mailbox's DHT key than every relay of rs.
func closerKeys(t *testing.T, rs []*testRelay, mb wire.Mailbox, n int) []crypto.PrivKey {
	t.Helper()
	closest := byDistance(rs, mb)[0].node.ID()
	var out []crypto.PrivKey
	for len(out) < n {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if kb.SortClosestPeers([]peer.ID{closest, id}, kb.ConvertKey(mb.DHTKey()))[0] == id {
			out = append(out, k)
		}
	}
	return out
}

// When relays closer to the mailbox join, the replica set moves away from
// the relay the client subscribed on: the client notices at its next
// lookup (every ReplicaCacheTTL) and subscribes on a replica of the new
// set, where it gets the next message live.
func TestClientResubscribesWhenReplicaSetMoves(t *testing.T) {
	rs := startCluster(t, 5, nil)
	waitMesh(t, rs)
	bobCfg := testConfig(t.TempDir(), addrs(rs...))
	bobCfg.SyncInterval = time.Hour
	bobCfg.ReplicaCacheTTL = 50 * time.Millisecond
	mb, invite := newIdentity(t, bobCfg)
	bob := newClient(t, bobCfg)
	if err := bob.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	old := subscribedAt(t, rs)
	if old != byDistance(rs, mb)[0] {
		t.Fatalf("subscribed at %s, want the closest replica", old.node.ID())
	}

	// Three relays closer to the mailbox than any: the old set is out.
	var boot []peer.AddrInfo
	for _, r := range rs {
		boot = append(boot, r.node.AddrInfo())
	}
	var joined []*testRelay
	for _, k := range closerKeys(t, rs, mb, 3) {
		joined = append(joined, startRelay(t, func(c *relay.Config) {
			c.Identity = k
			c.BootstrapPeers = boot
		}))
	}
	all := append(slices.Clone(rs), joined...)
	waitMesh(t, all)

	waitFor(t, "the only subscription to be on a new replica", func() bool {
		s := subscriptions(t, all)
		for r, n := range s {
			return len(s) == 1 && n == 1 && slices.Contains(joined, r)
		}
		return false
	})

	alice := newClient(t, testConfig(t.TempDir(), addrs(all...)))
	ct, err := alice.AcceptInvite(invite)
	if err != nil {
		t.Fatal(err)
	}
	id := sendAll(t, alice, ct.ID, []string{"after the move"})[0]
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, []string{"after the move"})
	waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
}

// WaitReady says when no relay can be reached (ErrNoRelay) and tries the
// bootstrap relays again when called again; before Start and after Close
// it returns ErrNotStarted and ErrClosed.
func TestClientWaitReadyOffline(t *testing.T) {
	c, err := client.New(testConfig(t.TempDir(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReady(ctxT(t)); !errors.Is(err, client.ErrNotStarted) {
		t.Fatalf("before Start: %v, want ErrNotStarted", err)
	}
	c.Close()
	if err := c.WaitReady(ctxT(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}

	// No bootstrap relay at all.
	lonely := newClient(t, testConfig(t.TempDir(), nil))
	if err := lonely.WaitReady(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
		t.Fatalf("no bootstrap relay: %v, want ErrNoRelay", err)
	}

	// The only bootstrap relay is down, then comes back.
	r := startRelay(t, nil)
	r.stop()
	c2 := newClient(t, testConfig(t.TempDir(), addrs(r)))
	if err := c2.WaitReady(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
		t.Fatalf("bootstrap relay down: %v, want ErrNoRelay", err)
	}
	r.start()
	if err := c2.WaitReady(ctxT(t)); err != nil {
		t.Fatalf("bootstrap relay back: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c2.WaitReady(ctx); err != nil {
		t.Fatalf("an online client with a cancelled context: %v, want nil", err)
	}
}

// gater refuses the relays in deny (every relay when denyAll), and counts
// the dials it refused.
type gater struct {
	deny    map[peer.ID]bool
	denyAll bool
	refused atomic.Int64
}

func (g *gater) allow(p peer.ID) bool {
	if g.denyAll || g.deny[p] {
		g.refused.Add(1)
		return false
	}
	return true
}

func (g *gater) InterceptPeerDial(p peer.ID) bool                 { return g.allow(p) }
func (g *gater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.allow(p) }
func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allow(p)
}
func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// PeerID and SenderPeerID are known before Start, differ, and are fresh
// for every Client on the same data directory; PeerID is the ID relays see
// syncing.
func TestClientPeerID(t *testing.T) {
	r := startRelay(t, nil)
	dir := t.TempDir()
	c, err := client.New(testConfig(dir, addrs(r)))
	if err != nil {
		t.Fatal(err)
	}
	id, sid := c.PeerID(), c.SenderPeerID()
	if id == "" || sid == "" {
		c.Close()
		t.Fatal("no peer ID before Start")
	}
	if id == sid {
		c.Close()
		t.Fatal("SenderPeerID is PeerID")
	}
	if err := c.Start(context.Background()); err != nil {
		c.Close()
		t.Fatal(err)
	}
	if err := c.WaitReady(ctxT(t)); err != nil {
		c.Close()
		t.Fatal(err)
	}
	if c.PeerID() != id {
		t.Errorf("peer ID changed at Start: %s, was %s", c.PeerID(), id)
	}
	if c.SenderPeerID() != sid {
		t.Errorf("sender peer ID changed at Start: %s, was %s", c.SenderPeerID(), sid)
	}
	if len(r.node.Host().Network().ConnsToPeer(id)) == 0 {
		t.Errorf("the relay has no connection from peer %s", id)
	}
	c.Close()
	again, err := client.New(testConfig(dir, addrs(r)))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.PeerID() == id {
		t.Error("the same peer ID for a second run on the same data directory")
	}
	if again.SenderPeerID() == sid {
		t.Error("the same sender peer ID for a second run on the same data directory")
	}
}

// Config.ConnectionGater keeps the client off the relays it refuses: a
// client that may not reach one relay of three still converses (through
// the other replicas) and never connects to it; one that may reach none
// is offline.
func TestClientConnectionGater(t *testing.T) {
	rs := startCluster(t, 3, nil)
	waitMesh(t, rs)
	blocked := rs[0]
	g := &gater{deny: map[peer.ID]bool{blocked.node.ID(): true}}
	cfg := testConfig(t.TempDir(), addrs(rs...))
	cfg.ConnectionGater = g
	alice := newClient(t, cfg)
	bob := newClient(t, testConfig(t.TempDir(), addrs(rs...)))
	if err := alice.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	converse(t, alice, bob, 3)
	if g.refused.Load() == 0 {
		t.Error("the gater was never asked about the blocked relay")
	}
	for _, id := range []peer.ID{alice.PeerID(), alice.SenderPeerID()} {
		if n := len(blocked.node.Host().Network().ConnsToPeer(id)); n != 0 {
			t.Errorf("the blocked relay has %d connections from the client's peer %s", n, id)
		}
	}
	// Alice deposited into bob's mailbox from her sender host (and the
	// gater, asked by both hosts, kept it off the blocked relay too).
	deposited := 0
	for _, r := range rs {
		deposited += len(r.node.Host().Network().ConnsToPeer(alice.SenderPeerID()))
	}
	if deposited == 0 {
		t.Error("no relay has a connection from the client's sender host")
	}

	cfg = testConfig(t.TempDir(), addrs(rs...))
	cfg.ConnectionGater = &gater{denyAll: true}
	cut := newClient(t, cfg)
	if err := cut.WaitReady(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
		t.Fatalf("WaitReady with every relay refused: %v, want ErrNoRelay", err)
	}
	if err := cut.Sync(ctxT(t)); !errors.Is(err, client.ErrNoRelay) {
		t.Fatalf("Sync with every relay refused: %v, want ErrNoRelay", err)
	}
	for _, r := range rs {
		for _, id := range []peer.ID{cut.PeerID(), cut.SenderPeerID()} {
			if n := len(r.node.Host().Network().ConnsToPeer(id)); n != 0 {
				t.Errorf("relay %s has %d connections from the gated client's peer %s", r.node.ID(), n, id)
			}
		}
	}
}
