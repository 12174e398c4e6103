package adversary

// Tests of bugs the adversarial suite found and that are fixed now
// (TESTING.md, "Known bugs"): they moved here from knownbugs_test.go.

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/client"
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
