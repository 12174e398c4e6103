package ratchet

import (
	"bytes"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
)

// TestRatchetProperty checks exactly-once delivery over random interleavings
// of two parties with drops, duplicates and reordering inside the window the
// session keeps (each message overtaken by at most maxPassed later ones, so
// it is at most that many receiving chains old): every delivered message
// decrypts once to its plaintext, every duplicate gives ErrDuplicate and
// leaves the state unchanged. 10,000 messages; 2,000 under -short.
func TestRatchetProperty(t *testing.T) {
	total := 10000
	if testing.Short() {
		total = 2000
	}
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			runProperty(t, seed, total/2)
		})
	}
}

type inflight struct {
	msg    []byte
	pt     []byte
	passed int
}

type direction struct {
	name   string
	from   *Session
	to     *Session
	queue  []*inflight // undelivered, in send order
	recent []*inflight // the last delivered, for duplicates
}

func runProperty(t *testing.T, seed uint64, total int) {
	const (
		window    = 3    // a delivery picks among the first window messages
		maxPassed = 3    // a message overtaken this often is delivered next
		dropRate  = 0.03 // fraction of deliveries that drop the message
		dupRate   = 0.1  // fraction of actions that re-deliver a message
		maxQueue  = 6    // messages in flight per direction at most
	)
	rng := mrand.New(mrand.NewPCG(seed, 42))
	rand := testRand(byte(seed))
	alice, bob := pair(t, rand)
	dirs := [2]*direction{{name: "a→b", from: alice, to: bob}, {name: "b→a", from: bob, to: alice}}
	sent, delivered, dropped, dups, steps := 0, 0, 0, 0, 0
	for sent < total || len(dirs[0].queue)+len(dirs[1].queue) > 0 {
		d := dirs[rng.IntN(2)]
		switch r := rng.Float64(); {
		case sent < total && r < 0.45 && len(d.queue) < maxQueue:
			pt := fmt.Appendf(nil, "%s #%d %x", d.name, sent, rng.Uint64())
			m, err := d.from.Encrypt(rand, pt)
			if err != nil {
				t.Fatal(err)
			}
			d.queue = append(d.queue, &inflight{msg: m, pt: pt})
			sent++
		case r < 0.45+dupRate && len(d.recent) > 0:
			m := d.recent[rng.IntN(len(d.recent))]
			before := mustMarshal(t, d.to)
			if _, err := d.to.Decrypt(rand, m.msg); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("%s: duplicate gave %v", d.name, err)
			}
			assertUnchanged(t, before, d.to)
			dups++
		case len(d.queue) > 0:
			i := rng.IntN(min(window, len(d.queue)))
			if d.queue[0].passed >= maxPassed {
				i = 0
			}
			m := d.queue[i]
			for _, o := range d.queue[:i] {
				o.passed++
			}
			d.queue = append(d.queue[:i], d.queue[i+1:]...)
			if rng.Float64() < dropRate {
				dropped++
				continue
			}
			dhr := d.to.core.dhr
			got, err := d.to.Decrypt(rand, m.msg)
			if d.to.core.dhr != dhr {
				steps++
			}
			if err != nil {
				t.Fatalf("%s: message %q: %v", d.name, m.pt, err)
			}
			if !bytes.Equal(got, m.pt) {
				t.Fatalf("%s: got %q, want %q", d.name, got, m.pt)
			}
			delivered++
			d.recent = append(d.recent, m)
			if len(d.recent) > 2 {
				d.recent = d.recent[1:]
			}
		}
	}
	if delivered+dropped != sent {
		t.Fatalf("sent %d, delivered %d, dropped %d", sent, delivered, dropped)
	}
	t.Logf("sent %d, delivered %d, dropped %d, duplicates %d, DH steps %d", sent, delivered, dropped, dups, steps)
}
