package client_test

import (
	"testing"

	"github.com/cairn-net/cairn/client"
)

func TestClientConverse(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	converse(t, alice, bob, 5)
}

// converse introduces b to a; a sends n messages, b receives them and
// answers n, a receives those, and a's messages end delivered.
func converse(t *testing.T, a, b *client.Client, n int) {
	t.Helper()
	bAtA := introduce(t, a, b)
	ids := sendAll(t, a, bAtA, msgs("a", 1, n))
	aAtB := contactOf(t, b, a)
	waitBodies(t, b, aAtB, client.Incoming, msgs("a", 1, n))
	sendAll(t, b, aAtB, msgs("b", 1, n))
	waitBodies(t, a, bAtA, client.Incoming, msgs("b", 1, n))
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, a, id) == client.StatusDelivered })
	}
}
