package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/testnet/chaos"
)

// ---- cairn testnet chaos

func (a *app) testnetChaosCmd() *cobra.Command {
	var o chaos.Options
	var seed uint64
	cmd := &cobra.Command{
		Use:   "chaos",
		Short: "Soak a local cluster under seeded faults and check that nothing is lost",
		Long: `The chaos soak (issue 9): --relays relays ('cairn relay' processes) and
--clients clients (processes of this binary) on 127.0.0.1; every client has
every other as a contact and sends to them at a random pace, while a scheduler
seeded with --seed, for --duration:

  - SIGKILLs relays and restarts them, never more than R-1 = 2 down at once
    (so no mailbox's replica set is ever all down);
  - cuts one or two relays from the others, and clients from relays, then heals;
  - delays and breaks the connections of a relay's link (a proxy in front of it);
  - SIGKILLs clients (mid-send, mid-sync) and restarts them.

Every fault is printed with its time. Then everything is healed and restarted,
clients stop sending and sync until every message is delivered with its receipt
back (at most --converge), they stop, and their stores are checked:

  1. every message with a relay receipt was delivered exactly once, in order;
  2. every message without one is still queued or was delivered;
  3. no gap was reported for a message that exists;
  4. the relays' store directories are bounded by their live data (plus a
     fixed slack for badger's preallocated files).

It prints a progress line every few seconds and a final tally. A failure prints
the seed and the command that replays the same schedule of faults, and exits
with code 5 (a check failed) or 1 (the run itself failed). The same seed gives
the same faults at the same times; the interleavings of real processes differ.`,
		Example: `  cairn testnet chaos --duration 1m --seed 1
  cairn testnet chaos --duration 5m --seed 42 --dir ./soak   # keep the data and logs`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Relays < 5 || o.Clients < 4 {
				return usageErrorf("testnet chaos: want at least 5 relays and 4 clients")
			}
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			o.Bin, o.Seed, o.Out = bin, seed, a.stdout
			o.Live = isTerminal(a.stdout)
			o.Replay = fmt.Sprintf("cairn testnet chaos --duration %v --seed %d --relays %d --clients %d", o.Duration, seed, o.Relays, o.Clients)
			rep, err := chaos.Run(cmd.Context(), o)
			switch {
			case err != nil && cmd.Context().Err() != nil:
				return errInterrupted
			case errors.Is(err, chaos.ErrFailed):
				return withCode(exitLost, err)
			case err != nil:
				return fmt.Errorf("testnet chaos: %w (seed %d; replay: %s)", err, rep.Seed, o.Replay)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&o.Duration, "duration", time.Minute, "how long faults are applied (then heal, converge, check)")
	fl.Uint64Var(&seed, "seed", 1, "seed of the fault schedule and of the clients' pace")
	fl.IntVar(&o.Relays, "relays", 5, "number of relays (at least 5)")
	fl.IntVar(&o.Clients, "clients", 4, "number of clients (at least 4)")
	fl.DurationVar(&o.Pace, "pace", 300*time.Millisecond, "mean time between two messages of one client")
	fl.DurationVar(&o.Converge, "converge", 3*time.Minute, "how long clients may take to deliver everything at the end")
	fl.StringVar(&o.LogLevel, "proc-log-level", "warn", "--log-level of the relay and client processes (their relay.log and client.log): debug, info, warn or error")
	fl.StringVar(&o.Dir, "dir", "", "directory for the relays' and clients' data, logs and event lines (kept); default: a temporary one, removed at the end unless a check fails")
	return cmd
}

// ---- cairn testnet chaos-client

type chaosClientFlags struct {
	home     string
	name     string
	denyFile string
	seed     uint64
	pace     time.Duration
}

func (a *app) testnetChaosClientCmd() *cobra.Command {
	var f chaosClientFlags
	cmd := &cobra.Command{
		Use:    "chaos-client",
		Hidden: true,
		Short:  "One client of 'cairn testnet chaos' (internal)",
		Long: `One client of 'cairn testnet chaos': it opens --home (made with 'cairn init'
and 'contact add'), goes online with the relays of its config, and sends
"chaos <from> <to> <n>" to a random contact at random intervals (exponential,
mean --pace, drawn from --seed), n counting from 1 per contact across restarts.
It refuses the relays --deny-file cuts it from (testnet.DenyFile; its names:
--name and its peer ID of this run).

It prints its events on stdout as JSON lines (testnet/chaos.Line): its peer ID,
sent messages, status changes, received messages, gaps, and every second a
state line from its store. A line "quiet" on stdin stops the sending; it then
syncs every 2 s. SIGTERM: Flush (at most 30 s), close, an "exit" line, exit 0.`,
		Example: `  # What 'cairn testnet chaos' runs for each client (homes made by it):
  cairn testnet chaos-client --home D/client-0 --name client-0 --deny-file D/deny --seed 7`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runChaosClient(cmd.Context(), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.home, "home", "", "home directory (required)")
	fl.StringVar(&f.name, "name", "", "this client's name (client-N; required)")
	fl.StringVar(&f.denyFile, "deny-file", "", "the network's deny file (testnet.DenyFile)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the sending pace and of the contacts chosen")
	fl.DurationVar(&f.pace, "pace", 300*time.Millisecond, "mean time between two messages")
	return cmd
}

// chaosOut prints Lines, one JSON object each, from any goroutine.
type chaosOut struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *chaosOut) put(l chaos.Line) {
	l.Time = time.Now().UTC().Format(time.RFC3339Nano)
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(l)
}

func (a *app) runChaosClient(ctx context.Context, f *chaosClientFlags) error {
	if f.home == "" || f.name == "" {
		return usageErrorf("testnet chaos-client: --home and --name are required")
	}
	log, err := a.logger(slog.LevelWarn)
	if err != nil {
		return err
	}
	h, err := openHome(f.home)
	if err != nil {
		return err
	}
	if err := h.lock(); err != nil {
		return err
	}
	deny := testnet.NewDenyFile(f.denyFile, f.name)
	c, err := client.New(client.Config{
		DataDir:         filepath.Join(h.dir, homeDBDir),
		EncryptionKey:   h.key,
		Bootstrap:       h.cfg.Relays,
		Name:            h.cfg.Name,
		Logger:          log,
		ConnectionGater: deny,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	out := &chaosOut{enc: json.NewEncoder(a.stdout)}
	deny.AddName(c.PeerID().String())
	deny.AddName(c.SenderPeerID().String())
	out.put(chaos.Line{Ev: "peer", Peer: c.PeerID().String(), SenderPeer: c.SenderPeerID().String()})
	if f.denyFile != "" {
		go deny.Watch(ctx, nil)
	}

	names := map[client.ContactID]string{}
	for n, id := range h.names {
		names[id] = n
	}
	// next[n] is the number of the next message to contact n.
	next := map[string]uint64{}
	var contacts []client.ContactID
	for _, ct := range c.Contacts() {
		name, ok := names[ct.ID]
		if !ok {
			continue
		}
		contacts = append(contacts, ct.ID)
		hist, err := c.History(ct.ID)
		if err != nil {
			return err
		}
		next[name] = 1
		for _, m := range hist {
			if _, _, n, ok := chaos.ParseBody(m.Body); ok && m.Direction == client.Outgoing && n >= next[name] {
				next[name] = n + 1
			}
		}
	}
	if len(contacts) == 0 {
		return inputErrorf("testnet chaos-client: %s has no contacts", f.home)
	}

	events := c.Events() // before Start: nothing is missed
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { chaosEvents(c, events, names, out) })

	quiet := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(a.stdin)
		for sc.Scan() {
			if sc.Text() == "quiet" {
				close(quiet)
				return
			}
		}
	}()

	rng := rand.New(rand.NewPCG(f.seed, 0x5eed))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	send := time.NewTimer(chaosPace(rng, f.pace))
	defer send.Stop()
	sending := true
	lastSync := time.Time{}
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-quiet:
			quiet = nil
			sending = false
			out.put(chaos.Line{Ev: "quiet"})
		case <-tick.C:
			if !sending && time.Since(lastSync) >= 2*time.Second {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_ = c.Sync(sctx)
				cancel()
				lastSync = time.Now()
			}
			out.put(chaos.Line{Ev: "state", State: chaosState(c, names)})
		case <-send.C:
			if !sending {
				continue
			}
			to := contacts[rng.IntN(len(contacts))]
			name := names[to]
			n := next[name]
			id, err := c.Send(ctx, to, []byte(chaos.Body(f.name, name, n)))
			if err != nil {
				if ctx.Err() == nil {
					out.put(chaos.Line{Ev: "error", Err: "send: " + err.Error()})
				}
			} else {
				next[name] = n + 1
				m, _ := c.Message(id)
				out.put(chaos.Line{Ev: "sent", Contact: name, N: n, Counter: m.Counter})
			}
			send.Reset(chaosPace(rng, f.pace))
		}
	}
	// SIGTERM: let the outbox and the acks leave, then close.
	fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	ferr := c.Flush(fctx)
	cancel()
	out.put(chaos.Line{Ev: "state", State: chaosState(c, names)})
	cerr := c.Close()
	wg.Wait()
	line := chaos.Line{Ev: "exit"}
	if err := errors.Join(ferr, cerr); err != nil {
		line.Err = err.Error()
	}
	out.put(line)
	return nil
}

// chaosPace draws the wait before the next message: exponential with mean
// pace, at most 10 times it.
func chaosPace(rng *rand.Rand, pace time.Duration) time.Duration {
	return min(time.Duration(rng.ExpFloat64()*float64(pace)), 10*pace)
}

// chaosEvents prints the client's events until the channel closes.
func chaosEvents(c *client.Client, events <-chan client.Event, names map[client.ContactID]string, out *chaosOut) {
	for ev := range events {
		switch e := ev.(type) {
		case client.MessageReceived:
			m := e.Message
			l := chaos.Line{Ev: "recv", Contact: names[m.Contact], Counter: m.Counter, Seq: m.Seq, Late: m.Late}
			if _, _, n, ok := chaos.ParseBody(m.Body); ok {
				l.N = n
			}
			out.put(l)
		case client.StatusChanged:
			l := chaos.Line{Ev: "status", Contact: names[e.Contact], Status: e.Status.String()}
			if m, err := c.Message(e.ID); err == nil {
				l.Counter = m.Counter
			}
			out.put(l)
		case client.GapDetected:
			out.put(chaos.Line{Ev: "gap", Contact: names[e.Contact], From: e.From, To: e.To})
		case client.EventsDropped:
			out.put(chaos.Line{Ev: "dropped", Count: e.Count})
		}
	}
}

// chaosState counts the client's store per contact.
func chaosState(c *client.Client, names map[client.ContactID]string) *chaos.State {
	s := &chaos.State{
		Pending:  c.Pending(),
		Sent:     map[string]int{},
		Stored:   map[string]int{},
		Receipts: map[string]int{},
		Received: map[string]int{},
	}
	for id, name := range names {
		hist, err := c.History(id)
		if err != nil {
			continue
		}
		for _, m := range hist {
			if m.Direction == client.Incoming {
				s.Received[name]++
				continue
			}
			s.Sent[name]++
			switch m.Status {
			case client.StatusStored:
				s.Stored[name]++
			case client.StatusDelivered:
				s.Stored[name]++
				s.Receipts[name]++
			}
		}
	}
	return s
}
