package client_test

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/rpc"
)

// A started client uploads one-time prekeys to its relays, tops them up
// when fetches run them low (SPEC.md §10.8).
func TestClientPrekeysReplenished(t *testing.T) {
	r := startRelay(t, nil)
	cfg := testConfig(t.TempDir(), addrs(r))
	cfg.PrekeyLowWater, cfg.PrekeyBatch = 3, 5
	bob := newClient(t, cfg)

	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New), libp2p.Muxer(yamux.ID, yamux.DefaultTransport), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ai, _ := peer.AddrInfoFromP2pAddr(ma.StringCast(r.addr))
	if err := h.Connect(context.Background(), *ai); err != nil {
		t.Fatal(err)
	}
	rc := rpc.New(h)
	fetch := func() *rpc.FetchedPrekeys {
		t.Helper()
		got, err := rc.FetchPrekeys(context.Background(), ai.ID, bob.Mailbox())
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// The first sync round uploads PrekeyBatch of each kind. Polling
	// consumes what it finds (a fetch may come between the uploads of the
	// two kinds), so count what was taken.
	var got *rpc.FetchedPrekeys
	tookX, tookM := 0, 0
	waitFor(t, "prekeys at the relay", func() bool {
		got = fetch()
		if got.X25519 != nil {
			tookX++
		}
		if got.MLKEM != nil {
			tookM++
		}
		return got.X25519 != nil && got.MLKEM != nil
	})
	if got.Remaining.X25519 != 5-tookX || got.Remaining.MLKEM != 5-tookM {
		t.Fatalf("remaining after taking %d X25519 and %d ML-KEM prekeys: %+v, want %d and %d", tookX, tookM, got.Remaining, 5-tookX, 5-tookM)
	}
	// Run them below the low-water mark; the next round tops them up.
	fetch()
	fetch()
	if got = fetch(); got.Remaining.X25519 >= 3 {
		t.Fatalf("remaining %+v", got.Remaining)
	}
	if err := bob.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "top-up", func() bool {
		counts, err := rc.FetchPrekeys(context.Background(), ai.ID, bob.Mailbox())
		return err == nil && counts.Remaining.X25519 >= 3 && counts.Remaining.MLKEM >= 3
	})

	// A first message, whose sender fetches one-time prekeys from the relay,
	// is read.
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	sendAll(t, alice, bobAtAlice, []string{"with a one-time prekey"})
	waitBodies(t, bob, contactOf(t, bob, alice), client.Incoming, []string{"with a one-time prekey"})
}
