package wire

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// specPostageWork is SPEC.md §5's work hash, by hand.
func specPostageWork(e *Envelope, nonce uint64) ([]byte, int) {
	in := cat([]byte("cairn/v1/postage"), []byte{0}, e.Mailbox[:], u64(e.Expiry), sha(e.Ciphertext), u64(nonce))
	return sha(in), len(in)
}

func TestPostageGolden(t *testing.T) {
	e := fixtureEnvelope(0)
	e.Postage = 0
	var cases []golden
	for _, nonce := range []uint64{0, 0x0102030405060708} {
		w := postageWork(postagePrefix(e), nonce)
		spec, n := specPostageWork(e, nonce)
		if string(w[:]) != string(spec) {
			t.Fatalf("postage work for nonce %d differs from SPEC.md §5 by hand", nonce)
		}
		if n != 99 {
			t.Errorf("postage hash input is %d bytes", n)
		}
		cases = append(cases, hexGolden(fmt.Sprintf("work.nonce-%d", nonce), w[:]))
	}
	for _, d := range []int{8, 12} {
		s := *e
		if err := SolvePostage(context.Background(), &s, d); err != nil {
			t.Fatal(err)
		}
		w := postageWork(postagePrefix(&s), s.Postage)
		cases = append(cases, golden{fmt.Sprintf("solve.difficulty-%d.nonce", d), fmt.Sprint(s.Postage)}, hexGolden(fmt.Sprintf("solve.difficulty-%d.work", d), w[:]))
	}
	checkGolden(t, "postage.txt", `
Postage (SPEC.md §5) of envelope.txt's fixture-0 (mailbox, expiry 1700000000, ciphertext "cairn message 0").
work.nonce-N: the work hash with postage N.
solve.difficulty-D: the first nonce from 0 with at least D leading zero bits (decimal), and its work hash.`, cases)
}

func TestPostageSolve(t *testing.T) {
	for _, d := range []int{1, 8, 12} {
		for _, start := range []uint64{0, 1 << 63, 1<<64 - 3} {
			e := fixtureEnvelope(d)
			e.Postage = start
			if err := SolvePostage(context.Background(), e, d); err != nil {
				t.Fatal(err)
			}
			if err := CheckPostage(e, d); err != nil {
				t.Fatalf("d=%d: CheckPostage rejects the solved nonce: %v", d, err)
			}
			bits := PostageBits(e)
			w, _ := specPostageWork(e, e.Postage)
			if bits < d || bits != leadingZeroBits([32]byte(w)) {
				t.Fatalf("d=%d: PostageBits %d", d, bits)
			}
			wantErr(t, CheckPostage(e, bits+1), ErrPostageRequired, "d=%d: difficulty one above the work", d)
			// The solution is the first nonce from start that meets d.
			for n := start; n != e.Postage; n++ {
				w, _ := specPostageWork(e, n)
				if leadingZeroBits([32]byte(w)) >= d {
					t.Fatalf("d=%d: nonce %d meets the difficulty before %d", d, n, e.Postage)
				}
			}
			// The envelope still round-trips with its postage.
			b := mustMarshalEnvelope(t, e)
			p, err := ParseEnvelope(b)
			if err != nil || CheckPostage(p, d) != nil {
				t.Fatalf("d=%d: parsed envelope loses its postage: %v", d, err)
			}
		}
	}
}

func TestPostageDifficultyZero(t *testing.T) {
	e := fixtureEnvelope(0)
	for _, nonce := range []uint64{0, 1, 12345, 1<<64 - 1} {
		e.Postage = nonce
		for _, d := range []int{0, -1} {
			if err := CheckPostage(e, d); err != nil {
				t.Errorf("difficulty %d rejects nonce %d: %v", d, nonce, err)
			}
			if err := SolvePostage(context.Background(), e, d); err != nil || e.Postage != nonce {
				t.Errorf("SolvePostage(d=%d) changed the nonce or failed: %v", d, err)
			}
		}
	}
	wantErr(t, SolvePostage(context.Background(), e, MaxPostageDifficulty+1), ErrMalformed, "difficulty 41")
	// A difficulty no hash can meet is refused, not looped on.
	wantErr(t, CheckPostage(e, 257), ErrPostageRequired, "difficulty 257")
}

func TestPostageCancel(t *testing.T) {
	e := fixtureEnvelope(0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	err := SolvePostage(ctx, e, MaxPostageDifficulty)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err = SolvePostage(ctx, e, MaxPostageDifficulty)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the search took %v to notice the context", d)
	}
}

func TestPostageLeadingZeroBits(t *testing.T) {
	for _, tt := range []struct {
		h    [32]byte
		want int
	}{
		{[32]byte{0x80}, 0},
		{[32]byte{0x7f}, 1},
		{[32]byte{0x01}, 7},
		{[32]byte{0x00, 0xff}, 8},
		{[32]byte{0x00, 0x00, 0x10}, 19},
		{[32]byte{31: 0x01}, 255},
		{[32]byte{}, 256},
	} {
		if got := leadingZeroBits(tt.h); got != tt.want {
			t.Errorf("leadingZeroBits(%x) = %d, want %d", tt.h[:4], got, tt.want)
		}
	}
}

func BenchmarkPostageSolve(b *testing.B) {
	e := fixtureEnvelope(0)
	b.ReportAllocs()
	for b.Loop() {
		e.Postage++
		if err := SolvePostage(context.Background(), e, 12); err != nil {
			b.Fatal(err)
		}
	}
}
