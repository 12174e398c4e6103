package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
)

// The multi-process test runs each relay as a child process: the test
// binary re-executed with CAIRN_RELAY_CHILD set (the `cairn relay` command
// is another package's), so that a relay can be killed with SIGKILL in the
// middle of its work and restarted on its data directory.

const childEnv = "CAIRN_RELAY_CHILD"

// childRelay is one relay process.
type childRelay struct {
	t    *testing.T
	dir  string
	port int
	id   peer.ID
	boot []string
	// run is the test the child runs (default TestReplicationKillRestart).
	run string

	mu     sync.Mutex
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	exited chan struct{}
	metric chan string // METRIC lines of the current run

	logMu  sync.Mutex
	stderr bytes.Buffer // every run's
}

func (c *childRelay) log() string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	return c.stderr.String()
}

func (c *childRelay) addr() string {
	return fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", c.port, c.id)
}

func (c *childRelay) addrInfo() peer.AddrInfo {
	ai, err := peer.AddrInfoFromP2pAddr(ma.StringCast(c.addr()))
	if err != nil {
		c.t.Fatal(err)
	}
	return *ai
}

// start runs the relay and waits until it serves.
func (c *childRelay) start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	run := c.run
	if run == "" {
		run = "TestReplicationKillRestart"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CAIRN_RELAY_DIR="+c.dir,
		fmt.Sprintf("CAIRN_RELAY_PORT=%d", c.port), "CAIRN_RELAY_BOOT="+strings.Join(c.boot, ","))
	// The kernel kills the child if this process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = &lockedWriter{w: &c.stderr, mu: &c.logMu}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd, c.stdin, c.exited, c.metric = cmd, stdin, make(chan struct{}), make(chan string, 1)
	exited, metric := c.exited, c.metric
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "READY "):
				ready <- strings.TrimPrefix(line, "READY ")
			case strings.HasPrefix(line, "METRIC "):
				select {
				case metric <- strings.TrimPrefix(line, "METRIC "):
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case id := <-ready:
		if id != c.id.String() {
			c.t.Fatalf("child is %s, want %s", id, c.id)
		}
	case <-exited:
		c.t.Fatalf("relay child exited before serving: %s", c.log())
	case <-time.After(60 * time.Second):
		c.t.Fatal("relay child did not start")
	}
}

// storedEntries asks the running child for its cairn_relay_stored_entries
// metric, as a scrape would read it.
func (c *childRelay) storedEntries() int {
	c.t.Helper()
	c.mu.Lock()
	stdin, metric, exited := c.stdin, c.metric, c.exited
	c.mu.Unlock()
	if _, err := io.WriteString(stdin, "metric\n"); err != nil {
		c.t.Fatalf("asking for the metric: %v", err)
	}
	select {
	case v := <-metric:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			c.t.Fatalf("metric %q: %v", v, err)
		}
		return int(n)
	case <-exited:
		c.t.Fatalf("relay child exited: %s", c.log())
	case <-time.After(10 * time.Second):
		c.t.Fatal("relay child did not report its metric")
	}
	return 0
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *childRelay) kill() {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// runRelayChild is the child's side: a relay on the given port and data
// directory, until stdin closes (or SIGKILL). For each line "metric" on
// stdin it prints "METRIC <cairn_relay_stored_entries>".
func runRelayChild(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = os.Getenv("CAIRN_RELAY_DIR")
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/" + os.Getenv("CAIRN_RELAY_PORT"))}
	cfg.GCInterval = -1
	cfg.DrainTimeout = 2 * time.Second
	cfg.AntiEntropyInterval = 500 * time.Millisecond
	cfg.CatchUpWait = 10 * time.Second
	if os.Getenv("CAIRN_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, a := range strings.Split(os.Getenv("CAIRN_RELAY_BOOT"), ",") {
		if a == "" {
			continue
		}
		ai, err := peer.AddrInfoFromP2pAddr(ma.StringCast(a))
		if err != nil {
			t.Fatal(err)
		}
		cfg.BootstrapPeers = append(cfg.BootstrapPeers, *ai)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("READY %s\n", n.ID())
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if sc.Text() == "metric" {
			fmt.Printf("METRIC %v\n", counterValue(t, n, "cairn_relay_stored_entries"))
		}
	}
	if err := n.Close(); err != nil {
		t.Error(err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestReplicationKillRestart: three relays in three processes replicate one
// mailbox. During a stream of 1,000 deposits (spread over the live
// replicas, each retried elsewhere until it has a receipt), two of the
// three are killed with SIGKILL — one of them while a batch of deposits to
// it is in flight — and later restarted on their data directories. Every
// receipted entry ends up on all three, and the recipient syncs all 1,000
// exactly once.
func TestReplicationKillRestart(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		runRelayChild(t)
		return
	}
	relays := make([]*childRelay, 3)
	for i := range relays {
		dir := t.TempDir()
		key, err := LoadOrCreateIdentity(dir)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := peer.IDFromPrivateKey(key)
		relays[i] = &childRelay{t: t, dir: dir, port: freePort(t), id: id}
	}
	for i, r := range relays {
		for j, o := range relays {
			if i != j {
				r.boot = append(r.boot, o.addr())
			}
		}
	}
	t.Cleanup(func() {
		for _, r := range relays {
			r.kill()
		}
	})
	for _, r := range relays {
		r.start()
	}
	defer func() {
		if t.Failed() || os.Getenv("CAIRN_TEST_LOG") != "" {
			for i, r := range relays {
				t.Logf("relay %d stderr:\n%s", i, r.log())
			}
		}
	}()

	key, mb := mailboxKey(t)
	h := clientHost(t)
	for _, r := range relays {
		h.Peerstore().AddAddrs(r.id, r.addrInfo().Addrs, time.Hour)
	}
	c := rpc.New(h)
	c.Timeout = 10 * time.Second
	live := []bool{true, true, true}
	streams := make([]*rpc.DepositStream, 3)
	receipts := make(map[wire.CID]*wire.SignedReceipt)
	envs := make([][]byte, 1000)
	for i := range envs {
		envs[i] = envelope(t, mb, 256, 0, uint64(i))
	}
	const batch = 20
	next := 0
	// events: at a deposit count, kill or restart a relay; kills happen
	// with the batch to that relay in flight.
	type event struct {
		at      int
		relay   int
		restart bool
	}
	events := []event{{300, 1, false}, {440, 2, false}, {700, 1, true}, {840, 2, true}}
	round, retries := 0, 0
	for next < len(envs) {
		if retries > 5000 {
			t.Fatal("deposits keep failing")
		}
		var ev *event
		if len(events) > 0 && next >= events[0].at {
			ev = &events[0]
			events = events[1:]
			t.Logf("deposit %d: relay %d %s", next, ev.relay, map[bool]string{true: "restarts", false: "killed"}[ev.restart])
			if ev.restart {
				relays[ev.relay].start()
				live[ev.relay] = true
				ev = nil
			}
		}
		target := round % 3
		round++
		if ev != nil {
			target = ev.relay
		}
		if !live[target] {
			continue
		}
		if streams[target] == nil {
			ds, err := c.OpenDeposit(context.Background(), relays[target].id)
			if err != nil {
				t.Fatalf("open deposit to relay %d: %v", target, err)
			}
			streams[target] = ds
		}
		ds := streams[target]
		var calls []*rpc.DepositCall
		var sent []int
		for k := next; k < min(next+batch, len(envs)); k++ {
			if receipts[wire.CIDOf(envs[k])] != nil {
				continue
			}
			call, err := ds.Send(context.Background(), envs[k])
			if err != nil {
				break
			}
			calls = append(calls, call)
			sent = append(sent, k)
		}
		if ev != nil {
			relays[ev.relay].kill()
			live[ev.relay] = false
		}
		failed := false
		for j, call := range calls {
			res, err := call.Wait(context.Background())
			if err != nil {
				// Retried on the next relay.
				if !errors.Is(err, rpc.ErrClosed) && retries < 10 {
					t.Logf("deposit %d at relay %d: %v", sent[j], target, err)
				}
				retries++
				failed = true
				continue
			}
			if res.Receipt == nil {
				t.Fatalf("deposit %d: no receipt (duplicate of a gone entry)", sent[j])
			}
			receipts[wire.CIDOf(envs[sent[j]])] = res.Receipt
		}
		if failed || !live[target] {
			streams[target].Reset()
			streams[target] = nil
		}
		// Advance past the prefix that has receipts; the rest is retried
		// on the next relay.
		for next < len(envs) && receipts[wire.CIDOf(envs[next])] != nil {
			next++
		}
	}
	for _, ds := range streams {
		if ds != nil {
			ds.Close()
		}
	}
	if len(receipts) != len(envs) {
		t.Fatalf("%d receipts for %d deposits", len(receipts), len(envs))
	}
	origins := map[peer.ID]int{}
	for _, r := range receipts {
		origins[r.Origin]++
	}
	t.Logf("receipts by origin: %v; %d deposits retried on another relay", origins, retries)

	// Every receipted entry reaches all three replicas.
	syncCIDs := func(r *childRelay) (map[wire.CID]int, int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := c.Sync(ctx, r.id, key, rpc.SyncRequest{})
		if err != nil {
			return nil, 0, err
		}
		defer st.Close()
		got := make(map[wire.CID]int)
		total := 0
		for {
			p, err := st.Next()
			if errors.Is(err, io.EOF) {
				return got, total, nil
			}
			if err != nil {
				return nil, 0, err
			}
			for _, e := range p.Entries {
				got[e.CID()]++
				total++
			}
		}
	}
	deadline := time.Now().Add(90 * time.Second)
	for i, r := range relays {
		for {
			got, _, err := syncCIDs(r)
			missing := len(receipts)
			if err == nil {
				missing = 0
				for cid := range receipts {
					if got[cid] == 0 {
						missing++
					}
				}
			}
			if missing == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("relay %d misses %d receipted entries (%v)", i, missing, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The recipient syncs everything exactly once (from a relay that was
	// killed and restarted).
	got, total, err := syncCIDs(relays[1])
	if err != nil {
		t.Fatal(err)
	}
	if total != len(envs) || len(got) != len(envs) {
		t.Fatalf("sync returned %d entries, %d distinct; want %d", total, len(got), len(envs))
	}
	for _, env := range envs {
		if got[wire.CIDOf(env)] != 1 {
			t.Fatalf("entry received %d times", got[wire.CIDOf(env)])
		}
	}
}
