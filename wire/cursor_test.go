package wire

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

// originC is a sha2-256 (non-Ed25519) peer ID: cursors accept any peer ID.
var originC = peer.ID(unhex("1220" + "a4c1cc4e2ea5ea9c04f6c7a98c0c2d1c6d1e2b1d7bd7a3a2b4f9c2f3a1e0d9c8"))

func cursorOf(t testing.TB, ps ...Position) Cursor {
	t.Helper()
	var c Cursor
	for _, p := range ps {
		if err := c.Advance(p.Origin, p.Seq); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func parseCursorErr(b []byte) error { _, err := ParseCursor(b); return err }

func TestCursorGolden(t *testing.T) {
	several := cursorOf(t, Position{originC, 1}, Position{relayB.id, 1 << 40}, Position{relayA.id, 3})
	cases := []golden{
		hexGolden("empty", (&Cursor{}).Marshal()),
		hexGolden("one", func() []byte { c := cursorOf(t, Position{relayA.id, 7}); return c.Marshal() }()),
		hexGolden("several", several.Marshal()),
	}
	checkGolden(t, "cursor.txt", `
Portable cursors (SPEC.md §7). one: relay A at 7. several: relay A at 3, relay B at 2^40 and
the sha2-256 peer ID 1220a4c1…d9c8 at 1.`, cases)

	// SPEC.md §7 by hand: positions sorted bytewise by origin.
	type pos struct {
		id  []byte
		seq uint64
	}
	ps := []pos{{[]byte(originC), 1}, {[]byte(relayB.id), 1 << 40}, {[]byte(relayA.id), 3}}
	slices.SortFunc(ps, func(a, b pos) int { return bytes.Compare(a.id, b.id) })
	fields := []field{{"version", 0, 1, unhex("01")}, {"count", 1, 1, unhex("03")}}
	for i, p := range ps {
		fields = append(fields,
			field{fmt.Sprintf("origin_len[%d]", i), -1, 1, []byte{byte(len(p.id))}},
			field{fmt.Sprintf("origin[%d]", i), -1, len(p.id), p.id},
			field{fmt.Sprintf("seq[%d]", i), -1, 8, u64(p.seq)})
	}
	checkLayout(t, several.Marshal(), fields)
	if got := (&Cursor{}).Marshal(); !bytes.Equal(got, unhex("0100")) {
		t.Errorf("empty cursor is %x, SPEC.md §7 says 01 00", got)
	}

	var seeds []seedInput
	for _, c := range cases {
		seeds = append(seeds, seedInput{"golden-" + c.name, unhex(c.value)})
	}
	sev := unhex(cases[2].value)
	seeds = append(seeds, invalidSeeds("several", sev)...)
	seeds = append(seeds, seedInput{"unsorted", swapFirstTwo(t, sev)})
	checkSeeds(t, "FuzzCursor", seeds)
}

// swapFirstTwo swaps the first two positions of an encoded cursor whose
// first two origins have the same length.
func swapFirstTwo(t testing.TB, b []byte) []byte {
	t.Helper()
	l := int(b[2])
	if int(b[2+1+l+8]) != l {
		t.Fatal("first two origins differ in length")
	}
	p := 1 + l + 8
	return cat(b[:2], b[2+p:2+2*p], b[2:2+p], b[2+2*p:])
}

func TestCursorRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	origins := make([]peer.ID, 100)
	for i := range origins {
		origins[i] = peer.ID(mustMultihash(t, fmt.Appendf(nil, "origin %d", i)))
	}
	origins[0], origins[1] = relayA.id, relayB.id
	for round := range 200 {
		var c Cursor
		want := map[peer.ID]uint64{}
		for range rng.IntN(80) {
			o := origins[rng.IntN(len(origins))]
			s := rng.Uint64() >> rng.IntN(64)
			err := c.Advance(o, s)
			_, known := want[o]
			switch {
			case s == 0:
				if err != nil {
					t.Fatalf("Advance(seq 0): %v", err)
				}
			case !known && len(want) == MaxCursorOrigins:
				wantErr(t, err, ErrMalformed, "Advance of origin 65")
			case err != nil:
				t.Fatal(err)
			default:
				want[o] = max(want[o], s)
			}
		}
		if c.Len() != len(want) {
			t.Fatalf("round %d: %d origins, want %d", round, c.Len(), len(want))
		}
		for o, s := range want {
			if c.Get(o) != s || !c.Covers(o, s) || c.Covers(o, s+1) && s != 1<<64-1 {
				t.Fatalf("round %d: Get/Covers wrong for %s at %d", round, o, s)
			}
		}
		if !slices.IsSortedFunc(c.Positions(), func(a, b Position) int { return strings.Compare(string(a.Origin), string(b.Origin)) }) {
			t.Fatalf("round %d: positions not sorted", round)
		}
		b := c.Marshal()
		got, err := ParseCursor(b)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !got.Equal(&c) || !bytes.Equal(got.Marshal(), b) {
			t.Fatalf("round %d: round trip changed the cursor", round)
		}
	}
}

func TestCursorAdvance(t *testing.T) {
	var c Cursor
	if c.Covers(relayA.id, 1) || !c.Covers(relayA.id, 0) || c.Get(relayA.id) != 0 {
		t.Fatal("the empty cursor covers only seq 0")
	}
	for _, step := range []struct {
		origin peer.ID
		seq    uint64
		want   uint64
	}{
		{relayA.id, 5, 5},
		{relayA.id, 3, 5}, // never moves back
		{relayA.id, 0, 5}, // seq 0 is a no-op
		{relayA.id, 9, 9},
	} {
		if err := c.Advance(step.origin, step.seq); err != nil {
			t.Fatal(err)
		}
		if got := c.Get(step.origin); got != step.want {
			t.Fatalf("after Advance(%d): %d, want %d", step.seq, got, step.want)
		}
	}
	if err := c.Advance(relayB.id, 0); err != nil || c.Len() != 1 {
		t.Fatalf("Advance of a new origin to 0 listed it: %v, %d", err, c.Len())
	}
	for _, tt := range []struct {
		name   string
		origin peer.ID
	}{
		{"empty origin", ""},
		{"origin of 65 bytes", peer.ID(bytes.Repeat([]byte{1}, 65))},
		{"origin not a peer ID", peer.ID("not a peer id")},
	} {
		d := c.Clone()
		wantErr(t, d.Advance(tt.origin, 1), ErrMalformed, "%s", tt.name)
		if !d.Equal(&c) {
			t.Errorf("%s: a failed Advance changed the cursor", tt.name)
		}
	}
	d := c.Clone()
	if err := d.Advance(relayB.id, 2); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 1 || d.Len() != 2 || c.Equal(&d) {
		t.Fatal("Clone is not independent")
	}
	ps := d.Positions()
	ps[0].Seq = 1000
	if d.Get(ps[0].Origin) == 1000 {
		t.Fatal("Positions returned the cursor's own slice")
	}
	if s := d.String(); !strings.HasPrefix(s, "{") || !strings.Contains(s, ":9") || !strings.Contains(s, ":2") {
		t.Errorf("String() = %q", s)
	}
	// The 65th origin is refused; known origins still advance.
	var full Cursor
	for i := range MaxCursorOrigins {
		if err := full.Advance(peer.ID(mustMultihash(t, []byte{byte(i)})), 1); err != nil {
			t.Fatal(err)
		}
	}
	wantErr(t, full.Advance(relayA.id, 1), ErrMalformed, "65th origin")
	if err := full.Advance(full.Positions()[10].Origin, 7); err != nil {
		t.Fatalf("advancing a known origin of a full cursor: %v", err)
	}
	if _, err := ParseCursor(full.Marshal()); err != nil {
		t.Fatalf("a full cursor does not parse: %v", err)
	}
}

func TestCursorRejects(t *testing.T) {
	several := cursorOf(t, Position{relayA.id, 3}, Position{relayB.id, 1 << 40}, Position{originC, 1})
	valid := several.Marshal()
	pos := func(id peer.ID, seq uint64) []byte {
		return cat([]byte{byte(len(id))}, []byte(id), u64(seq))
	}
	lo, hi := relayA.id, relayB.id
	if lo > hi {
		lo, hi = hi, lo
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"count above the positions", cat(unhex("0102"), pos(lo, 1)), ErrMalformed},
		{"count below the positions", cat(unhex("0101"), pos(lo, 1), pos(hi, 1)), ErrMalformed},
		{"count 65", cat(unhex("0141"), bytes.Repeat(pos(lo, 1), 65)), ErrMalformed},
		{"count 255", cat(unhex("01ff")), ErrMalformed},
		{"unsorted", cat(unhex("0102"), pos(hi, 1), pos(lo, 1)), ErrMalformed},
		{"sha2-256 origin before an identity origin", cat(unhex("0102"), pos(originC, 1), pos(lo, 1)), ErrMalformed},
		{"duplicate origin", cat(unhex("0102"), pos(lo, 1), pos(lo, 2)), ErrMalformed},
		{"seq 0", cat(unhex("0101"), pos(lo, 0)), ErrMalformed},
		{"origin_len 0", cat(unhex("010100"), u64(1)), ErrMalformed},
		{"origin_len 65", cat(unhex("010141"), bytes.Repeat([]byte{0}, 65), u64(1)), ErrMalformed},
		{"origin not a multihash", cat(unhex("010103"), []byte("abc"), u64(1)), ErrMalformed},
		{"version 2", cat(unhex("02"), valid[1:]), ErrUnsupportedVersion},
		{"version only", unhex("02"), ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		wantErr(t, parseCursorErr(tt.b), tt.want, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, valid, parseCursorErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, valid, parseCursorErr) })
}

func TestCursorAllocs(t *testing.T) {
	var c Cursor
	for i := range 16 {
		if err := c.Advance(peer.ID(mustMultihash(t, []byte{byte(i)})), 1); err != nil {
			t.Fatal(err)
		}
	}
	o := c.Positions()[7].Origin
	seq := uint64(1)
	if n := testing.AllocsPerRun(100, func() {
		seq++
		if err := c.Advance(o, seq); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Cursor.Advance of a known origin allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.Covers(o, 3) }); n != 0 {
		t.Errorf("Cursor.Covers allocates %v times, want 0", n)
	}
}

func BenchmarkCursorAdvance(b *testing.B) {
	var c Cursor
	origins := make([]peer.ID, 16)
	for i := range origins {
		origins[i] = peer.ID(mustMultihash(b, []byte{byte(i)}))
		if err := c.Advance(origins[i], 1); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		seq++
		if err := c.Advance(origins[seq%16], seq); err != nil {
			b.Fatal(err)
		}
	}
}
