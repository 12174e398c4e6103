package relay

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// TestRelayKillRestartAcknowledged: a relay in a child process takes
// deposits from a client and replicated entries from another relay (an
// in-process replica, whose stamps it imports) at once; it is killed with
// SIGKILL at random moments right after its cairn_relay_stored_entries
// metric was read, as the demo reads it, and restarted on its data
// directory. After each kill its store, opened offline, holds every entry
// the relay answered OK for (a deposit receipt, a replicate status OK), its
// counters match what it holds, and the metric read before the kill did not
// count more than that (SPEC.md §13: nothing answered OK is lost; the
// metric counts only durable entries). After each restart the metric
// reads the same count.
func TestRelayKillRestartAcknowledged(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runRelayChild(t)
		return
	}
	peerKey := newIdentity(t)
	replica := startNode(t, func(c *Config) {
		replConfig(c)
		c.Identity = peerKey
	})
	dir := t.TempDir()
	key, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(key)
	ra := replica.AddrInfo()
	child := &childRelay{t: t, dir: dir, port: freePort(t), id: id, run: "TestRelayKillRestartAcknowledged",
		boot: []string{fmt.Sprintf("%s/p2p/%s", ra.Addrs[0], ra.ID)}}
	t.Cleanup(child.kill)
	defer func() {
		if t.Failed() {
			t.Logf("relay stderr:\n%s", child.log())
		}
	}()

	var mbs []wire.Mailbox
	for range 8 {
		_, mb := mailboxKey(t)
		mbs = append(mbs, mb)
	}
	depositor := newClient(t)
	depositor.Host.Peerstore().AddAddrs(id, child.addrInfo().Addrs, time.Hour)
	replicator := &rpc.Client{Host: replica.Host(), Timeout: 10 * time.Second}
	replica.Host().Peerstore().AddAddrs(id, child.addrInfo().Addrs, time.Hour)

	var mu sync.Mutex
	acked := map[wire.CID]wire.Mailbox{} // answered OK
	var deposited, imported int
	seqs := map[wire.Mailbox]uint64{} // the replica's stamps, per mailbox
	counter := uint64(0)
	rng := rand.New(rand.NewPCG(7, 8))
	const kills = 30
	heldBefore := 0 // entries in the store, counted offline after the last kill
	for round := range kills {
		child.start()
		for _, h := range []host.Host{depositor.Host, replica.Host()} {
			if sw, ok := h.Network().(*swarm.Swarm); ok {
				sw.Backoff().Clear(id) // the dials that failed while it was down
			}
			// The replica's DHT may have dropped the killed relay's
			// addresses with it: give them again.
			h.Peerstore().AddAddrs(id, child.addrInfo().Addrs, time.Hour)
		}
		if got := child.storedEntries(); got != heldBefore {
			t.Fatalf("round %d: after the restart the metric counts %d entries; the store holds %d", round, got, heldBefore)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var depOK, repOK sync.Once
		depStarted, repStarted := make(chan struct{}), make(chan struct{})
		wg.Add(2)
		go func() { // deposits, 16 in flight
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ds, err := depositor.OpenDeposit(ctx, id)
			if err != nil {
				t.Errorf("round %d: open deposit: %v", round, err)
				return
			}
			defer ds.Reset()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var calls []*rpc.DepositCall
				var boxes []wire.Mailbox
				for range 16 {
					mu.Lock()
					counter++
					c := counter
					mu.Unlock()
					mb := mbs[c%uint64(len(mbs))]
					call, err := ds.Send(ctx, envelope(t, mb, 300, 0, c))
					if err != nil {
						return
					}
					calls = append(calls, call)
					boxes = append(boxes, mb)
				}
				for i, call := range calls {
					res, err := call.Wait(ctx)
					if err != nil {
						return // killed
					}
					if res.Receipt == nil || res.Receipt.Origin != id {
						t.Errorf("round %d: deposit answered without this relay's receipt: %+v", round, res)
						return
					}
					mu.Lock()
					acked[res.Receipt.CID] = boxes[i]
					deposited++
					mu.Unlock()
					depOK.Do(func() { close(depStarted) })
				}
			}
		}()
		go func() { // replicated entries, batches of 32
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			rs, err := replicator.OpenReplicate(ctx, id)
			if err != nil {
				t.Errorf("round %d: open replicate: %v", round, err)
				return
			}
			defer rs.Reset()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var batch rpc.ReplicateBatch
				var boxes []wire.Mailbox
				for range 32 {
					mu.Lock()
					counter++
					c := counter
					mb := mbs[c%uint64(len(mbs))]
					seqs[mb]++
					seq := seqs[mb]
					mu.Unlock()
					batch.Entries = append(batch.Entries, forge(t, peerKey, envelope(t, mb, 300, 0, c), seq))
					boxes = append(boxes, mb)
				}
				call, err := rs.Send(ctx, batch)
				if err != nil {
					return
				}
				select {
				case <-call.Done():
				case <-ctx.Done():
					return
				}
				statuses, err := call.Result()
				if err != nil {
					return // killed
				}
				refused := 0
				for i, st := range statuses {
					switch st {
					case pb.Status_STATUS_OK:
						mu.Lock()
						acked[wire.CIDOf(batch.Entries[i].Envelope)] = boxes[i]
						imported++
						mu.Unlock()
						repOK.Do(func() { close(repStarted) })
					case pb.Status_STATUS_NOT_REPLICA:
						refused++ // the restarted relay does not know the replica yet
					default:
						t.Errorf("round %d: replicated entry refused: %v", round, st)
						return
					}
				}
				if refused > 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
		for _, ch := range []chan struct{}{depStarted, repStarted} {
			select {
			case <-ch:
			case <-time.After(20 * time.Second):
				t.Fatalf("round %d: traffic did not start", round)
			}
		}
		time.Sleep(time.Duration(20+rng.IntN(200)) * time.Millisecond)
		before := child.storedEntries()
		child.kill()
		close(stop)
		wg.Wait()
		if t.Failed() {
			return
		}

		held := offlineEntries(t, dir, key, id)
		mu.Lock()
		lost := 0
		for c, mb := range acked {
			if held[c] != mb {
				lost++
			}
		}
		total := len(acked)
		mu.Unlock()
		if lost > 0 {
			t.Fatalf("round %d: %d of %d entries answered OK are not in the store after the kill", round, lost, total)
		}
		if before > len(held) {
			t.Fatalf("round %d: the metric counted %d entries right before the kill; the store holds %d", round, before, len(held))
		}
		heldBefore = len(held)
	}
	t.Logf("%d kills: %d deposits and %d replicated entries answered OK, all durable", kills, deposited, imported)
}

// offlineEntries opens a (stopped) relay's store, checks that its counters
// agree with what it holds, and returns the CIDs of its live entries.
func offlineEntries(t *testing.T, dir string, key crypto.PrivKey, id peer.ID) map[wire.CID]wire.Mailbox {
	t.Helper()
	l, err := store.OpenLog(store.LogOptions{Dir: filepath.Join(dir, "store"), Origin: id, Signer: key, GCInterval: -1})
	if err != nil {
		t.Fatalf("open the store offline: %v", err)
	}
	defer l.Close()
	out := map[wire.CID]wire.Mailbox{}
	for info := range l.Mailboxes() {
		p, err := l.Read(info.Mailbox, nil, nil, 0, 0)
		if err != nil || len(p.Corrupt) > 0 {
			t.Fatalf("read %s: %v %v", info.Mailbox, err, p.Corrupt)
		}
		if int64(len(p.Entries)) != info.Entries {
			t.Fatalf("mailbox %s counts %d entries, holds %d", info.Mailbox, info.Entries, len(p.Entries))
		}
		for _, e := range p.Entries {
			out[e.CID()] = info.Mailbox
		}
	}
	if st := l.Stats(); st.Entries != int64(len(out)) {
		t.Fatalf("the store counts %d entries, holds %d", st.Entries, len(out))
	}
	return out
}
