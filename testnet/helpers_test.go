package testnet_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// testHost is a bare libp2p host that only dials out (like a client's),
// closed at the end of the test.
func testHost(t testing.TB) host.Host {
	t.Helper()
	h, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
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
	return h
}

// rpcTo returns an rpc client on a new host that knows the relays'
// addresses.
func rpcTo(t testing.TB, relays ...peer.AddrInfo) *rpc.Client {
	h := testHost(t)
	for _, ai := range relays {
		h.Peerstore().AddAddrs(ai.ID, ai.Addrs, time.Hour)
	}
	c := rpc.New(h)
	c.Timeout = 10 * time.Second
	return c
}

// forceDial lets a call ignore libp2p's dial backoff (tests dial relays
// that were just down or cut off).
func forceDial(ctx context.Context) context.Context {
	return network.WithForceDirectDial(ctx, "test")
}

func mailboxKey(t testing.TB) (ed25519.PrivateKey, wire.Mailbox) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv, wire.MailboxOf(pub)
}

// envelope returns an envelope of 200 bytes for mb whose ciphertext starts
// with counter.
func envelope(t testing.TB, mb wire.Mailbox, counter uint64) []byte {
	t.Helper()
	ct := make([]byte, 200)
	binary.BigEndian.PutUint64(ct, counter)
	b, err := (&wire.Envelope{Mailbox: mb, Ciphertext: ct}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deposit deposits n envelopes for mb at relay and returns their CIDs.
func deposit(t testing.TB, c *rpc.Client, relay peer.ID, mb wire.Mailbox, from, n int) []wire.CID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ds, err := c.OpenDeposit(forceDial(ctx), relay)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	var cids []wire.CID
	for i := range n {
		env := envelope(t, mb, uint64(from+i))
		res, err := ds.Deposit(ctx, env)
		if err != nil {
			t.Fatalf("deposit %d: %v", from+i, err)
		}
		if res.Receipt == nil {
			t.Fatalf("deposit %d: no receipt", from+i)
		}
		cids = append(cids, wire.CIDOf(env))
	}
	return cids
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// addrInfosT returns every relay's cluster address.
func addrInfosT(c *testnet.Cluster) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, r := range c.Relays {
		out = append(out, r.AddrInfo())
	}
	return out
}
