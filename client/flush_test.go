package client_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-net/cairn/client"
)

// Flush returns once what was queued is stored: the sent messages are
// stored the moment it returns, and the delivery receipts and acks of what
// a client received have left with it, so the relay has dropped the
// entries and the receipts reach the sender although the recipient closes
// right after Flush.
func TestClientFlush(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	want := msgs("a", 1, 5)
	ids := sendAll(t, alice, bobAtAlice, want)
	if err := alice.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if st := status(t, alice, id); st != client.StatusStored && st != client.StatusDelivered {
			t.Fatalf("status after Flush: %v, want stored", st)
		}
	}
	if n := alice.Pending(); n != 0 {
		t.Fatalf("Pending after Flush: %d", n)
	}

	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, want)
	if err := bob.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := bob.Pending(); n != 0 {
		t.Fatalf("Pending after Flush: %d", n)
	}
	// The received entries were acked: the relay dropped them.
	if n := len(mailboxEntries(t, r, bob.Mailbox())); n != 0 {
		t.Fatalf("the relay still holds %d of bob's entries after his Flush", n)
	}
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
}

// recordHandler is a slog handler that notes whether a message was logged.
type recordHandler struct {
	msg  string
	seen *atomic.Bool
}

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.msg) {
		h.seen.Store(true)
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

// Flush tries at once what waits for a retry: with retries an hour apart,
// a message whose first attempt failed (its relay was down) is stored as
// soon as Flush is called with the relay back. While no relay takes it,
// Flush returns when its context ends, saying what is left.
func TestClientFlushRetriesAtOnce(t *testing.T) {
	r := startRelay(t, nil)
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	r.stop()

	var failed atomic.Bool
	cfg := testConfig(t.TempDir(), addrs(r))
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour
	cfg.Logger = slog.New(recordHandler{msg: "entries stay queued for a retry", seen: &failed})
	alice := newClient(t, cfg)
	id := sendAll(t, alice, introduce(t, alice, bob), []string{"hello"})[0]
	if n := alice.Pending(); n != 1 {
		t.Fatalf("Pending with one message queued: %d", n)
	}
	waitFor(t, "a failed deposit attempt", failed.Load)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := alice.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 of 1 entries still queued") {
		t.Fatalf("Flush with the relay down: %v", err)
	}
	if st := status(t, alice, id); st != client.StatusQueued {
		t.Fatalf("status with the relay down: %v", st)
	}

	r.start()
	if err := alice.Flush(ctxT(t)); err != nil {
		t.Fatalf("Flush with the relay back: %v", err)
	}
	if st := status(t, alice, id); st != client.StatusStored && st != client.StatusDelivered {
		t.Fatalf("status after Flush: %v, want stored", st)
	}
}

// Flush and Pending outside a run: Flush needs Start; Pending counts the
// queue offline, and after Close what Close left.
func TestClientFlushStates(t *testing.T) {
	a, err := client.New(testConfig(t.TempDir(), nil))
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.New(testConfig(t.TempDir(), nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := a.Pending(); n != 0 {
		t.Fatalf("Pending of a new client: %d", n)
	}
	sendAll(t, a, introduce(t, a, b), msgs("m", 1, 2))
	if n := a.Pending(); n != 2 {
		t.Fatalf("Pending offline: %d, want 2", n)
	}
	if err := a.Flush(ctxT(t)); !errors.Is(err, client.ErrNotStarted) {
		t.Fatalf("Flush before Start: %v, want ErrNotStarted", err)
	}
	a.Close()
	if err := a.Flush(ctxT(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Flush after Close: %v, want ErrClosed", err)
	}
	if n := a.Pending(); n != 2 {
		t.Fatalf("Pending after Close: %d, want 2", n)
	}
}
