package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// tcpForward accepts on 127.0.0.1 and pipes each connection to target: a
// port forward, as in front of a relay behind a NAT. It stops at cleanup.
func tcpForward(t *testing.T, target string) (addr ma.Multiaddr, conns func() int) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	open := map[net.Conn]bool{}
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			n++
			open[c], open[d] = true, true
			mu.Unlock()
			wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer wg.Done()
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(c, d)
			go pipe(d, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	a, err := manet.FromNetAddr(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return a, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestRelayAnnounceAddrs: a relay listening on one address and reached
// through a port forward on another announces only the forwarded one:
// identify gives it to the relays it connects to, and a relay that never
// heard of it finds it through the DHT and connects through the forward.
func TestRelayAnnounceAddrs(t *testing.T) {
	port := freePort(t)
	listen := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port))
	fwd, forwarded := tcpForward(t, fmt.Sprintf("127.0.0.1:%d", port))

	b := startNode(t, replConfig)
	a := startNode(t, func(c *Config) {
		replConfig(c)
		c.ListenAddrs = []ma.Multiaddr{listen}
		c.AnnounceAddrs = []ma.Multiaddr{fwd}
		c.BootstrapPeers = []peer.AddrInfo{b.AddrInfo()}
	})
	if got := a.AddrInfo().Addrs; len(got) != 1 || !got[0].Equal(fwd) {
		t.Fatalf("a advertises %v, want only %v", got, fwd)
	}
	if got := a.Host().Network().ListenAddresses(); len(got) != 1 || !got[0].Equal(listen) {
		t.Fatalf("a listens on %v, want %v", got, listen)
	}
	waitFor(t, "a in b's routing table", func() bool { return b.DHT().RoutingTable().Find(a.ID()) != "" })
	// Identify told b the announced address, never the listen address.
	waitFor(t, "b to learn a's announced address", func() bool {
		for _, m := range b.Host().Peerstore().Addrs(a.ID()) {
			if m.Equal(fwd) {
				return true
			}
		}
		return false
	})
	for _, m := range b.Host().Peerstore().Addrs(a.ID()) {
		if m.Equal(listen) {
			t.Fatalf("b learned a's listen address %v (peerstore %v)", listen, b.Host().Peerstore().Addrs(a.ID()))
		}
	}

	// c knows only b; the DHT hands it a's announced address, and it
	// reaches a through the forward.
	c := startNode(t, func(c *Config) {
		replConfig(c)
		c.BootstrapPeers = []peer.AddrInfo{b.AddrInfo()}
	})
	waitFor(t, "b in c's routing table", func() bool { return c.DHT().RoutingTable().Find(b.ID()) != "" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ai, err := c.DHT().FindPeer(ctx, a.ID())
	if err != nil {
		t.Fatalf("c finds a: %v", err)
	}
	found := false
	for _, m := range ai.Addrs {
		if m.Equal(listen) {
			t.Fatalf("the DHT gave c a's listen address: %v", ai.Addrs)
		}
		found = found || m.Equal(fwd)
	}
	if !found {
		t.Fatalf("the DHT gave c %v, not a's announced %v", ai.Addrs, fwd)
	}
	if err := c.Host().Connect(ctx, ai); err != nil {
		t.Fatalf("c connects to a: %v", err)
	}
	conns := c.Host().Network().ConnsToPeer(a.ID())
	if len(conns) == 0 || !conns[0].RemoteMultiaddr().Equal(fwd) {
		t.Fatalf("c's connections to a: %v", conns)
	}
	if forwarded() == 0 {
		t.Fatal("nothing went through the forward")
	}
}

// TestRelayDHTOptions: Config.DHTOptions come after the node's own DHT
// options, so they override them (here the mode; a testnet passes
// dht.DisableAutoRefresh).
func TestRelayDHTOptions(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.DHTOptions = []dht.Option{dht.DisableAutoRefresh(), dht.Mode(dht.ModeClient)}
	})
	if m := n.DHT().Mode(); m != dht.ModeClient {
		t.Fatalf("DHT mode %v, want the option's client mode over the relay's server mode", m)
	}
	plain := startNode(t, nil)
	if m := plain.DHT().Mode(); m != dht.ModeServer {
		t.Fatalf("a relay's DHT mode %v, want server", m)
	}
	if _, err := New(Config{DataDir: t.TempDir()}); err == nil {
		t.Fatal("a zero Config validated")
	}
	cfg := testConfig(t)
	cfg.AnnounceAddrs = []ma.Multiaddr{nil}
	if _, err := New(cfg); !errors.Is(err, errConfig) {
		t.Fatalf("an empty announce address: %v", err)
	}
}
