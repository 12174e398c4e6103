package adversary

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// badgerMemTable is badger's default memtable size, which the relay's
// store uses (store.OpenLog).
const badgerMemTable = 64 << 20

// tally counts outcomes by name.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(k string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = map[string]int{}
	}
	t.m[k]++
	t.mu.Unlock()
}

func (t *tally) get(k string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprint(t.m)
}

// outcome names an rpc result: "OK", a status name, or "NO_ANSWER" for
// anything that is not an answer (a timeout, a reset, a closed stream).
func outcome(err error) (string, *rpc.Error) {
	if err == nil {
		return "OK", nil
	}
	var re *rpc.Error
	if errors.As(err, &re) {
		return re.Status.String(), re
	}
	return "NO_ANSWER", nil
}

// A peer that sends requests far beyond PeerRequestRate is answered
// RATE_LIMITED with a retry_after, without a timeout; what it got through
// is bounded by the bucket; another peer is served meanwhile.
func TestHostileRequestFlood(t *testing.T) {
	const rate, burst = 20, 20
	r := oneRelay(t, func(c *relay.Config) { c.PeerRequestRate, c.PeerRequestBurst = rate, burst })
	h := hostile(t, r)
	_, mb := NewMailboxKey()
	var got tally
	start := time.Now()
	const n = 300
	for range n {
		_, err := h.RPC.Status(ctxT(t), r.ID(), mb, nil)
		name, re := outcome(err)
		got.add(name)
		if re != nil && re.Status == pb.Status_STATUS_RATE_LIMITED && re.RetryAfter <= 0 {
			t.Fatal("RATE_LIMITED without retry_after")
		}
		if name == "NO_ANSWER" {
			t.Fatalf("request not answered: %v", err)
		}
	}
	elapsed := time.Since(start)
	ok, limited := got.get("OK"), got.get(pb.Status_STATUS_RATE_LIMITED.String())
	if ok+limited != n {
		t.Fatalf("outcomes %v", &got)
	}
	if max := burst + int(rate*elapsed.Seconds()) + 2; ok > max {
		t.Fatalf("%d requests served in %v, the bucket allows %d", ok, elapsed, max)
	}
	if limited == 0 {
		t.Fatal("no request was rate limited")
	}
	// Info has no retry_after field: a bare RATE_LIMITED.
	if _, err := h.RPC.Info(ctxT(t), r.ID()); !errors.Is(err, wire.ErrRateLimited) {
		t.Fatalf("info from the flooder: %v, want RATE_LIMITED", err)
	}
	// The bucket is per peer: another one is served.
	honestRoundTrip(t, r)
	t.Logf("%d requests in %v: %v", n, elapsed.Round(time.Millisecond), &got)
}

// A peer that opens more streams than MaxStreamsPerPeer and sends nothing
// on them: the streams above the cap are answered BUSY (a deposit stream
// is reset), the idle ones are reset after StreamIdleTimeout, after which
// the peer is served again; another peer is served throughout.
func TestHostileStreamFlood(t *testing.T) {
	const cap = 8
	r := oneRelay(t, func(c *relay.Config) {
		c.MaxStreamsPerPeer = cap
		c.StreamIdleTimeout = 2 * time.Second
	})
	h := hostile(t, r)
	ctx := ctxT(t)
	var idle []*rpc.Framed
	for range cap {
		s, f, err := h.Open(ctx, wire.ProtocolSync, rpc.MaxEntryFrame)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		// Half a frame: the relay reads it and waits for the rest.
		if _, err := s.Write([]byte{100, 0x0a}); err != nil {
			t.Fatal(err)
		}
		idle = append(idle, f)
	}
	// Let the relay count the idle streams before the extra ones.
	eventually(t, "the idle streams counted", func() error {
		if v := metric(t, r, "cairn_relay_streams", map[string]string{"protocol": "sync"}); v < cap {
			return fmt.Errorf("%v open", v)
		}
		return nil
	})
	for i := range 4 {
		var resp pb.SyncPage
		if err := h.Exchange(ctx, wire.ProtocolSync, nil, &resp); err != nil || resp.Status != pb.Status_STATUS_BUSY {
			t.Fatalf("stream %d above the cap: %v %v, want BUSY", cap+i, resp.Status, err)
		}
	}
	var dresp pb.DepositResponse
	if err := h.Exchange(ctx, wire.ProtocolDeposit, Frame(&pb.DepositRequest{Id: 1, Envelope: Envelope(wire.MailboxOf(make([]byte, 32)), 10, 0)}), &dresp); err == nil {
		t.Fatalf("deposit stream above the cap answered %v, want a reset", dresp.Status)
	}
	honestRoundTrip(t, r)
	// The relay resets the idle streams (StreamIdleTimeout) …
	for i, f := range idle {
		var m pb.SyncPage
		if err := f.Read(&m, testnet.DefaultTimeout); err == nil {
			t.Fatalf("idle stream %d answered %v", i, m.Status)
		}
	}
	// … and serves the peer again.
	key, mb := NewMailboxKey()
	if _, err := h.RPC.Sync(ctx, r.ID(), key, rpc.SyncRequest{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the flooder served again", func() error {
		st, err := h.RPC.Sync(ctx, r.ID(), key, rpc.SyncRequest{})
		if err != nil {
			return err
		}
		defer st.Close()
		_, err = st.Next()
		return err
	})
	_ = mb
}

// depositAll pipelines envelopes on one stream and tallies the answers.
func depositAll(t testing.TB, c *rpc.Client, relay peer.ID, envs [][]byte, got *tally) {
	t.Helper()
	ctx := ctxT(t)
	ds, err := c.OpenDeposit(ctx, relay)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	calls := make(chan *rpc.DepositCall, wire.MaxDepositInflight)
	go func() {
		defer close(calls)
		for _, e := range envs {
			call, err := ds.Send(ctx, e)
			if err != nil {
				t.Errorf("send: %v", err)
				return
			}
			calls <- call
		}
	}()
	for call := range calls {
		_, err := call.Wait(ctx)
		name, re := outcome(err)
		if re != nil && re.Status == pb.Status_STATUS_RATE_LIMITED && re.RetryAfter <= 0 {
			t.Errorf("RATE_LIMITED deposit without retry_after")
		}
		got.add(name)
	}
}

// A peer that deposits far beyond PeerDepositRate and its mailbox's quota:
// every deposit is answered — OK, RATE_LIMITED with a retry_after, or
// MAILBOX_QUOTA — none times out, the mailbox holds at most its quota, and
// a refused deposit stored nothing.
func TestHostileDepositFlood(t *testing.T) {
	const rate, quota = 100, 150
	r := oneRelay(t, func(c *relay.Config) {
		c.PeerDepositRate, c.PeerDepositBurst = rate, rate
		c.MailboxQuotaEntries = quota
	})
	h := hostile(t, r)
	_, mb := NewMailboxKey()
	const n = 1200
	envs := make([][]byte, n)
	for i := range envs {
		envs[i] = Envelope(mb, 256, 0)
	}
	var got tally
	depositAll(t, h.RPC, r.ID(), envs, &got)
	ok := got.get("OK")
	if got.get("NO_ANSWER") > 0 || ok+got.get(pb.Status_STATUS_RATE_LIMITED.String())+got.get(pb.Status_STATUS_MAILBOX_QUOTA.String()) != n {
		t.Fatalf("outcomes %v", &got)
	}
	if got.get(pb.Status_STATUS_RATE_LIMITED.String()) == 0 {
		t.Fatalf("no deposit rate limited: %v", &got)
	}
	info, _ := r.Store().Mailbox(mb)
	if info.Entries != int64(ok) || ok > quota {
		t.Fatalf("%d OK answers, the mailbox holds %d entries, quota %d", ok, info.Entries, quota)
	}
	// Slow down to the rate: the rest is refused by the quota alone.
	time.Sleep(time.Second) // the bucket refills (this is the attacker's pace, not an assertion)
	fresh := make([][]byte, quota)
	for i := range fresh {
		fresh[i] = Envelope(mb, 256, 0)
	}
	var more tally
	depositAll(t, h.RPC, r.ID(), fresh, &more)
	if info, _ := r.Store().Mailbox(mb); info.Entries > quota {
		t.Fatalf("mailbox holds %d entries above its quota %d", info.Entries, quota)
	}
	if more.get(pb.Status_STATUS_MAILBOX_QUOTA.String()) == 0 || more.get("NO_ANSWER") > 0 {
		t.Fatalf("second round %v: want MAILBOX_QUOTA", &more)
	}
	honestRoundTrip(t, r)
	t.Logf("flood: %v; again: %v", &got, &more)
}

// Sybil flooders filling the relay's global cap from many mailboxes get
// STORAGE_FULL or MAILBOX_QUOTA; the relay's stored bytes stay within its
// cap; a small honest mailbox still deposits (the largest mailboxes are
// evicted, SPEC.md §13) and reads its entries back.
func TestHostileStorageFlood(t *testing.T) {
	const capBytes, quotaBytes = 512 << 10, 96 << 10
	r := oneRelay(t, func(c *relay.Config) {
		c.StorageCapBytes = capBytes
		c.MailboxQuotaBytes = quotaBytes
	})
	var got tally
	var wg sync.WaitGroup
	for range 4 {
		h := hostile(t, r)
		wg.Go(func() {
			var envs [][]byte
			for range 3 {
				_, mb := NewMailboxKey()
				for range 10 {
					envs = append(envs, Envelope(mb, 16<<10, 0))
				}
			}
			depositAll(t, h.RPC, r.ID(), envs, &got)
		})
	}
	wg.Wait()
	if got.get("NO_ANSWER") > 0 {
		t.Fatalf("unanswered deposits: %v", &got)
	}
	if got.get(pb.Status_STATUS_STORAGE_FULL.String())+got.get(pb.Status_STATUS_MAILBOX_QUOTA.String()) == 0 {
		t.Fatalf("the flood was never refused: %v", &got)
	}
	if st := r.Store().Stats(); st.Bytes > capBytes {
		t.Fatalf("relay stores %d bytes above its cap %d", st.Bytes, capBytes)
	}
	// A small honest mailbox deposits and reads back.
	h := hostile(t, r)
	key, mb := NewMailboxKey()
	var envs [][]byte
	for range 10 {
		envs = append(envs, Envelope(mb, 1<<10, 0))
	}
	var honest tally
	depositAll(t, h.RPC, r.ID(), envs, &honest)
	if honest.get("OK") != len(envs) {
		t.Fatalf("honest deposits under a full relay: %v", &honest)
	}
	st, err := h.RPC.Sync(ctxT(t), r.ID(), key, rpc.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	page, err := st.Next()
	if err != nil || len(page.Entries) != len(envs) {
		t.Fatalf("honest sync: %v entries, %v", page, err)
	}
	if st := r.Store().Stats(); st.Bytes > capBytes {
		t.Fatalf("relay stores %d bytes above its cap %d", st.Bytes, capBytes)
	}
	t.Logf("flood: %v, stored %d bytes, evicted %d", &got, r.Store().Stats().Bytes, r.Store().Stats().Evicted)
}

// Subscribers that never read while their mailbox receives far more than
// their queues hold: each is dropped (SLOW_CONSUMER, or a reset when its
// write times out); a reading subscriber of the same mailbox gets every
// entry in order; the memory the relay holds for them stays within what
// the config allows (SubscriberQueueBytes per subscriber), far below what
// was pushed.
func TestHostileSlowSubscribers(t *testing.T) {
	const (
		slow       = 8
		queueBytes = 512 << 10
		entries    = 400
		size       = 60 << 10 // 400 × 60 KiB ≈ 23 MiB pushed to each subscriber
	)
	r := oneRelay(t, func(c *relay.Config) {
		c.SubscriberQueue = 64
		c.SubscriberQueueBytes = queueBytes
		c.WriteTimeout = 2 * time.Second
		c.MailboxQuotaBytes = 1 << 30
		c.PeerDepositRate, c.PeerDepositBurst = 1e6, 1e6
	})
	key, mb := NewMailboxKey()
	ctx := ctxT(t)
	// The never-reading subscribers: raw streams, a request, then nothing.
	for range slow {
		h := hostile(t, r)
		a := auth(t, key, wire.AuthSubscribe, r.ID(), &pb.SubscribeRequest{Mailbox: mb[:]})
		s, f, err := h.Open(ctx, wire.ProtocolSubscribe, rpc.MaxEntryFrame)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Reset()
		if err := f.Write(a, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var first pb.SubscribeEvent
		if err := f.Read(&first, 5*time.Second); err != nil || first.Status != pb.Status_STATUS_OK {
			t.Fatalf("subscribe: %v %v", first.Status, err)
		}
	}
	reader := hostile(t, r)
	sub, err := reader.RPC.Subscribe(ctx, r.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var recv []wire.CID
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for e := range sub.Entries() {
			recv = append(recv, e.CID())
			if len(recv) == entries {
				return
			}
		}
	}()
	base := Measure(RelayHeap)
	var peak Memory
	depositor := hostile(t, r)
	envs := make([][]byte, entries)
	var want []wire.CID
	for i := range envs {
		envs[i] = Envelope(mb, size, 0)
		want = append(want, wire.CIDOf(envs[i]))
	}
	// Deposits come in small groups a reading subscriber keeps up with
	// (a group commit above SubscriberQueueBytes would overflow every
	// queue at once, the fast one's included).
	var got tally
	ds, err := depositor.RPC.OpenDeposit(ctx, r.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	for i := 0; i < entries; i += 4 {
		var calls []*rpc.DepositCall
		for _, e := range envs[i : i+4] {
			c, err := ds.Send(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, c)
		}
		for _, c := range calls {
			_, err := c.Wait(ctx)
			name, _ := outcome(err)
			got.add(name)
		}
		if i == entries*3/4 {
			peak = Measure(RelayHeap)
		}
	}
	if got.get("OK") != entries {
		t.Fatalf("deposits: %v", &got)
	}
	select {
	case <-readDone:
	case <-time.After(testnet.DefaultTimeout):
		t.Fatalf("reading subscriber got %d of %d (%v)", len(recv), entries, sub.Err())
	}
	if !slices.Equal(recv, want) {
		t.Fatalf("reading subscriber got %d entries, not the %d deposited in order (subscription: %v)", len(recv), len(want), sub.Err())
	}
	eventually(t, "the slow subscribers dropped", func() error {
		if v := metric(t, r, "cairn_relay_subscribers", nil); v > 1 {
			return fmt.Errorf("%v live subscriptions", v)
		}
		return nil
	})
	after := Measure(RelayHeap)
	// What the config lets the relay hold for these subscribers: a queue
	// each (and the frame being written), plus one deposit stream's budget
	// and a MiB of slack. Without the queue bounds it would hold all that
	// was pushed: entries × size per subscriber's queue (shared frames:
	// entries × size in all).
	bound := uint64(slow+1)*(queueBytes+size) + 4<<20 + 1<<20
	pushed := uint64(entries * size)
	for _, m := range []struct {
		name string
		mem  Memory
	}{{"during", peak}, {"after", after}} {
		if m.mem.Attributed > base.Attributed+bound {
			t.Errorf("%s: relay-held heap %d B (base %d B), bound %d B; pushed %d B", m.name, m.mem.Attributed, base.Attributed, bound, pushed)
		}
		// The whole process (badger and the attackers included): the
		// same bound plus two badger memtables (one filling, one being
		// flushed).
		if m.mem.HeapInuse > base.HeapInuse+bound+2*badgerMemTable {
			t.Errorf("%s: heap in use %d B (base %d B), bound %d B", m.name, m.mem.HeapInuse, base.HeapInuse, bound+2*badgerMemTable)
		}
	}
	if slowDrops := metric(t, r, "cairn_relay_slow_consumers_total", nil); slowDrops == 0 {
		t.Log("no SLOW_CONSUMER drop: the slow subscribers were reset by their write timeout instead")
	}
	t.Logf("relay-held heap: base %d KiB, during %d KiB, after %d KiB (bound +%d KiB, pushed %d KiB); heap in use %d → %d → %d MiB; RSS %d → %d MiB",
		base.Attributed>>10, peak.Attributed>>10, after.Attributed>>10, bound>>10, pushed>>10,
		base.HeapInuse>>20, peak.HeapInuse>>20, after.HeapInuse>>20, base.RSS>>20, after.RSS>>20)
}

// A subscriber that sends a frame after its request has its subscription
// ended with MALFORMED (SPEC.md §10.5).
func TestHostileSubscribeExtraFrame(t *testing.T) {
	r := oneRelay(t, nil)
	h := hostile(t, r)
	key, mb := NewMailboxKey()
	s, f, err := h.Open(ctxT(t), wire.ProtocolSubscribe, rpc.MaxEntryFrame)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if err := f.Write(auth(t, key, wire.AuthSubscribe, r.ID(), &pb.SubscribeRequest{Mailbox: mb[:]}), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var ev pb.SubscribeEvent
	if err := f.Read(&ev, 5*time.Second); err != nil || ev.Status != pb.Status_STATUS_OK {
		t.Fatalf("subscribe: %v %v", ev.Status, err)
	}
	if err := f.Write(&pb.SubscribeRequest{Mailbox: mb[:]}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for {
		var ev pb.SubscribeEvent
		if err := f.Read(&ev, 10*time.Second); err != nil {
			t.Fatalf("no MALFORMED before the end: %v", err)
		}
		if ev.Status == pb.Status_STATUS_MALFORMED {
			break
		}
		if ev.Status != pb.Status_STATUS_OK || ev.Entry != nil {
			t.Fatalf("event %v", ev.Status)
		}
	}
}

// A deposit for a mailbox the relay does not replicate is refused with
// NOT_REPLICA naming the true replica set, closest first, and stores
// nothing; the named replica takes it.
func TestHostileNotReplica(t *testing.T) {
	n := StartNet(t, NetOptions{Relays: 4, R: 2})
	var ids []peer.ID
	for _, r := range n.Relays {
		ids = append(ids, r.ID())
	}
	x := n.Relays[0]
	var mb wire.Mailbox
	for {
		_, mb = NewMailboxKey()
		if set := ReplicaOrder(mb, ids)[:2]; !slices.Contains(set, x.ID()) {
			break
		}
	}
	truth := ReplicaOrder(mb, ids)[:2]
	h := hostile(t, x)
	env := Envelope(mb, 100, 0)
	ds, err := h.RPC.OpenDeposit(ctxT(t), x.ID())
	if err != nil {
		t.Fatal(err)
	}
	_, err = ds.Deposit(ctxT(t), env)
	_ = ds.Close()
	var re *rpc.Error
	if !errors.As(err, &re) || re.Status != pb.Status_STATUS_NOT_REPLICA {
		t.Fatalf("deposit at a non-replica: %v", err)
	}
	if !slices.Equal(re.ReplicaPeers, truth) {
		t.Fatalf("NOT_REPLICA named %v, the replica set is %v", re.ReplicaPeers, truth)
	}
	if _, err := x.Store().Get(mb, wire.CIDOf(env)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused envelope is stored at the non-replica: %v", err)
	}
	states, err := h.RPC.Status(ctxT(t), x.ID(), mb, []wire.CID{wire.CIDOf(env)})
	if err != nil || states[0] != pb.EntryState_ENTRY_STATE_UNKNOWN {
		t.Fatalf("status at the non-replica: %v %v", states, err)
	}
	var target *relay.Node
	for _, r := range n.Relays {
		if r.ID() == truth[0] {
			target = r
		}
	}
	h2 := hostile(t, target)
	ds2, err := h2.RPC.OpenDeposit(ctxT(t), target.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds2.Close()
	if res, err := ds2.Deposit(ctxT(t), env); err != nil || res.Receipt == nil {
		t.Fatalf("deposit at the named replica: %v", err)
	}
}

// An envelope whose postage does not meet the advertised difficulty is
// refused with POSTAGE_REQUIRED and the difficulty, and stores nothing;
// with postage solved it is stored.
func TestHostilePostage(t *testing.T) {
	const d = 12
	r := oneRelay(t, func(c *relay.Config) { c.PostageDifficulty = d })
	h := hostile(t, r)
	info, err := h.RPC.Info(ctxT(t), r.ID())
	if err != nil || info.PostageDifficulty != d {
		t.Fatalf("info: %+v %v", info, err)
	}
	_, mb := NewMailboxKey()
	var env []byte
	var e *wire.Envelope
	for {
		env = Envelope(mb, 100, 0)
		if e, err = wire.ParseEnvelope(env); err != nil {
			t.Fatal(err)
		}
		if wire.PostageBits(e) < d-1 { // short of the difficulty by ≥ 2 bits
			break
		}
	}
	ds, err := h.RPC.OpenDeposit(ctxT(t), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	_, err = ds.Deposit(ctxT(t), env)
	var re *rpc.Error
	if !errors.As(err, &re) || re.Status != pb.Status_STATUS_POSTAGE_REQUIRED || re.PostageDifficulty != d {
		t.Fatalf("deposit without postage: %v", err)
	}
	// Almost enough is not enough.
	for wire.PostageBits(e) != d-1 {
		e.Postage++
	}
	almost, _ := e.Marshal()
	if _, err := ds.Deposit(ctxT(t), almost); !errors.Is(err, wire.ErrPostageRequired) {
		t.Fatalf("postage one bit short: %v", err)
	}
	for _, b := range [][]byte{env, almost} {
		states, err := h.RPC.Status(ctxT(t), r.ID(), mb, []wire.CID{wire.CIDOf(b)})
		if err != nil || states[0] != pb.EntryState_ENTRY_STATE_UNKNOWN {
			t.Fatalf("a refused deposit left state: %v %v", states, err)
		}
	}
	if err := wire.SolvePostage(context.Background(), e, d); err != nil {
		t.Fatal(err)
	}
	solved, _ := e.Marshal()
	if res, err := ds.Deposit(ctxT(t), solved); err != nil || res.Receipt == nil {
		t.Fatalf("deposit with postage: %v", err)
	}
}

// A stranger (a peer that is no replica) that sends tombstones for a
// stored entry, even with the owner's ack, and entries under stamps of its
// own is refused with NOT_REPLICA: the entry is still there, nothing was
// stored.
func TestHostileStrangerReplicates(t *testing.T) {
	r := oneRelay(t, nil)
	h := hostile(t, r)
	key, mb := NewMailboxKey()
	env := Envelope(mb, 100, 0)
	ds, err := h.RPC.OpenDeposit(ctxT(t), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	res, err := ds.Deposit(ctxT(t), env)
	_ = ds.Close()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := h.RPC.OpenReplicate(ctxT(t), r.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	// Even with the owner's genuine ack of the CID and the entry's own
	// stamp: a replica takes tombstones from replicas only.
	c := wire.CIDOf(env)
	sig, err := wire.SignOwnerAck(key, []wire.CID{c})
	if err != nil {
		t.Fatal(err)
	}
	acks, err := wire.OwnerAcks(key.Public().(ed25519.PublicKey), []wire.CID{c}, sig)
	if err != nil {
		t.Fatal(err)
	}
	ownerAck, err := acks[0].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stamp, err := res.Receipt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	call, err := rs.Send(ctxT(t), rpc.ReplicateBatch{Tombstones: []*pb.Tombstone{{
		Mailbox: mb[:], Cid: c[:], Origin: []byte(res.Receipt.Origin), Seq: res.Receipt.Seq, Expiry: res.Receipt.Expiry, OwnerAck: ownerAck, Stamp: stamp,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	<-call.Done()
	st, err := call.Result()
	if err != nil || len(st) != 1 || st[0] != pb.Status_STATUS_NOT_REPLICA {
		t.Fatalf("a stranger's tombstone answered %v %v, want NOT_REPLICA", st, err)
	}
	if _, err := r.Store().Get(mb, c); err != nil {
		t.Fatalf("a stranger's tombstone deleted the entry: %v", err)
	}
	sync, err := h.RPC.Sync(ctxT(t), r.ID(), key, rpc.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sync.Close()
	page, err := sync.Next()
	if err != nil || len(page.Entries) != 1 {
		t.Fatalf("sync after the stranger's tombstone: %v %v", page, err)
	}
}
