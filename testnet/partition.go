package testnet

import (
	"fmt"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// A Member is a relay or a client of a cluster: what partitions and link
// faults are about. *Relay and *Client are Members.
type Member interface {
	key() memberKey
	String() string
}

const (
	kindRelay  = 1
	kindClient = 2
)

// memberKey names a member; the zero value is "unknown" (a peer the
// cluster cannot attribute, which partitions never block).
type memberKey struct {
	kind  uint8
	index int
}

func (m memberKey) zero() bool { return m.kind == 0 }

func (m memberKey) String() string {
	switch m.kind {
	case kindRelay:
		return fmt.Sprintf("relay-%02d", m.index)
	case kindClient:
		return fmt.Sprintf("client-%02d", m.index)
	}
	return "unknown"
}

func pairOf(a, b memberKey) [2]memberKey {
	if b.kind < a.kind || (b.kind == a.kind && b.index < a.index) {
		a, b = b, a
	}
	return [2]memberKey{a, b}
}

// partition is the cluster's reachability: sides (members listed in no
// side share the side -1) and single cut pairs.
type partition struct {
	sides map[memberKey]int
	cuts  map[[2]memberKey]bool
}

func (p *partition) allowed(a, b memberKey) bool {
	if a.zero() || b.zero() || a == b {
		return true
	}
	if p.cuts[pairOf(a, b)] {
		return false
	}
	if len(p.sides) == 0 {
		return true
	}
	sa, ok := p.sides[a]
	if !ok {
		sa = -1
	}
	sb, ok := p.sides[b]
	if !ok {
		sb = -1
	}
	return sa == sb
}

// Partition splits the cluster: members of different sides can no longer
// reach each other, and members listed in no side form one more side
// together. It replaces any earlier partition (single cuts stay), and
// closes the connections across the cut at once: at the relays (every
// relay's connection gater, and every client's, refuses them from now on)
// and in the links. Clients are blocked exactly, with or without links:
// the cluster knows each client's peer IDs before it starts
// (client.Client.PeerID and SenderPeerID).
func (c *Cluster) Partition(sides ...[]Member) {
	c.mu.Lock()
	c.part.sides = map[memberKey]int{}
	for i, side := range sides {
		for _, m := range side {
			c.part.sides[m.key()] = i
		}
	}
	c.mu.Unlock()
	c.logf("partition", "sides", fmt.Sprint(sides))
	c.enforce()
}

// Cut blocks the pair a–b only (both directions), in addition to any
// partition, and closes their connections.
func (c *Cluster) Cut(a, b Member) {
	c.mu.Lock()
	c.part.cuts[pairOf(a.key(), b.key())] = true
	c.mu.Unlock()
	c.logf("cut", "a", a.String(), "b", b.String())
	c.enforce()
}

// Isolate partitions m from every other member.
func (c *Cluster) Isolate(m Member) { c.Partition([]Member{m}) }

// Heal removes every partition and cut, clears the relays' dial backoffs
// and reconnects the relays' mesh (best effort; wait for what the test
// needs, for example with WaitConnected or WaitRouting).
func (c *Cluster) Heal() {
	c.mu.Lock()
	c.part = partition{cuts: map[[2]memberKey]bool{}}
	c.mu.Unlock()
	c.logf("heal")
	c.clearBackoffs()
	c.connectMesh(c.ctx)
}

// Reachable reports whether the partition state lets a and b talk.
func (c *Cluster) Reachable(a, b Member) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.part.allowed(a.key(), b.key())
}

func (c *Cluster) allowed(a, b memberKey) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.part.allowed(a, b)
}

// memberOf attributes a peer ID: a relay of the cluster, an online client
// of it (registered by Online before it starts), or unknown.
func (c *Cluster) memberOf(p peer.ID) memberKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.relayIdx[p]; ok {
		return memberKey{kindRelay, r}
	}
	return c.clientPeers[p]
}

// enforce closes every connection the partition no longer allows: at
// each running relay, and in the links.
func (c *Cluster) enforce() {
	for _, r := range c.Relays {
		n := r.Node()
		if n == nil || n.Host() == nil {
			continue
		}
		self := r.key()
		for _, conn := range n.Host().Network().Conns() {
			if !c.allowed(self, c.memberOf(conn.RemotePeer())) {
				_ = conn.Close()
			}
		}
		if r.link != nil {
			r.link.cutIf(func(src memberKey) bool { return !c.allowed(src, self) })
		}
	}
	for _, cl := range c.Clients {
		for j, l := range cl.links {
			target := c.Relays[j].key()
			l.cutIf(func(memberKey) bool { return !c.allowed(cl.key(), target) })
		}
	}
}

// gater is the connection gater of one relay: it applies the partition,
// keeps relay-to-relay dials on the links, refuses inbound connections
// that did not come through a link (so that faults cannot be bypassed) or
// that came through another client's own link, and tells a link who is on
// the other side of each connection.
type gater struct {
	c    *Cluster
	self memberKey
}

func (g *gater) InterceptPeerDial(p peer.ID) bool {
	m := g.c.memberOf(p)
	if g.c.building.Load() && m.kind == kindRelay {
		if !g.c.meshSet[[2]int{min(g.self.index, m.index), max(g.self.index, m.index)}] {
			return false
		}
	}
	return g.c.allowed(g.self, m)
}

func (g *gater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	if g.c.links == nil {
		return true
	}
	g.c.mu.Lock()
	i, ok := g.c.relayIdx[p]
	g.c.mu.Unlock()
	if !ok {
		return true
	}
	// Another relay of the cluster: only through its shared link.
	return a.Equal(g.c.Relays[i].link.addr)
}

func (g *gater) InterceptAccept(cm network.ConnMultiaddrs) bool {
	if g.c.links == nil {
		return true
	}
	pc := g.c.links.lookup(cm.RemoteMultiaddr())
	return pc != nil && pc.p.target == g.self
}

func (g *gater) InterceptSecured(dir network.Direction, p peer.ID, cm network.ConnMultiaddrs) bool {
	src := g.c.memberOf(p)
	if dir == network.DirInbound && g.c.links != nil {
		if pc := g.c.links.lookup(cm.RemoteMultiaddr()); pc != nil {
			if via := pc.p.via; via.kind == kindClient && src != via {
				// Only the client a link belongs to may use it (an
				// invite's hints hand it to others): its faults and cuts
				// are that client's.
				return false
			}
			pc.setSource(src)
		}
	}
	return g.c.allowed(g.self, src)
}

func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}

// clientGater is the connection gater of one online client
// (client.Config.ConnectionGater): it applies the partition on the
// client's side, so a client cut off from a relay does not even dial it,
// with or without links. inner is the gater Options.ClientConfig set, if
// any: both must allow.
type clientGater struct {
	c     *Cluster
	self  memberKey
	inner connmgr.ConnectionGater
}

func (g *clientGater) allowed(p peer.ID) bool { return g.c.allowed(g.self, g.c.memberOf(p)) }

func (g *clientGater) InterceptPeerDial(p peer.ID) bool {
	return g.allowed(p) && (g.inner == nil || g.inner.InterceptPeerDial(p))
}

func (g *clientGater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	return g.allowed(p) && (g.inner == nil || g.inner.InterceptAddrDial(p, a))
}

func (g *clientGater) InterceptAccept(cm network.ConnMultiaddrs) bool {
	return g.inner == nil || g.inner.InterceptAccept(cm)
}

func (g *clientGater) InterceptSecured(dir network.Direction, p peer.ID, cm network.ConnMultiaddrs) bool {
	return g.allowed(p) && (g.inner == nil || g.inner.InterceptSecured(dir, p, cm))
}

func (g *clientGater) InterceptUpgraded(conn network.Conn) (bool, control.DisconnectReason) {
	if g.inner == nil {
		return true, 0
	}
	return g.inner.InterceptUpgraded(conn)
}
