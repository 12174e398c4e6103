package client_test

import (
	"testing"

	"github.com/cairn-net/cairn/client"
)

func TestClientConverse(t *testing.T) {
	r := startRelay(t, nil)
	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	bobAtAlice := introduce(t, alice, bob)
	ids := sendAll(t, alice, bobAtAlice, msgs("a", 1, 5))
	aliceAtBob := contactOf(t, bob, alice)
	waitBodies(t, bob, aliceAtBob, client.Incoming, msgs("a", 1, 5))
	sendAll(t, bob, aliceAtBob, msgs("b", 1, 5))
	waitBodies(t, alice, bobAtAlice, client.Incoming, msgs("b", 1, 5))
	for _, id := range ids {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
}
