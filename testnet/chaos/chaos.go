package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-net/cairn/testnet"
)

// R is the replication factor the relays run with (relay.DefaultConfig):
// the scheduler never has more than R−1 relays down at once.
const R = 3

// ErrFailed is returned by Run when a check failed (the Report says
// which); other errors mean the run itself could not be carried out.
var ErrFailed = errors.New("chaos: check failed")

// Options configure a run. Zero values select the defaults.
type Options struct {
	// Bin is a cairn binary: 'cairn relay' and 'cairn testnet
	// chaos-client' (required).
	Bin string
	// Relays (default and minimum 5) and Clients (default and minimum 4).
	Relays, Clients int
	// Duration is how long faults are applied (default 1 minute).
	Duration time.Duration
	// Seed seeds the fault schedule and the clients' pace.
	Seed uint64
	// Pace is the mean time between two messages of a client (default
	// 300 ms).
	Pace time.Duration
	// Converge bounds the final convergence (default 3 minutes).
	Converge time.Duration
	// Dir keeps the relays' and clients' data, logs, event lines,
	// faults.log and report.json. Empty: a temporary directory, removed
	// at the end unless a check failed.
	Dir string
	// Out receives the fault lines, progress lines and the tally (nil:
	// discarded).
	Out io.Writer
	// Live: Out is a terminal (progress every 5 s instead of 15 s).
	Live bool
	// Replay is the command that replays this run, printed on failure
	// (default: "cairn testnet chaos --duration D --seed S").
	Replay string
	// Logger receives the driver's debug log (nil: discarded).
	Logger *slog.Logger
	// LogLevel is the --log-level of the relay and client processes
	// (relays/relay-N/relay.log, client-N/client.log): debug, info, warn
	// or error (default warn).
	LogLevel string
}

func (o *Options) defaults() error {
	if o.Bin == "" {
		return errors.New("chaos: Options.Bin (a cairn binary) is required")
	}
	o.Relays = max(o.Relays, 5)
	o.Clients = max(o.Clients, 4)
	if o.Duration <= 0 {
		o.Duration = time.Minute
	}
	if o.Pace <= 0 {
		o.Pace = 300 * time.Millisecond
	}
	if o.Converge <= 0 {
		o.Converge = 3 * time.Minute
	}
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Replay == "" {
		o.Replay = fmt.Sprintf("cairn testnet chaos --duration %v --seed %d", o.Duration, o.Seed)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Report is the outcome of a run.
type Report struct {
	Seed     uint64        `json:"seed"`
	Duration time.Duration `json:"duration_ns"`
	Relays   int           `json:"relays"`
	Clients  int           `json:"clients"`
	Replay   string        `json:"replay"`
	// Faults counts the faults applied, by kind.
	Faults map[string]int `json:"faults"`
	// Converged: every message was delivered with its receipt back
	// before Options.Converge passed; ConvergeTook is how long it took.
	Converged    bool          `json:"converged"`
	ConvergeTook time.Duration `json:"converge_took_ns"`
	Tally        Tally         `json:"tally"`
	Disk         Disk          `json:"disk"`
	// Failures lists every failed check, one line each.
	Failures []string      `json:"failures,omitempty"`
	Took     time.Duration `json:"took_ns"`
	Dir      string        `json:"dir,omitempty"`
}

// Tally counts messages over every conversation, from the clients'
// stores at the end.
type Tally struct {
	Sent      int `json:"sent"`      // outgoing messages in the senders' stores
	Stored    int `json:"stored"`    // of which with a relay receipt (stored or delivered)
	Receipts  int `json:"receipts"`  // of which delivered (the recipient's receipt came back)
	Queued    int `json:"queued"`    // of which still queued
	Delivered int `json:"delivered"` // incoming messages in the recipients' stores
	// Failures of checks 1–3.
	Lost       int `json:"lost"`         // receipt, not delivered
	Duplicates int `json:"duplicates"`   // delivered or shown twice
	OutOfOrder int `json:"out_of_order"` // stored out of the sender's order
	Phantoms   int `json:"phantoms"`     // delivered, never sent
	Vanished   int `json:"vanished"`     // no receipt, not queued, not delivered
	Gaps       int `json:"gaps"`         // gap events
	BadGaps    int `json:"bad_gaps"`     // gap events for a message that exists
	Late       int `json:"late"`         // messages delivered Late (after a gap)
	Shown      int `json:"shown"`        // MessageReceived events seen
}

// Disk compares the relays' store directories with their live data.
type Disk struct {
	// StoreBytes is the space allocated to the relays' store
	// directories (du), LiveBytes the sum of cairn_relay_stored_bytes,
	// LiveEntries of cairn_relay_stored_entries, Bound what StoreBytes
	// may be: LiveFactor × LiveBytes + relays × DiskSlack.
	StoreBytes  int64 `json:"store_bytes"`
	LiveBytes   int64 `json:"live_bytes"`
	LiveEntries int64 `json:"live_entries"`
	Bound       int64 `json:"bound"`
	// PerRelay is StoreBytes of each relay.
	PerRelay []int64 `json:"per_relay"`
}

// run is one soak.
type run struct {
	o     Options
	start time.Time
	dir   string
	temp  bool
	log   *slog.Logger

	denyPath string
	pc       *testnet.ProcCluster
	proxies  map[int]*proxy
	clients  []*clientProc

	mu      sync.Mutex // guards cuts, faults, outMu users
	cuts    map[[2]string]bool
	faults  map[string]int
	faultsf *os.File

	outMu sync.Mutex
}

// Run runs a soak and returns its report. The error is ErrFailed
// (wrapped, with the failures) when a check failed, another error when the
// run could not be carried out; either way the seed and the replay
// command are printed on Out.
func Run(ctx context.Context, o Options) (rep Report, err error) {
	if err := o.defaults(); err != nil {
		return Report{}, err
	}
	r := &run{o: o, start: time.Now(), log: o.Logger, proxies: map[int]*proxy{}, cuts: map[[2]string]bool{}, faults: map[string]int{}}
	rep = Report{Seed: o.Seed, Duration: o.Duration, Relays: o.Relays, Clients: o.Clients, Replay: o.Replay, Faults: r.faults}
	if r.dir = o.Dir; r.dir == "" {
		if r.dir, err = os.MkdirTemp("", "cairn-chaos-"); err != nil {
			return rep, err
		}
		r.temp = true
	} else if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return rep, err
	}
	rep.Dir = r.dir
	defer func() {
		r.teardown()
		rep.Took = time.Since(r.start)
		rep.Faults = r.faultCounts()
		if b, jerr := json.MarshalIndent(rep, "", "  "); jerr == nil {
			_ = os.WriteFile(filepath.Join(r.dir, "report.json"), append(b, '\n'), 0o600)
		}
		if err != nil {
			r.printf("\nFAILED (seed %d): %v\nreplay: %s\n", o.Seed, err, o.Replay)
			if r.temp {
				r.printf("data kept in %s\n", r.dir)
			}
		} else if r.temp {
			_ = os.RemoveAll(r.dir)
		}
	}()
	r.printf("chaos: seed %d, %d relays, %d clients, %v of faults; data in %s\n", o.Seed, o.Relays, o.Clients, o.Duration, r.dir)

	if err := r.setup(ctx); err != nil {
		return rep, err
	}
	if err := r.schedule(ctx); err != nil {
		return rep, err
	}
	if err := r.finish(ctx, &rep); err != nil {
		return rep, err
	}
	r.check(&rep)
	r.tally(&rep)
	if len(rep.Failures) > 0 {
		return rep, fmt.Errorf("%w: %s", ErrFailed, strings.Join(rep.Failures, "; "))
	}
	return rep, nil
}

// at is the time since the start, for log lines.
func (r *run) at() float64 { return time.Since(r.start).Seconds() }

func (r *run) printf(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.o.Out, format, args...)
}

// setup starts the relays behind their proxies, makes the homes and
// exchanges invites, and starts the clients.
func (r *run) setup(ctx context.Context) error {
	r.denyPath = filepath.Join(r.dir, "deny")
	if err := r.writeDeny(); err != nil {
		return err
	}
	var err error
	r.faultsf, err = os.Create(filepath.Join(r.dir, "faults.log"))
	if err != nil {
		return err
	}
	fmt.Fprintf(r.faultsf, "start %s seed %d\n", r.start.UTC().Format(time.RFC3339Nano), r.o.Seed)
	t0 := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var proxyErr error
	r.pc, err = testnet.StartProcs(sctx, testnet.ProcOptions{
		Binary:  r.o.Bin,
		Relays:  r.o.Relays,
		R:       R,
		Dir:     filepath.Join(r.dir, "relays"),
		Metrics: true,
		Args:    []string{"--testnet-deny-file", r.denyPath, "--log-level", r.o.LogLevel},
		Logger:  r.log,
		Announce: func(index, port int) int {
			r.mu.Lock()
			defer r.mu.Unlock()
			if p, ok := r.proxies[index]; ok {
				return p.port()
			}
			p, perr := newProxy(port, r.o.Seed+uint64(index))
			if perr != nil {
				proxyErr = perr
				return port
			}
			r.proxies[index] = p
			return p.port()
		},
	})
	if err != nil {
		return fmt.Errorf("relays: %w", errors.Join(err, proxyErr))
	}
	r.printf("[%5.1fs] %d relays up in %.1fs (each behind its link proxy)\n", r.at(), r.o.Relays, time.Since(t0).Seconds())

	t0 = time.Now()
	var relays []string
	for _, p := range r.pc.Relays {
		relays = append(relays, "--relay", p.Addr)
	}
	for i := range r.o.Clients {
		home := filepath.Join(r.dir, ClientName(i))
		if _, err := r.cairn(ctx, append([]string{"init", "--home", home, "--name", ClientName(i)}, relays...)...); err != nil {
			return err
		}
		r.clients = append(r.clients, &clientProc{r: r, i: i, name: ClientName(i), home: home, recv: map[string]map[uint64]int{}, order: map[string][]uint64{}})
	}
	for _, a := range r.clients {
		for _, b := range r.clients {
			if a == b {
				continue
			}
			inv, err := r.cairn(ctx, "invite", "--home", b.home)
			if err != nil {
				return err
			}
			if _, err := r.cairn(ctx, "contact", "add", "--home", a.home, b.name, strings.TrimSpace(inv)); err != nil {
				return err
			}
		}
	}
	for _, c := range r.clients {
		if err := c.start(); err != nil {
			return err
		}
	}
	r.printf("[%5.1fs] %d clients up in %.1fs, each with the %d others as contacts (cairn init, invite, contact add)\n", r.at(), r.o.Clients, time.Since(t0).Seconds(), r.o.Clients-1)
	return nil
}

// cairn runs the binary and returns its stdout.
func (r *run) cairn(ctx context.Context, args ...string) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, r.o.Bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("cairn %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// writeDeny writes the deny file from the cuts (atomically).
func (r *run) writeDeny() error {
	r.mu.Lock()
	var lines []string
	for c := range r.cuts {
		lines = append(lines, r.denyLines(c)...)
	}
	r.mu.Unlock()
	slices.Sort(lines)
	tmp := r.denyPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "")), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.denyPath)
}

// denyLines are the deny file's lines of a cut between two members
// ("relay-NN" or "client-N"): peer IDs for relays; for a client its name
// (its own gater knows it) and its peer IDs of this run (for the relay:
// both its hosts).
func (r *run) denyLines(c [2]string) []string {
	ids := func(m string) []string {
		if strings.HasPrefix(m, "relay-") {
			for _, p := range r.pc.Relays {
				if p.String() == m {
					return []string{p.ID.String()}
				}
			}
			return nil
		}
		for _, cl := range r.clients {
			if cl.name == m {
				return append([]string{m}, cl.peerIDs()...)
			}
		}
		return nil
	}
	var out []string
	for _, a := range ids(c[0]) {
		for _, b := range ids(c[1]) {
			out = append(out, a+" "+b+"\n")
		}
	}
	return out
}

// faultCounts copies the fault counters.
func (r *run) faultCounts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.faults))
	for k, v := range r.faults {
		out[k] = v
	}
	return out
}

// teardown kills every process still running and closes the proxies.
func (r *run) teardown() {
	var wg sync.WaitGroup
	for _, c := range r.clients {
		wg.Go(c.kill)
	}
	wg.Wait()
	if r.pc != nil {
		_ = r.pc.Close()
	}
	r.mu.Lock()
	for _, p := range r.proxies {
		p.close()
	}
	r.mu.Unlock()
	if r.faultsf != nil {
		r.faultsf.Close()
	}
	for _, c := range r.clients {
		c.closeFiles()
	}
}
