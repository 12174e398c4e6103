package testnet_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/testnet"
)

// bodies returns the bodies of a conversation's messages in one direction.
func bodies(t testing.TB, c *client.Client, contact client.ContactID, dir client.Direction) []string {
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

// contactOf waits until c knows other as a contact and returns its ID.
func contactOf(t testing.TB, c, other *client.Client) client.ContactID {
	t.Helper()
	var id client.ContactID
	testnet.Eventually(t, func() error {
		for _, ct := range c.Contacts() {
			if ct.Identity == other.Identity() {
				id = ct.ID
				return nil
			}
		}
		return errors.New("contact not there yet")
	}, "the contact to appear")
	return id
}

func waitBodies(t testing.TB, c *client.Client, contact client.ContactID, dir client.Direction, want []string) {
	t.Helper()
	testnet.Eventually(t, func() error {
		if got := bodies(t, c, contact, dir); !slices.Equal(got, want) {
			return fmt.Errorf("have %q", got)
		}
		return nil
	}, fmt.Sprintf("messages %q", want))
}

// introduce makes b a contact of a (a accepts b's invite) and returns b's
// contact ID at a.
func introduce(t testing.TB, a, b *client.Client) client.ContactID {
	t.Helper()
	inv, err := b.Invite()
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.AcceptInvite(inv)
	if err != nil {
		t.Fatal(err)
	}
	return ct.ID
}

func send(t testing.TB, c *client.Client, to client.ContactID, body string) client.MessageID {
	t.Helper()
	id, err := c.Send(context.Background(), to, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func status(t testing.TB, c *client.Client, id client.MessageID) client.Status {
	t.Helper()
	m, err := c.Message(id)
	if err != nil {
		t.Fatal(err)
	}
	return m.Status
}

// Two clients converse both ways through a 3-relay cluster; then one is
// isolated (its sync finds no relay, its message stays queued) and healed
// (the message is stored and delivered); then the other goes offline and
// comes back to find what was sent meanwhile.
func TestConversationThroughCluster(t *testing.T) {
	c := testnet.New(t, testnet.WithRelays(3), testnet.WithClients(2), testnet.WithLogger(testLogger()))
	alice, bob := c.Clients[0], c.Clients[1]
	bobAtAlice := introduce(t, alice.Client(), bob.Client())
	send(t, alice.Client(), bobAtAlice, "hello bob")
	aliceAtBob := contactOf(t, bob.Client(), alice.Client())
	waitBodies(t, bob.Client(), aliceAtBob, client.Incoming, []string{"hello bob"})
	reply := send(t, bob.Client(), aliceAtBob, "hello alice")
	waitBodies(t, alice.Client(), bobAtAlice, client.Incoming, []string{"hello alice"})
	testnet.Eventually(t, testnet.Cond(func() bool {
		return status(t, bob.Client(), reply) == client.StatusDelivered
	}, "reply not delivered"), "the reply's delivery receipt")

	// Alice is cut off from every relay.
	c.Isolate(alice)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := alice.Client().Sync(ctx); !errors.Is(err, client.ErrNoRelay) {
		t.Fatalf("sync of an isolated client: %v, want ErrNoRelay", err)
	}
	send(t, alice.Client(), bobAtAlice, "while isolated")
	c.Heal()
	waitBodies(t, bob.Client(), aliceAtBob, client.Incoming, []string{"hello bob", "while isolated"})

	// Bob goes offline; Alice writes; Bob comes back and catches up.
	if err := bob.Offline(); err != nil {
		t.Fatal(err)
	}
	if bob.Client() != nil {
		t.Fatal("offline client still there")
	}
	late := send(t, alice.Client(), bobAtAlice, "while you were away")
	testnet.Eventually(t, testnet.Cond(func() bool {
		return status(t, alice.Client(), late) == client.StatusStored
	}, "not stored"), "the message to an offline client to be stored")
	if err := bob.Online(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitBodies(t, bob.Client(), aliceAtBob, client.Incoming, []string{"hello bob", "while isolated", "while you were away"})
}
