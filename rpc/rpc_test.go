package rpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

func newHost(t *testing.T, listen bool) host.Host {
	t.Helper()
	opts := []libp2p.Option{
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableMetrics(),
		libp2p.DisableRelay(),
	}
	if listen {
		opts = append(opts, libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	} else {
		opts = append(opts, libp2p.NoListenAddrs)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// pair returns a client connected to a server host whose handlers the test
// sets.
func pair(t *testing.T) (*Client, host.Host) {
	t.Helper()
	srv := newHost(t, true)
	cli := newHost(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cli.Connect(ctx, peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		t.Fatal(err)
	}
	c := New(cli)
	c.Timeout = 5 * time.Second
	return c, srv
}

// serveOnce answers each stream of pid with fn.
func serve(srv host.Host, pid protocol.ID, fn func(s network.Stream, f *Framed)) {
	srv.SetStreamHandler(pid, func(s network.Stream) {
		f := NewFramed(s, MaxDepositFrame)
		fn(s, f)
	})
}

func TestRPCErrorUnwrapsToSentinel(t *testing.T) {
	p := peer.ID("x")
	e := &Error{Op: "deposit", Relay: p, Status: pb.Status_STATUS_RATE_LIMITED, RetryAfter: time.Second, Detail: "slow down"}
	if !errors.Is(e, wire.ErrRateLimited) || errors.Is(e, wire.ErrBusy) {
		t.Fatal("Error does not unwrap to its sentinel")
	}
	if wire.StatusOf(e) != pb.Status_STATUS_RATE_LIMITED {
		t.Fatal("StatusOf(Error)")
	}
	if s := e.Error(); !strings.Contains(s, "rate limited") || !strings.Contains(s, "1s") || !strings.Contains(s, `"slow down"`) {
		t.Fatalf("Error() = %q", s)
	}
	if statusErr("x", p, pb.Status_STATUS_OK, "", 0) != nil {
		t.Fatal("OK is an error")
	}
	if err := statusErr("x", p, pb.Status(99), "", 0); !errors.Is(err, wire.ErrInternal) {
		t.Fatalf("unknown status: %v", err)
	}
}

func TestRPCAnswerWithoutReading(t *testing.T) {
	c, srv := pair(t)
	// A relay that refuses before reading the request.
	serve(srv, wire.ProtocolStatus, func(s network.Stream, f *Framed) {
		f.Write(&pb.StatusResponse{Status: pb.Status_STATUS_RATE_LIMITED, RetryAfterMs: 1500}, time.Second)
		s.Close()
	})
	_, err := c.Status(context.Background(), srv.ID(), wire.Mailbox{0x12, 0x20}, nil)
	var e *Error
	if !errors.As(err, &e) || e.RetryAfter != 1500*time.Millisecond || e.Relay != srv.ID() || e.Op != "status" {
		t.Fatalf("status = %v", err)
	}
}

func TestRPCMalformedAnswers(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolInfo, func(s network.Stream, f *Framed) {
		s.Write([]byte{2, 0x0f, 0x01}) // not protobuf
		s.Close()
	})
	if _, err := c.Info(context.Background(), srv.ID()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage answer: %v", err)
	}
	serve(srv, wire.ProtocolInfo, func(s network.Stream, f *Framed) {
		s.Write([]byte{0x80, 0x80, 0x80, 0x04}) // 8 MiB frame header
		s.Close()
	})
	if _, err := c.Info(context.Background(), srv.ID()); !errors.Is(err, ErrFrameTooLarge) && !errors.Is(err, ErrProtocol) {
		t.Fatalf("oversized answer: %v", err)
	}
	serve(srv, wire.ProtocolStatus, func(s network.Stream, f *Framed) {
		var req pb.StatusRequest
		f.Read(&req, time.Second)
		f.Write(&pb.StatusResponse{Status: pb.Status_STATUS_OK}, time.Second) // no states
		s.Close()
	})
	if _, err := c.Status(context.Background(), srv.ID(), wire.Mailbox{0x12, 0x20}, []wire.CID{{}}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("short status answer: %v", err)
	}
}

func TestRPCContextCancelResets(t *testing.T) {
	c, srv := pair(t)
	block := make(chan struct{})
	defer close(block)
	serve(srv, wire.ProtocolInfo, func(s network.Stream, f *Framed) { <-block; s.Reset() })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Info(ctx, srv.ID()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("info = %v", err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("cancel did not interrupt the call")
	}
}

// relayKey signs receipts for the fake relay.
func relayKey(t *testing.T) (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := peer.IDFromPrivateKey(k)
	return k, id
}

func testEnvelope(t *testing.T, mb wire.Mailbox, i byte) []byte {
	e := wire.Envelope{Mailbox: mb, Ciphertext: []byte{i, i, i}}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRPCDepositStreamOrderAndVerification(t *testing.T) {
	c, srv := pair(t)
	priv := srv.Peerstore().PrivKey(srv.ID())
	_, otherID := relayKey(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	mb := wire.MailboxOf(pub)
	// The fake relay answers in order, signing the receipts of each batch
	// of 4 together; the 6th answer names the wrong CID, the 7th another
	// origin; the 8th is refused with NOT_REPLICA.
	serve(srv, wire.ProtocolDeposit, func(s network.Stream, f *Framed) {
		var reqs []*pb.DepositRequest
		for range 8 {
			var r pb.DepositRequest
			if err := f.Read(&r, 5*time.Second); err != nil {
				s.Reset()
				return
			}
			reqs = append(reqs, &r)
		}
		var rs []wire.Receipt
		for i, r := range reqs[:7] {
			cid := wire.CIDOf(r.Envelope)
			if i == 5 {
				cid = wire.CIDOf([]byte("other"))
			}
			rs = append(rs, wire.Receipt{Origin: srv.ID(), Mailbox: mb, CID: cid, Seq: uint64(i + 1), Expiry: 1})
		}
		signed, err := wire.SignReceipts(priv, rs[:4])
		if err != nil {
			panic(err)
		}
		more, _ := wire.SignReceipts(priv, rs[4:])
		signed = append(signed, more...)
		for i := range 7 {
			b, _ := signed[i].Marshal()
			if i == 6 {
				rs[6].Origin = otherID // a forged origin does not verify either
				sr := signed[6]
				sr.Origin = otherID
				b, _ = sr.Marshal()
			}
			f.Buffer(&pb.DepositResponse{Id: reqs[i].Id, Status: pb.Status_STATUS_OK, Receipt: b, Replicas: 1})
		}
		f.Buffer(&pb.DepositResponse{Id: reqs[7].Id, Status: pb.Status_STATUS_NOT_REPLICA, ReplicaPeers: [][]byte{[]byte(otherID), {1, 2}}})
		f.Flush(time.Second)
		io.Copy(io.Discard, s)
		s.Close()
	})
	ds, err := c.OpenDeposit(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	var calls []*DepositCall
	for i := range 8 {
		call, err := ds.Send(context.Background(), testEnvelope(t, mb, byte(i)))
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call)
	}
	for i, call := range calls {
		res, err := call.Wait(context.Background())
		switch {
		case i < 5:
			if err != nil || res.Receipt.Seq != uint64(i+1) {
				t.Fatalf("deposit %d: %v %v", i, res, err)
			}
		case i < 7:
			if !errors.Is(err, wire.ErrBadSignature) {
				t.Fatalf("deposit %d: %v, want a bad signature", i, err)
			}
		default:
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, wire.ErrNotReplica) || len(e.ReplicaPeers) != 1 || e.ReplicaPeers[0] != otherID {
				t.Fatalf("deposit %d: %v", i, err)
			}
		}
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Send(context.Background(), testEnvelope(t, mb, 9)); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
}

func TestRPCDepositStreamOutOfOrder(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolDeposit, func(s network.Stream, f *Framed) {
		var r pb.DepositRequest
		f.Read(&r, 5*time.Second)
		f.Write(&pb.DepositResponse{Id: r.Id + 1, Status: pb.Status_STATUS_BUSY}, time.Second)
		io.Copy(io.Discard, s)
		s.Close()
	})
	ds, err := c.OpenDeposit(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Reset()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, err = ds.Deposit(context.Background(), testEnvelope(t, wire.MailboxOf(pub), 1))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("out-of-order answer: %v", err)
	}
	// The stream is dead: later sends fail at once.
	if _, err := ds.Send(context.Background(), testEnvelope(t, wire.MailboxOf(pub), 2)); err == nil {
		t.Fatal("send on a failed stream")
	}
}

func TestRPCDepositStreamCutFailsPending(t *testing.T) {
	c, srv := pair(t)
	serve(srv, wire.ProtocolDeposit, func(s network.Stream, f *Framed) {
		var r pb.DepositRequest
		f.Read(&r, 5*time.Second)
		s.Reset()
	})
	ds, err := c.OpenDeposit(context.Background(), srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Reset()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	call, err := ds.Send(context.Background(), testEnvelope(t, wire.MailboxOf(pub), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("pending deposit after a reset: %v", err)
	}
}

func TestRPCVerifyEntry(t *testing.T) {
	k, id := relayKey(t)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	mb := wire.MailboxOf(pub)
	env := testEnvelope(t, mb, 1)
	signed, err := wire.SignReceipts(k, []wire.Receipt{{Origin: id, Mailbox: mb, CID: wire.CIDOf(env), Seq: 1, Expiry: 9}})
	if err != nil {
		t.Fatal(err)
	}
	stamp, _ := signed[0].Marshal()
	v := wire.NewReceiptVerifier(8)
	if _, err := VerifyEntry(v, &pb.Entry{Envelope: env, Stamp: stamp}, mb); err != nil {
		t.Fatal(err)
	}
	var other wire.Mailbox
	other[0], other[1] = 0x12, 0x20
	for name, tc := range map[string]struct {
		e  *pb.Entry
		mb wire.Mailbox
	}{
		"other mailbox":  {&pb.Entry{Envelope: env, Stamp: stamp}, other},
		"other envelope": {&pb.Entry{Envelope: testEnvelope(t, mb, 2), Stamp: stamp}, mb},
		"bad stamp":      {&pb.Entry{Envelope: env, Stamp: stamp[:10]}, mb},
		"missing":        {nil, mb},
	} {
		if _, err := VerifyEntry(v, tc.e, tc.mb); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
	flipped := append([]byte(nil), stamp...)
	flipped[len(flipped)-1] ^= 1
	if _, err := VerifyEntry(wire.NewReceiptVerifier(8), &pb.Entry{Envelope: env, Stamp: flipped}, mb); !errors.Is(err, wire.ErrBadSignature) {
		t.Fatalf("flipped signature: %v", err)
	}
}

func TestRPCAppendFrameRoundTrip(t *testing.T) {
	m := &pb.SubscribeEvent{Status: pb.Status_STATUS_OK, KeepaliveMs: 15000}
	b, err := AppendFrame([]byte{0xaa}, m)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0xaa || int(b[1]) != len(b)-2 {
		t.Fatalf("frame % x", b)
	}
}
