package client_test

import (
	"context"
	"errors"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/client"
)

// The zero Config works: an in-memory client that can make invites and
// queue messages offline.
func TestClientZeroConfig(t *testing.T) {
	a, err := client.New(client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := client.New(client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	inv, err := b.InviteQR()
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.AcceptInvite(inv)
	if err != nil {
		t.Fatal(err)
	}
	id, err := a.Send(context.Background(), ct.ID, []byte("queued offline"))
	if err != nil {
		t.Fatal(err)
	}
	if st := status(t, a, id); st != client.StatusQueued {
		t.Fatalf("status %v", st)
	}
	if _, err := a.AcceptInvite(mustInvite(t, a)); !errors.Is(err, client.ErrSelf) {
		t.Fatalf("own invite: %v", err)
	}
	if err := a.Sync(context.Background()); !errors.Is(err, client.ErrNotStarted) {
		t.Fatalf("Sync before Start: %v", err)
	}
	if _, err := a.Send(context.Background(), ct.ID, make([]byte, client.MaxBody+1)); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
	if _, err := a.Send(context.Background(), "nobody", []byte("x")); !errors.Is(err, client.ErrUnknownContact) {
		t.Fatalf("unknown contact: %v", err)
	}
}

func mustInvite(t *testing.T, c *client.Client) string {
	t.Helper()
	s, err := c.Invite()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A database is opened only with its key; the identity survives a
// restart; bad configuration is refused.
func TestClientConfigAndReopen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, nil)
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := c.Identity()
	c.Close()
	c, err = client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity() != id {
		t.Fatal("identity changed across a restart")
	}
	// A second client on the same directory is refused (one writer).
	if c2, err := client.New(cfg); err == nil {
		c2.Close()
		t.Fatal("two clients opened one database")
	}
	c.Close()
	wrong := cfg
	wrong.EncryptionKey = []byte("another key of exactly 32 bytes!")
	// cmd/cairn tells a wrong key from other failures by badger's error.
	if c, err := client.New(wrong); !errors.Is(err, badger.ErrEncryptionKeyMismatch) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("opened with the wrong encryption key: %v", err)
	}
	for _, bad := range []client.Config{
		{EncryptionKey: []byte("short")},
		{Bootstrap: []string{"not a multiaddr"}},
		{Bootstrap: []string{"/ip4/127.0.0.1/tcp/1"}}, // no /p2p/
	} {
		if c, err := client.New(bad); err == nil {
			c.Close()
			t.Errorf("config %+v accepted", bad)
		}
	}
}
