package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// replConfig is testConfig for a replicating relay: quick anti-entropy.
func replConfig(c *Config) {
	if os.Getenv("CAIRN_TEST_LOG") != "" {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c.AntiEntropyInterval = 300 * time.Millisecond
	c.CatchUpWait = 10 * time.Second
	c.ResourceManager = &network.NullResourceManager{}
}

// startCluster starts n relays (each but the first with the first as its
// bootstrap peer) and connects each to every other; it returns when every
// routing table holds the others.
func startCluster(t testing.TB, n int, mod func(i int, c *Config)) []*Node {
	t.Helper()
	nodes := make([]*Node, n)
	for i := range n {
		nodes[i] = startNode(t, func(c *Config) {
			replConfig(c)
			if i > 0 {
				c.BootstrapPeers = []peer.AddrInfo{nodes[0].AddrInfo()}
			}
			if mod != nil {
				mod(i, c)
			}
		})
	}
	connectAll(t, nodes)
	return nodes
}

// connectAll connects every pair of nodes and waits for full routing
// tables.
func connectAll(t testing.TB, nodes []*Node) {
	t.Helper()
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			// A dial may fail while b is dialling a at the same moment (its
			// bootstrap) on a loaded machine: try again, past the backoff.
			var err error
			for attempt := 0; attempt < 5; attempt++ {
				if attempt > 0 {
					time.Sleep(200 * time.Millisecond)
					if sw, ok := a.Host().Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
						sw.Backoff().Clear(b.ID())
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = a.Host().Connect(ctx, b.AddrInfo())
				cancel()
				if err == nil {
					break
				}
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, "full routing tables", func() bool {
		for _, n := range nodes {
			if n.DHT().RoutingTable().Size() < len(nodes)-1 {
				return false
			}
		}
		return true
	})
}

func ids(nodes []*Node) []peer.ID {
	out := make([]peer.ID, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID()
	}
	return out
}

// closest computes the r relays closest to mb's DHT key, independently of
// the relays: SHA-256 of each peer ID XOR SHA-256 of the key.
func closest(all []peer.ID, mb wire.Mailbox, r int) []peer.ID {
	return kb.SortClosestPeers(slices.Clone(all), kb.ConvertKey(mb.DHTKey()))[:r]
}

func byID(nodes []*Node, id peer.ID) *Node {
	for _, n := range nodes {
		if n.ID() == id {
			return n
		}
	}
	return nil
}

// held returns the CIDs of the live entries a node holds for mb.
func held(t testing.TB, n *Node, mb wire.Mailbox) map[wire.CID]bool {
	t.Helper()
	page, err := n.Store().Read(mb, nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[wire.CID]bool, len(page.Entries))
	for _, e := range page.Entries {
		out[e.CID()] = true
	}
	return out
}

func holdsAll(t testing.TB, n *Node, mb wire.Mailbox, want map[wire.CID]bool) bool {
	got := held(t, n, mb)
	for c := range want {
		if !got[c] {
			return false
		}
	}
	return true
}

// sender deposits like a client: to a relay it picks, and on NOT_REPLICA
// to the closest replica the relay names.
type sender struct {
	t       testing.TB
	c       *rpc.Client
	mu      sync.Mutex
	streams map[peer.ID]*rpc.DepositStream
}

func newSender(t testing.TB, nodes ...*Node) *sender {
	s := &sender{t: t, c: newClient(t, nodes...), streams: make(map[peer.ID]*rpc.DepositStream)}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, ds := range s.streams {
			ds.Close()
		}
	})
	return s
}

func (s *sender) stream(p peer.ID) (*rpc.DepositStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ds := s.streams[p]; ds != nil {
		return ds, nil
	}
	ds, err := s.c.OpenDeposit(context.Background(), p)
	if err != nil {
		return nil, err
	}
	s.streams[p] = ds
	return ds, nil
}

func (s *sender) drop(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ds := s.streams[p]; ds != nil {
		ds.Reset()
		delete(s.streams, p)
	}
}

// deposit deposits env at p, following NOT_REPLICA; it returns the answer
// and the relay that gave it.
func (s *sender) deposit(p peer.ID, env []byte) (*rpc.DepositResult, peer.ID, error) {
	for range 4 {
		ds, err := s.stream(p)
		if err != nil {
			return nil, p, err
		}
		res, err := ds.Deposit(context.Background(), env)
		var re *rpc.Error
		if errors.As(err, &re) && re.Status == pb.Status_STATUS_NOT_REPLICA && len(re.ReplicaPeers) > 0 {
			p = re.ReplicaPeers[0]
			continue
		}
		if err != nil && errors.Is(err, rpc.ErrClosed) {
			s.drop(p)
		}
		return res, p, err
	}
	return nil, p, fmt.Errorf("NOT_REPLICA loop")
}

// TestReplicationPlacementTenRelays: with 10 relays and R = 3, deposits made
// at random relays (following NOT_REPLICA like a client) end up on exactly
// the 3 relays closest to each mailbox's key — computed here from the peer
// IDs alone — and on no other; only those relays accepted deposits.
func TestReplicationPlacementTenRelays(t *testing.T) {
	nodes := startCluster(t, 10, nil)
	all := ids(nodes)
	s := newSender(t, nodes...)
	rng := rand.New(rand.NewPCG(6, 10))
	const mailboxes, per = 100, 3
	mbs := make([]wire.Mailbox, mailboxes)
	want := make(map[wire.Mailbox]map[wire.CID]bool)
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make(chan error, mailboxes*per)
	for i := range mailboxes {
		_, mbs[i] = mailboxKey(t)
		want[mbs[i]] = make(map[wire.CID]bool)
	}
	for i := range mailboxes {
		first := all[rng.IntN(len(all))]
		mine := want[mbs[i]]
		wg.Add(1)
		go func() {
			defer wg.Done()
			mb := mbs[i]
			top := closest(all, mb, 3)
			for j := range per {
				env := envelope(t, mb, 200, 0, uint64(i*per+j))
				res, origin, err := s.deposit(first, env)
				if err != nil {
					errs <- err
					return
				}
				if !slices.Contains(top, origin) || res.Receipt.Origin != origin {
					errs <- fmt.Errorf("mailbox %d: deposit accepted by %s, not one of its 3 closest", i, origin.ShortString())
					return
				}
				mu.Lock()
				mine[wire.CIDOf(env)] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, "every mailbox on its 3 closest relays", func() bool {
		for _, mb := range mbs {
			for _, p := range closest(all, mb, 3) {
				if !holdsAll(t, byID(nodes, p), mb, want[mb]) {
					return false
				}
			}
		}
		return true
	})
	for _, mb := range mbs {
		top := closest(all, mb, 3)
		for _, n := range nodes {
			if slices.Contains(top, n.ID()) {
				continue
			}
			if info, ok := n.Store().Mailbox(mb); ok && info.Entries+info.Tombstones > 0 {
				t.Fatalf("relay %s, not a replica, holds %d entries of a mailbox", n.ID().ShortString(), info.Entries)
			}
		}
	}
}

// syncCursor syncs key's mailbox from relay with cursor (at most limit
// entries, 0 for all) and returns the entries and the cursor advanced as a
// client advances it: to each page's watermark for every origin, once the
// page's entries are stored (SPEC.md §7).
func syncCursor(t testing.TB, c *rpc.Client, relay peer.ID, key ed25519.PrivateKey, cursor wire.Cursor, limit int) ([]rpc.Entry, wire.Cursor) {
	t.Helper()
	st, err := c.Sync(ctxT(t), relay, key, rpc.SyncRequest{Cursor: cursor, Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []rpc.Entry
	for {
		p, err := st.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return got, cursor
			}
			t.Fatal(err)
		}
		got = append(got, p.Entries...)
		for _, w := range p.Watermarks {
			if err := cursor.Advance(w.Origin, w.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestReplicationSyncSwitchesReplica: entries deposited at three origins
// replicate to all three replicas; a client that syncs part of the mailbox
// from one replica, then continues with its cursor on the second and the
// third, receives every entry exactly once.
func TestReplicationSyncSwitchesReplica(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	key, mb := mailboxKey(t)
	s := newSender(t, nodes...)
	want := make(map[wire.CID]bool)
	for i := range 150 {
		env := envelope(t, mb, 300, 0, uint64(i))
		if _, _, err := s.deposit(nodes[i%3].ID(), env); err != nil {
			t.Fatal(err)
		}
		want[wire.CIDOf(env)] = true
	}
	waitFor(t, "replicated to all", func() bool {
		for _, n := range nodes {
			if !holdsAll(t, n, mb, want) {
				return false
			}
		}
		return true
	})
	for round, limits := range [][3]int{{40, 50, 0}, {1, 148, 0}, {149, 1, 0}, {75, 0, 0}} {
		c := newClient(t, nodes...)
		var cursor wire.Cursor
		count := make(map[wire.CID]int)
		for i, limit := range limits {
			entries, next := syncCursor(t, c, nodes[(i+round)%3].ID(), key, cursor, limit)
			for _, e := range entries {
				count[e.CID()]++
			}
			cursor = next
		}
		for cid := range want {
			if count[cid] != 1 {
				t.Fatalf("round %d: entry received %d times", round, count[cid])
			}
		}
		if len(count) != len(want) {
			t.Fatalf("round %d: %d entries, want %d", round, len(count), len(want))
		}
	}
}

// TestReplicationQuorum: with ReceiptQuorum = R = 3 the answer comes once
// all three replicas hold the entry (replicas = 3, and they do); with one
// replica down it comes after QuorumTimeout with replicas = 2.
func TestReplicationQuorum(t *testing.T) {
	nodes := startCluster(t, 3, func(_ int, c *Config) {
		c.ReceiptQuorum = 3
		c.QuorumTimeout = 3 * time.Second // ample for two loopback hops and an fsync
	})
	_, mb := mailboxKey(t)
	s := newSender(t, nodes...)
	for i := range 20 {
		env := envelope(t, mb, 500, 0, uint64(i))
		res, origin, err := s.deposit(nodes[i%3].ID(), env)
		if err != nil {
			t.Fatal(err)
		}
		if res.Replicas != 3 {
			t.Fatalf("deposit %d at %s: replicas %d, want 3", i, origin.ShortString(), res.Replicas)
		}
		for _, n := range nodes {
			if !held(t, n, mb)[wire.CIDOf(env)] {
				t.Fatalf("deposit %d answered before %s held it", i, n.ID().ShortString())
			}
		}
	}
	// A duplicate is answered at once.
	if res, _, err := s.deposit(nodes[0].ID(), envelope(t, mb, 500, 0, 0)); err != nil || !res.Duplicate {
		t.Fatalf("duplicate: %+v %v", res, err)
	}
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	res, _, err := s.deposit(nodes[0].ID(), envelope(t, mb, 500, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	if res.Replicas != 2 {
		t.Fatalf("with one replica down: replicas %d, want 2", res.Replicas)
	}
}

// partition is a connection gater that refuses the peers it blocks.
type partition struct {
	mu      sync.Mutex
	blocked map[peer.ID]bool
}

func (g *partition) block(ps ...peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked == nil {
		g.blocked = make(map[peer.ID]bool)
	}
	for _, p := range ps {
		g.blocked[p] = true
	}
}

func (g *partition) heal() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.blocked = nil
}

func (g *partition) ok(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.blocked[p]
}

func (g *partition) InterceptPeerDial(p peer.ID) bool                 { return g.ok(p) }
func (g *partition) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return g.ok(p) }
func (g *partition) InterceptAccept(network.ConnMultiaddrs) bool      { return true }
func (g *partition) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.ok(p)
}
func (g *partition) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// TestReplicationPartitionHeals: a partition splits the three replicas of
// a mailbox one against two; deposits land on both sides; once the
// partition heals, every replica holds the union.
func TestReplicationPartitionHeals(t *testing.T) {
	gates := []*partition{{}, {}, {}}
	nodes := startCluster(t, 3, func(i int, c *Config) { c.ConnectionGater = gates[i] })
	a, b, c := nodes[0], nodes[1], nodes[2]
	_, mb := mailboxKey(t)
	s := newSender(t, nodes...)
	want := make(map[wire.CID]bool)
	deposit := func(n *Node, i int) {
		env := envelope(t, mb, 400, 0, uint64(i))
		if _, origin, err := s.deposit(n.ID(), env); err != nil || origin != n.ID() {
			t.Fatalf("deposit %d at %s: %v (answered by %s)", i, n.ID().ShortString(), err, origin.ShortString())
		}
		want[wire.CIDOf(env)] = true
	}
	for i := range 10 {
		deposit(nodes[i%3], i)
	}
	gates[0].block(b.ID(), c.ID())
	gates[1].block(a.ID())
	gates[2].block(a.ID())
	for _, p := range []peer.ID{b.ID(), c.ID()} {
		_ = a.Host().Network().ClosePeer(p)
	}
	for i := 10; i < 50; i++ {
		deposit([]*Node{a, b}[i%2], i)
	}
	// Each side holds only its own deposits, plus the replicas' common past.
	sideA, sideB := held(t, a, mb), held(t, b, mb)
	if len(sideA) == len(want) || len(sideB) == len(want) {
		t.Fatalf("the partition let entries through: %d and %d of %d", len(sideA), len(sideB), len(want))
	}
	for _, g := range gates {
		g.heal()
	}
	waitFor(t, "all three replicas hold the union", func() bool {
		for _, n := range nodes {
			if !holdsAll(t, n, mb, want) {
				return false
			}
		}
		return true
	})
}

// TestReplicationJoin: a relay that joins closer to a busy mailbox than one
// of its replicas is sent the whole mailbox, the entries deposited while it
// joins included; the relay it displaced keeps serving what it holds.
func TestReplicationJoin(t *testing.T) {
	joinKey := newIdentity(t)
	joinID, _ := peer.IDFromPrivateKey(joinKey)
	nodes := startCluster(t, 3, nil)
	// A mailbox whose replica set the new relay will enter.
	var key ed25519.PrivateKey
	var mb wire.Mailbox
	for {
		key, mb = mailboxKey(t)
		if slices.Contains(closest(append(ids(nodes), joinID), mb, 3), joinID) {
			break
		}
	}
	s := newSender(t, nodes...)
	var mu sync.Mutex
	want := make(map[wire.CID]bool)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			env := envelope(t, mb, 300, 0, uint64(i))
			if _, _, err := s.deposit(nodes[i%3].ID(), env); err != nil {
				done <- err
				return
			}
			mu.Lock()
			want[wire.CIDOf(env)] = true
			mu.Unlock()
		}
	}()
	waitFor(t, "a busy mailbox", func() bool { mu.Lock(); defer mu.Unlock(); return len(want) >= 100 })
	joiner := startNode(t, func(c *Config) {
		replConfig(c)
		c.Identity = joinKey
		c.BootstrapPeers = []peer.AddrInfo{nodes[0].AddrInfo()}
	})
	// The sender learns the joiner's address as a client would from the DHT.
	if err := s.c.Host.Connect(ctxT(t), joiner.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the joiner in every routing table", func() bool {
		for _, n := range nodes {
			if n.DHT().RoutingTable().Find(joiner.ID()) == "" {
				return false
			}
		}
		return true
	})
	waitFor(t, "more deposits after the join", func() bool { mu.Lock(); defer mu.Unlock(); return len(want) >= 200 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the joiner holds the whole mailbox", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return holdsAll(t, joiner, mb, want)
	})
	// The displaced relay still serves its entries.
	all := append(ids(nodes), joiner.ID())
	top := closest(all, mb, 3)
	for _, n := range nodes {
		if slices.Contains(top, n.ID()) {
			continue
		}
		c := newClient(t, n)
		entries, _ := syncCursor(t, c, n.ID(), key, wire.Cursor{}, 0)
		if len(entries) < 100 {
			t.Fatalf("displaced relay serves %d entries", len(entries))
		}
	}
}

// forge signs a stamp for env with key as the origin.
func forge(t testing.TB, key crypto.PrivKey, env []byte, seq uint64) *pb.Entry {
	t.Helper()
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := wire.EnvelopeMailbox(env)
	signed, err := wire.SignReceipts(key, []wire.Receipt{{
		Origin: id, Mailbox: mb, CID: wire.CIDOf(env), Seq: seq,
		StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: uint64(time.Now().Add(time.Hour).Unix()),
	}})
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := signed[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Entry{Envelope: env, Stamp: stamp}
}

// TestReplicationRefusesForgedStamps: a replica refuses, and does not
// store, a replicated entry whose stamp does not verify, is for another
// envelope, or comes from an origin that is not a replica, and everything
// from a peer that is not a replica; by replicate and by reconcile.
func TestReplicationRefusesForgedStamps(t *testing.T) {
	keys := []crypto.PrivKey{newIdentity(t), newIdentity(t), newIdentity(t)}
	nodes := startCluster(t, 3, func(i int, c *Config) { c.Identity = keys[i] })
	a, b := nodes[0], nodes[1]
	outsider := newIdentity(t) // signs well, but is no relay of this network
	_, mb := mailboxKey(t)
	good := forge(t, keys[1], envelope(t, mb, 200, 0, 1), 1)
	badSig := forge(t, keys[1], envelope(t, mb, 200, 0, 2), 2)
	badSig.Stamp[len(badSig.Stamp)-1] ^= 1
	otherEnv := forge(t, keys[1], envelope(t, mb, 200, 0, 3), 3)
	otherEnv.Envelope = envelope(t, mb, 200, 0, 4)
	notReplica := forge(t, outsider, envelope(t, mb, 200, 0, 5), 1)

	// From b, a replica: item by item.
	rc := &rpc.Client{Host: b.Host(), Timeout: 10 * time.Second}
	rs, err := rc.OpenReplicate(ctxT(t), a.ID())
	if err != nil {
		t.Fatal(err)
	}
	call, err := rs.Send(ctxT(t), rpc.ReplicateBatch{Entries: []*pb.Entry{good, badSig, otherEnv, notReplica}})
	if err != nil {
		t.Fatal(err)
	}
	<-call.Done()
	statuses, err := call.Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []pb.Status{pb.Status_STATUS_OK, pb.Status_STATUS_BAD_SIGNATURE, pb.Status_STATUS_BAD_SIGNATURE, pb.Status_STATUS_NOT_REPLICA}
	if !slices.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v", statuses, want)
	}
	rs.Close()

	// From a peer that is not a replica: everything refused.
	stranger := newClient(t, a)
	rs2, err := stranger.OpenReplicate(ctxT(t), a.ID())
	if err != nil {
		t.Fatal(err)
	}
	fresh := forge(t, keys[1], envelope(t, mb, 200, 0, 6), 6)
	call, err = rs2.Send(ctxT(t), rpc.ReplicateBatch{Entries: []*pb.Entry{fresh}})
	if err != nil {
		t.Fatal(err)
	}
	<-call.Done()
	if statuses, err := call.Result(); err != nil || !slices.Equal(statuses, []pb.Status{pb.Status_STATUS_NOT_REPLICA}) {
		t.Fatalf("from a stranger: %v %v", statuses, err)
	}
	rs2.Close()

	// By reconcile: the same forged entries pushed by a replica in its
	// first frame are not stored, and a stranger's session is refused.
	for _, e := range []*pb.Entry{badSig, otherEnv, notReplica} {
		rcs, err := rc.OpenReconcile(ctxT(t), a.ID())
		if err != nil {
			t.Fatal(err)
		}
		first := &pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
			Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}, Entries: []*pb.Entry{e}}
		if err := rcs.Send(first); err != nil {
			t.Fatal(err)
		}
		if _, err := rcs.Recv(); err != nil {
			if !errors.Is(err, rpc.ErrProtocol) {
				t.Logf("reconcile answer: %v", err)
			}
		}
		rcs.Reset()
	}
	srs, err := stranger.OpenReconcile(ctxT(t), a.ID())
	if err != nil {
		t.Fatal(err)
	}
	if err := srs.Send(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
		Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}, Entries: []*pb.Entry{fresh}}); err != nil {
		t.Fatal(err)
	}
	m, err := srs.Recv()
	if err != nil || !errors.Is(srs.Refusal(m), wire.ErrNotReplica) {
		t.Fatalf("stranger's reconcile: %v %v", m, err)
	}
	srs.Reset()

	got := held(t, a, mb)
	if len(got) != 1 || !got[wire.CIDOf(good.Envelope)] {
		t.Fatalf("a holds %d entries; want only the good one", len(got))
	}
	for _, e := range []*pb.Entry{badSig, otherEnv, notReplica, fresh} {
		if f, err := a.Store().Fate(mb, wire.CIDOf(e.Envelope)); err != nil || f != store.FateUnknown {
			t.Fatalf("a refused entry has fate %v (%v)", f, err)
		}
	}
}

// TestReplicationTombstones: an ack at one replica deletes the entries on
// the others (tombstones are forwarded), and a replica that was down during
// the ack learns them by anti-entropy.
func TestReplicationTombstones(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	key, mb := mailboxKey(t)
	s := newSender(t, nodes...)
	var cids []wire.CID
	want := make(map[wire.CID]bool)
	for i := range 20 {
		env := envelope(t, mb, 300, 0, uint64(i))
		if _, _, err := s.deposit(nodes[i%3].ID(), env); err != nil {
			t.Fatal(err)
		}
		cids = append(cids, wire.CIDOf(env))
		want[wire.CIDOf(env)] = true
	}
	waitFor(t, "replicated", func() bool {
		for _, n := range nodes {
			if !holdsAll(t, n, mb, want) {
				return false
			}
		}
		return true
	})
	c := newClient(t, nodes...)
	if n, err := c.Ack(ctxT(t), nodes[0].ID(), key, cids[:5]); err != nil || n != 5 {
		t.Fatalf("ack: %d %v", n, err)
	}
	acked := func(n *Node, cs []wire.CID) bool {
		for _, cid := range cs {
			if f, err := n.Store().Fate(mb, cid); err != nil || f != store.FateAcked {
				return false
			}
		}
		return true
	}
	waitFor(t, "tombstones forwarded", func() bool { return acked(nodes[1], cids[:5]) && acked(nodes[2], cids[:5]) })
	// nodes[2] is down while nodes[1] takes the next ack.
	cfg := nodes[2].Config()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Ack(ctxT(t), nodes[1].ID(), key, cids[5:10]); err != nil || n != 5 {
		t.Fatalf("ack: %d %v", n, err)
	}
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.BootstrapPeers = []peer.AddrInfo{nodes[0].AddrInfo(), nodes[1].AddrInfo()}
	back, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	waitFor(t, "tombstones reconciled", func() bool { return acked(back, cids[:10]) && acked(nodes[0], cids[:10]) })
	if got := held(t, back, mb); len(got) != 10 {
		t.Fatalf("restarted replica holds %d entries, want 10", len(got))
	}
}

// TestReplicationCatchUp: a replica that restarts after hours (beyond
// ReplicaGrace, on every relay's clock) reports ErrCatchingUp from Health
// until it has reconciled with another replica; when Health first reports
// it in sync, it holds every entry and tombstone it missed.
func TestReplicationCatchUp(t *testing.T) {
	clk := &clock{}
	nodes := startCluster(t, 3, func(_ int, c *Config) { c.Now = clk.Now })
	key, mb := mailboxKey(t)
	s := newSender(t, nodes...)
	want := make(map[wire.CID]bool)
	var cids []wire.CID
	deposit := func(n *Node, i int) {
		env := envelope(t, mb, 300, 0, uint64(i))
		if _, _, err := s.deposit(n.ID(), env); err != nil {
			t.Fatal(err)
		}
		want[wire.CIDOf(env)] = true
		cids = append(cids, wire.CIDOf(env))
	}
	for i := range 30 {
		deposit(nodes[i%3], i)
	}
	waitFor(t, "replicated", func() bool { return holdsAll(t, nodes[2], mb, want) })
	cfg := nodes[2].Config()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 80; i++ {
		deposit(nodes[i%2], i)
	}
	c := newClient(t, nodes[0], nodes[1])
	if _, err := c.Ack(ctxT(t), nodes[0].ID(), key, cids[:5]); err != nil {
		t.Fatal(err)
	}
	for _, cid := range cids[:5] {
		delete(want, cid)
	}
	waitFor(t, "the live replicas agree", func() bool {
		return holdsAll(t, nodes[0], mb, want) && holdsAll(t, nodes[1], mb, want)
	})
	clk.Advance(3 * time.Hour)

	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.BootstrapPeers = []peer.AddrInfo{nodes[0].AddrInfo(), nodes[1].AddrInfo()}
	back, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { back.Close() })
	if err := back.Health(ctxT(t)); !errors.Is(err, ErrCatchingUp) {
		t.Fatalf("health right after the restart: %v", err)
	}
	waitFor(t, "in sync", func() bool { return back.Health(ctxT(t)) == nil })
	if !holdsAll(t, back, mb, want) {
		t.Fatal("reported in sync without the entries it missed")
	}
	for _, cid := range cids[:5] {
		if f, _ := back.Store().Fate(mb, cid); f != store.FateAcked {
			t.Fatalf("reported in sync without the tombstones it missed: fate %v", f)
		}
	}
}

// TestReplicationAdoptsWatermark: the same envelope deposited at two
// replicas on the two sides of a partition is stored under two stamps;
// each replica keeps its own and never receives the other's, so without
// help its known_through for the other origin would stop below that seq.
// After a complete reconciliation with that origin itself it adopts the
// origin's known_through (SPEC.md §10.10), and a sync's watermarks pass the
// hole.
func TestReplicationAdoptsWatermark(t *testing.T) {
	gates := []*partition{{}, {}}
	nodes := startCluster(t, 2, func(i int, c *Config) { c.ConnectionGater = gates[i] })
	a, b := nodes[0], nodes[1]
	key, mb := mailboxKey(t)
	gates[0].block(b.ID())
	gates[1].block(a.ID())
	_ = a.Host().Network().ClosePeer(b.ID())
	s := newSender(t, nodes...)
	same := envelope(t, mb, 300, 0, 1)
	for _, n := range nodes {
		if res, origin, err := s.deposit(n.ID(), same); err != nil || origin != n.ID() || res.Duplicate {
			t.Fatalf("deposit at %s: %+v %v", n.ID().ShortString(), res, err)
		}
	}
	want := map[wire.CID]bool{wire.CIDOf(same): true}
	for i := 2; i <= 4; i++ {
		env := envelope(t, mb, 300, 0, uint64(i))
		if _, _, err := s.deposit(b.ID(), env); err != nil {
			t.Fatal(err)
		}
		want[wire.CIDOf(env)] = true
	}
	gates[0].heal()
	gates[1].heal()
	kt := func(n *Node, origin peer.ID) uint64 {
		for _, w := range n.Store().KnownThrough(mb) {
			if w.Origin == origin {
				return w.Seq
			}
		}
		return 0
	}
	waitFor(t, "a adopts b's known_through", func() bool { return holdsAll(t, a, mb, want) && kt(a, b.ID()) == 4 })
	if _, err := a.Store().GetBySeq(mb, b.ID(), 1); err == nil {
		t.Fatal("a received b's stamp of an entry it holds under its own")
	}
	entries, cursor := syncCursor(t, newClient(t, a), a.ID(), key, wire.Cursor{}, 0)
	if len(entries) != 4 || cursor.Get(b.ID()) != 4 || cursor.Get(a.ID()) != 1 {
		t.Fatalf("sync from a: %d entries, cursor %v", len(entries), cursor.String())
	}
}

// TestReplicationReconcileBandwidth: over the real protocol, two replicas
// with equal mailboxes of 5,000 entries reconcile in a few hundred bytes,
// and with 10 differing entries in about 2 KiB per difference — the
// difference, not the size, sets the cost (the ID list alone would be
// 160 KB).
func TestReplicationReconcileBandwidth(t *testing.T) {
	nodes := startCluster(t, 2, func(_ int, c *Config) { c.AntiEntropyInterval = time.Hour })
	a, b := nodes[0], nodes[1]
	_, mb := mailboxKey(t)
	deps := make([]store.Deposit, 5000)
	for i := range deps {
		deps[i] = store.Deposit{Envelope: envelope(t, mb, 100, 0, uint64(i))}
	}
	for _, r := range a.Store().AppendMany(ctxT(t), deps) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	waitFor(t, "replicated", func() bool { info, _ := b.Store().Mailbox(mb); return info.Entries == 5000 })
	measure := func() (int64, reconcileResult) {
		_, res, rs, err := a.reconcileWith(ctxT(t), b.ID(), []wire.Mailbox{mb}, nil)
		if err != nil || !res[0].done {
			t.Fatalf("reconcile: %v %+v", err, res[0])
		}
		return rs.BytesSent() + rs.BytesReceived(), res[0]
	}
	equal, r := measure()
	if equal > 1024 || r.received+r.sent != 0 {
		t.Fatalf("equal sets: %d bytes, %d items", equal, r.received+r.sent)
	}
	// Ten entries of a third origin, imported on one side each; nothing
	// forwards imports, and the receivers only count what they get.
	other := newIdentity(t)
	for i := range 10 {
		e := forge(t, other, envelope(t, mb, 100, 0, uint64(10000+i)), uint64(1+i))
		stamp, _ := wire.ParseSignedReceipt(e.Stamp)
		if _, err := nodes[i%2].Store().Import(ctxT(t), e.Envelope, stamp); err != nil {
			t.Fatal(err)
		}
	}
	a.reconcileNoImport, b.reconcileNoImport = true, true
	diff, r := measure()
	if r.received+r.sent != 10 {
		t.Fatalf("%d items moved, want 10", r.received+r.sent)
	}
	// Per difference: two levels of 16 fingerprint ranges and one list of
	// at most 32 ids, plus the entry: about 2 KiB.
	if diff > 24<<10 || r.frames > 16 {
		t.Fatalf("10 differing in 5,000: %d bytes in %d frames", diff, r.frames)
	}
	t.Logf("equal: %d bytes; 10 differing: %d bytes, %d frames", equal, diff, r.frames)
}

// TestReplicationSummaryBandwidth: a summary exchange (SPEC.md §10.10)
// between two replicas of 300 equal mailboxes costs a few hundred bytes and
// reconciles no mailbox, where reconciling each costs about 240 bytes; with
// one mailbox differing it finds exactly that one, which is then
// reconciled.
func TestReplicationSummaryBandwidth(t *testing.T) {
	nodes := startCluster(t, 2, func(_ int, c *Config) { c.AntiEntropyInterval = time.Hour })
	a, b := nodes[0], nodes[1]
	const mailboxes = 300
	mbs := make([]wire.Mailbox, mailboxes)
	for i := range mbs {
		_, mbs[i] = mailboxKey(t)
		deps := make([]store.Deposit, 5)
		for j := range deps {
			deps[j] = store.Deposit{Envelope: envelope(t, mbs[i], 100, 0, uint64(10*i+j))}
		}
		for _, r := range a.Store().AppendMany(ctxT(t), deps) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	waitFor(t, "replicated", func() bool {
		for _, mb := range mbs {
			if info, _ := b.Store().Mailbox(mb); info.Entries != 5 {
				return false
			}
		}
		return true
	})
	// Per mailbox, for comparison.
	_, res, rs, err := a.reconcileWith(ctxT(t), b.ID(), mbs, nil)
	if err != nil {
		t.Fatal(err)
	}
	perMailbox := rs.BytesSent() + rs.BytesReceived()
	for i, r := range res {
		if !r.done || r.received+r.sent != 0 {
			t.Fatalf("mailbox %d: %+v", i, r)
		}
	}
	summary := func() ([]wire.Mailbox, []reconcileResult, int64) {
		t.Helper()
		b.summaries.mu.Lock()
		b.summaries.last = nil // b answers one summary a second per peer
		b.summaries.mu.Unlock()
		got, res, rs, err := a.reconcileWith(ctxT(t), b.ID(), nil, a.sharedWith(b.ID()))
		if err != nil {
			t.Fatal(err)
		}
		return got, res, rs.BytesSent() + rs.BytesReceived()
	}
	if n, m := len(a.sharedWith(b.ID())), len(b.sharedWith(a.ID())); n != mailboxes || m != mailboxes {
		t.Fatalf("the summaries cover %d and %d mailboxes, want %d", n, m, mailboxes)
	}
	got, _, equal := summary()
	if len(got) != 0 || equal > 1024 {
		t.Fatalf("summary of %d equal mailboxes: %d bytes, %d mailboxes to reconcile", mailboxes, equal, len(got))
	}
	// One entry of a third origin, imported at b only (imports are not
	// forwarded): only its mailbox differs.
	a.reconcileNoImport = true
	target := mbs[123]
	e := forge(t, newIdentity(t), envelope(t, target, 100, 0, 99999), 1)
	stamp, _ := wire.ParseSignedReceipt(e.Stamp)
	if _, err := b.Store().Import(ctxT(t), e.Envelope, stamp); err != nil {
		t.Fatal(err)
	}
	got, res, diff := summary()
	if len(got) != 1 || got[0] != target || !res[0].done || res[0].received != 1 {
		t.Fatalf("summary with one mailbox differing: reconciled %v (want %s), results %+v", got, target, res)
	}
	// (a refuses to store it: its origin is no replica; the summary's job
	// was to find the mailbox.)
	t.Logf("%d equal mailboxes: %d bytes per mailbox, %d bytes by summary; one differing: %d bytes in all",
		mailboxes, perMailbox, equal, diff)
	// A second summary within the limiter's interval (a second; here an
	// hour, so that a slow machine cannot make the test pass) is refused
	// (each costs the responder a pass over its mailboxes).
	b.summaries.mu.Lock()
	b.summaries.min = time.Hour
	b.summaries.mu.Unlock()
	if _, _, _, err := a.reconcileWith(ctxT(t), b.ID(), nil, a.sharedWith(b.ID())); !errors.Is(err, wire.ErrBusy) {
		t.Fatalf("second summary within a second: %v, want BUSY", err)
	}
}

// TestReplicationJoinLargeMailbox: a relay that joins a relay holding a
// mailbox larger than a frame (7 MiB) receives all of it by anti-entropy,
// in several frames.
func TestReplicationJoinLargeMailbox(t *testing.T) {
	a := startNode(t, replConfig)
	_, mb := mailboxKey(t)
	deps := make([]store.Deposit, 120)
	want := make(map[wire.CID]bool)
	for i := range deps {
		deps[i] = store.Deposit{Envelope: envelope(t, mb, 60<<10, 0, uint64(i))}
		want[wire.CIDOf(deps[i].Envelope)] = true
	}
	for _, r := range a.Store().AppendMany(ctxT(t), deps) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	b := startNode(t, func(c *Config) {
		replConfig(c)
		c.BootstrapPeers = []peer.AddrInfo{a.AddrInfo()}
	})
	waitFor(t, "the joiner holds the mailbox", func() bool { return holdsAll(t, b, mb, want) })
}

// TestReplicationSlowReplicaDoesNotStallDeposits: a replica that takes
// replicate streams but never answers (or reads) does not slow deposits at
// the origin: its forwarding queue fills and drops, the other replica gets
// everything, and once the slow one answers again anti-entropy brings it
// up to date.
func TestReplicationSlowReplicaDoesNotStallDeposits(t *testing.T) {
	nodes := startCluster(t, 3, func(i int, c *Config) {
		if i == 0 {
			c.ReplicateQueue = 64
		}
	})
	origin, fast, slow := nodes[0], nodes[1], nodes[2]
	stalled := make(chan network.Stream, 64)
	slow.Host().SetStreamHandler(wire.ProtocolReplicate, func(s network.Stream) { stalled <- s })
	t.Cleanup(func() {
		close(stalled)
		for s := range stalled {
			s.Reset()
		}
	})
	_, mb := mailboxKey(t)
	const count = 6000
	envs := fill(t, newClient(t, origin), origin, mb, count, 100, 0)
	want := make(map[wire.CID]bool, count)
	for _, env := range envs {
		want[wire.CIDOf(env)] = true
	}
	if dropped := counterValue(t, origin, "cairn_relay_replicate_dropped_total"); dropped == 0 {
		t.Fatal("the slow replica's queue never overflowed: the test did not stall it")
	}
	waitFor(t, "the other replica holds everything", func() bool { return holdsAll(t, fast, mb, want) })
	// The slow replica answers again.
	slow.Host().SetStreamHandler(wire.ProtocolReplicate, func(s network.Stream) {
		slow.serve(s, protocolSpec{wire.ProtocolReplicate, "replicate", nil, slow.serveReplicate})
	})
	waitFor(t, "anti-entropy heals the slow replica", func() bool { return holdsAll(t, slow, mb, want) })
}

// TestSummaryLimiter: a relay answers one summary exchange a second per
// peer, and SummaryRate a second from all peers together, whatever the
// number of peer IDs asking.
func TestSummaryLimiter(t *testing.T) {
	l := newSummaryLimiter(2) // 2 a second, a burst of 2
	t0 := time.Unix(1_000_000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	p := func(i int) peer.ID { return peer.ID(fmt.Sprintf("peer-%d", i)) }
	steps := []struct {
		peer  int
		ms    int
		allow bool
		why   string
	}{
		{1, 0, true, "first (2 tokens → 1)"},
		{2, 0, true, "another peer (1 → 0)"},
		{3, 0, false, "a third peer: no token"},
		{4, 100, false, "a fourth peer: 0.2 tokens"},
		{1, 500, false, "peer 1 within its second, a token there"},
		{3, 500, true, "peer 3 takes that token"},
		{1, 1000, true, "peer 1 after a second, the next token"},
		{2, 1000, false, "peer 2 after a second: no token"},
		{2, 1400, false, "peer 2: 0.8 tokens"},
		{2, 1500, true, "peer 2: a token"},
	}
	for _, s := range steps {
		if got := l.allow(p(s.peer), at(s.ms)); got != s.allow {
			t.Fatalf("peer %d at %d ms (%s): allowed %v", s.peer, s.ms, s.why, got)
		}
	}
}
