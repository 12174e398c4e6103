package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/testnet"
)

// demoRelays is the cluster size of the demo. It equals the replication
// factor: every relay is a replica of every mailbox, so the sender's and
// the recipient's views of a replica set agree whatever each knows of the
// DHT (relays do not replicate among themselves yet: issue 6).
const demoRelays = 3

func (a *app) testnetDemoCmd() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Start a cluster, crash a relay, lose nothing: the guided tour",
		Long: `The guided tour of cairn, on this machine, in well under a minute:

  1. start 3 relays as processes on 127.0.0.1
  2. create two users, alice and bob (in this process), and exchange invites
  3. alice and bob say hello: live delivery, both ways, with delivery receipts
  4. bob goes offline; alice sends --messages messages: relays store them
  5. the relay holding them is killed with SIGKILL (a crash, mid-conversation)
  6. alice sends --messages more: they go to another replica
  7. the killed relay restarts on its data directory: same peer ID, entries kept
  8. bob comes back, catches up, and his delivery receipts reach alice

It prints each step with its time, and a final tally: sent, stored (a relay's
signed receipt), delivered (in the recipient's history, in order, once), lost.
It exits with code 5 if anything was lost, duplicated or out of order, and 1 if
a step failed. --json prints the steps and the tally as one JSON object.
Progress is shown on a terminal only.`,
		Example: `  go run ./cmd/cairn testnet demo
  cairn testnet demo --messages 200 --json | jq .tally`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.messages < 1 || o.messages > 10000 {
				return usageErrorf("testnet demo: --messages %d: want 1 to 10000", o.messages)
			}
			return a.runDemo(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.messages, "messages", 100, "messages alice sends in each of the two offline batches")
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory for the relays' and users' data (kept); default: a temporary one, removed at the end")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the steps and the tally as one JSON object")
	cmd.Flags().DurationVar(&o.stepTimeout, "step-timeout", 30*time.Second, "how long one step may take before the demo gives up")
	return cmd
}

type demoOptions struct {
	messages    int
	dir         string
	json        bool
	stepTimeout time.Duration
}

type demoStep struct {
	At     float64 `json:"at_s"`
	TookMs float64 `json:"took_ms"`
	Text   string  `json:"text"`
}

type demoTally struct {
	Sent       int `json:"sent"`
	Stored     int `json:"stored"`
	Delivered  int `json:"delivered"`
	Receipts   int `json:"receipts"`
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	OutOfOrder int `json:"out_of_order"`
}

type demoResult struct {
	Relays  int        `json:"relays"`
	Steps   []demoStep `json:"steps"`
	Tally   demoTally  `json:"tally"`
	Seconds float64    `json:"seconds"`
	OK      bool       `json:"ok"`
	Error   string     `json:"error,omitempty"`
}

// demo is one run of the tour.
type demo struct {
	a     *app
	o     demoOptions
	start time.Time
	res   demoResult
	c     *testnet.ProcCluster
	log   *slog.Logger
	dir   string

	alice, bob *client.Client
	bobAt      client.ContactID // bob, as alice's contact
	aliceAt    client.ContactID // alice, as bob's contact
	// what each sent, in order
	toBob, toAlice []string
	idsToBob       []client.MessageID
	idsToAlice     []client.MessageID
}

func (d *demo) step(since time.Time, format string, args ...any) {
	now := time.Now()
	s := demoStep{At: now.Sub(d.start).Seconds(), TookMs: float64(now.Sub(since).Microseconds()) / 1000, Text: fmt.Sprintf(format, args...)}
	d.res.Steps = append(d.res.Steps, s)
	if !d.o.json {
		fmt.Fprintf(d.a.stdout, "[%5.1fs] %s\n", s.At, s.Text)
	}
}

func (a *app) runDemo(ctx context.Context, o demoOptions) error {
	log, err := a.logger(slog.LevelError + 4) // quiet unless --log-level is given
	if err != nil {
		return err
	}
	d := &demo{a: a, o: o, start: time.Now(), log: log}
	d.res.Relays = demoRelays
	runErr := d.run(ctx)
	d.tally()
	if err := d.teardown(); err != nil && runErr == nil {
		runErr = err
	}
	d.res.Seconds = time.Since(d.start).Seconds()
	t := d.res.Tally
	d.res.OK = runErr == nil && t.Lost == 0 && t.Duplicates == 0 && t.OutOfOrder == 0
	if runErr != nil {
		d.res.Error = oneLine(runErr.Error())
	}
	if o.json {
		if err := writeJSONOut(a.stdout, d.res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(a.stdout, "\ntally  sent %d  stored %d  delivered %d  lost %d  (duplicates %d, out of order %d, delivery receipts %d/%d)  in %.1fs\n",
			t.Sent, t.Stored, t.Delivered, t.Lost, t.Duplicates, t.OutOfOrder, t.Receipts, t.Sent, d.res.Seconds)
	}
	switch {
	case runErr != nil && ctx.Err() != nil:
		return errInterrupted
	case t.Lost > 0 || t.Duplicates > 0 || t.OutOfOrder > 0:
		return withCode(exitLost, fmt.Errorf("testnet demo: %d lost, %d duplicated, %d out of order", t.Lost, t.Duplicates, t.OutOfOrder))
	case runErr != nil:
		return fmt.Errorf("testnet demo: %w", runErr)
	}
	return nil
}

func (d *demo) run(ctx context.Context) error {
	var err error
	d.dir = d.o.dir
	if d.dir == "" {
		if d.dir, err = os.MkdirTemp("", "cairn-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}

	// 1. relays
	t0 := time.Now()
	d.c, err = startCluster(ctx, filepath.Join(d.dir, "relays"), demoRelays, nil)
	if err != nil {
		return err
	}
	d.step(t0, "%d relays up as processes on 127.0.0.1, one DHT (bootstrap %s)", demoRelays, d.c.Relays[0].Addr)

	// 2. users
	t0 = time.Now()
	if d.alice, err = d.newUser("alice"); err != nil {
		return err
	}
	if d.bob, err = d.newUser("bob"); err != nil {
		return err
	}
	inv, err := d.bob.Invite()
	if err != nil {
		return err
	}
	ct, err := d.alice.AcceptInvite(inv)
	if err != nil {
		return err
	}
	d.bobAt = ct.ID
	if inv, err = d.alice.Invite(); err != nil {
		return err
	}
	if ct, err = d.bob.AcceptInvite(inv); err != nil {
		return err
	}
	d.aliceAt = ct.ID
	d.step(t0, "alice and bob created (identity, mailbox, prekeys) and invites exchanged (%d characters each)", len(inv))

	// 3. hello, both ways, live
	t0 = time.Now()
	if err := d.send(ctx, d.alice, d.bobAt, "hello bob", &d.toBob, &d.idsToBob); err != nil {
		return err
	}
	if err := d.waitIncoming(ctx, d.bob, d.aliceAt, len(d.toBob), nil); err != nil {
		return fmt.Errorf("bob did not get alice's hello: %w", err)
	}
	d.step(t0, "alice → bob \"hello bob\": received live in %v (session set up by this first message)", ms(time.Since(t0)))
	t0 = time.Now()
	if err := d.send(ctx, d.bob, d.aliceAt, "hi alice", &d.toAlice, &d.idsToAlice); err != nil {
		return err
	}
	if err := d.waitIncoming(ctx, d.alice, d.bobAt, len(d.toAlice), nil); err != nil {
		return fmt.Errorf("alice did not get bob's answer: %w", err)
	}
	d.step(t0, "bob → alice \"hi alice\": received live in %v", ms(time.Since(t0)))
	t0 = time.Now()
	if err := d.waitDelivered(ctx, d.alice, d.idsToBob, nil); err != nil {
		return err
	}
	if err := d.waitDelivered(ctx, d.bob, d.idsToAlice, nil); err != nil {
		return err
	}
	d.step(t0, "both hellos confirmed delivered by the recipients' encrypted receipts")

	// 4. bob offline, alice writes
	t0 = time.Now()
	if err := d.bob.Close(); err != nil {
		return err
	}
	d.bob = nil
	d.step(t0, "bob goes offline")
	before := d.entries(ctx)
	t0 = time.Now()
	if err := d.batch(ctx, 1); err != nil {
		return err
	}
	took := time.Since(t0)
	after := d.entries(ctx)
	victim, held := 0, -1
	for i := range after {
		if delta := after[i] - before[i]; delta > held {
			victim, held = i, delta
		}
	}
	d.step(t0, "alice sends %d messages to offline bob: all stored in %v (%.0f msg/s); relays hold %s", d.o.messages, ms(took), rate(d.o.messages, took), d.deltas(before, after))

	// 5. crash
	t0 = time.Now()
	v := d.c.Relays[victim]
	had := after[victim]
	if err := v.Kill(); err != nil {
		return err
	}
	d.step(t0, "%s killed with SIGKILL while holding %d of bob's messages", v, held)

	// 6. more while it is down
	before = d.entries(ctx)
	t0 = time.Now()
	if err := d.batch(ctx, 2); err != nil {
		return err
	}
	took = time.Since(t0)
	after = d.entries(ctx)
	d.step(t0, "alice sends %d more: all stored in %v (%.0f msg/s), on the relays still up: %s", d.o.messages, ms(took), rate(d.o.messages, took), d.deltas(before, after))

	// 7. restart
	t0 = time.Now()
	rctx, cancel := context.WithTimeout(ctx, d.o.stepTimeout)
	err = v.Restart(rctx) // it checks that the peer ID is the same
	cancel()
	if err != nil {
		return err
	}
	kept := d.entries(ctx)[victim]
	same := "same peer ID"
	// With replication, anti-entropy may already have added what the
	// relay missed while it was down; fewer than before is worth saying.
	note := "nothing lost in the crash"
	if kept < had {
		note = fmt.Sprintf("FEWER than the %d it held before the crash", had)
	}
	d.step(t0, "%s restarted on its data directory: %s, holds %d entries (%d before the crash: %s)", v, same, kept, had, note)

	// 8. bob is back
	t0 = time.Now()
	if d.bob, err = d.newUser("bob"); err != nil {
		return err
	}
	want := len(d.toBob)
	prog := newProgress(d.a.stderr, "bob catching up", want)
	err = d.waitIncoming(ctx, d.bob, d.aliceAt, want, prog)
	prog.done()
	if err != nil {
		return fmt.Errorf("bob did not catch up: %w", err)
	}
	took = time.Since(t0)
	d.step(t0, "bob comes back online and catches up: %d messages in %v (%.0f msg/s)", 2*d.o.messages, ms(took), rate(2*d.o.messages, took))
	t0 = time.Now()
	prog = newProgress(d.a.stderr, "delivery receipts", len(d.idsToBob))
	err = d.waitDelivered(ctx, d.alice, d.idsToBob, prog)
	prog.done()
	if err != nil {
		return err
	}
	d.step(t0, "alice has bob's delivery receipts for all %d messages", len(d.idsToBob))
	return nil
}

func ms(d time.Duration) time.Duration {
	if d < 10*time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Millisecond)
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// newUser opens (or reopens) a user's client in the demo directory and
// starts it.
func (d *demo) newUser(name string) (*client.Client, error) {
	dir := filepath.Join(d.dir, name)
	keyFile := filepath.Join(d.dir, name+".key")
	key, err := os.ReadFile(keyFile)
	if err != nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := writeFileAtomic(keyFile, key, 0o600); err != nil {
			return nil, err
		}
	}
	c, err := client.New(client.Config{
		DataDir:       dir,
		EncryptionKey: key,
		Bootstrap:     allAddrs(d.c),
		Name:          name,
		Logger:        d.log.With("user", name),
		RetryMin:      100 * time.Millisecond,
		RetryMax:      time.Second,
		SyncInterval:  2 * time.Second,
		Timeout:       3 * time.Second,
		EventBuffer:   4096,
	})
	if err != nil {
		return nil, err
	}
	if err := c.Start(context.Background()); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (d *demo) send(ctx context.Context, from *client.Client, to client.ContactID, text string, log *[]string, ids *[]client.MessageID) error {
	id, err := from.Send(ctx, to, []byte(text))
	if err != nil {
		return err
	}
	*log = append(*log, text)
	*ids = append(*ids, id)
	return nil
}

// batch has alice send one batch to bob and waits until all are stored.
func (d *demo) batch(ctx context.Context, n int) error {
	first := len(d.idsToBob)
	for i := 1; i <= d.o.messages; i++ {
		if err := d.send(ctx, d.alice, d.bobAt, fmt.Sprintf("batch %d, message %d of %d", n, i, d.o.messages), &d.toBob, &d.idsToBob); err != nil {
			return err
		}
	}
	ids := d.idsToBob[first:]
	prog := newProgress(d.a.stderr, "stored", len(ids))
	defer prog.done()
	return d.poll(ctx, "alice's messages to be stored", func() (bool, error) {
		done := 0
		for _, id := range ids {
			m, err := d.alice.Message(id)
			if err != nil {
				return false, err
			}
			if m.Status >= client.StatusStored {
				done++
			}
		}
		prog.set(done)
		return done == len(ids), nil
	})
}

// poll checks cond every 10 ms for at most the step timeout.
func (d *demo) poll(ctx context.Context, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.stepTimeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v waiting for %s", d.o.stepTimeout, what)
		case <-t.C:
		}
	}
}

func (d *demo) incoming(c *client.Client, from client.ContactID) []string {
	h, err := c.History(from)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range h {
		if m.Direction == client.Incoming {
			out = append(out, string(m.Body))
		}
	}
	return out
}

func (d *demo) waitIncoming(ctx context.Context, c *client.Client, from client.ContactID, n int, prog *progress) error {
	return d.poll(ctx, fmt.Sprintf("%d messages", n), func() (bool, error) {
		got := len(d.incoming(c, from))
		prog.set(got)
		return got >= n, nil
	})
}

func (d *demo) waitDelivered(ctx context.Context, c *client.Client, ids []client.MessageID, prog *progress) error {
	return d.poll(ctx, "delivery receipts", func() (bool, error) {
		done := 0
		for _, id := range ids {
			m, err := c.Message(id)
			if err != nil {
				return false, err
			}
			if m.Status == client.StatusDelivered {
				done++
			}
		}
		prog.set(done)
		return done == len(ids), nil
	})
}

// entries returns each relay's live entries (-1 for a relay down).
func (d *demo) entries(ctx context.Context) []int {
	out := make([]int, len(d.c.Relays))
	for i, p := range d.c.Relays {
		s, err := relayStatsOf(ctx, p)
		if err != nil {
			out[i] = -1
			continue
		}
		out[i] = int(s.Entries)
	}
	return out
}

func (d *demo) deltas(before, after []int) string {
	s := ""
	for i, p := range d.c.Relays {
		if i > 0 {
			s += ", "
		}
		if after[i] < 0 {
			s += p.String() + " down"
			continue
		}
		s += fmt.Sprintf("%s +%d", p, after[i]-max(before[i], 0))
	}
	return s
}

// tally compares what was sent with what arrived.
func (d *demo) tally() {
	t := &d.res.Tally
	t.Sent = len(d.toBob) + len(d.toAlice)
	count := func(c *client.Client, ids []client.MessageID) {
		if c == nil {
			return
		}
		for _, id := range ids {
			if m, err := c.Message(id); err == nil {
				if m.Status >= client.StatusStored && m.Status != client.StatusFailed && m.Status != client.StatusExpiredUndelivered {
					t.Stored++
				}
				if m.Status == client.StatusDelivered {
					t.Receipts++
				}
			}
		}
	}
	count(d.alice, d.idsToBob)
	count(d.bob, d.idsToAlice)
	check := func(c *client.Client, from client.ContactID, sent []string) {
		var got []string
		if c != nil {
			got = d.incoming(c, from)
		}
		seen := map[string]int{}
		for _, g := range got {
			seen[g]++
		}
		for _, s := range sent {
			switch n := seen[s]; {
			case n == 0:
				t.Lost++
			default:
				t.Delivered++
				t.Duplicates += n - 1
			}
		}
		// order: what arrived keeps the sender's order
		var order []string
		for _, g := range got {
			if slices.Contains(sent, g) {
				order = append(order, g)
			}
		}
		j := 0
		for _, s := range sent {
			if j < len(order) && order[j] == s {
				j++
			}
		}
		t.OutOfOrder += len(slices.Compact(order)) - j
	}
	check(d.bob, d.aliceAt, d.toBob)
	check(d.alice, d.bobAt, d.toAlice)
}

// teardown closes the users, stops the relays (SIGTERM) and removes a
// temporary directory.
func (d *demo) teardown() error {
	var errs []error
	for _, c := range []*client.Client{d.alice, d.bob} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	if d.c != nil {
		t0 := time.Now()
		if err := stopCluster(d.c); err != nil {
			errs = append(errs, fmt.Errorf("stopping the relays: %w", err))
		} else {
			d.step(t0, "relays stopped (SIGTERM: drained and closed)")
		}
	}
	if d.o.dir == "" && d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}
