package reconcile

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
	"google.golang.org/protobuf/proto"
)

func item(i uint64) Item {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return sha256.Sum256(b[:])
}

func sortItems(items []Item) []Item {
	slices.SortFunc(items, func(a, b Item) int { return bytes.Compare(a[:], b[:]) })
	return slices.Compact(items)
}

// run reconciles two sets to completion like two relays would and returns
// what each side learned it must send and fetch, the rounds and the bytes
// of every message.
type outcome struct {
	aHave, aNeed, bHave, bNeed []Item
	rounds, bytes              int
}

func run(t testing.TB, a, b *Set) outcome {
	t.Helper()
	var o outcome
	msg := a.Initiate()
	sides := [2]*Set{b, a}
	for turn := 0; ; turn++ {
		o.rounds++
		o.bytes += proto.Size(&pb.ReconcileMessage{Ranges: msg})
		if o.rounds > 64 {
			t.Fatalf("no convergence after %d rounds", o.rounds)
		}
		res, err := sides[turn%2].Respond(msg)
		if err != nil {
			t.Fatalf("round %d: %v", o.rounds, err)
		}
		if turn%2 == 0 {
			o.bHave, o.bNeed = append(o.bHave, res.Have...), append(o.bNeed, res.Need...)
		} else {
			o.aHave, o.aNeed = append(o.aHave, res.Have...), append(o.aNeed, res.Need...)
		}
		if res.Ranges == nil {
			return o
		}
		msg = res.Ranges
	}
}

func minus(x, y []Item) []Item {
	var out []Item
	for _, v := range x {
		if _, found := slices.BinarySearchFunc(y, v, func(a, b Item) int { return bytes.Compare(a[:], b[:]) }); !found {
			out = append(out, v)
		}
	}
	return out
}

func TestReconcileFindsExactDifference(t *testing.T) {
	cases := []struct {
		name                 string
		common, onlyA, onlyB int
	}{
		{"both empty", 0, 0, 0},
		{"equal small", 10, 0, 0},
		{"equal large", 5000, 0, 0},
		{"a empty", 0, 0, 300},
		{"b empty", 0, 300, 0},
		{"one each side", 1000, 1, 1},
		{"ten differing in large", 20000, 5, 5},
		{"many differing", 3000, 700, 900},
		{"disjoint", 0, 500, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var xs, ys []Item
			n := uint64(0)
			for i := 0; i < tc.common; i++ {
				xs, ys = append(xs, item(n)), append(ys, item(n))
				n++
			}
			var onlyA, onlyB []Item
			for i := 0; i < tc.onlyA; i++ {
				xs, onlyA = append(xs, item(n)), append(onlyA, item(n))
				n++
			}
			for i := 0; i < tc.onlyB; i++ {
				ys, onlyB = append(ys, item(n)), append(onlyB, item(n))
				n++
			}
			xs, ys = sortItems(xs), sortItems(ys)
			onlyA, onlyB = sortItems(onlyA), sortItems(onlyB)
			a, err := NewSet(xs, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			b, err := NewSet(ys, DefaultConfig())
			if err != nil {
				t.Fatal(err)
			}
			o := run(t, a, b)
			// Whatever side discovers a difference, the union of what both
			// learned must be exactly: A sends onlyA, B sends onlyB.
			sendA := sortItems(append(slices.Clone(o.aHave), o.bNeed...))
			sendB := sortItems(append(slices.Clone(o.bHave), o.aNeed...))
			if !slices.Equal(sendA, onlyA) {
				t.Errorf("items A must send: got %d, want %d", len(sendA), len(onlyA))
			}
			if !slices.Equal(sendB, onlyB) {
				t.Errorf("items B must send: got %d, want %d", len(sendB), len(onlyB))
			}
			if len(minus(sendA, xs)) != 0 || len(minus(sendB, ys)) != 0 {
				t.Error("a side was told to send an item it does not hold")
			}
		})
	}
}

func TestReconcileRandomized(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		universe := rng.IntN(3000)
		var xs, ys []Item
		for i := 0; i < universe; i++ {
			it := item(uint64(iter)<<32 | uint64(i))
			switch rng.IntN(10) {
			case 0:
				xs = append(xs, it)
			case 1:
				ys = append(ys, it)
			default:
				xs, ys = append(xs, it), append(ys, it)
			}
		}
		xs, ys = sortItems(xs), sortItems(ys)
		cfg := Config{IDThreshold: 1 + rng.IntN(40), Branching: 2 + rng.IntN(20), MaxRanges: 8192, MaxIDs: 65536}
		a, _ := NewSet(xs, cfg)
		b, _ := NewSet(ys, cfg)
		o := run(t, a, b)
		sendA := sortItems(append(o.aHave, o.bNeed...))
		sendB := sortItems(append(o.bHave, o.aNeed...))
		if !slices.Equal(sendA, minus(xs, ys)) || !slices.Equal(sendB, minus(ys, xs)) {
			t.Fatalf("iteration %d (cfg %+v): wrong difference", iter, cfg)
		}
	}
}

// TestReconcileBandwidthProportionalToDifference checks the property that
// matters: equal large sets cost one small message, and ten differences in
// a large set cost a few KiB, far below sending the IDs.
func TestReconcileBandwidthProportionalToDifference(t *testing.T) {
	const n = 100000
	xs := make([]Item, 0, n)
	for i := 0; i < n; i++ {
		xs = append(xs, item(uint64(i)))
	}
	xs = sortItems(xs)
	ys := slices.Clone(xs)
	a, _ := NewSet(slices.Clone(xs), DefaultConfig())
	b, _ := NewSet(ys, DefaultConfig())
	equal := run(t, a, b)
	if equal.rounds != 2 || equal.bytes > 128 {
		t.Errorf("equal sets: %d rounds, %d bytes; want 2 rounds, a few dozen bytes", equal.rounds, equal.bytes)
	}
	for i := 0; i < 10; i++ {
		ys = append(ys, item(uint64(n+i)))
	}
	b, _ = NewSet(sortItems(ys), DefaultConfig())
	diff := run(t, a, b)
	if got := len(diff.aNeed) + len(diff.bHave); got < 10 {
		t.Fatalf("found %d of 10 missing items", got)
	}
	if limit := 32 << 10; diff.bytes > limit {
		t.Errorf("10 differences in %d items cost %d bytes; want under %d (1%% of the ID list)", n, diff.bytes, limit)
	}
	t.Logf("equal: %d rounds %d bytes; 10 differing: %d rounds %d bytes", equal.rounds, equal.bytes, diff.rounds, diff.bytes)
}

func TestReconcileRejectsMalformed(t *testing.T) {
	s, _ := NewSet(sortItems([]Item{item(1), item(2)}), DefaultConfig())
	fp := make([]byte, 16)
	id := item(1)
	cases := map[string][]*pb.Range{
		"empty":              {},
		"last bounded":       {{Upper: []byte{1}, Mode: pb.RangeMode_RANGE_MODE_SKIP}},
		"middle unbounded":   {{Mode: pb.RangeMode_RANGE_MODE_SKIP}, {Mode: pb.RangeMode_RANGE_MODE_SKIP}},
		"decreasing bounds":  {{Upper: []byte{5}}, {Upper: []byte{4}}, {}},
		"equal padded":       {{Upper: []byte{5}}, {Upper: []byte{5, 0}}, {}},
		"long bound":         {{Upper: make([]byte, 33)}, {}},
		"short fingerprint":  {{Mode: pb.RangeMode_RANGE_MODE_FINGERPRINT, Fingerprint: fp[:3]}},
		"bad mode":           {{Mode: 7}},
		"short id":           {{Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: [][]byte{{1, 2}}}},
		"unsorted ids":       {{Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: [][]byte{id[:], id[:]}}},
		"id above its range": {{Upper: []byte{0}, Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: [][]byte{id[:]}}, {}},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Respond(in); !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestReconcileNewSetRejectsUnsorted(t *testing.T) {
	if _, err := NewSet([]Item{item(1), item(1)}, DefaultConfig()); err == nil {
		t.Error("duplicate items accepted")
	}
	if _, err := NewSet(nil, Config{}); err == nil {
		t.Error("zero config accepted")
	}
}

func FuzzReconcileRespond(f *testing.F) {
	s, _ := NewSet(sortItems([]Item{item(1), item(2), item(3)}), DefaultConfig())
	seed, _ := proto.Marshal(&pb.ReconcileMessage{Ranges: s.Initiate()})
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var m pb.ReconcileMessage
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		res, err := s.Respond(m.Ranges)
		if err != nil {
			return
		}
		if res.Ranges != nil {
			// Whatever we answer must itself be valid input for the peer.
			if _, err := s.Respond(res.Ranges); err != nil {
				t.Fatalf("own answer rejected: %v", err)
			}
		}
	})
}

// BenchmarkReconcileMillionTenDiffering is SPEC.md's case: 1,000,000 common
// entries and 10 differing. It reports the bytes of all messages.
func BenchmarkReconcileMillionTenDiffering(b *testing.B) {
	const n = 1000000
	xs := make([]Item, 0, n+5)
	for i := 0; i < n; i++ {
		xs = append(xs, item(uint64(i)))
	}
	ys := slices.Clone(xs)
	for i := 0; i < 5; i++ {
		xs = append(xs, item(uint64(2*n+i)))
		ys = append(ys, item(uint64(3*n+i)))
	}
	xs, ys = sortItems(xs), sortItems(ys)
	sa, _ := NewSet(xs, DefaultConfig())
	sb, _ := NewSet(ys, DefaultConfig())
	var o outcome
	for b.Loop() {
		o = run(b, sa, sb)
	}
	b.ReportMetric(float64(o.bytes), "bytes/reconcile")
	b.ReportMetric(float64(o.rounds), "rounds")
}

// TestReconcileAnswersStayWithinLimits: an answer is itself a valid message
// under the same limits, however many ranges differ, and small limits
// still converge to the exact difference.
func TestReconcileAnswersStayWithinLimits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 50; iter++ {
		var xs, ys []Item
		for i := 0; i < 4000; i++ {
			it := item(uint64(iter)<<32 | uint64(i))
			switch rng.IntN(3) {
			case 0:
				xs = append(xs, it)
			case 1:
				ys = append(ys, it)
			default:
				xs, ys = append(xs, it), append(ys, it)
			}
		}
		xs, ys = sortItems(xs), sortItems(ys)
		cfg := Config{IDThreshold: 8, Branching: 4, MaxRanges: 40 + rng.IntN(40), MaxIDs: 200 + rng.IntN(200)}
		a, _ := NewSet(xs, cfg)
		b, _ := NewSet(ys, cfg)
		msg := a.Initiate()
		sides := [2]*Set{b, a}
		var sendA, sendB []Item
		for turn := 0; ; turn++ {
			if turn > 2000 {
				t.Fatalf("iteration %d: no convergence", iter)
			}
			res, err := sides[turn%2].Respond(msg)
			if err != nil {
				t.Fatalf("iteration %d turn %d: %v", iter, turn, err)
			}
			if turn%2 == 0 {
				sendB, sendA = append(sendB, res.Have...), append(sendA, res.Need...)
			} else {
				sendA, sendB = append(sendA, res.Have...), append(sendB, res.Need...)
			}
			if res.Ranges == nil {
				break
			}
			if err := Validate(cfg, res.Ranges); err != nil {
				t.Fatalf("iteration %d turn %d: answer breaks the limits: %v", iter, turn, err)
			}
			msg = res.Ranges
		}
		if !slices.Equal(sortItems(sendA), minus(xs, ys)) || !slices.Equal(sortItems(sendB), minus(ys, xs)) {
			t.Fatalf("iteration %d: wrong difference", iter)
		}
	}
}
