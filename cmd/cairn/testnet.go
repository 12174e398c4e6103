package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/testnet"
)

func (a *app) testnetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "testnet",
		Short: "Run a local cluster of relays (up), the demo (demo), or the chaos soak (chaos)",
		Long: `Local clusters of cairn relays on 127.0.0.1, as separate processes of this
binary, for trying cairn and developing against it:

  cairn testnet up     start N relays and stay in the foreground
  cairn testnet demo   the guided tour: two users, a relay crash, a tally
  cairn testnet chaos  the soak: relays and clients killed, partitioned, slowed
                       for --duration under a seeded schedule; nothing may be lost`,
		Example: `  cairn testnet demo
  cairn testnet up --relays 5 --dir ./net
  cairn testnet chaos --duration 5m --seed 1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(a.testnetUpCmd(), a.testnetDemoCmd(), a.testnetChaosCmd(), a.testnetChaosClientCmd())
	return cmd
}

func (a *app) testnetUpCmd() *cobra.Command {
	var n int
	var dir string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a local cluster of relay processes and stay in the foreground",
		Long: `Start N relays as processes of this binary ('cairn relay') on 127.0.0.1, each in
its own data directory (D/relay-NN), bootstrapped into one DHT, each with a
metrics endpoint on a port the OS picks. When all are ready and DHT lookups
find the true replica sets, it prints, on stdout:

  relay <name> <peer ID> <multiaddr with /p2p/> <metrics URL>   (one per relay)
  bootstrap <multiaddr with /p2p/>
  ready

(the same lines are in D/testnet.txt while the cluster runs), then stays in the foreground: on a terminal with a live status view (state,
pid, stored entries and bytes, deposits, subscribers of each relay, every
second); when stdout is not a terminal, with one line per event (a relay that
exits on its own). Ctrl-C (or SIGTERM) stops every relay (SIGTERM, so they
drain) and exits; no process is left behind. Without --dir the data lives in a
temporary directory removed at exit; with --dir it is kept, and the same relays
(same peer IDs, same stored entries) come back with the next 'up --dir D'.

Point clients at the printed addresses:
  cairn init --relay <bootstrap address>
Relays' logs are in D/relay-NN/relay.log.`,
		Example: `  cairn testnet up --relays 3
  cairn testnet up --relays 5 --dir ./net > net.txt &   # then read net.txt`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || n > 64 {
				return usageErrorf("testnet up: --relays %d: want 1 to 64", n)
			}
			return a.runTestnetUp(cmd.Context(), n, dir)
		},
	}
	cmd.Flags().IntVar(&n, "relays", 3, "number of relays")
	cmd.Flags().StringVar(&dir, "dir", "", "base directory of the relays' data (kept); default: a temporary one, removed at exit")
	return cmd
}

func (a *app) runTestnetUp(ctx context.Context, n int, dir string) error {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	start := time.Now()
	if isTerminal(a.stderr) {
		fmt.Fprintf(a.stderr, "starting %d relays…\n", n)
	}
	var mu sync.Mutex
	var events []string
	c, err := startCluster(ctx, dir, n, func(p *testnet.Proc, err error) {
		mu.Lock()
		events = append(events, fmt.Sprintf("%s %s exited on its own: %v", time.Now().Format("15:04:05"), p, err))
		mu.Unlock()
	})
	if err != nil {
		return interrupted(ctx, fmt.Errorf("testnet up: %w", err))
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stopCluster(c)
		}
	}()
	var sum strings.Builder
	for _, p := range c.Relays {
		fmt.Fprintf(&sum, "relay %s %s %s %s\n", p, p.ID, p.Addr, p.MetricsURL())
	}
	fmt.Fprintf(&sum, "bootstrap %s\n", c.Relays[0].Addr)
	fmt.Fprintln(&sum, "ready")
	// The same lines in D/testnet.txt, for scripts and other terminals.
	info := filepath.Join(c.Dir(), "testnet.txt")
	if err := writeFileAtomic(info, []byte(sum.String()), 0o600); err != nil {
		return fmt.Errorf("testnet up: %w", err)
	}
	defer os.Remove(info)
	fmt.Fprint(a.stdout, sum.String())
	fmt.Fprintf(a.stderr, "%d relays up in %v in %s; Ctrl-C to stop\n", n, time.Since(start).Round(10*time.Millisecond), c.Dir())

	live := isTerminal(a.stdout)
	view := &statusView{w: a.stdout}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		mu.Lock()
		evs := events
		events = nil
		mu.Unlock()
		if live {
			view.draw(ctx, c, evs)
		} else {
			for _, e := range evs {
				fmt.Fprintln(a.stdout, e)
			}
		}
		select {
		case <-ctx.Done():
			fmt.Fprintln(a.stderr, "stopping the relays (SIGTERM, drain)")
			os.Remove(info)
			stopped = true
			if err := stopCluster(c); err != nil {
				return fmt.Errorf("testnet up: %w", err)
			}
			fmt.Fprintln(a.stdout, "stopped")
			return nil
		case <-t.C:
		}
	}
}

// statusView redraws a table of the relays in place on a terminal.
type statusView struct {
	w      io.Writer
	lines  int
	events []string
}

func (v *statusView) draw(ctx context.Context, c *testnet.ProcCluster, evs []string) {
	v.events = append(v.events, evs...)
	if len(v.events) > 5 {
		v.events = v.events[len(v.events)-5:]
	}
	tb := newTable(nil)
	tb.row("RELAY", "PID", "STATE", "ENTRIES", "BYTES", "DEPOSITS", "SUBSCRIBERS", "PEER")
	for _, p := range c.Relays {
		state, pid := "down", "-"
		var st relayStats
		if p.Running() {
			state, pid = "up", fmt.Sprint(p.Pid())
			sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			var err error
			st, err = relayStatsOf(sctx, p)
			cancel()
			if err != nil {
				state = "up?"
			}
		}
		tb.row(p.String(), pid, state, fmt.Sprintf("%.0f", st.Entries), humanBytes(st.Bytes), fmt.Sprintf("%.0f", st.Deposits), fmt.Sprintf("%.0f", st.Subscribers), p.ID.String())
	}
	var b strings.Builder
	if v.lines > 0 {
		fmt.Fprintf(&b, "\033[%dA", v.lines)
	}
	out := tb.lines()
	out = append(out, v.events...)
	out = append(out, time.Now().Format("15:04:05")+"  Ctrl-C to stop")
	for _, l := range out {
		b.WriteString("\033[2K" + l + "\n")
	}
	v.lines = len(out)
	fmt.Fprint(v.w, b.String())
}

func humanBytes(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}
