package client

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// depRelay answers deposits with answer(its key, request) and records the
// CIDs it was asked to store.
type depRelay struct {
	h      host.Host
	key    crypto.PrivKey
	answer func(key crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse

	mu   sync.Mutex
	asks []wire.CID
}

func newDepRelay(t *testing.T, key crypto.PrivKey) *depRelay {
	t.Helper()
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	r := &depRelay{h: h, key: key}
	h.SetStreamHandler(wire.ProtocolDeposit, func(s network.Stream) {
		defer s.Close()
		f := rpc.NewFramed(s, rpc.MaxDepositFrame)
		for {
			var req pb.DepositRequest
			if err := f.Read(&req, 0); err != nil {
				if !errors.Is(err, io.EOF) {
					_ = s.Reset()
				}
				return
			}
			r.mu.Lock()
			r.asks = append(r.asks, wire.CIDOf(req.Envelope))
			answer := r.answer
			r.mu.Unlock()
			resp := answer(r.key, &req)
			resp.Id = req.Id
			if f.Write(resp, 5*time.Second) != nil {
				return
			}
		}
	})
	return r
}

func (r *depRelay) asked() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.asks)
}

// receiptBy signs a receipt for the request's envelope with key.
func receiptBy(t *testing.T, key crypto.PrivKey, req *pb.DepositRequest) []byte {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Error(err)
		return nil
	}
	mb, _ := wire.EnvelopeMailbox(req.Envelope)
	rs, err := wire.SignReceipts(key, []wire.Receipt{{Origin: id, Mailbox: mb, CID: wire.CIDOf(req.Envelope), Seq: 1,
		StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: uint64(time.Now().Add(time.Hour).Unix())}})
	if err != nil {
		t.Error(err)
		return nil
	}
	b, err := rs[0].Marshal()
	if err != nil {
		t.Error(err)
	}
	return b
}

func newKey(t *testing.T) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// depositOnce runs one deposit attempt of a fresh outbox entry for mailbox
// mb at the given relays (closest first) and returns the entry after it.
func depositOnce(t *testing.T, c *Client, mb wire.Mailbox, relays ...*depRelay) *store.OutboxEntry {
	t.Helper()
	env := &wire.Envelope{Mailbox: mb, Expiry: uint64(time.Now().Add(time.Hour).Unix()), Ciphertext: []byte("ciphertext")}
	eb, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r := &store.OutboxEntry{Contact: "contact", Counter: 1, Kind: wire.PayloadText, Mailbox: mb, Envelope: eb, CID: wire.CIDOf(eb),
		Status: store.StatusQueued, Expiry: env.Expiry, NextAttemptMs: ^uint64(0)}
	var ids []peer.ID
	for _, d := range relays {
		c.net.host.Peerstore().AddAddrs(d.h.ID(), d.h.Addrs(), peerstore.PermanentAddrTTL)
		c.net.mu.Lock()
		c.net.info[d.h.ID()] = &rpc.Info{}
		c.net.mu.Unlock()
		ids = append(ids, d.h.ID())
	}
	c.mu.Lock()
	c.putOutLocked(r)
	c.inflight[outKeyOf(r)] = true // as dispatch does: the sender loop leaves it alone
	c.sending[mb] = true
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c.attempt(ctx, mb, ids, []*store.OutboxEntry{r})
	c.mu.Lock()
	defer c.mu.Unlock()
	got := *c.outbox[outKeyOf(r)]
	return &got
}

// rogueFirst returns two keys, the first closer to mb's DHT key (the
// client tries it first).
func rogueFirst(t *testing.T, mb wire.Mailbox) (rogue, honest crypto.PrivKey) {
	a, b := newKey(t), newKey(t)
	ia, _ := peer.IDFromPrivateKey(a)
	ib, _ := peer.IDFromPrivateKey(b)
	if kb.SortClosestPeers([]peer.ID{ia, ib}, kb.ConvertKey(mb.DHTKey()))[0] == ia {
		return a, b
	}
	return b, a
}

// A replica that answers a deposit "duplicate" without a receipt, or with a
// valid receipt signed by a key that is no replica, does not make the
// message stored: the client deposits it at the next replica, in the same
// attempt, and keeps that replica's receipt (SPEC.md §17.3).
func TestDepositUnverifiableDuplicate(t *testing.T) {
	stranger := newKey(t)
	for _, tc := range []struct {
		name  string
		rogue func(t *testing.T, key crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse
	}{
		{"no-receipt", func(*testing.T, crypto.PrivKey, *pb.DepositRequest) *pb.DepositResponse {
			return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Replicas: 1}
		}},
		{"foreign-receipt", func(t *testing.T, _ crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse {
			return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Receipt: receiptBy(t, stranger, req), Replicas: 1}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(Config{Timeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			mb := wire.Mailbox{0x12, 0x20, 9}
			rk, hk := rogueFirst(t, mb)
			rogue, honest := newDepRelay(t, rk), newDepRelay(t, hk)
			rogue.answer = func(k crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse { return tc.rogue(t, k, req) }
			honest.answer = func(k crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse {
				return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Receipt: receiptBy(t, k, req), Replicas: 1}
			}
			r := depositOnce(t, c, mb, rogue, honest)
			if rogue.asked() == 0 {
				t.Fatal("the rogue (closest) was not asked")
			}
			if honest.asked() == 0 {
				t.Fatalf("the honest replica was never asked; status %v", r.Status)
			}
			if r.Status != store.StatusStored {
				t.Fatalf("status %v, want stored", r.Status)
			}
			sr, err := wire.ParseSignedReceipt(r.Receipt)
			if err != nil || sr.Origin != honest.h.ID() {
				t.Fatalf("kept receipt %v (%v), want the honest replica's", sr, err)
			}
		})
	}
}

// Receipt-less duplicates (the entry was acked or expired there) from two
// replicas, when no replica takes the entry, make it stored; from one,
// with the other replica refusing, it stays queued for a retry. A
// duplicate whose receipt names another replica of the set as origin (the
// entry was first deposited there) is a confirmation.
func TestDepositDuplicateCorroborated(t *testing.T) {
	c, err := New(Config{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mb := wire.Mailbox{0x12, 0x20, 7}
	ka, kb2 := rogueFirst(t, mb)
	a, b := newDepRelay(t, ka), newDepRelay(t, kb2)
	gone := func(crypto.PrivKey, *pb.DepositRequest) *pb.DepositResponse {
		return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Replicas: 1}
	}
	busy := func(crypto.PrivKey, *pb.DepositRequest) *pb.DepositResponse {
		return &pb.DepositResponse{Status: pb.Status_STATUS_BUSY, RetryAfterMs: 10}
	}
	a.answer, b.answer = gone, busy
	if r := depositOnce(t, c, mb, a, b); r.Status != store.StatusQueued {
		t.Fatalf("one receipt-less duplicate, the other replica busy: status %v, want queued", r.Status)
	}
	c.net.markUp(a.h.ID())
	c.net.markUp(b.h.ID())
	b.answer = gone
	if r := depositOnce(t, c, mb, a, b); r.Status != store.StatusStored {
		t.Fatalf("receipt-less duplicates from both replicas: status %v, want stored", r.Status)
	}
	a.answer = func(_ crypto.PrivKey, req *pb.DepositRequest) *pb.DepositResponse {
		return &pb.DepositResponse{Status: pb.Status_STATUS_OK, Duplicate: true, Receipt: receiptBy(t, kb2, req), Replicas: 1}
	}
	b.answer = busy
	r := depositOnce(t, c, mb, a, b)
	if r.Status != store.StatusStored {
		t.Fatalf("duplicate with a receipt of the other replica: status %v, want stored", r.Status)
	}
	if sr, err := wire.ParseSignedReceipt(r.Receipt); err != nil || sr.Origin != b.h.ID() {
		t.Fatalf("kept receipt %v (%v), want the other replica's", sr, err)
	}
}
