package storetest

import (
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// ClientOpener opens client stores for the suite.
type ClientOpener struct {
	Name       string
	Persistent bool
	// Open opens a client store in dir with opts (Dir is set by Open).
	Open func(t testing.TB, dir string, opts store.ClientOptions) *store.Client
}

// RunClient runs the client-store conformance suite.
func RunClient(t *testing.T, o ClientOpener) {
	tests := []struct {
		name string
		f    func(*testing.T, ClientOpener)
	}{
		{"Identity", testClientIdentity},
		{"Prekeys", testClientPrekeys},
		{"ContactsSessions", testClientContactsSessions},
		{"Outbox", testClientOutbox},
		{"Received", testClientReceived},
		{"Reopen", testClientReopen},
	}
	for _, tc := range tests {
		if tc.name == "Reopen" && !o.Persistent {
			continue // nothing survives Close in this backend
		}
		t.Run("StoreClient"+tc.name, func(t *testing.T) { tc.f(t, o) })
	}
}

type clientEnv struct {
	t     *testing.T
	o     ClientOpener
	dir   string
	opts  store.ClientOptions
	c     *store.Client
	clock *Clock
}

func newClientEnv(t *testing.T, o ClientOpener) *clientEnv {
	key := make([]byte, 32)
	rand.Read(key)
	e := &clientEnv{t: t, o: o, dir: t.TempDir(), clock: NewClock()}
	e.opts = store.ClientOptions{EncryptionKey: key, Now: e.clock.Now}
	e.c = o.Open(t, e.dir, e.opts)
	t.Cleanup(func() { e.c.Close() })
	return e
}

func (e *clientEnv) reopen() {
	if err := e.c.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.c = e.o.Open(e.t, e.dir, e.opts)
}

func testClientIdentity(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	if _, err := e.c.Identity(); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("empty identity: %v", err)
	}
	if err := e.c.PutIdentity([]byte("id-v1")); err != nil {
		t.Fatal(err)
	}
	if b, err := e.c.Identity(); err != nil || string(b) != "id-v1" {
		t.Fatalf("identity %q %v", b, err)
	}
	e.c.Close()
	if _, err := e.c.Identity(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("identity after close: %v", err)
	}
	if err := e.c.PutIdentity(nil); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if err := e.c.Close(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

func testClientPrekeys(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	var ps []store.Prekey
	for i := 0; i < 10; i++ {
		ps = append(ps, store.Prekey{Kind: 1, ID: uint64(i), Blob: []byte{byte(i)}})
	}
	if err := e.c.PutPrekeys(ps); err != nil {
		t.Fatal(err)
	}
	if err := e.c.PutPrekeys(ps[:1]); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate prekey: %v", err)
	}
	// Concurrent uses of one prekey: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.c.UsePrekey(1, 3)
			switch {
			case err == nil:
				if p.Blob[0] != 3 {
					t.Error("wrong blob")
				}
				wins.Add(1)
			case errors.Is(err, store.ErrPrekeyUsed):
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d uses of one prekey succeeded", wins.Load())
	}
	if _, err := e.c.UsePrekey(1, 99); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown prekey: %v", err)
	}
	all, _ := e.c.Prekeys(1)
	used := 0
	for _, p := range all {
		if p.Used {
			used++
		}
	}
	if len(all) != 10 || used != 1 {
		t.Fatalf("%d prekeys, %d used", len(all), used)
	}
	e.c.DeletePrekey(1, 3)
	if all, _ := e.c.Prekeys(1); len(all) != 9 {
		t.Fatalf("after delete: %d", len(all))
	}
}

func testClientContactsSessions(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	e.c.PutContact(store.Contact{ID: "alice", Data: []byte("a")})
	e.c.PutContact(store.Contact{ID: "bob", Data: []byte("b")})
	if err := e.c.PutContact(store.Contact{}); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("empty contact ID: %v", err)
	}
	cs, _ := e.c.Contacts()
	if len(cs) != 2 {
		t.Fatalf("contacts %v", cs)
	}
	if c, err := e.c.Contact("alice"); err != nil || string(c.Data) != "a" {
		t.Fatalf("contact %v %v", c, err)
	}
	for _, id := range []string{"s1", "s2"} {
		if err := e.c.PutSession(store.Session{Contact: "alice", ID: id, State: []byte(id), UpdatedAt: e.clock.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	e.c.PutSession(store.Session{Contact: "bob", ID: "s1", State: []byte("bob")})
	ss, _ := e.c.Sessions("alice")
	if len(ss) != 2 || string(ss[1].State) != "s2" || !ss[0].UpdatedAt.Equal(e.clock.Now()) {
		t.Fatalf("sessions %v", ss)
	}
	e.c.DeleteContact("alice")
	if ss, _ := e.c.Sessions("alice"); len(ss) != 0 {
		t.Fatalf("sessions after contact delete: %v", ss)
	}
	if s, err := e.c.Session("bob", "s1"); err != nil || string(s.State) != "bob" {
		t.Fatalf("bob's session %v %v", s, err)
	}
}

func testClientOutbox(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	now := e.clock.Now()
	mk := func(i byte, prio uint8, next time.Duration) store.OutboxEntry {
		return store.OutboxEntry{ID: store.OutboxID{i}, Contact: "bob", Envelope: []byte{i}, CID: wire.CIDOf([]byte{i}),
			Priority: prio, NextAttempt: now.Add(next)}
	}
	sess := store.Session{Contact: "bob", ID: "s", State: []byte("after-1")}
	if err := e.c.Enqueue(mk(1, 0, 0), &sess); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Enqueue(mk(1, 0, 0), nil); !errors.Is(err, store.ErrExists) {
		t.Fatalf("re-enqueue: %v", err)
	}
	if s, _ := e.c.Session("bob", "s"); string(s.State) != "after-1" {
		t.Fatal("session not stored with the outbox entry")
	}
	e.c.Enqueue(mk(2, 5, 0), nil)
	e.c.Enqueue(mk(3, 0, time.Hour), nil)
	e.c.Enqueue(mk(4, 9, -time.Second), nil)
	due, err := e.c.DueOutbox(now, 0)
	if err != nil || len(due) != 3 || due[0].ID[0] != 4 || due[1].ID[0] != 2 || due[2].ID[0] != 1 {
		t.Fatalf("due: %v %v", due, err)
	}
	if due[0].Status != store.OutboxQueued {
		t.Fatalf("status %v", due[0].Status)
	}
	err = e.c.UpdateOutbox(store.OutboxID{4}, func(o *store.OutboxEntry) error {
		o.Status = store.OutboxStored
		o.Retries++
		o.NextAttempt = now.Add(time.Minute)
		o.Receipts = append(o.Receipts, []byte("receipt"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.c.UpdateOutbox(store.OutboxID{2}, func(o *store.OutboxEntry) error { o.Status = store.OutboxDelivered; return nil })
	due, _ = e.c.DueOutbox(now, 0)
	if len(due) != 1 || due[0].ID[0] != 1 {
		t.Fatalf("due after updates: %v", due)
	}
	due, _ = e.c.DueOutbox(now.Add(2*time.Hour), 2)
	if len(due) != 2 || due[0].ID[0] != 4 {
		t.Fatalf("due later: %v", due)
	}
	got, _ := e.c.Outbox(store.OutboxID{4})
	if got.Status != store.OutboxStored || got.Retries != 1 || len(got.Receipts) != 1 || string(got.Receipts[0]) != "receipt" {
		t.Fatalf("entry %+v", got)
	}
	bad := errors.New("no")
	if err := e.c.UpdateOutbox(store.OutboxID{4}, func(o *store.OutboxEntry) error { o.Retries = 99; return bad }); !errors.Is(err, bad) {
		t.Fatal(err)
	}
	if got, _ := e.c.Outbox(store.OutboxID{4}); got.Retries != 1 {
		t.Fatal("failed update was written")
	}
	e.c.DeleteOutbox(store.OutboxID{1})
	all, _ := e.c.OutboxEntries()
	if len(all) != 3 {
		t.Fatalf("entries %d", len(all))
	}
	if due, _ := e.c.DueOutbox(now.Add(2*time.Hour), 0); len(due) != 2 {
		t.Fatalf("due after delete: %v", due)
	}
}

func testClientReceived(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb := Mailbox(t)
	relay := NewRelay(t)
	for i := uint64(3); i >= 1; i-- {
		var cur wire.Cursor
		cur.Advance(relay.ID, i)
		cid := wire.CIDOf([]byte{byte(i)})
		dup, err := e.c.StoreReceived(store.Received{
			Mailbox: mb, CID: cid, Expiry: uint64(e.clock.Now().Unix()) + 100,
			Message: &store.Message{Contact: "alice", Counter: i, Body: []byte{byte(i)}},
			Session: &store.Session{Contact: "alice", ID: "s", State: []byte{byte(i)}},
			Cursor:  &cur,
		})
		if err != nil || dup {
			t.Fatalf("store %d: %v %v", i, dup, err)
		}
	}
	ms, _ := e.c.Messages("alice", 0, 0)
	if len(ms) != 3 || ms[0].Counter != 1 || ms[2].Counter != 3 || ms[1].CID != wire.CIDOf([]byte{2}) {
		t.Fatalf("messages %v", ms)
	}
	if ms, _ := e.c.Messages("alice", 2, 1); len(ms) != 1 || ms[0].Counter != 2 {
		t.Fatalf("messages from 2: %v", ms)
	}
	cur, _ := e.c.Cursor(mb)
	if cur.Get(relay.ID) != 3 {
		t.Fatalf("cursor %v (never lowered)", cur.String())
	}
	dup, err := e.c.StoreReceived(store.Received{Mailbox: mb, CID: wire.CIDOf([]byte{2}),
		Message: &store.Message{Contact: "alice", Counter: 2, Body: []byte("again")}})
	if err != nil || !dup {
		t.Fatalf("redelivery: %v %v", dup, err)
	}
	if seen, _ := e.c.Seen(mb, wire.CIDOf([]byte{1})); !seen {
		t.Fatal("not seen")
	}
	if s, _ := e.c.Session("alice", "s"); s.State[0] != 1 {
		t.Fatal("session not advanced with the message")
	}
}

func testClientReopen(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb := Mailbox(t)
	e.c.PutIdentity([]byte("me"))
	e.c.Enqueue(store.OutboxEntry{ID: store.OutboxID{9}, Contact: "bob", NextAttempt: e.clock.Now()}, nil)
	e.c.StoreReceived(store.Received{Mailbox: mb, CID: wire.CIDOf([]byte("x")), Message: &store.Message{Contact: "bob", Counter: 1}})
	e.reopen()
	if b, _ := e.c.Identity(); string(b) != "me" {
		t.Fatal("identity lost")
	}
	if due, _ := e.c.DueOutbox(e.clock.Now(), 0); len(due) != 1 {
		t.Fatal("outbox lost")
	}
	if ms, _ := e.c.Messages("bob", 0, 0); len(ms) != 1 {
		t.Fatal("message lost")
	}
	// The wrong key does not open it.
	e.c.Close()
	bad := e.opts
	bad.EncryptionKey = make([]byte, 32)
	bad.Dir = e.dir
	if c, err := store.OpenClient(bad); !errors.Is(err, store.ErrEncryptionKey) {
		if err == nil {
			c.Close()
		}
		t.Fatalf("open with the wrong key: %v", err)
	}
	e.c = e.o.Open(t, e.dir, e.opts)
}
