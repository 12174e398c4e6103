package client_test

import (
	"slices"
	"strconv"
	"testing"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
)

// countIncoming opens a client's database (without starting it) and
// returns the bodies of its incoming messages, per contact in order.
func storedBodies(t *testing.T, cfg client.Config, dir client.Direction) []string {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out []string
	for _, ct := range c.Contacts() {
		out = append(out, bodies(t, c, ct.ID, dir)...)
	}
	return out
}

// The recipient's process is killed with SIGKILL in the middle of syncing
// a backlog (twice), then restarted: every message is there exactly once,
// in the sender's order, and the conversation goes on in both directions.
func TestClientRecipientKilledMidSync(t *testing.T) {
	r := startRelay(t, func(c *relay.Config) { c.MaxPageEntries = 8 })
	dir := t.TempDir()
	env := []string{"CAIRN_DIR=" + dir, "CAIRN_RELAYS=" + r.addr}
	inv := startChild(t, "invite", env...)
	invite := inv.expect("INVITE ")
	inv.wait()

	alice := newClient(t, testConfig(t.TempDir(), addrs(r)))
	ct, err := alice.AcceptInvite(invite)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	want := msgs("a", 1, n)
	ids := sendAll(t, alice, ct.ID, want)
	waitFor(t, "all stored", func() bool {
		return status(t, alice, ids[n-1]) >= client.StatusStored && status(t, alice, ids[0]) >= client.StatusStored
	})

	midSync := 0
	for _, killAt := range []int{30, 150} {
		ch := startChild(t, "recv", append(env, "CAIRN_N="+strconv.Itoa(n))...)
		for {
			h, _ := strconv.Atoi(ch.expect("HAVE "))
			if h >= killAt {
				break
			}
		}
		ch.kill()
		got := storedBodies(t, testConfig(dir, addrs(r)), client.Incoming)
		if len(got) < n {
			midSync++
		}
		if !slices.Equal(got, want[:len(got)]) {
			t.Fatalf("after kill: stored %s, want a prefix of the sent messages", short(got))
		}
	}
	if midSync == 0 {
		t.Fatal("the recipient was never killed in the middle of its sync")
	}
	ch := startChild(t, "recv", append(env, "CAIRN_N="+strconv.Itoa(n))...)
	ch.expect("DONE")
	ch.wait()
	if got := storedBodies(t, testConfig(dir, addrs(r)), client.Incoming); !slices.Equal(got, want) {
		t.Fatalf("after restart: got %d messages %s, want %d", len(got), short(got), n)
	}

	// The recipient, restarted in this process, answers; the sender sees
	// its messages delivered.
	bob := newClient(t, testConfig(dir, addrs(r)))
	aliceAtBob := contactOf(t, bob, alice)
	sendAll(t, bob, aliceAtBob, msgs("b", 1, 3))
	waitBodies(t, alice, ct.ID, client.Incoming, msgs("b", 1, 3))
	waitBodies(t, bob, aliceAtBob, client.Incoming, want)
	for _, id := range []client.MessageID{ids[0], ids[n-1]} {
		waitFor(t, "delivered", func() bool { return status(t, alice, id) == client.StatusDelivered })
	}
}

// A sender killed with a full outbox (its relay down) and killed again in
// the middle of depositing resends everything after a restart, and the
// recipient has every message exactly once, in order.
func TestClientSenderKilledWithFullOutbox(t *testing.T) {
	// A low deposit rate spreads the deposits out, so that the kill lands
	// in the middle of them.
	r := startRelay(t, func(c *relay.Config) { c.PeerDepositRate = 100; c.PeerDepositBurst = 10 })
	bob := newClient(t, testConfig(t.TempDir(), addrs(r)))
	invite, err := bob.Invite()
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	dir := t.TempDir()
	env := []string{"CAIRN_DIR=" + dir, "CAIRN_RELAYS=" + r.addr, "CAIRN_INVITE=" + invite, "CAIRN_N=" + strconv.Itoa(n), "CAIRN_PREFIX=s"}

	r.stop()
	ch := startChild(t, "send", env...)
	ch.expect("SENT")
	ch.kill()
	if got := storedBodies(t, testConfig(dir, nil), client.Outgoing); len(got) != n {
		t.Fatalf("outbox holds %d messages, want %d", len(got), n)
	}

	r.start()
	ch = startChild(t, "resume", env...)
	var bobID client.ContactID
	waitFor(t, "first messages at the recipient", func() bool {
		for _, ct := range bob.Contacts() {
			bobID = ct.ID
			return len(bodies(t, bob, ct.ID, client.Incoming)) >= 20
		}
		return false
	})
	ch.kill()
	if got := len(bodies(t, bob, bobID, client.Incoming)); got >= n {
		t.Fatalf("the sender was not killed in the middle of its deposits (%d of %d arrived)", got, n)
	}

	ch = startChild(t, "resume", env...)
	ch.expect("DONE")
	ch.wait()
	waitBodies(t, bob, bobID, client.Incoming, msgs("s", 1, n))
	if err := bob.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := bodies(t, bob, bobID, client.Incoming); len(got) != n {
		t.Fatalf("after a further sync: %d messages, want %d", len(got), n)
	}
}
