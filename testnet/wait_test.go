package testnet_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-net/cairn/testnet"
)

// WaitFor returns as soon as the condition holds, and otherwise fails
// with a message naming what was awaited and the condition's last answer.
func TestWaitForMessage(t *testing.T) {
	n := 0
	if err := testnet.WaitFor(context.Background(), func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}, "three polls"); err != nil || n != 3 {
		t.Fatalf("WaitFor: %v after %d polls", err, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err := testnet.WaitFor(ctx, testnet.Cond(func() bool { return false }, "relay-03 has 2 peers"), "routing tables")
	if err == nil || !strings.Contains(err.Error(), "routing tables") || !strings.Contains(err.Error(), "relay-03 has 2 peers") {
		t.Fatalf("error %v", err)
	}
}
