package adversary

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

func TestMain(m *testing.M) {
	// Sample the heap finely, so Measure attributes memory to the relay
	// within a few KiB.
	runtime.MemProfileRate = 8 << 10
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// recorder keeps every event a client emits.
type recorder struct {
	mu   sync.Mutex
	evs  []client.Event
	done chan struct{}
}

// record drains c's events until c closes.
func record(c *client.Client) *recorder {
	r := &recorder{done: make(chan struct{})}
	ch := c.Events()
	go func() {
		defer close(r.done)
		for ev := range ch {
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

// received returns the bodies of MessageReceived events from contact, in
// event order.
func (r *recorder) received(contact client.ContactID) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.evs {
		if m, ok := ev.(client.MessageReceived); ok && m.Message.Contact == contact {
			out = append(out, string(m.Message.Body))
		}
	}
	return out
}

// gaps returns the GapDetected events.
func (r *recorder) gaps() []client.GapDetected {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []client.GapDetected
	for _, ev := range r.evs {
		if g, ok := ev.(client.GapDetected); ok {
			out = append(out, g)
		}
	}
	return out
}

// dropped reports whether an EventsDropped was seen (events would then be
// incomplete and a test on them meaningless).
func (r *recorder) dropped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.evs {
		if _, ok := ev.(client.EventsDropped); ok {
			return true
		}
	}
	return false
}

// introduce makes a and b contacts of each other and returns b's ID at a
// and a's ID at b.
func introduce(t testing.TB, a, b *client.Client) (bAtA, aAtB client.ContactID) {
	t.Helper()
	ib, err := b.Invite()
	if err != nil {
		t.Fatal(err)
	}
	ia, err := a.Invite()
	if err != nil {
		t.Fatal(err)
	}
	cb, err := a.AcceptInvite(ib)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := b.AcceptInvite(ia)
	if err != nil {
		t.Fatal(err)
	}
	return cb.ID, ca.ID
}

// history returns the bodies of a conversation in one direction, in
// History order, with how many times each counter appears.
func history(t testing.TB, c *client.Client, contact client.ContactID, dir client.Direction) []string {
	t.Helper()
	h, err := c.History(contact)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range h {
		if m.Direction == dir {
			out = append(out, string(m.Body))
		}
	}
	return out
}

// eventually waits (at most testnet.DefaultTimeout) for cond.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	testnet.Eventually(t, cond, what)
}

// waitHistory waits until c's conversation with contact in direction dir
// is exactly want.
func waitHistory(t testing.TB, c *client.Client, contact client.ContactID, dir client.Direction, want []string) {
	t.Helper()
	eventually(t, fmt.Sprintf("history %q", want), func() error {
		if got := history(t, c, contact, dir); !slices.Equal(got, want) {
			return fmt.Errorf("have %q", got)
		}
		return nil
	})
}

// checkShown checks what the user of c sees of contact's messages: the
// history and the MessageReceived events hold exactly want, once each, in
// order, and no gap was reported unless gaps is true.
func checkShown(t testing.TB, c *client.Client, rec *recorder, contact client.ContactID, want []string, gapsOK bool) {
	t.Helper()
	waitHistory(t, c, contact, client.Incoming, want)
	eventually(t, "events", func() error {
		if got := rec.received(contact); !slices.Equal(got, want) {
			return fmt.Errorf("MessageReceived events %q, want %q", got, want)
		}
		return nil
	})
	if rec.dropped() {
		t.Fatal("events were dropped: the event check is incomplete")
	}
	if g := rec.gaps(); len(g) > 0 && !gapsOK {
		t.Fatalf("gap reported for messages that exist: %+v", g)
	}
}

func send(t testing.TB, c *client.Client, to client.ContactID, bodies ...string) []client.MessageID {
	t.Helper()
	var ids []client.MessageID
	for _, b := range bodies {
		id, err := c.Send(context.Background(), to, []byte(b))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func status(t testing.TB, c *client.Client, id client.MessageID) client.Status {
	t.Helper()
	m, err := c.Message(id)
	if err != nil {
		t.Fatal(err)
	}
	return m.Status
}

// waitStored waits until every message is at least stored.
func waitStored(t testing.TB, c *client.Client, ids ...client.MessageID) {
	t.Helper()
	eventually(t, "messages stored", func() error {
		for _, id := range ids {
			if st := status(t, c, id); st == client.StatusQueued {
				return fmt.Errorf("%s still queued", id)
			}
		}
		return nil
	})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testnet.DefaultTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitCount waits until the rogue counted name at least n times.
func waitCount(t testing.TB, r *Rogue, name string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("rogue event %q ×%d", name, n), func() error {
		if got := r.Count(name); got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

var errNotYet = errors.New("not yet")

// prekeyCount returns how many one-time X25519 prekeys relay r holds for
// mailbox mb.
func prekeyCount(t testing.TB, r *relay.Node, mb wire.Mailbox) int {
	t.Helper()
	got, err := r.Store().PutPrekeys(context.Background(), mb, uint8(ratchet.KindX25519), nil, 200)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// settle lets background work run for d (used only where a test checks
// that something does NOT happen; never to wait for something).
func settle(d time.Duration) { time.Sleep(d) }
