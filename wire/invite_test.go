package wire

import (
	"bytes"
	"encoding/base32"
	"errors"
	"strings"
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

func fixtureInvite(t testing.TB) *Invite {
	t.Helper()
	bundle := make([]byte, 200)
	for i := range bundle {
		bundle[i] = byte(7*i + 1)
	}
	var hints []ma.Multiaddr
	for _, s := range []string{
		"/ip4/192.0.2.1/tcp/4001/p2p/" + relayA.id.String(),
		"/ip6/2001:db8::1/udp/4001/quic-v1/p2p/" + relayB.id.String(),
		"/dns4/relay.example.org/tcp/443/wss/p2p/" + relayA.id.String(),
	} {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			t.Fatal(err)
		}
		hints = append(hints, a)
	}
	return &Invite{Bundle: bundle, Name: "Alice ⛰", Hints: hints}
}

func minimalInvite() *Invite { return &Invite{Bundle: []byte{0x01}} }

// withChecksum replaces the last 4 bytes of a payload with its checksum,
// computed by hand from SPEC.md §9.
func withChecksum(payload []byte) []byte {
	body := payload[:len(payload)-4]
	return cat(body, sha([]byte("cairn/v1/invite\x00"), body)[:4])
}

func specInviteString(payload []byte) string {
	return "cairn1" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(payload))
}

func parsePayloadErr(b []byte) error { var inv Invite; return inv.UnmarshalBinary(b) }

func TestInviteGolden(t *testing.T) {
	var cases []golden
	var seeds []seedInput
	for _, tt := range []struct {
		name string
		inv  *Invite
	}{{"minimal", minimalInvite()}, {"fixture", fixtureInvite(t)}} {
		p, err := tt.inv.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		s, err := tt.inv.String()
		if err != nil {
			t.Fatal(err)
		}
		qr, err := tt.inv.QR()
		if err != nil {
			t.Fatal(err)
		}
		if s != specInviteString(p) || qr != strings.ToUpper(s) {
			t.Errorf("%s: string forms differ from SPEC.md §9", tt.name)
		}
		cases = append(cases, hexGolden(tt.name+".payload", p), golden{tt.name + ".string", s}, golden{tt.name + ".qr", qr})
		seeds = append(seeds,
			seedInput{"golden-" + tt.name + "-payload", p},
			seedInput{"golden-" + tt.name + "-string", []byte(s)},
			seedInput{"golden-" + tt.name + "-qr", []byte(qr)})
	}
	checkGolden(t, "invite.txt", `
Invites (SPEC.md §9): payload (hex), string form and QR form.
minimal: bundle 01, no name, no hints.
fixture: bundle of 200 bytes (7i+1 mod 256), name "Alice ⛰" (UTF-8), hints
/ip4/192.0.2.1/tcp/4001/p2p/<relay A>, /ip6/2001:db8::1/udp/4001/quic-v1/p2p/<relay B>,
/dns4/relay.example.org/tcp/443/wss/p2p/<relay A>.`, cases)
	p := unhex(cases[3].value)
	seeds = append(seeds,
		seedInput{"bad-checksum", flipBit(p, 8*len(p)-1)},
		seedInput{"version-2", withChecksum(cat(unhex("02"), p[1:]))},
		seedInput{"trailing", withChecksum(cat(p[:len(p)-4], unhex("00"), p[len(p)-4:]))},
		seedInput{"hint-count-9", withChecksum(cat(unhex("01 0001 01 00 09"), make([]byte, 4)))},
	)
	checkSeeds(t, "FuzzInvite", seeds)
}

func TestInviteSpecLayout(t *testing.T) {
	inv := fixtureInvite(t)
	p, err := inv.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	name := []byte("Alice ⛰")
	fields := []field{
		{"version", 0, 1, unhex("01")},
		{"bundle_len", 1, 2, unhex("00c8")},
		{"bundle", 3, 200, inv.Bundle},
		{"name_len", 203, 1, []byte{byte(len(name))}},
		{"name", 204, len(name), name},
		{"hint_count", -1, 1, unhex("03")},
	}
	for _, h := range inv.Hints {
		hb := h.Bytes()
		fields = append(fields, field{"hint len", -1, 1, []byte{byte(len(hb))}}, field{"hint " + h.String(), -1, len(hb), hb})
	}
	fields = append(fields, field{"checksum", -1, 4, sha([]byte("cairn/v1/invite\x00"), p[:len(p)-4])[:4]})
	checkLayout(t, p, fields)
	// The hints carry the multiaddr binary form of the spec: the /p2p/
	// component is code 0x01a5 and the peer ID bytes.
	if !bytes.Contains(inv.Hints[0].Bytes(), cat(unhex("a503 26"), []byte(relayA.id))) {
		t.Error("hint does not end with /p2p/<relay A> in multiaddr binary form")
	}
}

func TestInviteParseForms(t *testing.T) {
	inv := fixtureInvite(t)
	s, err := inv.String()
	if err != nil {
		t.Fatal(err)
	}
	qr, err := inv.QR()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range qr {
		if !strings.ContainsRune("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", c) {
			t.Fatalf("QR form has %q, outside the QR alphanumeric set", c)
		}
	}
	wrap := func(s string, n int, sep string) string {
		var sb strings.Builder
		for i := 0; i < len(s); i += n {
			sb.WriteString(s[i:min(i+n, len(s))])
			sb.WriteString(sep)
		}
		return sb.String()
	}
	mixed := []byte(s)
	for i := range mixed {
		if i%3 == 0 && mixed[i] >= 'a' && mixed[i] <= 'z' {
			mixed[i] -= 'a' - 'A'
		}
	}
	for _, tt := range []struct{ name, s string }{
		{"string", s},
		{"qr", qr},
		{"mixed case", string(mixed)},
		{"wrapped at 64", wrap(s, 64, "\n")},
		{"wrapped with CRLF", wrap(qr, 50, "\r\n")},
		{"spaces and tabs", " \t" + wrap(s, 4, " ") + "\t\n"},
		{"vertical tab and form feed", wrap(s, 10, "\v") + "\f"},
	} {
		got, err := ParseInvite(tt.s)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !bytes.Equal(got.Bundle, inv.Bundle) || got.Name != inv.Name || len(got.Hints) != len(inv.Hints) {
			t.Errorf("%s: parsed %+v", tt.name, got)
			continue
		}
		for i := range got.Hints {
			if !got.Hints[i].Equal(inv.Hints[i]) || got.Hints[i].String() != inv.Hints[i].String() {
				t.Errorf("%s: hint %d is %s, want %s", tt.name, i, got.Hints[i], inv.Hints[i])
			}
		}
		if again, _ := got.String(); again != s {
			t.Errorf("%s: re-encoded as %s", tt.name, again)
		}
	}
	m, err := ParseInvite(mustString(t, minimalInvite()))
	if err != nil || !bytes.Equal(m.Bundle, []byte{1}) || m.Name != "" || len(m.Hints) != 0 {
		t.Fatalf("minimal invite: %+v, %v", m, err)
	}
}

func mustString(t testing.TB, inv *Invite) string {
	t.Helper()
	s, err := inv.String()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestInviteSingleCharacterChange(t *testing.T) {
	for _, inv := range []*Invite{minimalInvite(), fixtureInvite(t)} {
		s := mustString(t, inv)
		const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
		for i := len(InvitePrefix); i < len(s); i++ {
			// Every other symbol at the first and last characters (the
			// version, and the unused bits of the last symbol); elsewhere
			// the five symbols one bit away, and characters outside the
			// alphabet.
			sym := strings.IndexByte(alphabet, s[i])
			alts := "01890!=_-é"
			if i < len(InvitePrefix)+2 || i >= len(s)-2 {
				alts += alphabet
			} else {
				for b := 1; b < 32; b <<= 1 {
					alts += string(alphabet[sym^b])
				}
			}
			if raceEnabled && i%5 != 0 && i < len(s)-2 {
				continue
			}
			for _, c := range alts {
				if byte(c) == s[i] && c < 0x80 {
					continue
				}
				changed := s[:i] + string(c) + s[i+1:]
				want := ErrInviteChecksum
				if !strings.ContainsRune(alphabet, c) {
					want = ErrMalformed
				}
				_, err := ParseInvite(changed)
				wantErr(t, err, want, "character %d changed to %q", i, c)
				// Case does not matter: the same change in the QR form.
				_, err = ParseInvite(strings.ToUpper(changed))
				wantErr(t, err, want, "QR character %d changed to %q", i, c)
			}
		}
		// Dropping or adding a character is caught too.
		for i := len(InvitePrefix); i < len(s); i += bitStride() {
			_, err := ParseInvite(s[:i] + s[i+1:])
			if !errors.Is(err, ErrInviteChecksum) && !errors.Is(err, ErrMalformed) {
				t.Errorf("character %d dropped: %v", i, err)
			}
			_, err = ParseInvite(s[:i] + "a" + s[i:])
			if !errors.Is(err, ErrInviteChecksum) && !errors.Is(err, ErrMalformed) {
				t.Errorf("character inserted at %d: %v", i, err)
			}
		}
	}
}

func TestInviteRejectsStrings(t *testing.T) {
	s := mustString(t, fixtureInvite(t))
	body := s[len(InvitePrefix):]
	for _, tt := range []struct {
		name string
		s    string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"prefix only", "cairn1", ErrMalformed},
		{"wrong prefix", "cairn2" + body, ErrMalformed},
		{"no prefix", body, ErrMalformed},
		{"padding", s + "====", ErrMalformed},
		{"non-ASCII space", s[:20] + "\u00a0" + s[20:], ErrMalformed},
		// Unicode case mapping must not turn these into base32 letters.
		{"Kelvin sign", strings.Replace(s, "k", "\u212a", 1), ErrMalformed},
		{"long s", strings.Replace(s, "s", "\u017f", 1), ErrMalformed},
		{"dotless i", strings.Replace(s, "i", "\u0131", 1), ErrMalformed},
	} {
		if tt.name == "Kelvin sign" && !strings.Contains(s, "k") {
			t.Fatalf("fixture string has no k")
		}
		_, err := ParseInvite(tt.s)
		wantErr(t, err, tt.want, "%s", tt.name)
	}
}

func TestInviteRejectsPayloads(t *testing.T) {
	inv := fixtureInvite(t)
	valid, err := inv.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sum := make([]byte, 4) // placeholder checksum, recomputed by withChecksum
	hint := inv.Hints[0].Bytes()
	build := func(parts ...[]byte) []byte { return withChecksum(cat(append(parts, sum)...)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version only", unhex("02"), ErrUnsupportedVersion},
		{"too short", unhex("0100010100"), ErrMalformed},
		{"bad checksum", flipBit(valid, 8*len(valid)-1), ErrInviteChecksum},
		{"version 2", withChecksum(cat(unhex("02"), valid[1:])), ErrUnsupportedVersion},
		{"version 2, bad checksum", cat(unhex("02"), valid[1:]), ErrInviteChecksum},
		{"trailing byte", withChecksum(cat(valid[:len(valid)-4], unhex("00"), sum)), ErrMalformed},
		{"trailing byte after checksum", append(bytes.Clone(valid), 0), ErrInviteChecksum},
		{"bundle_len 0", build(unhex("01 0000 00 00")), ErrMalformed},
		{"bundle_len 4097", build(unhex("01 1001"), make([]byte, 4097), unhex("00 00")), ErrMalformed},
		{"bundle_len past the end", build(unhex("01 0010 01 00 00")), ErrMalformed},
		{"name_len 65", build(unhex("01 0001 01 41"), make([]byte, 65), unhex("00")), ErrMalformed},
		{"name not UTF-8", build(unhex("01 0001 01 02 c328 00")), ErrMalformed},
		{"name_len past the end", build(unhex("01 0001 01 05 61 00")), ErrMalformed},
		{"hint_count 9", build(unhex("01 0001 01 00 09"), bytes.Repeat(cat([]byte{byte(len(hint))}, hint), 9)), ErrMalformed},
		{"hint_count above the hints", build(unhex("01 0001 01 00 02"), []byte{byte(len(hint))}, hint), ErrMalformed},
		{"hint of 0 bytes", build(unhex("01 0001 01 00 01 00")), ErrMalformed},
		{"hint past the end", build(unhex("01 0001 01 00 01 40"), hint[:10]), ErrMalformed},
		{"hint not a multiaddr", build(unhex("01 0001 01 00 01 03 ffffff")), ErrMalformed},
		{"hint with a non-minimal varint", build(unhex("01 0001 01 00 01 06 8400 c0000201")), ErrMalformed},
		{"no hint_count", build(unhex("01 0001 01 00")), ErrMalformed},
	}
	for _, tt := range tests {
		wantErr(t, parsePayloadErr(tt.b), tt.want, "%s", tt.name)
	}
	if err := parsePayloadErr(build(unhex("01 0001 01 00 00"))); err != nil {
		t.Errorf("smallest payload: %v", err)
	}
	t.Run("truncations", func(t *testing.T) {
		checkTruncations(t, valid, parsePayloadErr, ErrMalformed, ErrInviteChecksum)
	})
	t.Run("truncations with a valid checksum", func(t *testing.T) {
		for n := 9; n < len(valid); n++ {
			wantErr(t, parsePayloadErr(withChecksum(valid[:n])), ErrMalformed, "%d of %d bytes", n, len(valid))
		}
	})
	t.Run("versions", func(t *testing.T) {
		for v := range 256 {
			if v == 1 {
				continue
			}
			for _, b := range [][]byte{{byte(v)}, {byte(v), 0}, withChecksum(cat([]byte{byte(v)}, valid[1:]))} {
				wantErr(t, parsePayloadErr(b), ErrUnsupportedVersion, "version %d, %d bytes", v, len(b))
			}
		}
	})
	t.Run("every bit", func(t *testing.T) {
		for bit := range 8 * len(valid) {
			wantErr(t, parsePayloadErr(flipBit(valid, bit)), ErrInviteChecksum, "bit %d", bit)
		}
	})
}

func TestInviteMarshalRejects(t *testing.T) {
	long, err := ma.NewMultiaddr("/dns4/" + strings.Repeat("a", 250) + "/tcp/1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		inv  Invite
	}{
		{"no bundle", Invite{}},
		{"bundle of 4097 bytes", Invite{Bundle: make([]byte, 4097)}},
		{"name of 65 bytes", Invite{Bundle: []byte{1}, Name: strings.Repeat("a", 65)}},
		{"name not UTF-8", Invite{Bundle: []byte{1}, Name: "\xc3("}},
		{"9 hints", Invite{Bundle: []byte{1}, Hints: make([]ma.Multiaddr, 9)}},
		{"empty hint", Invite{Bundle: []byte{1}, Hints: []ma.Multiaddr{nil}}},
		{"hint of 256+ bytes", Invite{Bundle: []byte{1}, Hints: []ma.Multiaddr{long}}},
	} {
		_, err := tt.inv.MarshalBinary()
		wantErr(t, err, ErrMalformed, "%s: MarshalBinary", tt.name)
		_, err = tt.inv.String()
		wantErr(t, err, ErrMalformed, "%s: String", tt.name)
		_, err = tt.inv.QR()
		wantErr(t, err, ErrMalformed, "%s: QR", tt.name)
	}
}

func TestInviteLimits(t *testing.T) {
	hint := fixtureInvite(t).Hints[0]
	hints := make([]ma.Multiaddr, MaxInviteHints)
	for i := range hints {
		hints[i] = hint
	}
	inv := &Invite{Bundle: bytes.Repeat([]byte{0xab}, MaxInviteBundle), Name: strings.Repeat("é", MaxInviteName/2), Hints: hints}
	s := mustString(t, inv)
	got, err := ParseInvite(s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bundle, inv.Bundle) || got.Name != inv.Name || len(got.Hints) != MaxInviteHints {
		t.Fatal("largest invite does not round-trip")
	}
	// The payload is not length-limited by its QR form (SPEC.md §9), but
	// a form no QR code holds is refused.
	if len(s) <= MaxInviteQRLen {
		t.Fatalf("largest invite has %d characters: it should not fit a QR code", len(s))
	}
	_, err = inv.QR()
	wantErr(t, err, ErrTooLarge, "QR of the largest invite")
}

// TestInviteQRLimit: the QR form exists up to MaxInviteQRLen characters,
// not one more.
func TestInviteQRLimit(t *testing.T) {
	base := fixtureInvite(t)
	fits := func(bundleLen int) (int, error) {
		inv := &Invite{Bundle: bytes.Repeat([]byte{1}, bundleLen), Name: base.Name, Hints: base.Hints}
		s := mustString(t, inv)
		_, err := inv.QR()
		return len(s), err
	}
	// Find the largest bundle whose string fits, by bisection.
	lo, hi := 1, MaxInviteBundle
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if n, _ := fits(mid); n <= MaxInviteQRLen {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	n, err := fits(lo)
	if err != nil || n > MaxInviteQRLen {
		t.Fatalf("bundle %d: %d characters: %v", lo, n, err)
	}
	n, err = fits(lo + 1)
	if n <= MaxInviteQRLen {
		t.Fatalf("bundle %d: %d characters still fit", lo+1, n)
	}
	wantErr(t, err, ErrTooLarge, "QR one byte over")
}
