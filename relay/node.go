package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// ServiceName is the resource manager service of the relay's protocols.
const ServiceName = "cairn.relay"

// Errors of the node's life cycle.
var (
	// ErrNotRunning is returned by Health (and Start after Close) when the
	// node is not serving.
	ErrNotRunning = errors.New("relay: not running")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("relay: already started")
)

// node states.
const (
	stateNew = iota
	stateRunning
	stateClosing
	stateClosed
)

// Node is a cairn relay: a libp2p host (TCP and QUIC, Noise, yamux) with the
// Kademlia DHT in server mode, the mailbox log, and the protocol handlers of
// SPEC.md §10. Create it with New, then Start; Close drains and stops it.
type Node struct {
	cfg       Config
	log       *slog.Logger
	key       crypto.PrivKey
	id        peer.ID
	placement Placement
	adm       *admission
	replay    *replayCache
	hub       *hub
	m         *metrics

	host    host.Host
	dht     *dht.IpfsDHT
	store   *store.Log
	prekeys prekeyStore

	// Replication (SPEC.md §10.9, §10.10, §14).
	placer   *placer
	repl     *replicator
	ae       *antiEntropy
	rpc      *rpc.Client
	verifier *wire.ReceiptVerifier
	// ackVerifier checks the owner acks of replicated tombstones.
	ackVerifier *wire.OwnerAckVerifier
	// summaries limits the summary exchanges each peer starts here.
	summaries summaryLimiter
	// reconcileNoImport makes reconciliation count what it receives
	// without storing it (the protocol benchmark keeps its difference).
	reconcileNoImport bool

	// drainCtx ends when Close begins; workCtx when the drain is over
	// (in-flight work is then abandoned).
	drainCtx    context.Context
	drainCancel context.CancelFunc
	workCtx     context.Context
	workCancel  context.CancelFunc
	bg          sync.WaitGroup

	// depositQueue counts deposits admitted on every stream and not yet
	// handed to the store (admitDeposit).
	depositQueue atomic.Int64
	// beforeAppend, if set, runs in a deposit stream's processor before
	// it hands a batch to the store (tests: a slow store).
	beforeAppend func()

	mu      sync.Mutex
	state   int
	streams map[network.Stream]struct{}
	active  sync.WaitGroup
	closed  chan struct{}
}

// New checks cfg and prepares a node; it opens nothing (Start does). Zero
// fields of cfg are not replaced by defaults: start from DefaultConfig.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	key := cfg.Identity
	if key == nil {
		var err error
		if key, err = LoadOrCreateIdentity(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("relay: %w", err)
		}
	}
	if key.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("%w: Identity must be an Ed25519 key (SPEC.md §1)", errConfig)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("relay: identity: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = Version
	}
	n := &Node{
		cfg:       cfg,
		log:       logger.With("relay", id.ShortString()),
		key:       key,
		id:        id,
		placement: cfg.Placement,
		adm:       newAdmission(&cfg),
		replay:    newReplayCache(cfg.MaxReplayCache),
		summaries: newSummaryLimiter(cfg.SummaryRate),
		streams:   make(map[network.Stream]struct{}),
		closed:    make(chan struct{}),
	}
	n.drainCtx, n.drainCancel = context.WithCancel(context.Background())
	n.workCtx, n.workCancel = context.WithCancel(context.Background())
	n.m = newMetrics(n.storeStats, func() float64 { return float64(n.replay.len()) }, func() float64 { return float64(n.adm.size()) })
	n.hub = newHub(n)
	n.repl = newReplicator(n)
	n.ae = newAntiEntropy(n)
	n.verifier = wire.NewReceiptVerifier(rpc.DefaultVerifierRoots)
	n.ackVerifier = wire.NewOwnerAckVerifier(rpc.DefaultVerifierRoots)
	return n, nil
}

func (n *Node) now() time.Time {
	if n.cfg.Now != nil {
		return n.cfg.Now()
	}
	return time.Now()
}

func (n *Node) storeStats() store.Stats {
	n.mu.Lock()
	s := n.store
	n.mu.Unlock()
	if s == nil {
		return store.Stats{}
	}
	return s.Stats()
}

// ID returns the relay's peer ID.
func (n *Node) ID() peer.ID { return n.id }

// Host returns the libp2p host (nil before Start).
func (n *Node) Host() host.Host { return n.host }

// DHT returns the Kademlia DHT (nil before Start).
func (n *Node) DHT() *dht.IpfsDHT { return n.dht }

// Store returns the mailbox log (nil before Start).
func (n *Node) Store() *store.Log { return n.store }

// Registry returns the node's Prometheus registry (serve it with
// promhttp.HandlerFor).
func (n *Node) Registry() *prometheus.Registry { return n.m.reg }

// Config returns the node's configuration.
func (n *Node) Config() Config { return n.cfg }

// AddrInfo returns the relay's peer ID and the addresses it advertises:
// Config.AnnounceAddrs if set, else its listen addresses.
func (n *Node) AddrInfo() peer.AddrInfo {
	if n.host == nil {
		return peer.AddrInfo{ID: n.id}
	}
	return peer.AddrInfo{ID: n.id, Addrs: n.host.Addrs()}
}

// Start opens the store, starts the host and the DHT, and begins serving.
// ctx bounds the start only.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	if n.state != stateNew {
		n.mu.Unlock()
		if n.state == stateRunning {
			return ErrStarted
		}
		return ErrNotRunning
	}
	n.mu.Unlock()

	st, err := store.OpenLog(store.LogOptions{
		Dir:                 filepath.Join(n.cfg.DataDir, "store"),
		Now:                 n.cfg.Now,
		Logger:              n.log.With("component", "store"),
		Origin:              n.id,
		Signer:              n.key,
		DefaultTTL:          n.cfg.DefaultTTL,
		MaxTTL:              n.cfg.MaxTTL,
		MailboxQuotaBytes:   n.cfg.MailboxQuotaBytes,
		MailboxQuotaEntries: n.cfg.MailboxQuotaEntries,
		StorageCapBytes:     n.cfg.StorageCapBytes,
		FateRetention:       n.cfg.FateRetention,
		GCInterval:          n.cfg.GCInterval,
		MaxCommitBatch:      n.cfg.MaxCommitBatch,
		MemoryBudget:        n.cfg.StoreMemoryBytes,
		OnStored:            n.onStored,
	})
	if err != nil {
		return fmt.Errorf("relay: open store: %w", err)
	}
	defer func() {
		if err != nil {
			if n.dht != nil {
				_ = n.dht.Close()
			}
			if n.host != nil {
				_ = n.host.Close()
			}
			_ = st.Close()
			n.mu.Lock()
			n.dht, n.host, n.store = nil, nil, nil
			n.mu.Unlock()
		}
	}()
	n.mu.Lock()
	n.store = st
	n.mu.Unlock()
	n.prekeys = st

	rm := n.cfg.ResourceManager
	if rm == nil {
		if rm, err = newResourceManager(&n.cfg); err != nil {
			return fmt.Errorf("relay: resource manager: %w", err)
		}
	}
	cm, err := connmgr.NewConnManager(n.cfg.MaxConnections/2, n.cfg.MaxConnections*9/10, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return fmt.Errorf("relay: connection manager: %w", err)
	}
	// The host listens only once the DHT's routing table reports churn to
	// the placer (no peer can connect before), so that the callbacks are
	// set before any other goroutine reads them.
	hostOpts := []libp2p.Option{
		libp2p.Identity(n.key),
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent(n.cfg.Version),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if n.cfg.ConnectionGater != nil {
		hostOpts = append(hostOpts, libp2p.ConnectionGater(n.cfg.ConnectionGater))
	}
	if announce := slices.Clone(n.cfg.AnnounceAddrs); len(announce) > 0 {
		hostOpts = append(hostOpts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr {
			return slices.Clone(announce)
		}))
	}
	h, err := libp2p.New(hostOpts...)
	if err != nil {
		_ = rm.Close()
		_ = cm.Close()
		return fmt.Errorf("relay: host: %w", err)
	}
	n.host = h
	d, err := dht.New(h, append([]dht.Option{
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(wire.DHTPrefix),
		dht.DisableProviders(),
		dht.DisableValues(),
		dht.BootstrapPeers(n.cfg.BootstrapPeers...),
	}, n.cfg.DHTOptions...)...)
	if err != nil {
		return fmt.Errorf("relay: dht: %w", err)
	}
	n.dht = d
	n.placer = newPlacer(n, d)
	n.placer.onView = func(lookedUp bool) {
		n.m.lookups.WithLabelValues(map[bool]string{true: "dht", false: "estimate"}[lookedUp]).Inc()
	}
	if n.placement == nil {
		n.placement = n.placer
	}
	rt := d.RoutingTable()
	added, removed := rt.PeerAdded, rt.PeerRemoved
	rt.PeerAdded = func(p peer.ID) { added(p); n.onRoutingTable(p, true) }
	rt.PeerRemoved = func(p peer.ID) { removed(p); n.onRoutingTable(p, false) }
	sub, err := h.EventBus().Subscribe([]any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerConnectednessChanged)})
	if err != nil {
		return fmt.Errorf("relay: events: %w", err)
	}
	n.rpc = &rpc.Client{Host: h, Timeout: relayCallTimeout, Verifier: n.verifier}
	n.ae.start()

	n.mu.Lock()
	n.state = stateRunning
	n.mu.Unlock()
	n.registerHandlers()
	if err := h.Network().Listen(n.cfg.ListenAddrs...); err != nil {
		_ = sub.Close()
		n.mu.Lock()
		n.state = stateNew
		n.mu.Unlock()
		return fmt.Errorf("relay: listen: %w", err)
	}

	n.bg.Add(4)
	go n.bootstrap()
	go n.housekeeping()
	go n.watchPeers(sub)
	go n.ae.run()
	n.log.Info("relay started", "peer", n.id.String(), "addrs", fmt.Sprint(h.Addrs()))
	return nil
}

// bootstrap connects to the configured peers and lets the DHT fill its
// routing table. Failures are logged: the node serves clients regardless.
func (n *Node) bootstrap() {
	defer n.bg.Done()
	var wg sync.WaitGroup
	for _, ai := range n.cfg.BootstrapPeers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(n.drainCtx, 30*time.Second)
			defer cancel()
			if err := n.host.Connect(ctx, ai); err != nil {
				n.log.Warn("bootstrap peer unreachable", "peer", ai.ID.String(), "err", err)
			}
		}()
	}
	wg.Wait()
	if err := n.dht.Bootstrap(n.drainCtx); err != nil && n.drainCtx.Err() == nil {
		n.log.Warn("dht bootstrap", "err", err)
	}
}

// housekeeping forgets idle admission state.
func (n *Node) housekeeping() {
	defer n.bg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.drainCtx.Done():
			return
		case <-t.C:
			n.adm.sweep(n.now())
			n.placer.prune()
			n.repl.quorum.sweep(4 * n.cfg.QuorumTimeout)
		}
	}
}

// newResourceManager derives the libp2p resource manager's limits from the
// relay's config: the system connection and memory limits, and the
// per-peer stream limit of the relay's service (the node counts its own
// streams too, to answer BUSY; the manager's limit is the hard backstop).
func newResourceManager(c *Config) (network.ResourceManager, error) {
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	perPeer := c.MaxStreamsPerPeer + 8
	scaling.AddServiceLimit(ServiceName,
		rcmgr.BaseLimit{StreamsInbound: c.MaxConnections * 4, StreamsOutbound: 1024, Streams: c.MaxConnections*4 + 1024, Memory: c.MaxMemoryBytes / 2},
		rcmgr.BaseLimitIncrease{})
	scaling.AddServicePeerLimit(ServiceName,
		rcmgr.BaseLimit{StreamsInbound: perPeer, StreamsOutbound: 64, Streams: perPeer + 64, Memory: int64(c.DepositStreamBytes) * int64(perPeer)},
		rcmgr.BaseLimitIncrease{})
	for _, pid := range relayProtocols {
		scaling.AddProtocolLimit(pid,
			rcmgr.BaseLimit{StreamsInbound: c.MaxConnections * 4, StreamsOutbound: 1024, Streams: c.MaxConnections*4 + 1024, Memory: c.MaxMemoryBytes / 2},
			rcmgr.BaseLimitIncrease{})
		scaling.AddProtocolPeerLimit(pid,
			rcmgr.BaseLimit{StreamsInbound: perPeer, StreamsOutbound: 64, Streams: perPeer + 64, Memory: int64(c.DepositStreamBytes) * int64(perPeer)},
			rcmgr.BaseLimitIncrease{})
	}
	concrete := scaling.Scale(c.MaxMemoryBytes, 4*c.MaxConnections)
	streams := rcmgr.LimitVal(c.MaxConnections * 8)
	partial := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:           rcmgr.LimitVal(c.MaxConnections),
			ConnsInbound:    rcmgr.LimitVal(c.MaxConnections),
			ConnsOutbound:   rcmgr.LimitVal(c.MaxConnections),
			Streams:         streams,
			StreamsInbound:  streams,
			StreamsOutbound: streams,
			Memory:          rcmgr.LimitVal64(c.MaxMemoryBytes),
			FD:              rcmgr.LimitVal(c.MaxConnections + 256),
		},
		Transient: rcmgr.ResourceLimits{
			Conns:          rcmgr.LimitVal(max(64, c.MaxConnections/8)),
			ConnsInbound:   rcmgr.LimitVal(max(64, c.MaxConnections/8)),
			ConnsOutbound:  rcmgr.LimitVal(max(64, c.MaxConnections/8)),
			Streams:        rcmgr.LimitVal(max(256, c.MaxConnections/2)),
			StreamsInbound: rcmgr.LimitVal(max(256, c.MaxConnections/2)),
		},
		PeerDefault: rcmgr.ResourceLimits{
			StreamsInbound: rcmgr.LimitVal(perPeer + 64), // cairn streams + DHT, identify, ping
			Streams:        rcmgr.LimitVal(perPeer + 256),
		},
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(partial.Build(concrete)), rcmgr.WithMetricsDisabled())
}

// track registers an inbound stream for draining; false once Close began.
func (n *Node) track(s network.Stream) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != stateRunning {
		return false
	}
	n.streams[s] = struct{}{}
	n.active.Add(1)
	return true
}

func (n *Node) untrack(s network.Stream) {
	n.mu.Lock()
	delete(n.streams, s)
	n.mu.Unlock()
	n.active.Done()
}

// draining reports whether Close has begun.
func (n *Node) draining() bool { return n.drainCtx.Err() != nil }

// Close stops accepting requests (new streams are answered SHUTTING_DOWN),
// lets in-flight requests finish (deposits read so far are answered, syncs
// end at a page boundary, subscribers get SHUTTING_DOWN) for at most
// DrainTimeout, resets what remains, then closes the DHT, the host and the
// store (which flushes). It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	switch n.state {
	case stateNew:
		n.state = stateClosed
		n.mu.Unlock()
		n.drainCancel()
		n.workCancel()
		close(n.closed)
		return nil
	case stateClosing, stateClosed:
		n.mu.Unlock()
		<-n.closed
		return nil
	}
	n.state = stateClosing
	n.mu.Unlock()
	start := time.Now()
	n.log.Info("relay closing: draining")
	n.drainCancel()

	done := make(chan struct{})
	go func() { n.active.Wait(); close(done) }()
	timer := time.NewTimer(n.cfg.DrainTimeout)
	select {
	case <-done:
		timer.Stop()
	case <-timer.C:
		n.mu.Lock()
		left := len(n.streams)
		for s := range n.streams {
			_ = s.Reset()
		}
		n.mu.Unlock()
		n.log.Warn("relay drain timed out: streams reset", "streams", left)
		n.workCancel()
		<-done
	}
	n.workCancel()
	n.bg.Wait()
	n.repl.close()
	n.placer.close()

	var errs []error
	for _, pid := range relayProtocols {
		n.host.RemoveStreamHandler(pid)
	}
	if err := n.dht.Close(); err != nil {
		errs = append(errs, fmt.Errorf("dht: %w", err))
	}
	if err := n.host.Close(); err != nil {
		errs = append(errs, fmt.Errorf("host: %w", err))
	}
	if err := n.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	n.mu.Lock()
	n.state = stateClosed
	n.mu.Unlock()
	close(n.closed)
	n.log.Info("relay closed", "took", time.Since(start).Round(time.Millisecond))
	if len(errs) > 0 {
		return fmt.Errorf("relay: close: %w", errors.Join(errs...))
	}
	return nil
}

// Health reports whether the node is serving: running, listening, and its
// store answering. It returns nil when healthy, and an error saying what is
// wrong otherwise.
func (n *Node) Health(ctx context.Context) error {
	n.mu.Lock()
	state, st := n.state, n.store
	n.mu.Unlock()
	if state != stateRunning {
		return ErrNotRunning
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	if len(n.host.Addrs()) == 0 {
		errs = append(errs, errors.New("no listen addresses"))
	}
	// A read of an absent mailbox touches the database without writing.
	var probe wire.Mailbox
	probe[0], probe[1] = 0x12, 0x20
	if _, err := st.Read(probe, nil, nil, 1, 1); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	if len(n.cfg.BootstrapPeers) > 0 && n.dht.RoutingTable().Size() == 0 {
		errs = append(errs, errors.New("dht routing table empty"))
	}
	if left := n.ae.catchingUp(); left > 0 {
		errs = append(errs, fmt.Errorf("%w (%d mailboxes)", ErrCatchingUp, left))
	}
	if len(errs) > 0 {
		return fmt.Errorf("relay unhealthy: %w", errors.Join(errs...))
	}
	return nil
}

// relayProtocols are the protocols a relay serves in this version.
var relayProtocols = []protocol.ID{
	wire.ProtocolInfo,
	wire.ProtocolDeposit,
	wire.ProtocolSync,
	wire.ProtocolSubscribe,
	wire.ProtocolAck,
	wire.ProtocolStatus,
	wire.ProtocolPrekeys,
	wire.ProtocolReplicate,
	wire.ProtocolReconcile,
}

// relayCallTimeout bounds each relay-to-relay call and each wait for an
// answer on a replicate or reconcile stream.
const relayCallTimeout = 20 * time.Second

// ListenAddrs is a convenience for configs: it parses multiaddr strings.
func ListenAddrs(addrs ...string) ([]ma.Multiaddr, error) {
	out := make([]ma.Multiaddr, 0, len(addrs))
	for _, a := range addrs {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("listen address %q: %w", a, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// closeStream ends a served stream after its last write: a write close-half
// then a full close. A peer that never reads does not hold it open.
func closeStream(s network.Stream) {
	_ = s.CloseWrite()
	_ = s.Close()
}

var _ io.Closer = (*Node)(nil)
