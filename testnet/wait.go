package testnet

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// WaitFor polls cond until it returns nil, and returns nil then. cond's
// error says what is still missing ("relay-03 has 2 peers, want 4"): when
// ctx ends first, WaitFor returns an error naming what was waited for,
// how long, and cond's last answer. Polling starts at 1 ms and backs off to
// 50 ms.
func WaitFor(ctx context.Context, cond func() error, what string) error {
	start := time.Now()
	delay := time.Millisecond
	var last error
	polls := 0
	for {
		polls++
		if last = cond(); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v (%d polls) waiting for %s: %w",
				time.Since(start).Round(time.Millisecond), polls, what, last)
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// Eventually is WaitFor for tests: it waits at most DefaultTimeout and
// fails the test with WaitFor's message.
func Eventually(t testing.TB, cond func() error, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	if err := WaitFor(ctx, cond, what); err != nil {
		t.Fatal(err)
	}
}

// Cond turns a predicate into a condition for WaitFor, with a fixed
// message while it does not hold.
func Cond(f func() bool, missing string) func() error {
	return func() error {
		if f() {
			return nil
		}
		return errors.New(missing)
	}
}
