package relay

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// TestRelayQUIC serves a client that reaches the relay over QUIC only.
func TestRelayQUIC(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
	})
	h := clientHost(t)
	var quicAddrs []ma.Multiaddr
	for _, a := range n.AddrInfo().Addrs {
		if _, err := a.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			quicAddrs = append(quicAddrs, a)
		}
	}
	if len(quicAddrs) == 0 {
		t.Fatalf("no QUIC address in %v", n.AddrInfo().Addrs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: n.ID(), Addrs: quicAddrs}); err != nil {
		t.Fatal(err)
	}
	c := rpc.New(h)
	key, mb := mailboxKey(t)
	ds, err := c.OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ds.Deposit(ctxT(t), envelope(t, mb, 500, 0, 1)); err != nil {
		t.Fatal(err)
	}
	ds.Close()
	pages := syncAll(t, c, n, key, rpc.SyncRequest{})
	if len(pages) != 1 || len(pages[0].Entries) != 1 {
		t.Fatal("sync over QUIC")
	}
	if conns := h.Network().ConnsToPeer(n.ID()); len(conns) == 0 || conns[0].ConnState().Transport != "quic-v1" {
		t.Fatalf("connection is not QUIC: %v", conns)
	}
}

// TestRelayDHT: relays run the /cairn DHT in server mode (never the IPFS
// one), bootstrap from their configured peers, and fill their routing
// tables from each other.
func TestRelayDHT(t *testing.T) {
	a := startNode(t, nil)
	b := startNode(t, func(c *Config) { c.BootstrapPeers = []peer.AddrInfo{a.AddrInfo()} })
	waitFor(t, "routing tables", func() bool {
		return a.DHT().RoutingTable().Size() == 1 && b.DHT().RoutingTable().Size() == 1
	})
	protos := a.Host().Mux().Protocols()
	if !slices.Contains(protos, "/cairn/kad/1.0.0") || slices.Contains(protos, "/ipfs/kad/1.0.0") {
		t.Fatalf("protocols %v", protos)
	}
	for _, p := range relayProtocols {
		if !slices.Contains(protos, p) {
			t.Fatalf("%s not served", p)
		}
	}
	if err := b.Health(ctxT(t)); err != nil {
		t.Fatalf("health with a bootstrapped DHT: %v", err)
	}
	var key wire.Mailbox
	key[0], key[1] = 0x12, 0x20
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peers, err := b.DHT().GetClosestPeers(ctx, key.DHTKey())
	if err != nil || !slices.Contains(peers, a.ID()) {
		t.Fatalf("GetClosestPeers = %v, %v", peers, err)
	}
}

// TestRelayMetrics checks the metric families a relay exports after
// traffic, on its own registry.
func TestRelayMetrics(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	sub, err := c.Subscribe(ctxT(t), n.ID(), key)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, c, n, mb, 3, 200, 0)
	for range 3 {
		<-sub.Entries()
	}
	syncAll(t, c, n, key, rpc.SyncRequest{})
	if v := counterValue(t, n, "cairn_relay_subscribers"); v != 1 {
		t.Fatalf("subscribers %v", v)
	}
	sub.Close()
	for name, min := range map[string]float64{
		"cairn_relay_deposits_total":     3,
		"cairn_relay_stored_entries":     3,
		"cairn_relay_stored_bytes":       600,
		"cairn_relay_syncs_total":        1,
		"cairn_relay_sync_entries_total": 3,
		"cairn_relay_pushes_total":       3,
		"cairn_relay_requests_total":     3,
		"cairn_relay_expired_total":      0,
	} {
		if v := counterValue(t, n, name); v < min {
			t.Errorf("%s = %v, want ≥ %v", name, v, min)
		}
	}
	mfs, _ := n.Registry().Gather()
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"cairn_relay_deposit_seconds", "cairn_relay_push_seconds", "cairn_relay_sync_seconds", "cairn_relay_request_seconds"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s", want)
		}
	}
}
