package client

import (
	"slices"
	"testing"
	"time"
)

// The receive state orders by counter, holds what comes early, tells a
// late arrival from a replay.
func TestRecvState(t *testing.T) {
	r := newRecvState()
	if st := arrive(r, 2); st != counterNew || len(release(r)) != 0 {
		t.Fatal("counter 2 released before 1")
	}
	if st := arrive(r, 3); st != counterNew {
		t.Fatal(st)
	}
	if st := arrive(r, 3); st != counterReplay {
		t.Fatal("held counter accepted twice")
	}
	arrive(r, 1)
	if got := release(r); !slices.Equal(got, []uint64{1, 2, 3}) || r.Next != 4 {
		t.Fatalf("released %v, next %d", got, r.Next)
	}
	if st := arrive(r, 2); st != counterReplay {
		t.Fatal("replay not detected")
	}
	// A reported gap: 4 missing, 5 arrived; 4 then arrives late, once.
	arrive(r, 5)
	r.Missing = append(r.Missing, 4)
	r.Next = 5
	if got := release(r); !slices.Equal(got, []uint64{5}) {
		t.Fatal(got)
	}
	if st := arrive(r, 4); st != counterLate {
		t.Fatal("late arrival not recognised")
	}
	if st := arrive(r, 4); st != counterReplay {
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
