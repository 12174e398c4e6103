package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/relay"
)

func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(runChild(name))
	}
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// testRelay is a real relay on 127.0.0.1 that can be stopped and started
// again on the same port with the same identity and data.
type testRelay struct {
	t    testing.TB
	cfg  relay.Config
	node *relay.Node
	addr string // multiaddr with /p2p/
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRelay starts a relay with the defaults of relay.DefaultConfig on
// 127.0.0.1, adjusted by mod.
func startRelay(t testing.TB, mod func(*relay.Config)) *testRelay {
	t.Helper()
	cfg := relay.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ListenAddrs = []ma.Multiaddr{ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t)))}
	cfg.DrainTimeout = 2 * time.Second
	cfg.GCInterval = -1
	if mod != nil {
		mod(&cfg)
	}
	r := &testRelay{t: t, cfg: cfg}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *testRelay) start() {
	r.t.Helper()
	if r.node != nil {
		return
	}
	n, err := relay.New(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		r.t.Fatal(err)
	}
	r.node = n
	r.addr = fmt.Sprintf("%s/p2p/%s", r.cfg.ListenAddrs[0], n.ID())
}

func (r *testRelay) stop() {
	if r.node == nil {
		return
	}
	if err := r.node.Close(); err != nil {
		r.t.Errorf("relay close: %v", err)
	}
	r.node = nil
}

func addrs(rs ...*testRelay) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.addr)
	}
	return out
}

// testConfig is a client config for tests: short retry bounds and gap
// grace, so that tests run fast; nothing asserts on time.
func testConfig(dir string, relays []string) client.Config {
	return client.Config{
		DataDir:       dir,
		EncryptionKey: []byte("0123456789abcdef0123456789abcdef"),
		Bootstrap:     relays,
		RetryMin:      20 * time.Millisecond,
		RetryMax:      300 * time.Millisecond,
		GapGrace:      time.Second,
		SyncInterval:  2 * time.Second,
		Timeout:       5 * time.Second,
		EventBuffer:   4096,
		Logger:        testLogger(),
	}
}

// testLogger logs to stderr at debug level when CAIRN_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CAIRN_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newClient creates and starts a client; it is closed at the end of the
// test.
func newClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		c.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds. The deadline only turns a hang into a
// failure; nothing depends on how long it takes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

// contactOf returns the ID of the contact with identity of other at c,
// waiting for it to appear.
func contactOf(t testing.TB, c, other *client.Client) client.ContactID {
	t.Helper()
	want := other.Identity()
	var id client.ContactID
	waitFor(t, "contact to appear", func() bool {
		for _, ct := range c.Contacts() {
			if ct.Identity == want {
				id = ct.ID
				return true
			}
		}
		return false
	})
	return id
}

// bodies returns the bodies of one direction of a conversation, in order.
func bodies(t testing.TB, c *client.Client, id client.ContactID, dir client.Direction) []string {
	t.Helper()
	h, err := c.History(id)
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

// waitBodies waits until one direction of a conversation holds want.
func waitBodies(t testing.TB, c *client.Client, id client.ContactID, dir client.Direction, want []string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d messages", len(want)), func() bool {
		got := bodies(t, c, id, dir)
		if len(got) > len(want) {
			t.Fatalf("more messages than sent: %d > %d", len(got), len(want))
		}
		return len(got) == len(want)
	})
	if got := bodies(t, c, id, dir); !slices.Equal(got, want) {
		t.Fatalf("messages:\n got %s\nwant %s", short(got), short(want))
	}
}

func short(s []string) string {
	if len(s) > 20 {
		return strings.Join(s[:10], ",") + ",…," + strings.Join(s[len(s)-10:], ",")
	}
	return strings.Join(s, ",")
}

func msgs(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

func sendAll(t testing.TB, c *client.Client, to client.ContactID, bodies []string) []client.MessageID {
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
