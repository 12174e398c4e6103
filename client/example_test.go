package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
)

// exampleRelay starts a relay on 127.0.0.1 for the examples and returns
// its address and a function that stops it. An app instead uses the
// addresses of public relays (or its own).
func exampleRelay() (addr string, stop func()) {
	dir, err := os.MkdirTemp("", "cairn-example-relay")
	if err != nil {
		log.Fatal(err)
	}
	cfg := relay.DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	cfg.GCInterval = -1
	n, err := relay.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	ai := n.AddrInfo()
	return fmt.Sprintf("%s/p2p/%s", ai.Addrs[0], ai.ID), func() { n.Close(); os.RemoveAll(dir) }
}

// New creates a client: on first use it makes the user's identity and
// stores it in DataDir. The invite is what the user hands to a contact.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "cairn-example")
	defer os.RemoveAll(dir)

	c, err := client.New(client.Config{
		DataDir:       dir,
		EncryptionKey: []byte("an app keeps 32 random bytes...!"), // from the platform keystore
		Bootstrap:     []string{"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWHHzSeKaY8xuZVzkLbKFfvNgPPeKhFBGrMbNzbm5akpqu"},
		Name:          "Alice",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	invite, err := c.Invite() // share as a link; InviteQR for a QR code
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(strings.HasPrefix(invite, "cairn1"))
	// Output: true
}

// Two users exchange an invite and a message; the sender sees the
// message delivered.
func ExampleClient_Send() {
	relayAddr, stop := exampleRelay()
	defer stop()
	ctx := context.Background()

	start := func(name string) *client.Client {
		dir, _ := os.MkdirTemp("", "cairn-example")
		c, err := client.New(client.Config{DataDir: dir, Bootstrap: []string{relayAddr}, Name: name})
		if err != nil {
			log.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			log.Fatal(err)
		}
		return c
	}
	alice, bob := start("Alice"), start("Bob")
	defer alice.Close()
	defer bob.Close()

	// Bob's invite reaches Alice out of band (a link, a QR code).
	invite, _ := bob.Invite()
	contact, err := alice.AcceptInvite(invite)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Alice added", contact.Name)

	// Send returns at once; the message is in Alice's durable outbox.
	id, err := alice.Send(ctx, contact.ID, []byte("hello, Bob"))
	if err != nil {
		log.Fatal(err)
	}

	// Bob's client learns of Alice from her first message.
	for ev := range bob.Events() {
		if m, ok := ev.(client.MessageReceived); ok {
			fmt.Printf("Bob received %q\n", m.Message.Body)
			break
		}
	}
	// Alice's client follows the message: stored at a relay, then
	// delivered (Bob's client sent an encrypted delivery receipt).
	for ev := range alice.Events() {
		if s, ok := ev.(client.StatusChanged); ok && s.ID == id {
			fmt.Println("status:", s.Status)
			if s.Status == client.StatusDelivered {
				break
			}
		}
	}
	// Output:
	// Alice added Bob
	// Bob received "hello, Bob"
	// status: stored
	// status: delivered
}

// An app's event loop: react to what the client reports. (Compile-only:
// it runs until the client is closed.)
func ExampleClient_Events() {
	var c *client.Client // created with client.New and started
	for ev := range c.Events() {
		switch ev := ev.(type) {
		case client.MessageReceived:
			fmt.Printf("%s: %s\n", ev.Message.Contact, ev.Message.Body)
		case client.StatusChanged:
			fmt.Printf("message %s is %s\n", ev.ID, ev.Status)
		case client.GapDetected:
			fmt.Printf("messages %d…%d from %s were lost\n", ev.From, ev.To, ev.Contact)
		case client.ContactAdded:
			fmt.Printf("new contact %s (verify %s)\n", ev.Contact.ID, ev.Contact.Fingerprint())
		case client.EventsDropped:
			// The app fell behind: re-read History and statuses.
		}
	}
}

// History returns a conversation; each direction is in its sender's
// order. (Compile-only.)
func ExampleClient_History() {
	var c *client.Client
	var contact client.ContactID
	msgs, err := c.History(contact)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		who := "them"
		if m.Direction == client.Outgoing {
			who = "me (" + m.Status.String() + ")"
		}
		fmt.Printf("%s %s: %s\n", m.SentAt.Format(time.Kitchen), who, m.Body)
	}
}

// A short-lived process (a command-line tool) goes online, does one thing
// and leaves: WaitReady before it picks relays, Flush before Close so that
// its messages and delivery receipts have left with it.
func ExampleClient_Flush() {
	relayAddr, stop := exampleRelay()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	aliceDir, _ := os.MkdirTemp("", "cairn-example")
	defer os.RemoveAll(aliceDir)
	bobDir, _ := os.MkdirTemp("", "cairn-example")
	defer os.RemoveAll(bobDir)

	// run opens a user's client, runs f online, flushes and closes.
	run := func(dir string, f func(c *client.Client) error) {
		c, err := client.New(client.Config{DataDir: dir, Bootstrap: []string{relayAddr}})
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		if err := c.Start(ctx); err != nil {
			log.Fatal(err)
		}
		if err := c.WaitReady(ctx); err != nil {
			log.Fatal(err) // ErrNoRelay: offline; what f queues would wait in the outbox
		}
		if err := f(c); err != nil {
			log.Fatal(err)
		}
		if err := c.Flush(ctx); err != nil {
			log.Fatal(err)
		}
		fmt.Println("left to send:", c.Pending())
	}

	var bobInvite string
	run(bobDir, func(bob *client.Client) (err error) {
		bobInvite, err = bob.Invite()
		return err
	})
	var id client.MessageID
	run(aliceDir, func(alice *client.Client) error {
		bob, err := alice.AcceptInvite(bobInvite)
		if err != nil {
			return err
		}
		id, err = alice.Send(ctx, bob.ID, []byte("see you at 6"))
		return err
	})
	run(bobDir, func(bob *client.Client) error {
		if err := bob.Sync(ctx); err != nil {
			return err
		}
		for _, ct := range bob.Contacts() {
			msgs, _ := bob.History(ct.ID)
			for _, m := range msgs {
				fmt.Printf("bob has %q\n", m.Body)
			}
		}
		return nil
	})
	run(aliceDir, func(alice *client.Client) error {
		if err := alice.Sync(ctx); err != nil {
			return err
		}
		m, err := alice.Message(id)
		fmt.Println("alice's message is", m.Status)
		return err
	})
	// Output:
	// left to send: 0
	// left to send: 0
	// bob has "see you at 6"
	// left to send: 0
	// alice's message is delivered
	// left to send: 0
}
