package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// ClientOpener opens client databases for the suite.
type ClientOpener struct {
	// Name is the backend's name in test names.
	Name string
	// Persistent is true if a database reopened with the same options
	// sees the same data.
	Persistent bool
	// Open opens a client database with opts; dir is a per-test directory
	// (ignored by in-memory backends).
	Open func(t testing.TB, dir string, opts store.ClientOptions) *store.ClientDB
}

// RunClient runs the client-database conformance suite.
func RunClient(t *testing.T, o ClientOpener) {
	tests := []struct {
		name string
		f    func(*testing.T, ClientOpener)
	}{
		{"Atomic", testClientAtomic},
		{"Identity", testClientIdentity},
		{"Contacts", testClientContacts},
		{"Sessions", testClientSessions},
		{"Outbox", testClientOutbox},
		{"Messages", testClientMessages},
		{"RecvState", testClientRecvState},
		{"CursorSeen", testClientCursorSeen},
		{"SeenExpiry", testClientSeenExpiry},
		{"Pending", testClientPending},
		{"Page", testClientPage},
		{"Conflict", testClientConflict},
		{"Close", testClientClose},
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
	db    *store.ClientDB
	clock *Clock
}

func newClientEnv(t *testing.T, o ClientOpener) *clientEnv {
	key := make([]byte, 32)
	rand.Read(key)
	e := &clientEnv{t: t, o: o, dir: t.TempDir(), clock: NewClock()}
	e.opts = store.ClientOptions{EncryptionKey: key, Now: e.clock.Now}
	e.db = o.Open(t, e.dir, e.opts)
	t.Cleanup(func() { e.db.Close() })
	return e
}

func (e *clientEnv) reopen() {
	e.t.Helper()
	if err := e.db.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.db = e.o.Open(e.t, e.dir, e.opts)
}

// update runs fn in an Update and fails the test on an error.
func (e *clientEnv) update(fn func(tx *store.ClientTx) error) {
	e.t.Helper()
	if err := e.db.Update(fn); err != nil {
		e.t.Fatalf("update: %v", err)
	}
}

// view runs fn in a View and fails the test on an error.
func (e *clientEnv) view(fn func(tx *store.ClientTx) error) {
	e.t.Helper()
	if err := e.db.View(fn); err != nil {
		e.t.Fatalf("view: %v", err)
	}
}

func testContact(id string) *store.Contact {
	return &store.Contact{ID: id, Name: "name of " + id, IdentityEd25519: [32]byte{1, id[0]}, IdentityX25519: [32]byte{2},
		Mailbox: wire.MailboxOf([]byte(id)), Bundle: []byte("bundle"), Hints: [][]byte{[]byte("h1"), []byte("h2")},
		NextCounter: 7, AddedMs: 1234}
}

func testMessage(dir store.Direction, counter uint64) *store.Message {
	m := &store.Message{Direction: dir, Counter: counter, Body: []byte(fmt.Sprintf("body %d %d", dir, counter)),
		SentAtMs: 10 + counter, AtMs: 20 + counter, Seq: 100 + counter}
	if dir == store.Outgoing {
		m.Status = store.StatusQueued
	} else {
		m.Released = counter%2 == 0
	}
	return m
}

// testClientAtomic: what one Update writes is visible all together after
// it commits, and not at all if fn fails; a View is a snapshot.
func testClientAtomic(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	boom := errors.New("boom")
	err := e.db.Update(func(tx *store.ClientTx) error {
		if err := tx.PutContact(testContact("alice")); err != nil {
			return err
		}
		if err := tx.PutMessage("alice", testMessage(store.Incoming, 1)); err != nil {
			return err
		}
		if err := tx.MarkSeen(wire.CIDOf([]byte("x")), time.Time{}); err != nil {
			return err
		}
		// Read-your-writes inside the transaction.
		if _, err := tx.Contact("alice"); err != nil {
			return fmt.Errorf("own write not visible: %w", err)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	e.view(func(tx *store.ClientTx) error {
		if _, err := tx.Contact("alice"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("contact of a failed update: %v", err)
		}
		if _, err := tx.Message("alice", store.Incoming, 1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("message of a failed update: %v", err)
		}
		if seen, _ := tx.Seen(wire.CIDOf([]byte("x"))); seen {
			t.Error("seen mark of a failed update")
		}
		return nil
	})

	// A snapshot does not see a commit that follows it.
	started, commit := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		err := e.db.View(func(tx *store.ClientTx) error {
			close(started)
			<-commit
			if _, err := tx.Contact("bob"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a snapshot sees a later commit: %v", err)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	})
	<-started
	e.update(func(tx *store.ClientTx) error { return tx.PutContact(testContact("bob")) })
	close(commit)
	wg.Wait()
	e.view(func(tx *store.ClientTx) error {
		_, err := tx.Contact("bob")
		return err
	})
	// Writes in a View fail.
	if err := e.db.View(func(tx *store.ClientTx) error { return tx.PutLocalSeq(1) }); err == nil {
		t.Error("a write in a View succeeded")
	}
}

func testClientIdentity(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	e.view(func(tx *store.ClientTx) error {
		if _, err := tx.Identity(); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("identity of a new database: %v", err)
		}
		if seq, err := tx.LocalSeq(); seq != 0 || err != nil {
			t.Errorf("local seq of a new database: %d %v", seq, err)
		}
		return nil
	})
	id := &store.Identity{Keys: bytes.Repeat([]byte("k"), 5000), MailboxSeed: bytes.Repeat([]byte{9}, 32)}
	e.update(func(tx *store.ClientTx) error {
		if err := tx.PutIdentity(id); err != nil {
			return err
		}
		return tx.PutLocalSeq(1 << 40)
	})
	e.view(func(tx *store.ClientTx) error {
		got, err := tx.Identity()
		if err != nil || !reflect.DeepEqual(got, id) {
			t.Errorf("identity %v %v", got, err)
		}
		if seq, err := tx.LocalSeq(); seq != 1<<40 || err != nil {
			t.Errorf("local seq %d %v", seq, err)
		}
		return nil
	})
}

func testClientContacts(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	ids := []string{"b", "a", "ab", string(bytes.Repeat([]byte{'z'}, 255))}
	e.update(func(tx *store.ClientTx) error {
		for _, id := range ids {
			if err := tx.PutContact(testContact(id)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, bad := range []string{"", string(make([]byte, 256))} {
		c := testContact("x")
		c.ID = bad
		if err := e.db.Update(func(tx *store.ClientTx) error { return tx.PutContact(c) }); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("contact ID of %d bytes: %v", len(bad), err)
		}
	}
	// Replace one.
	upd := testContact("a")
	upd.NextCounter, upd.Hints, upd.Bundle = 99, nil, nil
	e.update(func(tx *store.ClientTx) error { return tx.PutContact(upd) })
	e.view(func(tx *store.ClientTx) error {
		got, err := tx.Contact("a")
		if err != nil || !reflect.DeepEqual(got, upd) {
			t.Errorf("replaced contact %+v %v", got, err)
		}
		if _, err := tx.Contact("c"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown contact: %v", err)
		}
		var seen []string
		err = tx.ForEachContact(func(c *store.Contact) error {
			want := testContact(c.ID)
			if c.ID == "a" {
				want = upd
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("contact %q: %+v", c.ID, c)
			}
			seen = append(seen, c.ID)
			return nil
		})
		if err != nil || !reflect.DeepEqual(seen, []string{"a", "ab", "b", ids[3]}) {
			t.Errorf("contacts %q %v", seen, err)
		}
		// fn's error stops the walk and is returned.
		stop := errors.New("stop")
		n := 0
		if err := tx.ForEachContact(func(*store.Contact) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Errorf("stopped walk: %d calls, %v", n, err)
		}
		return nil
	})
}

func testClientSessions(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mk := func(h byte, contact string) *store.Session {
		return &store.Session{HandshakeID: [32]byte{h, 1}, Contact: contact, Active: uint64(h) * 10, Retired: h%2 == 1,
			State: bytes.Repeat([]byte{h}, 3000)}
	}
	e.update(func(tx *store.ClientTx) error {
		for h, c := range []string{"alice", "alice", "bob"} {
			if err := tx.PutSession(mk(byte(3-h), c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err := e.db.Update(func(tx *store.ClientTx) error { return tx.PutSession(mk(9, "")) }); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("session without a contact: %v", err)
	}
	e.update(func(tx *store.ClientTx) error {
		s := mk(2, "alice")
		s.Active, s.Retired = 77, false
		if err := tx.PutSession(s); err != nil {
			return err
		}
		if err := tx.DeleteSession([32]byte{1, 1}); err != nil {
			return err
		}
		return tx.DeleteSession([32]byte{42}) // absent: no error
	})
	e.view(func(tx *store.ClientTx) error {
		s, err := tx.Session([32]byte{2, 1})
		if err != nil || s.Active != 77 || s.Retired || s.Contact != "alice" || !bytes.Equal(s.State, mk(2, "").State) {
			t.Errorf("session %+v %v", s, err)
		}
		if _, err := tx.Session([32]byte{1, 1}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted session: %v", err)
		}
		var hids []byte
		err = tx.ForEachSession(func(s *store.Session) error {
			hids = append(hids, s.HandshakeID[0])
			if want := mk(s.HandshakeID[0], s.Contact); s.HandshakeID[0] == 3 && !reflect.DeepEqual(s, want) {
				t.Errorf("session %+v", s)
			}
			return nil
		})
		if err != nil || !bytes.Equal(hids, []byte{2, 3}) {
			t.Errorf("sessions %v %v", hids, err)
		}
		return nil
	})
}

func testClientOutbox(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb := Mailbox(t)
	mk := func(contact string, counter uint64) *store.OutboxEntry {
		env := Envelope(t, mb, 1000, 100)
		return &store.OutboxEntry{Contact: contact, Counter: counter, Kind: wire.PayloadText, Mailbox: mb, Envelope: env,
			CID: wire.CIDOf(env), Status: store.StatusQueued, NextAttemptMs: 5, Seq: counter, Expiry: 1000}
	}
	want := map[string]*store.OutboxEntry{}
	e.update(func(tx *store.ClientTx) error {
		// Counters across a byte boundary, and a contact ID that is a
		// prefix of another.
		for _, c := range []string{"bob", "bo"} {
			for _, n := range []uint64{256, 1, 255, 2} {
				r := mk(c, n)
				want[fmt.Sprint(c, n)] = r
				if err := tx.PutOutbox(r); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for _, st := range []store.Status{0, store.StatusFailed + 1} {
		r := mk("bob", 9)
		r.Status = st
		if err := e.db.Update(func(tx *store.ClientTx) error { return tx.PutOutbox(r) }); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("outbox status %d: %v", st, err)
		}
	}
	// The life of an entry: stored with its receipt, retried, then gone.
	stored := mk("bob", 2)
	stored.Status, stored.Receipt, stored.Retries, stored.NextAttemptMs = store.StatusStored, []byte("receipt"), 3, 1<<50
	want["bob2"] = stored
	e.update(func(tx *store.ClientTx) error {
		if err := tx.PutOutbox(stored); err != nil {
			return err
		}
		delete(want, "bo1")
		if err := tx.DeleteOutbox("bo", 1); err != nil {
			return err
		}
		return tx.DeleteOutbox("nobody", 1)
	})
	e.view(func(tx *store.ClientTx) error {
		got, err := tx.Outbox("bob", 2)
		if err != nil || !reflect.DeepEqual(got, stored) {
			t.Errorf("entry %+v %v", got, err)
		}
		if _, err := tx.Outbox("bo", 1); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted entry: %v", err)
		}
		var order []string
		err = tx.ForEachOutbox(func(r *store.OutboxEntry) error {
			k := fmt.Sprint(r.Contact, r.Counter)
			order = append(order, k)
			if !reflect.DeepEqual(r, want[k]) {
				t.Errorf("entry %s: %+v", k, r)
			}
			return nil
		})
		if w := []string{"bo2", "bo255", "bo256", "bob1", "bob2", "bob255", "bob256"}; err != nil || !reflect.DeepEqual(order, w) {
			t.Errorf("outbox order %v (%v), want %v", order, err, w)
		}
		return nil
	})
}

func testClientMessages(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	e.update(func(tx *store.ClientTx) error {
		for _, c := range []string{"al", "alice"} {
			for _, n := range []uint64{300, 1, 2} {
				for _, d := range []store.Direction{store.Outgoing, store.Incoming} {
					if err := tx.PutMessage(c, testMessage(d, n)); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	for _, m := range []*store.Message{{Direction: 0, Counter: 1}, {Direction: 3, Counter: 1},
		{Direction: store.Outgoing, Counter: 1, Status: store.StatusFailed + 1}} {
		if err := e.db.Update(func(tx *store.ClientTx) error { return tx.PutMessage("al", m) }); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("message %+v: %v", m, err)
		}
	}
	// A status change, as a delivery receipt makes it.
	e.update(func(tx *store.ClientTx) error {
		m, err := tx.Message("alice", store.Outgoing, 2)
		if err != nil {
			return err
		}
		m.Status = store.StatusDelivered
		return tx.PutMessage("alice", m)
	})
	e.view(func(tx *store.ClientTx) error {
		m, err := tx.Message("alice", store.Outgoing, 2)
		if err != nil || m.Status != store.StatusDelivered || m.Direction != store.Outgoing || m.Counter != 2 {
			t.Errorf("message %+v %v", m, err)
		}
		m, err = tx.Message("alice", store.Incoming, 300)
		if w := testMessage(store.Incoming, 300); err != nil || !reflect.DeepEqual(m, w) {
			t.Errorf("message %+v %v, want %+v", m, err, w)
		}
		if _, err := tx.Message("alice", store.Incoming, 3); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("absent message: %v", err)
		}
		for _, c := range []string{"al", "alice"} {
			var got []string
			err := tx.ForEachMessage(c, func(m *store.Message) error {
				got = append(got, fmt.Sprint(m.Direction, "/", m.Counter))
				return nil
			})
			if w := []string{"1/1", "1/2", "1/300", "2/1", "2/2", "2/300"}; err != nil || !reflect.DeepEqual(got, w) {
				t.Errorf("history of %s: %v (%v), want %v", c, got, err, w)
			}
		}
		n := 0
		if err := tx.ForEachMessage("nobody", func(*store.Message) error { n++; return nil }); err != nil || n != 0 {
			t.Errorf("history of an unknown contact: %d %v", n, err)
		}
		return nil
	})
}

func testClientRecvState(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	a := &store.RecvState{Next: 4, Above: []uint64{6, 7}, Missing: []uint64{2}, HoleSinceMs: 99, Acks: []uint64{1, 3}}
	b := &store.RecvState{Next: 1}
	e.update(func(tx *store.ClientTx) error {
		if err := tx.PutRecvState("b", b); err != nil {
			return err
		}
		return tx.PutRecvState("a", a)
	})
	if err := e.db.Update(func(tx *store.ClientTx) error { return tx.PutRecvState("", a) }); !errors.Is(err, wire.ErrMalformed) {
		t.Errorf("receive state without a contact: %v", err)
	}
	e.view(func(tx *store.ClientTx) error {
		if got, err := tx.RecvState("a"); err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("receive state %+v %v", got, err)
		}
		if _, err := tx.RecvState("c"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("absent receive state: %v", err)
		}
		var ids []string
		err := tx.ForEachRecvState(func(id string, r *store.RecvState) error {
			ids = append(ids, id)
			if w := map[string]*store.RecvState{"a": a, "b": b}[id]; !reflect.DeepEqual(r, w) {
				t.Errorf("receive state of %s: %+v", id, r)
			}
			return nil
		})
		if err != nil || !reflect.DeepEqual(ids, []string{"a", "b"}) {
			t.Errorf("receive states %v %v", ids, err)
		}
		return nil
	})
}

func testClientCursorSeen(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb1, mb2 := Mailbox(t), Mailbox(t)
	r1, r2 := NewRelay(t), NewRelay(t)
	var cur wire.Cursor
	if err := cur.Advance(r1.ID, 5); err != nil {
		t.Fatal(err)
	}
	if err := cur.Advance(r2.ID, 1<<40); err != nil {
		t.Fatal(err)
	}
	cids := []wire.CID{wire.CIDOf([]byte("a")), wire.CIDOf([]byte("b"))}
	e.view(func(tx *store.ClientTx) error {
		if c, err := tx.Cursor(mb1); err != nil || len(c.Positions()) != 0 {
			t.Errorf("cursor of a new database: %v %v", c.String(), err)
		}
		return nil
	})
	e.update(func(tx *store.ClientTx) error {
		if err := tx.PutCursor(mb1, &cur); err != nil {
			return err
		}
		return tx.MarkSeen(cids[0], e.clock.Now().Add(time.Hour))
	})
	e.view(func(tx *store.ClientTx) error {
		c, err := tx.Cursor(mb1)
		if err != nil || c.Get(r1.ID) != 5 || c.Get(r2.ID) != 1<<40 {
			t.Errorf("cursor %v %v", c.String(), err)
		}
		if c, err := tx.Cursor(mb2); err != nil || len(c.Positions()) != 0 {
			t.Errorf("cursor of another mailbox: %v %v", c.String(), err)
		}
		if seen, err := tx.Seen(cids[0]); !seen || err != nil {
			t.Errorf("marked CID: %v %v", seen, err)
		}
		if seen, err := tx.Seen(cids[1]); seen || err != nil {
			t.Errorf("unmarked CID: %v %v", seen, err)
		}
		return nil
	})
}

// testClientSeenExpiry: a seen mark is forgotten at the time it is marked
// until, measured on the database's clock (here 10 days ahead of the wall
// clock). Badger's TTL has a resolution of seconds, so this test waits up to
// a few seconds.
func testClientSeenExpiry(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	e.clock.Advance(10 * 24 * time.Hour)
	short, long, forever, past := wire.CIDOf([]byte("short")), wire.CIDOf([]byte("long")), wire.CIDOf([]byte("forever")), wire.CIDOf([]byte("past"))
	e.update(func(tx *store.ClientTx) error {
		for _, m := range []struct {
			cid   wire.CID
			until time.Time
		}{{short, e.clock.Now().Add(time.Second)}, {long, e.clock.Now().Add(time.Hour)}, {forever, time.Time{}},
			{past, e.clock.Now().Add(-time.Hour)}} {
			if err := tx.MarkSeen(m.cid, m.until); err != nil {
				return err
			}
		}
		return nil
	})
	seen := func(c wire.CID) bool {
		var s bool
		e.view(func(tx *store.ClientTx) error {
			var err error
			s, err = tx.Seen(c)
			return err
		})
		return s
	}
	if !seen(past) {
		t.Error("a mark whose time has passed is not kept for a second")
	}
	deadline := time.Now().Add(5 * time.Second)
	for seen(short) || seen(past) {
		if time.Now().After(deadline) {
			t.Fatal("a mark until the database's now + 1 s is still there after 5 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !seen(long) || !seen(forever) {
		t.Fatalf("long-lived marks forgotten: long %v forever %v", seen(long), seen(forever))
	}
}

func testClientPending(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mk := func() *store.PendingEntry {
		env := Envelope(t, Mailbox(t), 0, 50)
		return &store.PendingEntry{CID: wire.CIDOf(env), Envelope: env}
	}
	want := map[uint64]*store.PendingEntry{}
	e.update(func(tx *store.ClientTx) error {
		for _, s := range []uint64{300, 2, 1, 256} {
			want[s] = mk()
			if err := tx.PutPending(s, want[s]); err != nil {
				return err
			}
		}
		delete(want, 2)
		return tx.DeletePending(2)
	})
	e.view(func(tx *store.ClientTx) error {
		var seqs []uint64
		err := tx.ForEachPending(func(seq uint64, r *store.PendingEntry, err error) error {
			if err != nil {
				t.Errorf("pending %d: %v", seq, err)
			}
			if !reflect.DeepEqual(r, want[seq]) {
				t.Errorf("pending %d: %+v", seq, r)
			}
			seqs = append(seqs, seq)
			return nil
		})
		if err != nil || !reflect.DeepEqual(seqs, []uint64{1, 256, 300}) {
			t.Errorf("pending order %v %v", seqs, err)
		}
		return nil
	})
}

// testClientPage writes what a client writes for one sync page of 512
// entries in one transaction, reads it back, and checks that a failing page
// leaves nothing.
func testClientPage(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb, relay := Mailbox(t), NewRelay(t)
	page := func(p int, fail bool) error {
		return e.db.Update(func(tx *store.ClientTx) error {
			for i := range 512 {
				n := uint64(p*512 + i + 1)
				m := testMessage(store.Incoming, n)
				m.Body = bytes.Repeat([]byte{byte(n)}, 1024)
				if err := tx.PutMessage("alice", m); err != nil {
					return err
				}
				if err := tx.MarkSeen(wire.CIDOf(m.Body[:8]), e.clock.Now().Add(time.Hour)); err != nil {
					return err
				}
			}
			if err := tx.PutSession(&store.Session{HandshakeID: [32]byte{1}, Contact: "alice", Active: uint64(p), State: make([]byte, 4000)}); err != nil {
				return err
			}
			if err := tx.PutRecvState("alice", &store.RecvState{Next: uint64(p*512 + 513)}); err != nil {
				return err
			}
			var cur wire.Cursor
			if err := cur.Advance(relay.ID, uint64(p+1)*512); err != nil {
				return err
			}
			if err := tx.PutCursor(mb, &cur); err != nil {
				return err
			}
			if fail {
				return errors.New("page failed")
			}
			return tx.PutLocalSeq(uint64(p+1) * 512)
		})
	}
	if err := page(0, false); err != nil {
		t.Fatal(err)
	}
	if err := page(1, true); err == nil {
		t.Fatal("failing page committed")
	}
	e.view(func(tx *store.ClientTx) error {
		n := 0
		err := tx.ForEachMessage("alice", func(m *store.Message) error {
			n++
			if m.Counter != uint64(n) || len(m.Body) != 1024 || m.Body[0] != byte(n) {
				t.Errorf("message %d: counter %d, %d bytes", n, m.Counter, len(m.Body))
			}
			return nil
		})
		if err != nil || n != 512 {
			t.Errorf("%d messages after a good and a failed page: %v", n, err)
		}
		cur, _ := tx.Cursor(mb)
		r, _ := tx.RecvState("alice")
		seq, _ := tx.LocalSeq()
		if cur.Get(relay.ID) != 512 || r == nil || r.Next != 513 || seq != 512 {
			t.Errorf("cursor %d, next %v, seq %d after the failed page", cur.Get(relay.ID), r, seq)
		}
		return nil
	})
}

// testClientConflict: concurrent read-modify-write updates of one key never
// lose an update: the loser of a race gets ErrConflict and wrote nothing.
func testClientConflict(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	var mu sync.Mutex
	conflicts := 0
	for range writers {
		wg.Go(func() {
			for i := 0; i < each; {
				err := e.db.Update(func(tx *store.ClientTx) error {
					n, err := tx.LocalSeq()
					if err != nil {
						return err
					}
					return tx.PutLocalSeq(n + 1)
				})
				switch {
				case errors.Is(err, store.ErrConflict):
					mu.Lock()
					conflicts++
					mu.Unlock()
				case err != nil:
					t.Error(err)
					return
				default:
					i++
				}
			}
		})
	}
	wg.Wait()
	e.view(func(tx *store.ClientTx) error {
		if n, _ := tx.LocalSeq(); n != writers*each {
			t.Errorf("counter %d after %d increments (%d conflicts)", n, writers*each, conflicts)
		}
		return nil
	})
}

// testClientClose: Close waits for a running transaction; afterwards every
// call returns ErrClosed.
func testClientClose(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	inside, release := make(chan struct{}), make(chan struct{})
	var committed bool
	var wg sync.WaitGroup
	wg.Go(func() {
		err := e.db.Update(func(tx *store.ClientTx) error {
			close(inside)
			<-release
			return tx.PutLocalSeq(1)
		})
		committed = err == nil
	})
	<-inside
	closed := make(chan error)
	go func() { closed <- e.db.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned during a transaction: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if !committed {
		t.Error("the transaction Close waited for did not commit")
	}
	if err := e.db.Update(func(*store.ClientTx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Close: %v", err)
	}
	if err := e.db.View(func(*store.ClientTx) error { return nil }); !errors.Is(err, store.ErrClosed) {
		t.Errorf("View after Close: %v", err)
	}
	if err := e.db.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

func testClientReopen(t *testing.T, o ClientOpener) {
	e := newClientEnv(t, o)
	mb, relay := Mailbox(t), NewRelay(t)
	var cur wire.Cursor
	if err := cur.Advance(relay.ID, 3); err != nil {
		t.Fatal(err)
	}
	id := &store.Identity{Keys: []byte("keys"), MailboxSeed: []byte("seed")}
	ob := &store.OutboxEntry{Contact: "bob", Counter: 1, Kind: wire.PayloadText, Status: store.StatusQueued, Envelope: []byte("e")}
	e.update(func(tx *store.ClientTx) error {
		for _, err := range []error{tx.PutIdentity(id), tx.PutContact(testContact("bob")), tx.PutOutbox(ob),
			tx.PutMessage("bob", testMessage(store.Outgoing, 1)), tx.PutCursor(mb, &cur),
			tx.MarkSeen(wire.CIDOf([]byte("x")), e.clock.Now().Add(time.Hour)), tx.PutLocalSeq(5)} {
			if err != nil {
				return err
			}
		}
		return nil
	})
	e.reopen()
	e.view(func(tx *store.ClientTx) error {
		if got, err := tx.Identity(); err != nil || !reflect.DeepEqual(got, id) {
			t.Errorf("identity after reopen: %v %v", got, err)
		}
		if got, err := tx.Contact("bob"); err != nil || !reflect.DeepEqual(got, testContact("bob")) {
			t.Errorf("contact after reopen: %v %v", got, err)
		}
		if got, err := tx.Outbox("bob", 1); err != nil || !reflect.DeepEqual(got, ob) {
			t.Errorf("outbox after reopen: %v %v", got, err)
		}
		if _, err := tx.Message("bob", store.Outgoing, 1); err != nil {
			t.Errorf("message after reopen: %v", err)
		}
		if c, err := tx.Cursor(mb); err != nil || c.Get(relay.ID) != 3 {
			t.Errorf("cursor after reopen: %v %v", c.String(), err)
		}
		if s, err := tx.Seen(wire.CIDOf([]byte("x"))); !s || err != nil {
			t.Errorf("seen after reopen: %v %v", s, err)
		}
		if n, err := tx.LocalSeq(); n != 5 || err != nil {
			t.Errorf("local seq after reopen: %v %v", n, err)
		}
		return nil
	})
	// Another key, or none, does not open it; the right key still does.
	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{make([]byte, 32), nil} {
		bad := e.opts
		bad.EncryptionKey = key
		bad.Dir = e.dir
		if db, err := store.OpenClientDB(bad); !errors.Is(err, store.ErrEncryptionKey) {
			if err == nil {
				db.Close()
			}
			t.Errorf("open with a key of %d bytes: %v", len(key), err)
		}
	}
	e.db = e.o.Open(t, e.dir, e.opts)
	e.view(func(tx *store.ClientTx) error {
		_, err := tx.Identity()
		return err
	})
}
