package relay

import (
	"crypto/ed25519"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// authTarget is one authenticated protocol under test.
type authTarget struct {
	name string
	op   wire.AuthOp
	body func(mb wire.Mailbox) proto.Message
	send func(t *testing.T, c *rpc.Client, n *Node, a *pb.Authenticated) pb.Status
}

var authTargets = []authTarget{
	{"sync", wire.AuthSync,
		func(mb wire.Mailbox) proto.Message { return &pb.SyncRequest{Mailbox: mb[:]} },
		func(t *testing.T, c *rpc.Client, n *Node, a *pb.Authenticated) pb.Status {
			var resp pb.SyncPage
			if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolSync, a, &resp); err != nil {
				t.Fatal(err)
			}
			return resp.Status
		}},
	{"subscribe", wire.AuthSubscribe,
		func(mb wire.Mailbox) proto.Message { return &pb.SubscribeRequest{Mailbox: mb[:]} },
		func(t *testing.T, c *rpc.Client, n *Node, a *pb.Authenticated) pb.Status {
			var resp pb.SubscribeEvent
			if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolSubscribe, a, &resp); err != nil {
				t.Fatal(err)
			}
			return resp.Status
		}},
	{"ack", wire.AuthAck,
		func(mb wire.Mailbox) proto.Message {
			return &pb.AckRequest{Mailbox: mb[:]}
		},
		func(t *testing.T, c *rpc.Client, n *Node, a *pb.Authenticated) pb.Status {
			var resp pb.AckResponse
			if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolAck, a, &resp); err != nil {
				t.Fatal(err)
			}
			return resp.Status
		}},
	{"prekeys", wire.AuthPrekeys,
		func(mb wire.Mailbox) proto.Message { return &pb.PrekeyUpload{Mailbox: mb[:]} },
		func(t *testing.T, c *rpc.Client, n *Node, a *pb.Authenticated) pb.Status {
			var resp pb.PrekeyResponse
			req := &pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: a}}
			if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolPrekeys, req, &resp); err != nil {
				t.Fatal(err)
			}
			return resp.Status
		}},
}

func TestRelayAuthFailures(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	other := peerOf(t)
	for _, tg := range authTargets {
		t.Run(tg.name, func(t *testing.T) {
			key, mb := mailboxKey(t)
			wrongKey, _ := mailboxKey(t)
			now := n.now()
			sign := func(k ed25519.PrivateKey, op wire.AuthOp, relay []byte, at time.Time) *pb.Authenticated {
				t.Helper()
				r := n.ID()
				if relay != nil {
					r = other
				}
				a, err := rpc.Authenticate(k, op, r, tg.body(mb), at, randReader{})
				if err != nil {
					t.Fatal(err)
				}
				return a
			}
			wrongOp := wire.AuthSync
			if tg.op == wire.AuthSync {
				wrongOp = wire.AuthAck
			}
			tampered := sign(key, tg.op, nil, now)
			tampered.Body = append(tampered.Body, 0x08, 0x01) // an unknown field: still parses
			truncated := sign(key, tg.op, nil, now)
			truncated.Proof = truncated.Proof[:20]
			cases := []struct {
				name string
				a    *pb.Authenticated
				want pb.Status
			}{
				{"wrong key", sign(wrongKey, tg.op, nil, now), pb.Status_STATUS_AUTH_FAILED},
				{"stale", sign(key, tg.op, nil, now.Add(-2*wire.AuthWindow)), pb.Status_STATUS_AUTH_STALE},
				{"future", sign(key, tg.op, nil, now.Add(2*wire.AuthWindow)), pb.Status_STATUS_AUTH_STALE},
				{"another relay", sign(key, tg.op, []byte{1}, now), pb.Status_STATUS_AUTH_FAILED},
				{"wrong op", sign(key, wrongOp, nil, now), pb.Status_STATUS_AUTH_FAILED},
				{"tampered body", tampered, pb.Status_STATUS_AUTH_FAILED},
				{"truncated proof", truncated, pb.Status_STATUS_AUTH_FAILED},
				{"no proof", &pb.Authenticated{Body: tampered.Body}, pb.Status_STATUS_AUTH_FAILED},
			}
			before := n.replay.len()
			for _, tc := range cases {
				if got := tg.send(t, c, n, tc.a); got != tc.want {
					t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				}
			}
			if n.replay.len() != before {
				t.Fatal("failed proofs were recorded in the replay cache")
			}
			good := sign(key, tg.op, nil, now)
			if got := tg.send(t, c, n, good); got != pb.Status_STATUS_OK {
				t.Fatalf("valid proof: %v", got)
			}
			if got := tg.send(t, c, n, good); got != pb.Status_STATUS_AUTH_REPLAYED {
				t.Fatalf("replayed proof: %v, want AUTH_REPLAYED", got)
			}
		})
	}
}

// TestRelayAuthFailuresChangeNothing: acks with bad proofs delete nothing.
func TestRelayAuthFailuresChangeNothing(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	envs := fill(t, c, n, mb, 5, 200, 0)
	wrongKey, _ := mailboxKey(t)
	all := &pb.AckRequest{Mailbox: mb[:]}
	var cids []wire.CID
	for _, e := range envs {
		c := wire.CIDOf(e)
		cids = append(cids, c)
		all.Cids = append(all.Cids, c[:])
	}
	// Owner signatures that are right: only the auth proofs are wrong.
	signed := func(k ed25519.PrivateKey) *pb.AckRequest {
		sig, err := wire.SignOwnerAck(k, cids)
		if err != nil {
			t.Fatal(err)
		}
		r := proto.Clone(all).(*pb.AckRequest)
		r.Signature = sig[:]
		return r
	}
	for _, a := range []*pb.Authenticated{
		mustAuth(t, wrongKey, wire.AuthAck, n, signed(wrongKey), n.now()),
		mustAuth(t, key, wire.AuthAck, n, signed(key), n.now().Add(-time.Hour)),
		mustAuth(t, key, wire.AuthSync, n, signed(key), n.now()),
	} {
		var resp pb.AckResponse
		if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolAck, a, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Status == pb.Status_STATUS_OK || resp.Acked != 0 {
			t.Fatalf("bad ack answered %v, acked %d", resp.Status, resp.Acked)
		}
	}
	if got := n.Store().Stats().Entries; got != 5 {
		t.Fatalf("%d entries left, want 5", got)
	}
	acked, err := c.Ack(ctxT(t), n.ID(), key, []wire.CID{wire.CIDOf(envs[0])})
	if err != nil || acked != 1 {
		t.Fatalf("good ack: %d, %v", acked, err)
	}
}

func TestRelayReplayCacheFull(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxReplayCache = 2 })
	c := newClient(t, n)
	key, _ := mailboxKey(t)
	for i := range 2 {
		if _, err := c.Ack(ctxT(t), n.ID(), key, nil); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
	}
	_, err := c.Ack(ctxT(t), n.ID(), key, nil)
	if statusOfErr(err) != pb.Status_STATUS_BUSY {
		t.Fatalf("third proof: %v, want BUSY", err)
	}
	// Entries leave the cache when their window has passed.
	clk := &clock{}
	n2 := startNode(t, func(c *Config) { c.MaxReplayCache = 1; c.Now = clk.Now })
	c2 := newClient(t, n2)
	if _, err := c2.Ack(ctxT(t), n2.ID(), key, nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(wire.AuthWindow + time.Second)
	c2.Now = clk.Now
	if _, err := c2.Ack(ctxT(t), n2.ID(), key, nil); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func mustAuth(t testing.TB, key ed25519.PrivateKey, op wire.AuthOp, n *Node, body proto.Message, at time.Time) *pb.Authenticated {
	t.Helper()
	a, err := rpc.Authenticate(key, op, n.ID(), body, at, randReader{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
