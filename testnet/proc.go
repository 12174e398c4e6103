package testnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// ProcOptions configure a cluster of relay processes.
type ProcOptions struct {
	// Binary is a cairn binary whose "relay" command runs a relay (flags
	// --data-dir, --listen, --bootstrap; it prints "peer <id>", "addr
	// <multiaddr>" lines and "ready" on stdout). Empty: the running binary
	// is re-executed as a relay child (RelayChildEnv set), which a test
	// binary supports by calling RelayChildMain from TestMain.
	Binary string
	// Args are extra arguments for every relay (for example --config F).
	Args []string
	// Relays is the number of relays (default 3).
	Relays int
	// R is the replication factor ReplicaSet uses (default 3, capped at
	// Relays). Relays take theirs from their own configuration.
	R int
	// Dir is the base directory (relay-NN/ in it, kept). Empty: a
	// temporary directory removed at Close.
	Dir string
	// Stderr receives the relays' logs. Nil: each relay appends to
	// relay.log in its data directory.
	Stderr io.Writer
	// Logger receives the cluster's own log lines. Nil discards them.
	Logger *slog.Logger
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL
	// (default 15 s).
	StopTimeout time.Duration
	// Metrics makes every relay serve Prometheus metrics on a port of
	// 127.0.0.1 chosen at each start (--metrics-addr 127.0.0.1:0; its
	// "metrics" line gives Proc.MetricsURL).
	Metrics bool
	// OnExit, if set, is called (from the goroutine that reaped it) when a
	// relay process ends on its own, not by Stop, Kill or Close.
	OnExit func(p *Proc, err error)
	// Announce, if set, is called before each start of relay index (whose
	// own port is port) and returns another port of 127.0.0.1 that
	// reaches it, typically a proxy in front of it: the relay advertises
	// that address (--announce), and it is the relay's Addr (other relays'
	// and clients' bootstrap). The probe still dials the relay's own port.
	Announce func(index, port int) int
}

// ProcCluster is a cluster of relay processes on 127.0.0.1: each relay in
// its own process group, SIGKILLed by Close (and, on Linux, by the kernel
// if this process dies first), so that no child outlives the cluster.
type ProcCluster struct {
	Relays []*Proc

	opts    ProcOptions
	dir     string
	tempDir bool
	log     *slog.Logger
	probe   *probe

	mu     sync.Mutex
	closed bool
}

// Proc is one relay process. Its peer ID, data directory and address
// stay the same across Kill, Stop and Restart (the port is chosen once;
// Restart fails if another process took it meanwhile).
type Proc struct {
	// Index is the relay's position in ProcCluster.Relays.
	Index int
	// ID is the relay's peer ID, read from its "peer" line.
	ID peer.ID
	// DataDir is the relay's data directory.
	DataDir string
	// Addr is the relay's TCP address with its /p2p/ part.
	Addr string

	pc   *ProcCluster
	port int

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the running process was reaped
	err     error         // its exit status
	ending  bool          // Stop, Kill or Close is ending it
	metrics string        // http://host:port/metrics of the running process
}

// MetricsURL returns the running relay's metrics URL (ProcOptions.Metrics),
// or "".
func (p *Proc) MetricsURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.metrics
}

// NewProcs starts a process cluster for a test and stops it in t.Cleanup.
func NewProcs(t testing.TB, o ProcOptions) *ProcCluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	pc, err := StartProcs(ctx, o)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	t.Cleanup(func() {
		if err := pc.Close(); err != nil {
			t.Errorf("testnet close: %v", err)
		}
	})
	return pc
}

// StartProcs starts the relay processes one after the other, each
// bootstrapping from those before it, and returns once DHT lookups from a
// probe find the true replica sets (WaitRouting). On failure every child
// is killed.
func StartProcs(ctx context.Context, o ProcOptions) (_ *ProcCluster, err error) {
	if o.Relays == 0 {
		o.Relays = 3
	}
	if o.R == 0 {
		o.R = 3
	}
	o.R = min(o.R, o.Relays)
	if o.StopTimeout == 0 {
		o.StopTimeout = 15 * time.Second
	}
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
	}
	pc := &ProcCluster{opts: o, dir: o.Dir, log: o.Logger}
	if pc.log == nil {
		pc.log = slog.New(slog.DiscardHandler)
	}
	if pc.dir == "" {
		if pc.dir, err = os.MkdirTemp("", "cairn-testnet-"); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		pc.tempDir = true
	}
	defer func() {
		if err != nil {
			_ = pc.Close()
		}
	}()
	for i := range o.Relays {
		p := &Proc{Index: i, DataDir: filepath.Join(pc.dir, fmt.Sprintf("relay-%02d", i)), pc: pc}
		if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		if p.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		pc.Relays = append(pc.Relays, p)
		if err := p.start(ctx); err != nil {
			return nil, err
		}
	}
	if pc.probe, err = newProbe(pc); err != nil {
		return nil, err
	}
	if err := pc.WaitRouting(ctx); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	return pc, nil
}

// freePort asks the OS for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (p *Proc) String() string { return fmt.Sprintf("relay-%02d", p.Index) }

// Running reports whether the process is alive.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Pid returns the running process's ID, or 0.
func (p *Proc) Pid() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

// AddrInfo returns the relay's peer ID and address.
func (p *Proc) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: p.ID, Addrs: []ma.Multiaddr{tcpAddr(p.port)}}
}

// start runs the relay process and waits for its "ready" line.
func (p *Proc) start(ctx context.Context) error {
	pc := p.pc
	args := []string{"relay", "--data-dir", p.DataDir, "--listen", tcpAddr(p.port).String()}
	addrPort := p.port
	if pc.opts.Announce != nil {
		addrPort = pc.opts.Announce(p.Index, p.port)
		args = append(args, "--announce", tcpAddr(addrPort).String())
	}
	for _, o := range pc.Relays {
		if o != p && o.Addr != "" && o.Running() {
			args = append(args, "--bootstrap", o.Addr)
		}
	}
	if pc.opts.Metrics {
		args = append(args, "--metrics-addr", "127.0.0.1:0")
	}
	args = append(args, pc.opts.Args...)
	cmd := exec.Command(pc.opts.Binary, args...)
	cmd.Env = append(os.Environ(), RelayChildEnv+"=1")
	setProcAttrs(cmd)
	var logf *os.File
	if pc.opts.Stderr != nil {
		cmd.Stderr = pc.opts.Stderr
	} else {
		f, err := os.OpenFile(filepath.Join(p.DataDir, "relay.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("testnet: %s: %w", p, err)
		}
		logf, cmd.Stderr = f, f
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("testnet: %s: %w", p, err)
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("testnet: start %s: %w", p, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.ending, p.metrics = cmd, done, false, ""
	p.mu.Unlock()

	ready := make(chan readyLine, 1)
	go func() {
		ready <- readReady(out)
		_, _ = io.Copy(io.Discard, out) // keep reading until the child exits
		err := cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		p.mu.Lock()
		p.err = err
		ending := p.ending
		p.mu.Unlock()
		close(done)
		if !ending && pc.opts.OnExit != nil {
			pc.opts.OnExit(p, err)
		}
	}()
	select {
	case r := <-ready:
		if r.err != nil {
			p.kill()
			return fmt.Errorf("testnet: %s: %w%s", p, r.err, p.logTail())
		}
		if p.ID != "" && r.id != p.ID {
			p.kill()
			return fmt.Errorf("testnet: %s came back as %s, was %s", p, r.id, p.ID)
		}
		if p.ID == "" { // first start (StartProcs); a restart keeps both
			p.ID = r.id
			p.Addr = tcpAddr(addrPort).String() + "/p2p/" + r.id.String()
		}
		p.mu.Lock()
		p.metrics = r.metrics
		p.mu.Unlock()
		pc.log.Info("testnet: relay process ready", "relay", p.String(), "pid", cmd.Process.Pid, "peer", r.id.String())
		return nil
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("testnet: %s not ready: %w%s", p, ctx.Err(), p.logTail())
	}
}

// logTail returns the end of the relay's log file, for error messages.
func (p *Proc) logTail() string {
	if p.pc.opts.Stderr != nil {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(p.DataDir, "relay.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\nrelay log (end):\n" + string(b)
}

type readyLine struct {
	id      peer.ID
	metrics string
	err     error
}

// readReady reads the relay's stdout up to its "ready" line: "peer <id>"
// gives the peer ID ("addr" lines are checked against it).
func readReady(r io.Reader) readyLine {
	sc := bufio.NewScanner(r)
	var id peer.ID
	var metrics string
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "peer":
			if len(f) > 1 {
				p, err := peer.Decode(f[1])
				if err != nil {
					return readyLine{err: fmt.Errorf("bad peer line %q: %w", sc.Text(), err)}
				}
				id = p
			}
		case "metrics":
			if len(f) > 1 {
				metrics = f[1]
			}
		case "ready":
			if id == "" {
				return readyLine{err: errors.New(`"ready" before any "peer" line`)}
			}
			return readyLine{id: id, metrics: metrics}
		}
	}
	if err := sc.Err(); err != nil {
		return readyLine{err: err}
	}
	return readyLine{err: errors.New("relay exited before it was ready")}
}

// wait waits at most timeout for the process to be reaped; false if it
// is still running.
func (p *Proc) wait(timeout time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// kill SIGKILLs the process group and waits for the process.
func (p *Proc) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.ending = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	killGroup(cmd, true)
	p.wait(time.Minute)
}

// Kill SIGKILLs the relay (its whole process group) and waits until it is
// gone: a real crash, with whatever the process had not written lost.
func (p *Proc) Kill() error {
	if !p.Running() {
		return ErrDown
	}
	p.pc.log.Info("testnet: SIGKILL", "relay", p.String())
	p.kill()
	return nil
}

// Stop sends SIGTERM (a graceful drain) and waits for the exit, SIGKILL
// after ProcOptions.StopTimeout. It returns the exit status of a relay
// that did not exit cleanly.
func (p *Proc) Stop() error {
	if !p.Running() {
		return ErrDown
	}
	p.pc.log.Info("testnet: SIGTERM", "relay", p.String())
	p.mu.Lock()
	cmd := p.cmd
	p.ending = true
	p.mu.Unlock()
	killGroup(cmd, false)
	if !p.wait(p.pc.opts.StopTimeout) {
		p.kill()
		return fmt.Errorf("testnet: %s did not stop within %v: killed", p, p.pc.opts.StopTimeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Restart starts a stopped or killed relay again on its data directory
// and port, and waits for its "ready" line (ctx bounds it). It checks that
// the peer ID is the same.
func (p *Proc) Restart(ctx context.Context) error {
	if p.Running() {
		return ErrRunning
	}
	p.pc.mu.Lock()
	closed := p.pc.closed
	p.pc.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = p.start(ctx); err == nil {
			if p.pc.probe != nil {
				p.pc.probe.connect(ctx, p)
			}
			return nil
		}
		// The port may be in TIME_WAIT trouble or taken; try again shortly.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// Close SIGKILLs every relay process still running (use Stop first for a
// graceful end), waits for all of them, closes the probe and removes a
// temporary base directory.
func (pc *ProcCluster) Close() error {
	pc.mu.Lock()
	if pc.closed {
		pc.mu.Unlock()
		return nil
	}
	pc.closed = true
	pc.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pc.Relays {
		wg.Go(p.kill)
	}
	wg.Wait()
	var errs []error
	if pc.probe != nil {
		errs = append(errs, pc.probe.close())
	}
	if pc.tempDir {
		errs = append(errs, os.RemoveAll(pc.dir))
	}
	return errors.Join(errs...)
}

// Dir returns the base directory.
func (pc *ProcCluster) Dir() string { return pc.dir }

// Bootstrap returns the running relays' addresses, the form
// client.Config.Bootstrap takes.
func (pc *ProcCluster) Bootstrap() []string {
	var out []string
	for _, p := range pc.Relays {
		if p.Running() {
			out = append(out, p.Addr)
		}
	}
	return out
}

// RelayByID returns the relay with peer ID id, or nil.
func (pc *ProcCluster) RelayByID(id peer.ID) *Proc {
	for _, p := range pc.Relays {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// ReplicaSet returns the mailbox's true replica set among all relays,
// closest first (see Cluster.ReplicaSet).
func (pc *ProcCluster) ReplicaSet(mb wire.Mailbox) []*Proc {
	ids := make([]peer.ID, len(pc.Relays))
	for i, p := range pc.Relays {
		ids[i] = p.ID
	}
	out := make([]*Proc, 0, pc.opts.R)
	for _, id := range kb.SortClosestPeers(ids, kb.ConvertKey(mb.DHTKey()))[:pc.opts.R] {
		out = append(out, pc.RelayByID(id))
	}
	return out
}

// RPC returns an rpc.Client on the cluster's probe host (connected to
// every relay), for tests that call relays directly: deposits, syncs,
// status.
func (pc *ProcCluster) RPC() *rpc.Client { return pc.probe.rpc }

// WaitRouting waits until the relays' DHT answers lookups correctly: from
// a probe in client mode, GetClosestPeers of a few keys returns, first,
// the true R closest running relays.
func (pc *ProcCluster) WaitRouting(ctx context.Context) error {
	pc.probe.connectAll(ctx)
	keys := make([]string, 4)
	for i := range keys {
		keys[i] = fmt.Sprintf("cairn/testnet/probe/%d", i)
	}
	return WaitFor(ctx, func() error {
		var running []peer.ID
		for _, p := range pc.Relays {
			if p.Running() {
				running = append(running, p.ID)
			}
		}
		r := min(pc.opts.R, len(running))
		for _, k := range keys {
			want := kb.SortClosestPeers(slices.Clone(running), kb.ConvertKey(k))[:r]
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			got, err := pc.probe.dht.GetClosestPeers(lctx, k)
			cancel()
			if err != nil {
				pc.probe.connectAll(ctx)
				return fmt.Errorf("lookup: %w", err)
			}
			got = kb.SortClosestPeers(got, kb.ConvertKey(k))
			if len(got) < r || !slices.Equal(got[:r], want) {
				return fmt.Errorf("lookup of %q found %d peers, closest %v; want %v", k, len(got), got[:min(r, len(got))], want)
			}
		}
		return nil
	}, "DHT lookups to find the true replica sets")
}

// probe is the parent's own libp2p host and DHT client, used to check the
// cluster and to call relays.
type probe struct {
	pc   *ProcCluster
	host host.Host
	dht  *dht.IpfsDHT
	rpc  *rpc.Client
}

func newProbe(pc *ProcCluster) (*probe, error) {
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
		return nil, fmt.Errorf("testnet: probe host: %w", err)
	}
	d, err := dht.New(h,
		dht.Mode(dht.ModeClient),
		dht.ProtocolPrefix(wire.DHTPrefix),
		dht.DisableProviders(),
		dht.DisableValues(),
		dht.DisableAutoRefresh(),
	)
	if err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("testnet: probe dht: %w", err)
	}
	return &probe{pc: pc, host: h, dht: d, rpc: rpc.New(h)}, nil
}

func (pr *probe) connect(ctx context.Context, p *Proc) {
	pr.host.Peerstore().AddAddrs(p.ID, []ma.Multiaddr{tcpAddr(p.port)}, peerstore.PermanentAddrTTL)
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = pr.host.Connect(network.WithForceDirectDial(cctx, "testnet probe"), p.AddrInfo())
}

func (pr *probe) connectAll(ctx context.Context) {
	for _, p := range pr.pc.Relays {
		if p.Running() && len(pr.host.Network().ConnsToPeer(p.ID)) == 0 {
			pr.connect(ctx, p)
		}
	}
}

func (pr *probe) close() error {
	return errors.Join(pr.dht.Close(), pr.host.Close())
}
