package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
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
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// clock is a test clock: real time plus an adjustable offset.
type clock struct{ off atomic.Int64 }

func (c *clock) Now() time.Time           { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *clock) Advance(d time.Duration)  { c.off.Add(int64(d)) }
func (c *clock) Set(offset time.Duration) { c.off.Store(int64(offset)) }

// testConfig is DefaultConfig for a relay on 127.0.0.1 in a temp dir.
func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.DrainTimeout = 5 * time.Second
	cfg.GCInterval = -1
	return cfg
}

// startNode starts a relay with testConfig adjusted by mod.
func startNode(t testing.TB, mod func(*Config)) *Node {
	t.Helper()
	cfg := testConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return n
}

// clientHost is a client's libp2p host connected to the relays given.
func clientHost(t testing.TB, relays ...*Node) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableMetrics(),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, r := range relays {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := h.Connect(ctx, r.AddrInfo())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// client is a client host with an rpc.Client.
func newClient(t testing.TB, relays ...*Node) *rpc.Client {
	c := rpc.New(clientHost(t, relays...))
	c.Timeout = 10 * time.Second
	return c
}

func mailboxKey(t testing.TB) (ed25519.PrivateKey, wire.Mailbox) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, wire.MailboxOf(pub)
}

// envelope builds an envelope of size bytes (≥ 56) for mb; its
// ciphertext starts with counter so envelopes differ.
func envelope(t testing.TB, mb wire.Mailbox, size int, expiry uint64, counter uint64) []byte {
	t.Helper()
	ct := make([]byte, size-wire.EnvelopeOverhead)
	if len(ct) >= 8 {
		binary.BigEndian.PutUint64(ct, counter)
	} else {
		ct[0] = byte(counter)
	}
	e := wire.Envelope{Mailbox: mb, Expiry: expiry, Ciphertext: ct}
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// rawStream opens a stream and returns it framed for responses of max
// bytes.
func rawStream(t testing.TB, h host.Host, relay peer.ID, pid protocol.ID, max int) (network.Stream, *rpc.Framed) {
	t.Helper()
	s, err := h.NewStream(ctxT(t), relay, pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Reset() })
	return s, rpc.NewFramed(s, max)
}

// roundTrip writes req on a new stream of pid and reads one answer.
func roundTrip(t testing.TB, h host.Host, relay peer.ID, pid protocol.ID, req, resp proto.Message) error {
	t.Helper()
	s, f := rawStream(t, h, relay, pid, rpc.MaxEntryFrame)
	_ = f.Write(req, 5*time.Second)
	_ = s.CloseWrite()
	return f.Read(resp, 5*time.Second)
}

// statusOfErr returns the wire status of an rpc error (OK for nil).
func statusOfErr(err error) pb.Status { return wire.StatusOf(err) }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newIdentity(t testing.TB) crypto.PrivKey {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var _ = io.EOF

// randReader is crypto/rand as a value.
type randReader struct{}

func (randReader) Read(b []byte) (int, error) { return rand.Read(b) }

// counterValue reads a counter or gauge without labels from the node's
// registry.
func counterValue(t testing.TB, n *Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitRetryingBusy waits for the answer to a deposit of env sent on ds; a
// deposit answered BUSY (the relay's store-backlog admission) is sent again
// after its retry_after, as a client would. It returns the last answer and
// how many BUSY answers came before it.
func waitRetryingBusy(ds *rpc.DepositStream, call *rpc.DepositCall, env []byte) (*rpc.DepositResult, int, error) {
	res, err := call.Wait(context.Background())
	busy := 0
	var re *rpc.Error
	for errors.As(err, &re) && re.Status == pb.Status_STATUS_BUSY {
		busy++
		time.Sleep(re.RetryAfter)
		if call, err = ds.Send(context.Background(), env); err == nil {
			res, err = call.Wait(context.Background())
		}
	}
	return res, busy, err
}
