package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Fault kinds, as counted in Report.Faults.
const (
	KindKillRelay  = "kill-relay"  // SIGKILL a relay, restart it later
	KindCutRelays  = "cut-relays"  // one or two relays cut from the others
	KindCutClient  = "cut-client"  // a client cut from one or two relays
	KindLink       = "link"        // delay and drop on a relay's link
	KindKillClient = "kill-client" // SIGKILL a client, restart it later
)

// kinds are drawn with these weights.
var kinds = []struct {
	kind   string
	weight int
}{
	{KindKillRelay, 3},
	{KindCutRelays, 2},
	{KindCutClient, 2},
	{KindLink, 2},
	{KindKillClient, 3},
}

// event is one step of the schedule: a fault or the end of one, due at
// a time since the faults began.
type event struct {
	at time.Duration
	do func(ctx context.Context) error
}

// sched is the fault scheduler. Every decision is drawn from rng in the
// order of a virtual timeline (each event has its due time; events run
// in that order, late if the one before took long), so a seed always
// gives the same faults at the same times.
type sched struct {
	r   *run
	rng *rand.Rand
	t0  time.Time

	queue      []event // recoveries, by due time
	relayDown  map[int]bool
	clientDown map[int]bool
	relaysCut  bool
	linkFault  map[int]bool
	clientCuts map[int]bool
}

// uniform draws a duration in [lo, hi).
func (s *sched) uniform(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)))
}

// schedule applies faults for Options.Duration. Recoveries due after it
// are left to finish, which heals and restarts everything.
func (r *run) schedule(ctx context.Context) error {
	s := &sched{
		r:          r,
		rng:        rand.New(rand.NewPCG(r.o.Seed, 0xc4a05)),
		relayDown:  map[int]bool{},
		clientDown: map[int]bool{},
		linkFault:  map[int]bool{},
		clientCuts: map[int]bool{},
	}
	progressEvery := 15 * time.Second
	if r.o.Live {
		progressEvery = 5 * time.Second
	}
	s.t0 = time.Now()
	nextFault := s.uniform(time.Second, 3*time.Second)
	nextProgress := progressEvery
	for {
		// The next step: a recovery, a new fault, or the end.
		var ev event
		fault := len(s.queue) == 0 || nextFault < s.queue[0].at
		if fault {
			if nextFault >= r.o.Duration {
				ev = event{at: r.o.Duration}
			} else {
				ev = event{at: nextFault, do: s.fault}
				nextFault += s.uniform(300*time.Millisecond, 3*time.Second)
			}
		} else {
			if s.queue[0].at >= r.o.Duration {
				ev = event{at: r.o.Duration}
			} else {
				ev = s.queue[0]
				s.queue = s.queue[1:]
			}
		}
		// Wait for it, with progress lines.
		for {
			wait := time.Until(s.t0.Add(ev.at))
			pwait := time.Until(s.t0.Add(nextProgress))
			if wait <= 0 {
				break
			}
			t := time.NewTimer(min(wait, max(pwait, 0)))
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			if time.Until(s.t0.Add(nextProgress)) <= 0 {
				r.progress()
				nextProgress += progressEvery
			}
		}
		if ev.do == nil {
			r.printf("[%5.1fs] %v of faults done: %d applied (%s)\n", r.at(), r.o.Duration, r.faultTotal(), r.faultSummary())
			return nil
		}
		if err := ev.do(ctx); err != nil {
			return err
		}
	}
}

// after queues a recovery d from now (on the virtual timeline: from the
// due time of the event being applied).
func (s *sched) after(now, d time.Duration, do func(ctx context.Context) error) {
	ev := event{at: now + d, do: do}
	i, _ := slices.BinarySearchFunc(s.queue, ev.at, func(e event, at time.Duration) int {
		if e.at <= at {
			return -1
		}
		return 1
	})
	s.queue = slices.Insert(s.queue, i, ev)
}

// fault draws and applies one fault. Drawing never depends on timing:
// only on earlier draws.
func (s *sched) fault(ctx context.Context) error {
	now := time.Since(s.t0)
	now = now.Truncate(time.Millisecond)
	total := 0
	for _, k := range kinds {
		total += k.weight
	}
	x := s.rng.IntN(total)
	kind := ""
	for _, k := range kinds {
		if x < k.weight {
			kind = k.kind
			break
		}
		x -= k.weight
	}
	r := s.r
	switch kind {
	case KindKillRelay:
		i := s.rng.IntN(r.o.Relays)
		d := s.uniform(time.Second, 8*time.Second)
		if s.relayDown[i] || len(s.relayDown) >= R-1 {
			return nil // at most R−1 relays down: every replica set keeps one
		}
		p := r.pc.Relays[i]
		if err := p.Kill(); err != nil {
			return fmt.Errorf("kill %s: %w", p, err)
		}
		s.relayDown[i] = true
		r.fault(kind, "SIGKILL %s (down: %s); restart in %.1fs", p, s.names(s.relayDown, "relay"), d.Seconds())
		s.after(now, d, func(ctx context.Context) error {
			t0 := time.Now()
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := p.Restart(rctx)
			cancel()
			if err != nil {
				return fmt.Errorf("restart %s: %w", p, err)
			}
			delete(s.relayDown, i)
			r.note("restart %s (ready in %.2fs)", p, time.Since(t0).Seconds())
			return nil
		})
	case KindCutRelays:
		k := 1 + s.rng.IntN(2)
		perm := s.rng.Perm(r.o.Relays)
		d := s.uniform(2*time.Second, 10*time.Second)
		if s.relaysCut {
			return nil
		}
		side := perm[:k]
		slices.Sort(side)
		var names []string
		var cuts [][2]string
		for _, a := range side {
			names = append(names, relayName(a))
			for b := range r.o.Relays {
				if !slices.Contains(side, b) {
					cuts = append(cuts, [2]string{relayName(a), relayName(b)})
				}
			}
		}
		if err := r.cut(cuts, true); err != nil {
			return err
		}
		s.relaysCut = true
		r.fault(kind, "cut %s from the other relays for %.1fs", strings.Join(names, ", "), d.Seconds())
		s.after(now, d, func(context.Context) error {
			if err := r.cut(cuts, false); err != nil {
				return err
			}
			s.relaysCut = false
			r.note("heal %s", strings.Join(names, ", "))
			return nil
		})
	case KindCutClient:
		c := s.rng.IntN(r.o.Clients)
		k := 1 + s.rng.IntN(2)
		perm := s.rng.Perm(r.o.Relays)[:k]
		d := s.uniform(2*time.Second, 10*time.Second)
		if s.clientCuts[c] {
			return nil
		}
		slices.Sort(perm)
		var names []string
		var cuts [][2]string
		for _, b := range perm {
			names = append(names, relayName(b))
			cuts = append(cuts, [2]string{ClientName(c), relayName(b)})
		}
		if err := r.cut(cuts, true); err != nil {
			return err
		}
		s.clientCuts[c] = true
		r.fault(kind, "cut %s from %s for %.1fs", ClientName(c), strings.Join(names, ", "), d.Seconds())
		s.after(now, d, func(context.Context) error {
			if err := r.cut(cuts, false); err != nil {
				return err
			}
			delete(s.clientCuts, c)
			r.note("heal %s", ClientName(c))
			return nil
		})
	case KindLink:
		i := s.rng.IntN(r.o.Relays)
		delay := s.uniform(10*time.Millisecond, 150*time.Millisecond)
		drop := s.rng.Float64() * 0.02
		d := s.uniform(3*time.Second, 12*time.Second)
		if s.linkFault[i] {
			return nil
		}
		r.mu.Lock()
		p := r.proxies[i]
		r.mu.Unlock()
		p.set(delay, drop)
		s.linkFault[i] = true
		r.fault(kind, "link of %s: delay %v, %.1f%% of chunks cut the connection, for %.1fs", relayName(i), delay.Round(time.Millisecond), drop*100, d.Seconds())
		s.after(now, d, func(context.Context) error {
			p.set(0, 0)
			delete(s.linkFault, i)
			r.note("link of %s clear", relayName(i))
			return nil
		})
	case KindKillClient:
		c := s.rng.IntN(r.o.Clients)
		d := s.uniform(500*time.Millisecond, 5*time.Second)
		if s.clientDown[c] || len(s.clientDown) >= r.o.Clients/2 {
			return nil
		}
		cl := r.clients[c]
		cl.kill()
		s.clientDown[c] = true
		r.fault(kind, "SIGKILL %s; restart in %.1fs", cl.name, d.Seconds())
		s.after(now, d, func(context.Context) error {
			if err := cl.start(); err != nil {
				return err
			}
			delete(s.clientDown, c)
			r.note("restart %s", cl.name)
			return nil
		})
	}
	return nil
}

func relayName(i int) string { return fmt.Sprintf("relay-%02d", i) }

// names lists the members of a set, sorted.
func (s *sched) names(set map[int]bool, kind string) string {
	var out []string
	for i := range set {
		if kind == "relay" {
			out = append(out, relayName(i))
		} else {
			out = append(out, ClientName(i))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// cut adds or removes cuts and rewrites the deny file.
func (r *run) cut(cuts [][2]string, on bool) error {
	r.mu.Lock()
	for _, c := range cuts {
		if on {
			r.cuts[c] = true
		} else {
			delete(r.cuts, c)
		}
	}
	r.mu.Unlock()
	return r.writeDeny()
}

// fault counts and prints a fault.
func (r *run) fault(kind, format string, args ...any) {
	r.mu.Lock()
	r.faults[kind]++
	r.mu.Unlock()
	r.note("fault "+kind+": "+format, args...)
}

// note prints a line of the schedule (and keeps it in faults.log).
func (r *run) note(format string, args ...any) {
	line := fmt.Sprintf("[%5.1fs] %s\n", r.at(), fmt.Sprintf(format, args...))
	r.printf("%s", line)
	if r.faultsf != nil {
		_, _ = r.faultsf.WriteString(line)
	}
}

func (r *run) faultTotal() int {
	n := 0
	for _, v := range r.faultCounts() {
		n += v
	}
	return n
}

// faultSummary is "kill-relay 5, cut-relays 3, …" in the order of kinds.
func (r *run) faultSummary() string {
	counts := r.faultCounts()
	var out []string
	for _, k := range kinds {
		out = append(out, fmt.Sprintf("%s %d", k.kind, counts[k.kind]))
	}
	return strings.Join(out, ", ")
}

// progress prints the counts of the clients' last state lines.
func (r *run) progress() {
	var sent, stored, receipts, delivered, up int
	for _, c := range r.clients {
		if c.running() {
			up++
		}
		st, _ := c.lastState()
		if st == nil {
			continue
		}
		for _, n := range st.Sent {
			sent += n
		}
		for _, n := range st.Stored {
			stored += n
		}
		for _, n := range st.Receipts {
			receipts += n
		}
		for _, n := range st.Received {
			delivered += n
		}
	}
	relaysUp := 0
	for _, p := range r.pc.Relays {
		if p.Running() {
			relaysUp++
		}
	}
	r.printf("[%5.1fs] sent %d  stored %d  delivered %d  receipts %d  | faults %d  | relays up %d/%d  clients up %d/%d\n",
		r.at(), sent, stored, delivered, receipts, r.faultTotal(), relaysUp, len(r.pc.Relays), up, len(r.clients))
}
