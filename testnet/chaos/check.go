package chaos

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/testnet"
)

// DiskSlack is what a relay's store directory may hold beyond its live
// data, by construction of the store (store/log.go, at the default 128
// MiB memory budget): two memtable files (badger's write-ahead logs, 64
// MiB each once full: they hold every write since the last flush, live
// or deleted since), the tables of deleted and expired entries the store
// leaves uncompacted below its 64 MiB compaction floor, and the fixed
// files (DISCARD 1 MiB, the value log's head, MANIFEST, KEYREGISTRY;
// envelopes are inline in the LSM tree, so the value log stays empty).
// An empty store takes 28 KiB on disk (its 128 MiB value log and 64 MiB
// memtable files are sparse); the figures of real runs are in
// TESTING.md (the chaos soak).
const DiskSlack = 2*64<<20 + 64<<20 + 2<<20

// LiveFactor bounds the store's bytes per live envelope byte (keys,
// indexes, the value log's framing).
const LiveFactor = 4

// finish heals and restarts everything, lets the clients converge, stops
// them and measures the relays' disks.
func (r *run) finish(ctx context.Context, rep *Report) error {
	t0 := time.Now()
	r.mu.Lock()
	clear(r.cuts)
	for _, p := range r.proxies {
		p.set(0, 0)
	}
	r.mu.Unlock()
	if err := r.writeDeny(); err != nil {
		return err
	}
	var restarted []string
	for _, p := range r.pc.Relays {
		if p.Running() {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := p.Restart(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("final restart of %s: %w", p, err)
		}
		restarted = append(restarted, p.String())
	}
	for _, c := range r.clients {
		if !c.running() {
			if err := c.start(); err != nil {
				return err
			}
			restarted = append(restarted, c.name)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := r.pc.WaitRouting(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("after healing: %w", err)
	}
	r.printf("[%5.1fs] healed every cut and link, restarted %s; DHT lookups find the true replica sets (%.1fs)\n",
		r.at(), orNone(restarted), time.Since(t0).Seconds())

	// Converge: no more sending; each client syncs every 2 s.
	t0 = time.Now()
	for _, c := range r.clients {
		c.quiet()
	}
	deadline := time.Now().Add(r.o.Converge)
	progress := time.Now()
	var missing string
	for {
		missing = r.converged(t0)
		if missing == "" {
			rep.Converged, rep.ConvergeTook = true, time.Since(t0)
			r.printf("[%5.1fs] converged in %.1fs: every message delivered, every receipt back\n", r.at(), time.Since(t0).Seconds())
			break
		}
		if time.Now().After(deadline) {
			r.printf("[%5.1fs] not converged after %v: %s\n", r.at(), r.o.Converge, missing)
			break
		}
		if time.Since(progress) >= 10*time.Second {
			r.printf("[%5.1fs] converging: %s\n", r.at(), missing)
			progress = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}

	// Stop the clients: SIGTERM, they flush.
	var wg sync.WaitGroup
	for _, c := range r.clients {
		wg.Go(func() {
			if !c.stop(time.Minute) {
				r.printf("[%5.1fs] %s did not exit within a minute of SIGTERM: killed\n", r.at(), c.name)
			}
		})
	}
	wg.Wait()

	// The relays' disks against their live data. Acks of the last syncs
	// have been sent; give the relays a moment to apply them.
	time.Sleep(2 * time.Second)
	if err := r.measureDisk(ctx, &rep.Disk); err != nil {
		return err
	}
	var serr []error
	for _, p := range r.pc.Relays {
		if err := p.Stop(); err != nil && !errors.Is(err, testnet.ErrDown) {
			serr = append(serr, err)
		}
	}
	if err := errors.Join(serr...); err != nil {
		r.printf("[%5.1fs] relay stop: %v\n", r.at(), err)
	}
	return nil
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// converged says what is still missing ("" when nothing): every client
// running, a state line since since+1 s, nothing pending, and for every
// pair every message sent received and its receipt back.
func (r *run) converged(since time.Time) string {
	states := map[string]*State{}
	for _, c := range r.clients {
		st, at := c.lastState()
		if !c.running() || st == nil || at.Before(since.Add(time.Second)) {
			return c.name + " has not reported since the end of the faults"
		}
		states[c.name] = st
	}
	var miss []string
	for _, a := range r.clients {
		sa := states[a.name]
		if sa.Pending > 0 {
			miss = append(miss, fmt.Sprintf("%s has %d pending", a.name, sa.Pending))
		}
		for _, b := range r.clients {
			if a == b {
				continue
			}
			sent, got, rec := sa.Sent[b.name], states[b.name].Received[a.name], sa.Receipts[b.name]
			if got != sent || rec != sent {
				miss = append(miss, fmt.Sprintf("%s→%s sent %d received %d receipts %d", a.name, b.name, sent, got, rec))
			}
		}
	}
	if len(miss) > 4 {
		miss = append(miss[:4], fmt.Sprintf("and %d more", len(miss)-4))
	}
	return strings.Join(miss, "; ")
}

// measureDisk sums the relays' store directories and live data.
func (r *run) measureDisk(ctx context.Context, d *Disk) error {
	for _, p := range r.pc.Relays {
		n, err := dirBytes(filepath.Join(p.DataDir, "store"))
		if err != nil {
			return err
		}
		d.PerRelay = append(d.PerRelay, n)
		d.StoreBytes += n
		vals, err := scrape(ctx, p.MetricsURL())
		if err != nil {
			return fmt.Errorf("metrics of %s: %w", p, err)
		}
		d.LiveBytes += int64(vals["cairn_relay_stored_bytes"])
		d.LiveEntries += int64(vals["cairn_relay_stored_entries"])
	}
	d.Bound = LiveFactor*d.LiveBytes + int64(len(r.pc.Relays))*DiskSlack
	return nil
}

// dirBytes is the space allocated to the files under dir (du).
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		fi, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		n += allocated(fi)
		return nil
	})
	return n, err
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// scrape sums the samples of each metric of a Prometheus text page.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	if url == "" {
		return nil, errors.New("no metrics URL")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return testnet.ParseMetrics(resp.Body)
}

// conv is one direction of a conversation, from the two stores.
type conv struct {
	from, to string
	out      []client.Message // the sender's, by counter
	in       []client.Message // the recipient's, by counter
}

// check opens every home and runs the checks; failures go to
// rep.Failures.
func (r *run) check(rep *Report) {
	fail := func(format string, args ...any) {
		if len(rep.Failures) < 50 {
			rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...))
		}
	}
	hist := map[[2]string][]client.Message{} // [owner, contact] → history
	for _, c := range r.clients {
		h, err := readHome(c.home)
		if err != nil {
			fail("open %s: %v", c.name, err)
			continue
		}
		for contact, msgs := range h {
			hist[[2]string{c.name, contact}] = msgs
		}
	}
	t := &rep.Tally
	byName := map[string]*clientProc{}
	for _, c := range r.clients {
		byName[c.name] = c
	}
	for _, a := range r.clients {
		for _, b := range r.clients {
			if a == b {
				continue
			}
			cv := conv{from: a.name, to: b.name}
			for _, m := range hist[[2]string{a.name, b.name}] {
				if m.Direction == client.Outgoing {
					cv.out = append(cv.out, m)
				}
			}
			for _, m := range hist[[2]string{b.name, a.name}] {
				if m.Direction == client.Incoming {
					cv.in = append(cv.in, m)
				}
			}
			r.checkConv(cv, byName[b.name], t, fail)
		}
	}
	for _, c := range r.clients {
		c.mu.Lock()
		t.Late += c.late
		for _, m := range c.recv {
			for _, k := range m {
				t.Shown += k
			}
		}
		c.mu.Unlock()
	}
	d := rep.Disk
	if d.StoreBytes > d.Bound {
		fail("check 4: the relays' stores hold %d bytes, more than %d× their %d live bytes + %d × %d MiB of slack = %d",
			d.StoreBytes, LiveFactor, d.LiveBytes, len(d.PerRelay), DiskSlack>>20, d.Bound)
	}
}

// checkConv checks one direction of a conversation (checks 1–3).
func (r *run) checkConv(cv conv, rcpt *clientProc, t *Tally, fail func(string, ...any)) {
	name := cv.from + "→" + cv.to
	sent := map[uint64]client.Message{} // by body number
	counters := map[uint64]bool{}       // the sender's counters
	for _, m := range cv.out {
		t.Sent++
		from, to, n, ok := ParseBody(m.Body)
		if !ok || from != cv.from || to != cv.to {
			fail("%s: sent message %d has body %q", name, m.Counter, m.Body)
			continue
		}
		sent[n] = m
		counters[m.Counter] = true
	}
	got := map[uint64]int{}
	for _, m := range cv.in {
		t.Delivered++
		from, to, n, ok := ParseBody(m.Body)
		if !ok || from != cv.from || to != cv.to {
			t.Phantoms++
			fail("%s: received a message with body %q", name, m.Body)
			continue
		}
		got[n]++
		if s, ok := sent[n]; !ok || s.Counter != m.Counter {
			t.Phantoms++
			fail("check 1: %s: message %d (counter %d) received, the sender has no such message", name, n, m.Counter)
		}
	}
	// Exactly once: in the store and in the events shown.
	rcpt.mu.Lock()
	shown := maps2(rcpt.recv[cv.from])
	gaps := slices.Clone(rcpt.gaps)
	order := slices.Clone(rcpt.order[cv.from])
	rcpt.mu.Unlock()
	for n, k := range got {
		if k > 1 {
			t.Duplicates++
			fail("check 1: %s: message %d stored %d times by the recipient", name, n, k)
		}
	}
	for n, k := range shown {
		if k > 1 {
			t.Duplicates++
			fail("check 1: %s: message %d shown %d times (MessageReceived)", name, n, k)
		}
	}
	// Sender order: the recipient showed the messages (MessageReceived,
	// over all its runs) in the sender's counter order, Late ones aside.
	// (Seq is no witness: a message held back by a gap keeps the Seq of
	// its arrival.) And the sender's numbers follow its counters.
	var last uint64
	for _, c := range order {
		if c <= last {
			t.OutOfOrder++
			fail("check 1: %s: counter %d shown after counter %d", name, c, last)
		}
		last = max(last, c)
	}
	byCounter := slices.Clone(cv.in)
	slices.SortFunc(byCounter, func(a, b client.Message) int { return cmpU(a.Counter, b.Counter) })
	var lastN uint64
	for _, m := range byCounter {
		_, _, n, ok := ParseBody(m.Body)
		if ok && n < lastN {
			t.OutOfOrder++
			fail("check 1: %s: message %d has a later counter than message %d", name, n, lastN)
		}
		lastN = max(lastN, n)
	}
	// Checks 1 and 2 for every message sent.
	for n, m := range sent {
		switch m.Status {
		case client.StatusStored, client.StatusDelivered:
			t.Stored++
			if m.Status == client.StatusDelivered {
				t.Receipts++
			}
			if got[n] == 0 {
				t.Lost++
				fail("check 1: %s: message %d (counter %d) has a receipt (%s) and was not delivered", name, n, m.Counter, m.Status)
			}
		case client.StatusQueued:
			t.Queued++
		default:
			if got[n] == 0 {
				t.Vanished++
				fail("check 2: %s: message %d (counter %d) is %s and was not delivered", name, n, m.Counter, m.Status)
			}
		}
	}
	// Check 3: gaps.
	for _, g := range gaps {
		if g.Contact != cv.from {
			continue
		}
		t.Gaps++
		for c := g.From; c <= g.To && c-g.From < 1<<20; c++ {
			if counters[c] {
				t.BadGaps++
				fail("check 3: %s: gap %d–%d reported, the sender has counter %d", name, g.From, g.To, c)
				break
			}
		}
	}
}

func maps2(m map[uint64]int) map[uint64]int {
	out := make(map[uint64]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readHome opens a stopped client's home (the CLI's format: key,
// names.json, db/) and returns its histories by contact name.
func readHome(home string) (map[string][]client.Message, error) {
	kb, err := os.ReadFile(filepath.Join(home, "key"))
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(kb)))
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	nb, err := os.ReadFile(filepath.Join(home, "names.json"))
	if err != nil {
		return nil, err
	}
	var names map[string]client.ContactID
	if err := json.Unmarshal(nb, &names); err != nil {
		return nil, fmt.Errorf("names.json: %w", err)
	}
	c, err := client.New(client.Config{DataDir: filepath.Join(home, "db"), EncryptionKey: key})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	out := map[string][]client.Message{}
	for name, id := range names {
		h, err := c.History(id)
		if err != nil {
			return nil, fmt.Errorf("history of %s: %w", name, err)
		}
		out[name] = h
	}
	return out, nil
}

// tally prints the final tally, in the demo's style.
func (r *run) tally(rep *Report) {
	t := rep.Tally
	d := rep.Disk
	r.printf("\nfaults %d  (%s)\n", r.faultTotal(), r.faultSummary())
	r.printf("disk   relays' stores %s for %s live in %d entries (bound %s: %d× live + %d × %d MiB)\n",
		mib(d.StoreBytes), mib(d.LiveBytes), d.LiveEntries, mib(d.Bound), LiveFactor, len(d.PerRelay), DiskSlack>>20)
	r.printf("gaps   %d reported, %d for a message that exists; %d delivered late\n", t.Gaps, t.BadGaps, t.Late)
	verdict := "ok"
	if len(rep.Failures) > 0 {
		verdict = fmt.Sprintf("FAILED (%d checks)", len(rep.Failures))
		for _, f := range rep.Failures {
			r.printf("  %s\n", f)
		}
	}
	r.printf("\ntally  sent %d  stored %d  delivered %d  lost %d  (duplicates %d, out of order %d, phantoms %d, still queued %d, delivery receipts %d/%d)  seed %d  in %.1fs  %s\n",
		t.Sent, t.Stored, t.Delivered, t.Lost, t.Duplicates, t.OutOfOrder, t.Phantoms, t.Queued, t.Receipts, t.Sent, rep.Seed, time.Since(r.start).Seconds(), verdict)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
