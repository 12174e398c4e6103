package chaos_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/testnet/chaos"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// The chaos soak, short: 5 relays and 4 clients as processes of a cairn
// binary built without -race (the test binary itself may run with it),
// 45 s of seeded faults, then heal, converge and the four checks. The
// seed is 1, or CAIRN_CHAOS_SEED. About 70 s on two cores. With
// CAIRN_CHAOS_DIR set, the run's data (every process's log at info level,
// the clients' events and stores, faults.log) is kept there for a
// post-mortem.
func TestChaosSoak(t *testing.T) {
	seed := uint64(1)
	if s := os.Getenv("CAIRN_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	// Info-level logs are small (a few KiB per process) and say why an
	// entry was rejected, kept pending or evicted: a failure prints them.
	dir, logLevel := t.TempDir(), "info"
	if d := os.Getenv("CAIRN_CHAOS_DIR"); d != "" {
		dir = d
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cairn-net/cairn/cmd/cairn").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cairn: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out := &logWriter{t: t}
	const duration = 45 * time.Second
	rep, err := chaos.Run(ctx, chaos.Options{
		Bin:      bin,
		Seed:     seed,
		Duration: duration,
		Converge: 2 * time.Minute,
		Dir:      filepath.Join(dir, "soak"),
		LogLevel: logLevel,
		Out:      out,
		Replay:   "CAIRN_CHAOS_SEED=" + strconv.FormatUint(seed, 10) + " go test -race -run TestChaosSoak -v ./testnet/chaos  (or: cairn testnet chaos --duration " + duration.String() + " --seed " + strconv.FormatUint(seed, 10) + ")",
	})
	out.flush()
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "soak", "client-*", "client.log"))
		relayLogs, _ := filepath.Glob(filepath.Join(dir, "soak", "relays", "*", "relay.log"))
		for _, name := range append(logs, relayLogs...) {
			if b, rerr := os.ReadFile(name); rerr == nil && len(b) > 0 {
				t.Logf("%s:\n%s", name, tail(b, 200))
			}
		}
		t.Fatalf("seed %d: %v", seed, err)
	}
	if rep.Tally.Sent < 100 || rep.Tally.Delivered < 100 {
		t.Errorf("only %d sent and %d delivered in %v: the soak did not exercise much", rep.Tally.Sent, rep.Tally.Delivered, duration)
	}
	total := 0
	for _, n := range rep.Faults {
		total += n
	}
	if total < 10 {
		t.Errorf("only %d faults applied: %v", total, rep.Faults)
	}
	if procs := survivors(dir); len(procs) > 0 {
		t.Errorf("processes left behind: %s", strings.Join(procs, "; "))
	}
}

// survivors lists the processes (Linux: /proc) whose command line names
// dir.
func survivors(dir string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}

// logWriter sends whole lines to t.Log.
type logWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.t.Log(string(w.buf))
		w.buf = nil
	}
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
