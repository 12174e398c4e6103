package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/cairn-net/cairn/testnet"
)

// clientProc is one 'cairn testnet chaos-client' process and what its
// event lines told, across its restarts.
type clientProc struct {
	r    *run
	i    int
	name string
	home string

	mu      sync.Mutex
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	done    chan struct{}
	starts  int
	peer    string
	sender  string // SenderPeerID of this run
	state   *State
	stateAt time.Time
	// recv counts MessageReceived events by sender name and message
	// number, over every run.
	recv map[string]map[uint64]int
	// order lists the counters of MessageReceived events by sender, in
	// the order they were shown (Late ones excluded), over every run.
	order  map[string][]uint64
	gaps   []Line
	late   int
	errors int
	events *os.File
	logf   *os.File
}

// peerIDs returns the client's peer IDs of this run (PeerID and
// SenderPeerID), once it printed them.
func (c *clientProc) peerIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range []string{c.peer, c.sender} {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *clientProc) running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// start runs the client process.
func (c *clientProc) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	if c.events == nil {
		if c.events, err = os.OpenFile(filepath.Join(c.home, "events.jsonl"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
			return err
		}
		if c.logf, err = os.OpenFile(filepath.Join(c.home, "client.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
			return err
		}
	}
	seed := c.r.o.Seed*1000003 + uint64(c.i)*7919 + uint64(c.starts)
	c.starts++
	cmd := exec.Command(c.r.o.Bin, "testnet", "chaos-client",
		"--home", c.home, "--name", c.name, "--deny-file", c.r.denyPath,
		"--seed", strconv.FormatUint(seed, 10), "--pace", c.r.o.Pace.String(), "--log-level", c.r.o.LogLevel)
	testnet.SetProcGroup(cmd)
	cmd.Stderr = c.logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", c.name, err)
	}
	c.cmd, c.done, c.peer, c.sender = cmd, make(chan struct{}), "", ""
	done := c.done
	go func() {
		c.read(out)
		_ = cmd.Wait()
		close(done)
	}()
	return nil
}

// read consumes the process's event lines.
func (c *clientProc) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		b := sc.Bytes()
		var l Line
		if err := json.Unmarshal(b, &l); err != nil {
			continue
		}
		c.mu.Lock()
		_, _ = c.events.Write(append(append([]byte(nil), b...), '\n'))
		switch l.Ev {
		case "peer":
			c.peer, c.sender = l.Peer, l.SenderPeer
		case "state":
			c.state, c.stateAt = l.State, time.Now()
		case "recv":
			m := c.recv[l.Contact]
			if m == nil {
				m = map[uint64]int{}
				c.recv[l.Contact] = m
			}
			m[l.N]++
			if l.Late {
				c.late++
			} else {
				c.order[l.Contact] = append(c.order[l.Contact], l.Counter)
			}
		case "gap":
			c.gaps = append(c.gaps, l)
		case "error":
			c.errors++
		}
		c.mu.Unlock()
		if l.Ev == "peer" {
			// The relays must know the new peer ID of a cut client.
			_ = c.r.writeDeny()
		}
	}
}

// kill SIGKILLs the process (its group) and waits for it.
func (c *clientProc) kill() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	testnet.KillProcGroup(cmd, true)
	<-done
}

// stop sends SIGTERM (the client flushes) and waits at most timeout, then
// kills it. It reports whether it exited on its own.
func (c *clientProc) stop(timeout time.Duration) bool {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil || !c.running() {
		return true
	}
	testnet.KillProcGroup(cmd, false)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		c.kill()
		return false
	}
}

// quiet tells the client to stop sending.
func (c *clientProc) quiet() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stdin != nil {
		_, _ = io.WriteString(c.stdin, "quiet\n")
	}
}

func (c *clientProc) closeFiles() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events != nil {
		c.events.Close()
	}
	if c.logf != nil {
		c.logf.Close()
	}
}

// lastState returns the last state line and when it came.
func (c *clientProc) lastState() (*State, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state, c.stateAt
}
