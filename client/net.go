package client

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// netState is the client's network side: two libp2p hosts that only dial
// out, the DHT in client mode, an rpc caller per host, and what the client
// learned about relays (replica sets, health, info, open deposit streams).
//
// host (the key of Client.PeerID) is the owner's: the DHT, and everything
// done on the client's own mailbox (sync, subscribe, ack, prekey upload).
// sender (the key of Client.SenderPeerID) is the one the client writes to
// other mailboxes with: deposits, the info a deposit needs, one-time
// prekey fetches, status queries of sent messages. A relay then cannot
// link the mailbox a user owns to the mailboxes it writes to by peer ID
// (SPEC.md §17.1, §19). The sender host has no DHT: it dials relays at the
// addresses the main host's peerstore knows (senderRPC copies them).
type netState struct {
	cfg    *Config
	log    *slog.Logger
	host   host.Host
	dht    *dht.IpfsDHT
	rpc    *rpc.Client // on host: the own mailbox
	sender host.Host
	out    *rpc.Client // on sender: other mailboxes

	bootstrap []peer.AddrInfo

	// ctx ends when the network closes; wg tracks the bootstrap rounds.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	replicas map[wire.Mailbox]replicaEntry
	health   map[peer.ID]*relayHealth
	info     map[peer.ID]*rpc.Info
	streams  map[peer.ID]*rpc.DepositStream
	round    chan struct{} // closed when the running bootstrap round ends; nil: none runs
	rounds   uint64        // bootstrap rounds started
	closed   bool
}

type replicaEntry struct {
	peers   []peer.ID
	expires time.Time
}

type relayHealth struct {
	failures  int
	downUntil time.Time
}

// onlinePoll is how often waitOnline looks at the routing table.
const onlinePoll = 10 * time.Millisecond

// newNet starts the hosts, the main one with the libp2p key priv and the
// sender one with senderPriv (both fresh for every run, so relays cannot
// link this client's deposits across runs, nor its deposits to its own
// mailbox, SPEC.md §17.1, §19), and the DHT on the main host. It dials
// nothing: dialBootstrap does.
func newNet(cfg *Config, log *slog.Logger, bootstrap []ma.Multiaddr, priv, senderPriv crypto.PrivKey, bw metrics.Reporter) (*netState, error) {
	h, err := newHost(cfg, priv, bw)
	if err != nil {
		return nil, err
	}
	sh, err := newHost(cfg, senderPriv, bw)
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	infos, err := peer.AddrInfosFromP2pAddrs(bootstrap...)
	if err != nil {
		_ = h.Close()
		_ = sh.Close()
		return nil, fmt.Errorf("client: bootstrap: %w", err)
	}
	for _, ai := range infos {
		h.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
	}
	d, err := dht.New(h,
		dht.Mode(dht.ModeClient),
		dht.ProtocolPrefix(wire.DHTPrefix),
		dht.DisableProviders(),
		dht.DisableValues(),
		dht.BootstrapPeers(infos...),
	)
	if err != nil {
		_ = h.Close()
		_ = sh.Close()
		return nil, fmt.Errorf("client: dht: %w", err)
	}
	n := &netState{
		cfg:       cfg,
		log:       log,
		host:      h,
		dht:       d,
		rpc:       &rpc.Client{Host: h, Timeout: cfg.Timeout, Now: cfg.Now, Rand: cfg.Rand},
		sender:    sh,
		out:       &rpc.Client{Host: sh, Timeout: cfg.Timeout, Now: cfg.Now, Rand: cfg.Rand},
		bootstrap: infos,
		replicas:  map[wire.Mailbox]replicaEntry{},
		health:    map[peer.ID]*relayHealth{},
		info:      map[peer.ID]*rpc.Info{},
		streams:   map[peer.ID]*rpc.DepositStream{},
	}
	n.ctx, n.cancel = context.WithCancel(dialCtx(context.Background()))
	return n, nil
}

// newHost starts a libp2p host with the key priv that only dials out,
// behind cfg.ConnectionGater.
func newHost(cfg *Config, priv crypto.PrivKey, bw metrics.Reporter) (host.Host, error) {
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if bw != nil {
		opts = append(opts, libp2p.BandwidthReporter(bw))
	}
	if cfg.ConnectionGater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.ConnectionGater))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("client: libp2p host: %w", err)
	}
	return h, nil
}

// senderRPC returns the rpc caller of the sender host for a call to relay,
// after giving the sender host's peerstore the addresses the main host
// knows of it (bootstrap, invite hints, DHT, identify).
func (n *netState) senderRPC(relay peer.ID) *rpc.Client {
	if addrs := n.host.Peerstore().Addrs(relay); len(addrs) > 0 {
		n.sender.Peerstore().AddAddrs(relay, addrs, peerstore.AddressTTL)
	}
	return n.out
}

// newPeerKey returns a fresh libp2p key for one run of a client.
func newPeerKey(r io.Reader) (crypto.PrivKey, peer.ID, error) {
	priv, _, err := crypto.GenerateEd25519Key(r)
	if err != nil {
		return nil, "", fmt.Errorf("client: libp2p key: %w", err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return nil, "", fmt.Errorf("client: libp2p key: %w", err)
	}
	return priv, id, nil
}

// routable reports whether the DHT's routing table holds a relay: replica
// sets can then be looked up.
func (n *netState) routable() bool { return n.dht.RoutingTable().Size() > 0 }

// connected reports whether the host has a connection to any relay.
func (n *netState) connected() bool { return len(n.host.Network().Peers()) > 0 }

// dialBootstrap starts a round of dials to every bootstrap relay, unless
// one is running, and returns a channel closed when that round ends and
// the round's number (rounds are numbered from 1 in the order they start).
func (n *netState) dialBootstrap() (<-chan struct{}, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.round != nil {
		return n.round, n.rounds
	}
	ch := make(chan struct{})
	if n.closed {
		close(ch)
		return ch, n.rounds
	}
	n.rounds++
	n.round = ch
	n.wg.Go(func() {
		n.connectBootstrap(n.ctx)
		n.mu.Lock()
		n.round = nil
		n.mu.Unlock()
		close(ch)
	})
	return ch, n.rounds
}

// waitOnline waits until the routing table holds a relay and returns nil.
// It returns ErrNoRelay when no relay is connected after a round of
// bootstrap dials that started after the call ended (it starts one when no
// relay is connected; a round already running is waited for first, since
// it may have dialed before a relay came back), ErrClosed when the network
// closes, or ctx's error.
func (n *netState) waitOnline(ctx context.Context) error {
	poll := time.NewTicker(onlinePoll)
	defer poll.Stop()
	n.mu.Lock()
	before := n.rounds // rounds started before the call
	n.mu.Unlock()
	var round <-chan struct{}
	var num uint64
	dialed := false
	for {
		if n.routable() {
			return nil
		}
		if n.ctx.Err() != nil {
			return ErrClosed
		}
		if !n.connected() {
			if dialed {
				return ErrNoRelay
			}
			if round == nil {
				round, num = n.dialBootstrap()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.ctx.Done():
			return ErrClosed
		case <-round:
			round, dialed = nil, num > before
		case <-poll.C:
		}
	}
}

// connectBootstrap dials the bootstrap relays (best effort) so the DHT's
// routing table fills.
func (n *netState) connectBootstrap(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ai := range n.bootstrap {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
			defer cancel()
			if err := n.host.Connect(cctx, ai); err != nil {
				n.log.Debug("bootstrap relay unreachable", "peer", ai.ID.String(), "err", err)
			}
		})
	}
	wg.Wait()
}

// addHints records relay addresses (from an invite) in the peerstore and
// returns their peer IDs.
func (n *netState) addHints(hints [][]byte) []peer.ID {
	var ids []peer.ID
	for _, ai := range parseHints(hints) {
		n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		ids = append(ids, ai.ID)
	}
	return ids
}

// parseHints returns the relays of invite hints (binary multiaddrs with a
// /p2p/ component), skipping what does not parse.
func parseHints(hints [][]byte) []*peer.AddrInfo {
	var out []*peer.AddrInfo
	for _, h := range hints {
		a, err := ma.NewMultiaddrBytes(h)
		if err != nil {
			continue
		}
		ai, err := peer.AddrInfoFromP2pAddr(a)
		if err != nil {
			continue
		}
		out = append(out, ai)
	}
	return out
}

// replicaSet returns the R relays closest to the mailbox's DHT key, closest
// first (SPEC.md §14, §17.1): those the DHT finds, completed with the
// bootstrap relays and hints when the DHT knows fewer than R. Results are
// cached for ReplicaCacheTTL. fromDHT reports whether the set comes from a
// lookup that found relays (or the cache), rather than from the bootstrap
// relays and hints alone.
//
// While the routing table is empty it first waits until the client is
// online (waitOnline, at most Timeout), so that a client that just started
// does not take its bootstrap relays for the replica set.
func (n *netState) replicaSet(ctx context.Context, mb wire.Mailbox, hints []peer.ID) (peers []peer.ID, fromDHT bool) {
	n.mu.Lock()
	if e, ok := n.replicas[mb]; ok && time.Now().Before(e.expires) {
		n.mu.Unlock()
		return e.peers, true
	}
	n.mu.Unlock()
	if !n.routable() {
		wctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
		err := n.waitOnline(wctx)
		cancel()
		if err != nil {
			n.log.Debug("replica set before the client is online", "mailbox", mb.String(), "err", err)
		}
	}
	key := mb.DHTKey()
	var found []peer.ID
	if n.routable() {
		lctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
		ps, err := n.dht.GetClosestPeers(lctx, key)
		cancel()
		if err != nil {
			n.log.Debug("replica lookup", "mailbox", mb.String(), "err", err)
		}
		found = ps
	}
	r := n.cfg.ReplicationFactor
	cands := slices.Clone(found)
	if len(cands) < r {
		for _, ai := range n.bootstrap {
			cands = append(cands, ai.ID)
		}
		cands = append(cands, hints...)
	}
	slices.Sort(cands)
	cands = slices.Compact(cands)
	cands = slices.DeleteFunc(cands, func(p peer.ID) bool { return p == n.host.ID() || p == n.sender.ID() })
	sorted := kb.SortClosestPeers(cands, kb.ConvertKey(key))
	if len(sorted) > r {
		sorted = sorted[:r]
	}
	for _, p := range sorted {
		n.ensureAddrs(ctx, p)
	}
	if len(found) > 0 {
		n.mu.Lock()
		n.replicas[mb] = replicaEntry{peers: sorted, expires: time.Now().Add(n.cfg.ReplicaCacheTTL)}
		n.mu.Unlock()
	}
	return sorted, len(found) > 0
}

// ensureAddrs looks a relay's addresses up in the DHT when the peerstore
// has none (a peer named by NOT_REPLICA, or one whose addresses expired).
func (n *netState) ensureAddrs(ctx context.Context, p peer.ID) {
	if len(n.host.Peerstore().Addrs(p)) > 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	ai, err := n.dht.FindPeer(ctx, p)
	if err != nil {
		n.log.Debug("relay address lookup", "peer", p.String(), "err", err)
		return
	}
	n.host.Peerstore().AddAddrs(p, ai.Addrs, peerstore.AddressTTL)
}

// notReplica handles a NOT_REPLICA answer: the peers the relay named are
// tried first next time (closest first), then the rest of the set as it
// was, in case the named ones cannot be reached.
func (n *netState) notReplica(mb wire.Mailbox, named []peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.replicas[mb].peers
	if len(named) == 0 {
		delete(n.replicas, mb)
		return
	}
	r := n.cfg.ReplicationFactor
	ps := kb.SortClosestPeers(slices.Clone(named), kb.ConvertKey(mb.DHTKey()))
	if len(ps) > r {
		ps = ps[:r]
	}
	for _, p := range old {
		if !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	n.replicas[mb] = replicaEntry{peers: ps, expires: time.Now().Add(n.cfg.ReplicaCacheTTL)}
}

// order sorts relays for an attempt: those not known to be down first,
// each group in replica-set (distance) order.
func (n *netState) order(relays []peer.ID) []peer.ID {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	up := make([]peer.ID, 0, len(relays))
	var down []peer.ID
	for _, p := range relays {
		if h := n.health[p]; h != nil && now.Before(h.downUntil) {
			down = append(down, p)
		} else {
			up = append(up, p)
		}
	}
	return append(up, down...)
}

// markDown records a failure of relay: it is tried after the others for a
// backoff that grows with consecutive failures.
func (n *netState) markDown(relay peer.ID, retryAfter time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.health[relay]
	if h == nil {
		h = &relayHealth{}
		n.health[relay] = h
	}
	h.failures++
	d := backoff(n.cfg.RetryMin, n.cfg.RetryMax, h.failures)
	if retryAfter > d {
		d = retryAfter
	}
	h.downUntil = time.Now().Add(d)
}

func (n *netState) markUp(relay peer.ID) {
	n.mu.Lock()
	delete(n.health, relay)
	n.mu.Unlock()
}

// relayInfo returns the relay's info, asking it once (from the sender
// host: a deposit needs it).
func (n *netState) relayInfo(ctx context.Context, relay peer.ID) (*rpc.Info, error) {
	n.mu.Lock()
	if i := n.info[relay]; i != nil {
		n.mu.Unlock()
		return i, nil
	}
	n.mu.Unlock()
	i, err := n.senderRPC(relay).Info(ctx, relay)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.info[relay] = i
	n.mu.Unlock()
	return i, nil
}

// setDifficulty records a difficulty learned from POSTAGE_REQUIRED.
func (n *netState) setDifficulty(relay peer.ID, d int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if i := n.info[relay]; i != nil {
		c := *i
		c.PostageDifficulty = d
		n.info[relay] = &c
	}
}

// depositStream returns the open deposit stream to relay (of the sender
// host), opening one if needed.
func (n *netState) depositStream(ctx context.Context, relay peer.ID) (*rpc.DepositStream, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	if s := n.streams[relay]; s != nil {
		n.mu.Unlock()
		return s, nil
	}
	n.mu.Unlock()
	s, err := n.senderRPC(relay).OpenDeposit(ctx, relay)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		s.Reset()
		return nil, ErrClosed
	}
	if old := n.streams[relay]; old != nil {
		go s.Reset()
		return old, nil
	}
	n.streams[relay] = s
	return s, nil
}

// dropStream forgets a failed deposit stream and resets it.
func (n *netState) dropStream(relay peer.ID, s *rpc.DepositStream) {
	n.mu.Lock()
	if n.streams[relay] == s {
		delete(n.streams, relay)
	}
	n.mu.Unlock()
	s.Reset()
}

func (n *netState) close() {
	n.mu.Lock()
	n.closed = true
	n.cancel() // with closed: no round starts after this
	streams := n.streams
	n.streams = map[peer.ID]*rpc.DepositStream{}
	n.mu.Unlock()
	n.wg.Wait()
	for _, s := range streams {
		s.Reset()
	}
	_ = n.dht.Close()
	_ = n.host.Close()
	_ = n.sender.Close()
}

// dialCtx lets dials ignore libp2p's own dial backoff (5 s and growing
// after a failed dial): the client schedules its retries itself (relay
// health, outbox backoff), and a relay that restarts must be reachable at
// the next retry.
func dialCtx(ctx context.Context) context.Context {
	return network.WithForceDirectDial(ctx, "cairn client schedules its own retries")
}

// backoff is the delay before retry number attempt (1, 2, …): lo·2^(a−1),
// capped at hi.
func backoff(lo, hi time.Duration, attempt int) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// jitter draws a delay in [d/2, d] from r.
func jitter(r io.Reader, d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return d
	}
	half := uint64(d / 2)
	return d/2 + time.Duration(binary.BigEndian.Uint64(b[:])%(half+1))
}

// mailboxOfKey returns the address of a mailbox private key.
func mailboxOfKey(k ed25519.PrivateKey) wire.Mailbox {
	return wire.MailboxOf(k.Public().(ed25519.PublicKey))
}
