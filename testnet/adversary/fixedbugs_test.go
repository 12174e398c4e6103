package adversary

// Tests of bugs the adversarial suite found and that are fixed now
// (TESTING.md, "Known bugs"): they moved here from knownbugs_test.go.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// bugWait bounds the waits of known-bug tests: they fail by timing out,
// and need not take testnet.DefaultTimeout to do so.
const bugWait = 20 * time.Second

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// shownWithin is checkShown with a shorter wait.
func shownWithin(t *testing.T, c *client.Client, rec *recorder, contact client.ContactID, want []string) {
	t.Helper()
	ctx, cancel := contextWithTimeout(bugWait)
	defer cancel()
	err := testnet.WaitFor(ctx, func() error {
		if got := history(t, c, contact, client.Incoming); !slices.Equal(got, want) {
			return fmt.Errorf("history %q", got)
		}
		if got := rec.received(contact); !slices.Equal(got, want) {
			return fmt.Errorf("MessageReceived events %q", got)
		}
		return nil
	}, fmt.Sprintf("bob to show %q", want))
	if err != nil {
		t.Fatalf("%v (gap events: %+v)", err, rec.gaps())
	}
	if g := rec.gaps(); len(g) > 0 {
		t.Fatalf("gap reported for messages that exist: %+v", g)
	}
}

// Known bug 1, fixed (client, SPEC.md §7): a replica that withholds an
// entry and claims a watermark beyond it made bob's one portable cursor
// skip the entry on every replica, so bob reported a gap for a message the
// honest replicas held. With one cursor per relay, bob shows it.
func TestRogueLiesInWatermarks(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	rg := n.Rogue
	d := &dropper{r: rg, mb: bob.Mailbox(), k: 1}
	rg.SetBehavior(Behavior{
		Push: d.push,
		Sync: func(mb wire.Mailbox, es []*pb.Entry, wms []*pb.Position) ([]*pb.Entry, []*pb.Position) {
			c, ok := d.target()
			if mb != d.mb || !ok {
				return es, wms
			}
			var out []*pb.Entry
			for _, e := range es {
				if wire.CIDOf(e.Envelope) == c {
					rg.Note("withheld")
					continue
				}
				out = append(out, e)
			}
			// The lie: every origin's watermark is the highest seq held,
			// as if nothing were missing.
			top := map[peer.ID]uint64{}
			for _, h := range rg.Held(mb) {
				top[h.Stamp.Origin] = max(top[h.Stamp.Origin], h.Stamp.Seq)
			}
			wms = wms[:0]
			for o, s := range top {
				wms = append(wms, &pb.Position{Origin: []byte(o), Seq: s})
			}
			rg.Note("lied")
			return out, wms
		},
	})
	want := []string{"one", "two", "three"}
	send(t, alice, bobAtAlice, want...)
	waitCount(t, rg, "lied", 1)
	shownWithin(t, bob, rec, aliceAtBob, want)
}

// receiptlessDuplicate answers a deposit OK, duplicate, with no receipt
// (SPEC.md §10.3: "the entry was delivered or has expired").
func receiptlessDuplicate(*testing.T, *Rogue, *pb.DepositRequest) *pb.DepositResponse {
	return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Replicas: 1}
}

// foreignDuplicate answers a deposit OK, duplicate, with a valid receipt
// signed by a fresh key that is no relay at all.
func foreignDuplicate(t *testing.T, _ *Rogue, req *pb.DepositRequest) *pb.DepositResponse {
	mb, _ := wire.EnvelopeMailbox(req.Envelope)
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	b, err := SignStamp(k, req.Envelope, mb, 1)
	if err != nil {
		t.Error(err)
	}
	return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Receipt: b, Replicas: 1}
}

// Known bug 2, fixed (client and rpc, SPEC.md §10.3, §17.3): a replica
// that answers a deposit "duplicate" without a receipt, or with a receipt
// signed by a key that is no replica, made the sender mark the message
// stored although no relay held it: never deposited elsewhere, never
// delivered, a gap at bob. Now such an answer confirms nothing and the
// sender tries the next replica; bob shows the message.
func TestRogueUnverifiableDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(*testing.T, *Rogue, *pb.DepositRequest) *pb.DepositResponse
	}{
		{"no-receipt", receiptlessDuplicate},
		{"foreign-receipt", foreignDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
			rec := record(bob)
			rg := n.Rogue
			swallowed := make(chan wire.CID, 16)
			rg.SetBehavior(Behavior{Deposit: func(req *pb.DepositRequest) *pb.DepositResponse {
				if mb, _ := wire.EnvelopeMailbox(req.Envelope); mb == bob.Mailbox() {
					rg.Note("swallowed")
					swallowed <- wire.CIDOf(req.Envelope)
					return tc.answer(t, rg, req)
				}
				return nil
			}})
			ids := send(t, alice, bobAtAlice, "swallowed?")
			waitStored(t, alice, ids...)
			if rg.Count("swallowed") == 0 {
				t.Fatal("the rogue was not asked")
			}
			// The sender believes the message stored, and no honest
			// relay holds it.
			if st := status(t, alice, ids[0]); st != client.StatusStored {
				t.Logf("status %v", st)
			}
			cid := <-swallowed
			for _, r := range n.Relays {
				if _, err := r.Store().Get(bob.Mailbox(), cid); err == nil {
					t.Logf("%s holds the swallowed entry", r.ID())
				}
			}
			rg.SetBehavior(Behavior{})
			send(t, alice, bobAtAlice, "after")
			shownWithin(t, bob, rec, aliceAtBob, []string{"swallowed?", "after"})
		})
	}
}

// Known bug 4, fixed (client, SPEC.md §19, §17.1; now deposits go through a
// second host, Client.SenderPeerID): a client deposited into its
// contacts' mailboxes with the same libp2p peer ID it syncs, subscribes
// and acks its own mailbox with, so a relay that replicates both mailboxes
// (or two colluding relays) learns who writes to whom: the owner of
// mailbox A (authenticated by A's key) deposits into mailbox B. SPEC.md
// §19 now says clients MUST deposit with a peer ID that is not the one they
// sync with.
func TestCuriousRelayLinksMailboxes(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rec := record(bob)
	send(t, alice, bobAtAlice, "hello")
	checkShown(t, bob, rec, aliceAtBob, []string{"hello"}, false)
	// Alice syncs her own mailbox on every replica, the rogue included.
	if err := alice.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	owner := map[peer.ID]map[wire.Mailbox]bool{}
	for _, o := range n.Rogue.Observations() {
		if o.Protocol == "sync" || o.Protocol == "subscribe" || o.Protocol == "ack" || o.Protocol == "prekey-upload" {
			if owner[o.Peer] == nil {
				owner[o.Peer] = map[wire.Mailbox]bool{}
			}
			owner[o.Peer][o.Mailbox] = true
		}
	}
	deposits := 0
	for _, o := range n.Rogue.Observations() {
		if o.Protocol != "deposit" {
			continue
		}
		deposits++
		for mb := range owner[o.Peer] {
			if mb != o.Mailbox {
				t.Errorf("peer %s authenticated as the owner of mailbox %s and deposited into mailbox %s: the relay links them", o.Peer.ShortString(), mb.String()[:12], o.Mailbox.String()[:12])
			}
		}
	}
	if deposits == 0 {
		t.Fatal("the rogue saw no deposit")
	}
}

// Known bug 5, fixed (relay, SPEC.md §6.3, §10.9, §19): a replica's
// tombstones were trusted because their sender is a replica, so a
// malicious replica could delete any entry at the honest replicas. A
// tombstone now carries the mailbox owner's signed ack of its CID, and the
// honest replicas refuse tombstones without one (MALFORMED), with an ack
// signed by another key, or with the owner's real ack of another CID
// (BAD_SIGNATURE): they keep the entries, and bob, who was offline, gets
// every message.
func TestRogueTombstonesNeedTheOwner(t *testing.T) {
	n, alice, bob, bobAtAlice, aliceAtBob := rogueNet(t)
	rg := n.Rogue
	mb := bob.Mailbox()
	bobCfg := n.ClientConfigs[1]
	// A real owner ack, for the rogue to replay: bob receives and acks
	// "zero", and the honest replicas keep his ack with its tombstone.
	rec := record(bob)
	waitStored(t, alice, send(t, alice, bobAtAlice, "zero")...)
	shownWithin(t, bob, rec, aliceAtBob, []string{"zero"})
	var realAck []byte
	var zero *Held
	eventually(t, "bob's ack of zero at an honest replica", func() error {
		for _, h := range rg.Held(mb) {
			if tb, err := n.Relays[0].Store().Tombstone(mb, h.Stamp.CID); err == nil {
				realAck, zero = tb.OwnerAck, h
				return nil
			}
		}
		return errNotYet
	})
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{"one", "two", "three"}
	waitStored(t, alice, send(t, alice, bobAtAlice, want...)...)
	var targets []*Held
	eventually(t, "both honest replicas holding the new entries", func() error {
		targets = targets[:0]
		for _, h := range rg.Held(mb) {
			if _, err := n.Relays[0].Store().Tombstone(mb, h.Stamp.CID); err == nil {
				continue // zero, acked
			}
			for _, r := range n.Relays {
				if _, err := r.Store().Get(mb, h.Stamp.CID); err != nil {
					return fmt.Errorf("%s: %v", r.ID().ShortString(), err)
				}
			}
			targets = append(targets, h)
		}
		if len(targets) < len(want) {
			return fmt.Errorf("rogue holds %d new entries", len(targets))
		}
		return nil
	})
	// The rogue's own mailbox key signs an ack of the targets: a valid
	// signature, but not by bob's key.
	_, foreignKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cids := make([]wire.CID, len(targets))
	for i, h := range targets {
		cids[i] = h.Stamp.CID
	}
	sig, err := wire.SignOwnerAck(foreignKey, cids)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := wire.OwnerAcks(foreignKey.Public().(ed25519.PublicKey), cids, sig)
	if err != nil {
		t.Fatal(err)
	}
	// tomb is the tombstone of cid placed where stamp says, with ownerAck.
	tomb := func(c wire.CID, stamp *wire.SignedReceipt, ownerAck []byte) *pb.Tombstone {
		t := &pb.Tombstone{Mailbox: mb[:], Cid: c[:], Origin: []byte(stamp.Origin), Seq: stamp.Seq, Expiry: stamp.Expiry, OwnerAck: ownerAck}
		t.Stamp, _ = stamp.Marshal()
		return t
	}
	for _, variant := range []struct {
		name string
		tomb func(i int, h *Held) *pb.Tombstone
		want pb.Status
	}{
		{"no owner ack", func(_ int, h *Held) *pb.Tombstone { return tomb(h.Stamp.CID, &h.Stamp, nil) }, pb.Status_STATUS_MALFORMED},
		{"another key's ack", func(i int, h *Held) *pb.Tombstone {
			b, _ := foreign[i].Marshal()
			return tomb(h.Stamp.CID, &h.Stamp, b)
		}, pb.Status_STATUS_BAD_SIGNATURE},
		{"bob's ack of another CID", func(_ int, h *Held) *pb.Tombstone { return tomb(h.Stamp.CID, &h.Stamp, realAck) }, pb.Status_STATUS_BAD_SIGNATURE},
		// Bob's real ack of zero, placed at a target's origin and seq
		// (with the target's stamp): it would mark that seq acked where
		// the target has not arrived yet.
		{"bob's ack of zero at a target's place", func(_ int, h *Held) *pb.Tombstone {
			t := tomb(zero.Stamp.CID, &h.Stamp, realAck)
			return t
		}, pb.Status_STATUS_BAD_SIGNATURE},
		{"bob's ack of zero without a stamp", func(int, *Held) *pb.Tombstone {
			t := tomb(zero.Stamp.CID, &zero.Stamp, realAck)
			t.Stamp = nil
			return t
		}, pb.Status_STATUS_MALFORMED},
	} {
		var ts []*pb.Tombstone
		for i, h := range targets {
			ts = append(ts, variant.tomb(i, h))
		}
		for _, r := range n.Relays {
			rs, err := rg.RPC().OpenReplicate(ctxT(t), r.ID())
			if err != nil {
				t.Fatal(err)
			}
			call, err := rs.Send(ctxT(t), rpc.ReplicateBatch{Tombstones: ts})
			if err != nil {
				t.Fatal(err)
			}
			<-call.Done()
			sts, err := call.Result()
			_ = rs.Close()
			if err != nil {
				t.Fatalf("%s: %s refused the whole request: %v", variant.name, r.ID().ShortString(), err)
			}
			for i, st := range sts {
				if st != variant.want {
					t.Errorf("%s: %s answered tombstone %d with %v, want %v", variant.name, r.ID().ShortString(), i, st, variant.want)
				}
			}
		}
		for _, r := range n.Relays {
			for _, h := range targets {
				if _, err := r.Store().Get(mb, h.Stamp.CID); err != nil {
					t.Fatalf("%s: %s deleted %s: %v", variant.name, r.ID().ShortString(), h.Stamp.CID, err)
				}
			}
		}
	}
	// Anti-entropy does not take them either: the rogue starts a
	// reconciliation of the mailbox's tombstones and offers the forged ones
	// (another key's acks) as what the honest replica lacks.
	var ts []*pb.Tombstone
	var ids [][]byte
	for i, h := range targets {
		c := h.Stamp.CID
		a, _ := foreign[i].Marshal()
		ts = append(ts, tomb(c, &h.Stamp, a))
		d := c.Digest()
		ids = append(ids, d[:])
	}
	slices.SortFunc(ids, bytes.Compare)
	for _, r := range n.Relays {
		before := metric(t, r, "cairn_relay_reconciled_total", map[string]string{"result": "refused_BAD_SIGNATURE"})
		rs, err := rg.RPC().OpenReconcile(ctxT(t), r.ID())
		if err != nil {
			t.Fatal(err)
		}
		err = rs.Send(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_TOMBSTONES,
			Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: ids}}, Tombstones: ts})
		if err != nil {
			t.Fatal(err)
		}
		answer, err := rs.Recv()
		if err != nil || answer.Status != pb.Status_STATUS_OK {
			t.Fatalf("reconcile: %s answered %v, %v", r.ID().ShortString(), answer, err)
		}
		rs.Reset()
		if got := metric(t, r, "cairn_relay_reconciled_total", map[string]string{"result": "refused_BAD_SIGNATURE"}) - before; got != float64(len(ts)) {
			t.Errorf("reconcile: %s refused %v forged tombstones, want %d", r.ID().ShortString(), got, len(ts))
		}
		for _, h := range targets {
			if _, err := r.Store().Get(mb, h.Stamp.CID); err != nil {
				t.Fatalf("reconcile: %s deleted %s: %v", r.ID().ShortString(), h.Stamp.CID, err)
			}
		}
	}
	// The rogue serves nothing of the mailbox itself (it need not).
	rg.SetBehavior(Behavior{
		Push: func(wire.Mailbox, *pb.Entry) []*pb.Entry { return nil },
		Sync: func(wire.Mailbox, []*pb.Entry, []*pb.Position) ([]*pb.Entry, []*pb.Position) { return nil, nil },
	})
	// Bob comes back and syncs every replica.
	bob2, err := client.New(bobCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer bob2.Close()
	rec2 := record(bob2)
	if err := bob2.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := bob2.Sync(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	all := append([]string{"zero"}, want...)
	eventually(t, "bob to show every message", func() error {
		if got := history(t, bob2, aliceAtBob, client.Incoming); !slices.Equal(got, all) {
			return fmt.Errorf("history %q", got)
		}
		if got := rec2.received(aliceAtBob); !slices.Equal(got, want) {
			return fmt.Errorf("MessageReceived events %q", got)
		}
		return nil
	})
	if g := rec2.gaps(); len(g) > 0 {
		t.Fatalf("gap reported for messages that exist: %+v", g)
	}
}
