package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// relayProc is one `cairn relay` child process of a local cluster. Its data
// directory, peer ID and TCP address stay the same across kills and
// restarts; its metrics port is chosen anew by each start.
type relayProc struct {
	name    string
	dataDir string
	port    int
	c       *procCluster

	mu      sync.Mutex
	id      peer.ID
	addr    string // TCP multiaddr with /p2p/
	metrics string // http://host:port/metrics of the running process
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	stopped bool // ended by stop or kill (not on its own)
}

// procCluster is a local cluster of relay processes on 127.0.0.1, each in
// its own process group, killed with the cluster (and, on Linux, by the
// kernel if this process dies first).
type procCluster struct {
	bin    string
	dir    string
	temp   bool
	relays []*relayProc
	// onExit is called when a relay ends on its own (not by stop or kill).
	onExit func(p *relayProc, err error)
}

// startCluster starts n relays, one after the other, each bootstrapping
// from those before it. dir "" means a temporary directory removed by
// close.
func startCluster(ctx context.Context, bin, dir string, n int, progress func(p *relayProc)) (_ *procCluster, err error) {
	c := &procCluster{bin: bin, dir: dir}
	if c.dir == "" {
		if c.dir, err = os.MkdirTemp("", "cairn-testnet-"); err != nil {
			return nil, err
		}
		c.temp = true
	}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	for i := range n {
		p := &relayProc{name: fmt.Sprintf("relay-%02d", i), dataDir: filepath.Join(c.dir, fmt.Sprintf("relay-%02d", i)), c: c}
		if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
			return nil, err
		}
		if p.port, err = freePort(); err != nil {
			return nil, err
		}
		c.relays = append(c.relays, p)
		if err := p.start(ctx); err != nil {
			return nil, err
		}
		if progress != nil {
			progress(p)
		}
	}
	return c, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs the relay and waits for its ready line.
func (p *relayProc) start(ctx context.Context) error {
	args := []string{"relay", "--data-dir", p.dataDir,
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", p.port),
		"--metrics-addr", "127.0.0.1:0"}
	for _, o := range p.c.relays {
		if o != p && o.running() {
			args = append(args, "--bootstrap", o.address())
		}
	}
	cmd := exec.Command(p.c.bin, args...)
	setProcAttrs(cmd)
	logf, err := os.OpenFile(filepath.Join(p.dataDir, "relay.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.stopped, p.exitErr = cmd, done, false, nil
	p.mu.Unlock()
	type ready struct {
		id      peer.ID
		addr    string
		metrics string
		err     error
	}
	readyc := make(chan ready, 1)
	go func() {
		var r ready
		sc := bufio.NewScanner(out)
		gotReady := false
		for sc.Scan() {
			if gotReady {
				continue
			}
			f := strings.Fields(sc.Text())
			if len(f) < 1 {
				continue
			}
			switch {
			case f[0] == "peer" && len(f) > 1:
				r.id, r.err = peer.Decode(f[1])
			case f[0] == "addr" && len(f) > 1 && r.addr == "" && strings.Contains(f[1], "/tcp/"):
				r.addr = f[1]
			case f[0] == "metrics" && len(f) > 1:
				r.metrics = f[1]
			case f[0] == "ready":
				gotReady = true
				if r.id == "" && r.err == nil {
					r.err = errors.New(`"ready" before a "peer" line`)
				}
				readyc <- r
			}
		}
		if !gotReady {
			readyc <- ready{err: errors.New("exited before it was ready")}
		}
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.exitErr = err
		stopped := p.stopped
		p.mu.Unlock()
		close(done)
		if !stopped && gotReady && p.c.onExit != nil {
			p.c.onExit(p, err)
		}
	}()
	select {
	case r := <-readyc:
		if r.err != nil {
			p.kill()
			return fmt.Errorf("%s: %v%s", p.name, r.err, p.logTail())
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.id != "" && p.id != r.id {
			return fmt.Errorf("%s came back as %s, was %s", p.name, r.id, p.id)
		}
		p.id, p.metrics = r.id, r.metrics
		p.addr = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", p.port, r.id)
		return nil
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("%s not ready: %w", p.name, ctx.Err())
	}
}

func (p *relayProc) logTail() string {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "relay.log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return " (log: " + oneLine(lines[len(lines)-1]) + ")"
}

func (p *relayProc) running() bool {
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

func (p *relayProc) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func (p *relayProc) peerID() peer.ID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.id
}

func (p *relayProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *relayProc) metricsURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.metrics
}

func (p *relayProc) wait(timeout time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// kill SIGKILLs the relay's process group and waits for it: a crash.
func (p *relayProc) kill() {
	p.mu.Lock()
	cmd := p.cmd
	p.stopped = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	signalGroup(cmd, true)
	p.wait(time.Minute)
}

// stop sends SIGTERM (the relay drains) and waits, SIGKILL after timeout.
func (p *relayProc) stop(timeout time.Duration) error {
	if !p.running() {
		return nil
	}
	p.mu.Lock()
	cmd := p.cmd
	p.stopped = true
	p.mu.Unlock()
	signalGroup(cmd, false)
	if !p.wait(timeout) {
		p.kill()
		return fmt.Errorf("%s did not stop within %v: killed", p.name, timeout)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// restart starts a stopped or killed relay on its data directory and port.
func (p *relayProc) restart(ctx context.Context) error {
	var err error
	for range 3 {
		if err = p.start(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// close stops every relay (SIGTERM, then SIGKILL) and removes a temporary
// directory.
func (c *procCluster) close() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.relays))
	for i, p := range c.relays {
		wg.Go(func() { errs[i] = p.stop(15 * time.Second) })
	}
	wg.Wait()
	if c.temp {
		errs = append(errs, os.RemoveAll(c.dir))
	}
	return errors.Join(errs...)
}

// allAddrs returns every relay's address, running or not.
func (c *procCluster) allAddrs() []string {
	var out []string
	for _, p := range c.relays {
		out = append(out, p.address())
	}
	return out
}

// relayStats are a few of a relay's metrics.
type relayStats struct {
	Entries     float64 `json:"entries"`
	Bytes       float64 `json:"bytes"`
	Deposits    float64 `json:"deposits"`
	Subscribers float64 `json:"subscribers"`
	Pushes      float64 `json:"pushes"`
}

var statsClient = &http.Client{Timeout: 2 * time.Second}

// stats reads the relay's metrics endpoint.
func (p *relayProc) stats(ctx context.Context) (relayStats, error) {
	var s relayStats
	url := p.metricsURL()
	if url == "" || !p.running() {
		return s, errors.New("not running")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := statsClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	vals, err := parseMetrics(resp.Body)
	if err != nil {
		return s, err
	}
	s.Entries = vals["cairn_relay_stored_entries"]
	s.Bytes = vals["cairn_relay_stored_bytes"]
	s.Subscribers = vals["cairn_relay_subscribers"]
	s.Pushes = vals["cairn_relay_pushes_total"]
	s.Deposits = vals["cairn_relay_deposits_total"]
	return s, nil
}

// parseMetrics sums the samples of each metric of a Prometheus text
// exposition (labels ignored).
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		name := line[:i]
		if j := strings.IndexByte(name, '{'); j >= 0 {
			name = name[:j]
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[strings.TrimSpace(name)] += v
	}
	return out, sc.Err()
}
