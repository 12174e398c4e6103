package client

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/wire"
)

func TestRecordsRoundTrip(t *testing.T) {
	ct := &contactRec{id: "abc", name: "Bob", identity: ratchet.IdentityKey{Ed25519: [32]byte{1}, X25519: [32]byte{2}},
		mailbox: wire.Mailbox{0x12, 0x20, 3}, bundle: []byte{4, 5}, hints: [][]byte{{6}, {7, 8}}, next: 9, addedMs: 10}
	got, err := parseContactRec(ct.marshal())
	if err != nil || !reflect.DeepEqual(got, ct) {
		t.Fatalf("contact: %v %+v", err, got)
	}
	ob := &outboxRec{contact: "abc", counter: 3, kind: wire.PayloadDelivery, mailbox: wire.Mailbox{1}, envelope: []byte{1, 2, 3},
		cid: wire.CID{4}, status: StatusStored, attempts: 5, nextMs: 6, seq: 7, expiry: 8, receipt: []byte{9}}
	gotO, err := parseOutboxRec(ob.marshal())
	if err != nil || !reflect.DeepEqual(gotO, ob) {
		t.Fatalf("outbox: %v %+v", err, gotO)
	}
	m := &msgRec{dir: Incoming, counter: 2, body: []byte("hi"), sentAtMs: 3, atMs: 4, seq: 5, status: StatusQueued, late: true, released: true}
	gotM, err := parseMsgRec(m.marshal())
	if err != nil || !reflect.DeepEqual(gotM, m) {
		t.Fatalf("message: %v %+v", err, gotM)
	}
	r := &recvRec{next: 4, above: []uint64{6, 7}, missing: []uint64{2}, holeSinceMs: 9, acks: []uint64{1, 3}}
	gotR, err := parseRecvRec(r.marshal())
	if err != nil || !reflect.DeepEqual(gotR, r) {
		t.Fatalf("receive state: %v %+v", err, gotR)
	}
	p := &pendingRec{cid: wire.CID{1}, envelope: []byte{2}}
	gotP, err := parsePendingRec(p.marshal())
	if err != nil || !reflect.DeepEqual(gotP, p) {
		t.Fatalf("pending: %v %+v", err, gotP)
	}
}

// Every truncation and every extra byte of a stored record is refused,
// never a panic.
func TestRecordsRejectDamage(t *testing.T) {
	recs := [][]byte{
		(&contactRec{id: "a", hints: [][]byte{{1}}}).marshal(),
		(&outboxRec{envelope: []byte{1}}).marshal(),
		(&msgRec{body: []byte("x")}).marshal(),
		(&recvRec{above: []uint64{1}}).marshal(),
		(&pendingRec{envelope: []byte{1}}).marshal(),
	}
	parsers := []func([]byte) error{
		func(b []byte) error { _, err := parseContactRec(b); return err },
		func(b []byte) error { _, err := parseOutboxRec(b); return err },
		func(b []byte) error { _, err := parseMsgRec(b); return err },
		func(b []byte) error { _, err := parseRecvRec(b); return err },
		func(b []byte) error { _, err := parsePendingRec(b); return err },
	}
	for i, b := range recs {
		for n := range len(b) {
			if parsers[i](b[:n]) == nil {
				t.Errorf("record %d truncated to %d bytes parsed", i, n)
			}
		}
		if parsers[i](append(slices.Clone(b), 0)) == nil {
			t.Errorf("record %d with a trailing byte parsed", i)
		}
		bad := slices.Clone(b)
		bad[0] = 0x7f
		if parsers[i](bad) == nil {
			t.Errorf("record %d with an unknown version parsed", i)
		}
	}
}

// The receive state orders by counter, holds what comes early, tells a
// late arrival from a replay.
func TestRecvState(t *testing.T) {
	r := newRecvRec()
	if st := r.arrive(2); st != counterNew || len(r.release()) != 0 {
		t.Fatal("counter 2 released before 1")
	}
	if st := r.arrive(3); st != counterNew {
		t.Fatal(st)
	}
	if st := r.arrive(3); st != counterReplay {
		t.Fatal("held counter accepted twice")
	}
	r.arrive(1)
	if got := r.release(); !slices.Equal(got, []uint64{1, 2, 3}) || r.next != 4 {
		t.Fatalf("released %v, next %d", got, r.next)
	}
	if st := r.arrive(2); st != counterReplay {
		t.Fatal("replay not detected")
	}
	// A reported gap: 4 missing, 5 arrived; 4 then arrives late, once.
	r.arrive(5)
	r.missing = append(r.missing, 4)
	r.next = 5
	if got := r.release(); !slices.Equal(got, []uint64{5}) {
		t.Fatal(got)
	}
	if st := r.arrive(4); st != counterLate {
		t.Fatal("late arrival not recognised")
	}
	if st := r.arrive(4); st != counterReplay {
		t.Fatal("late arrival accepted twice")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 10*time.Millisecond, 100*time.Millisecond
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		if got := backoff(lo, hi, i+1); got != w*time.Millisecond {
			t.Errorf("attempt %d: %v, want %v", i+1, got, w*time.Millisecond)
		}
	}
	for range 100 {
		if j := jitter(randReader{}, hi); j < hi/2 || j > hi {
			t.Fatalf("jitter %v outside [%v, %v]", j, hi/2, hi)
		}
	}
}

type randReader struct{}

func (randReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(time.Now().UnixNano() >> (i % 8))
	}
	return len(p), nil
}

func TestMessageID(t *testing.T) {
	for _, dir := range []Direction{Incoming, Outgoing} {
		id := messageID("c0ffee", dir, 42)
		ct, d, n, ok := parseMessageID(id)
		if !ok || ct != "c0ffee" || d != dir || n != 42 {
			t.Fatalf("%s: %v %v %v %v", id, ct, d, n, ok)
		}
	}
	for _, bad := range []MessageID{"", "x", "c/", "c/x1", "c/i", "c/o-1"} {
		if _, _, _, ok := parseMessageID(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
