package wire

import (
	"bytes"
	"errors"
	"testing"
)

// checkTruncations checks that every proper prefix of valid is rejected
// with one of the allowed sentinels (ErrMalformed if none is given), and
// that parse never panics.
func checkTruncations(t *testing.T, valid []byte, parse func([]byte) error, allowed ...error) {
	t.Helper()
	if len(allowed) == 0 {
		allowed = []error{ErrMalformed}
	}
	for n := 0; n < len(valid); n++ {
		err := parse(bytes.Clone(valid[:n]))
		ok := false
		for _, a := range allowed {
			ok = ok || errors.Is(err, a)
		}
		if !ok {
			t.Errorf("truncated to %d of %d bytes: error %v, want one of %v", n, len(valid), err, allowed)
		}
	}
}

// checkVersions checks that every version byte but 0x01 is rejected with
// ErrUnsupportedVersion, whatever follows and however short the input is.
func checkVersions(t *testing.T, valid []byte, parse func([]byte) error) {
	t.Helper()
	for _, n := range []int{1, 2, len(valid)} {
		for v := range 256 {
			if v == 0x01 {
				continue
			}
			b := bytes.Clone(valid[:n])
			b[0] = byte(v)
			if err := parse(b); !errors.Is(err, ErrUnsupportedVersion) {
				t.Errorf("version %#x, %d bytes: error %v, want %v", v, n, err, ErrUnsupportedVersion)
				break // one report per length
			}
		}
	}
}

func parseEnvelopeErr(b []byte) error {
	var e Envelope
	return e.Unmarshal(b)
}

func TestEnvelopeGolden(t *testing.T) {
	minimal := &Envelope{Mailbox: fixtureMailbox, Ciphertext: []byte{0x00}}
	maxFields := &Envelope{Mailbox: otherMailbox, Expiry: 1<<64 - 1, Postage: 1<<64 - 1, Ciphertext: bytes.Repeat([]byte{0xff}, 100)}
	cases := []golden{
		hexGolden("minimal", mustMarshalEnvelope(t, minimal)),
		hexGolden("fixture-0", mustMarshalEnvelope(t, fixtureEnvelope(0))),
		hexGolden("fixture-1", mustMarshalEnvelope(t, fixtureEnvelope(1))),
		hexGolden("max-fields", mustMarshalEnvelope(t, maxFields)),
	}
	checkGolden(t, "envelope.txt", `
Envelope (SPEC.md §3).
minimal: fixture mailbox, expiry 0, postage 0, ciphertext 00.
fixture-i: fixture mailbox, expiry 1700000000+i, postage 0x0102030405060708, ciphertext "cairn message <i>".
max-fields: other mailbox, expiry and postage 2^64-1, 100 bytes of ff.`, cases)

	var seeds []seedInput
	for _, c := range cases {
		seeds = append(seeds, seedInput{"golden-" + c.name, unhex(c.value)})
	}
	fx := mustMarshalEnvelope(t, fixtureEnvelope(0))
	seeds = append(seeds, invalidSeeds("fixture-0", fx)...)
	seeds = append(seeds, seedInput{"length-mismatch", append(bytes.Clone(fx[:51]), 0, 0, 0, 1)})
	checkSeeds(t, "FuzzEnvelope", seeds)
}

func TestEnvelopeSpecLayout(t *testing.T) {
	// SPEC.md §3, field by field, from the fixture's inputs.
	if EnvelopeOverhead != 55 || MaxCiphertext != 262144 {
		t.Fatalf("EnvelopeOverhead %d, MaxCiphertext %d: SPEC.md §3 says 55 and 262,144", EnvelopeOverhead, MaxCiphertext)
	}
	e := fixtureEnvelope(0)
	b := mustMarshalEnvelope(t, e)
	ct := []byte("cairn message 0")
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"mailbox", 1, 34, cat(unhex("1220"), sha(mailboxPub))},
		{"expiry", 35, 8, unhex("00000000 6553f100")},
		{"postage", 43, 8, unhex("01020304 05060708")},
		{"length", 51, 4, unhex("0000000f")},
		{"ciphertext", 55, len(ct), ct},
	})
	if e.Size() != len(b) || len(b) != 55+len(ct) {
		t.Errorf("Size %d, encoding %d bytes, want 55 + %d", e.Size(), len(b), len(ct))
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		e    *Envelope
	}{
		{"minimal", &Envelope{Mailbox: fixtureMailbox, Ciphertext: []byte{0}}},
		{"fixture", fixtureEnvelope(7)},
		{"max-fields", &Envelope{Mailbox: otherMailbox, Expiry: 1<<64 - 1, Postage: 1<<64 - 1, Ciphertext: []byte("x")}},
		{"max-ciphertext", &Envelope{Mailbox: fixtureMailbox, Expiry: 1, Ciphertext: bytes.Repeat([]byte{0xa5}, MaxCiphertext)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustMarshalEnvelope(t, tt.e)
			if len(b) != tt.e.Size() {
				t.Fatalf("Marshal gave %d bytes, Size %d", len(b), tt.e.Size())
			}
			got, err := ParseEnvelope(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Mailbox != tt.e.Mailbox || got.Expiry != tt.e.Expiry || got.Postage != tt.e.Postage || !bytes.Equal(got.Ciphertext, tt.e.Ciphertext) {
				t.Fatalf("round trip changed the envelope: %+v", got)
			}
			again := mustMarshalEnvelope(t, got)
			if !bytes.Equal(again, b) {
				t.Fatal("Marshal(Parse(b)) != b")
			}
			prefix := []byte("prefix")
			app, err := tt.e.AppendMarshal(bytes.Clone(prefix))
			if err != nil || !bytes.Equal(app, cat(prefix, b)) {
				t.Fatalf("AppendMarshal did not append the encoding: %v", err)
			}
			mb, err := EnvelopeMailbox(b)
			if err != nil || mb != tt.e.Mailbox {
				t.Fatalf("EnvelopeMailbox = %v, %v", mb, err)
			}
		})
	}
}

func TestEnvelopeRejects(t *testing.T) {
	valid := mustMarshalEnvelope(t, fixtureEnvelope(0))
	withLength := func(n uint32) []byte {
		b := bytes.Clone(valid)
		copy(b[51:55], u32(n))
		return b
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"header only", valid[:55], ErrMalformed},
		{"header with zero length", withLength(0)[:55], ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"length one short", withLength(uint32(len(valid) - 56)), ErrMalformed},
		{"length one long", withLength(uint32(len(valid) - 54)), ErrMalformed},
		{"length max", withLength(1<<32 - 1), ErrMalformed},
		{"mailbox prefix 00", func() []byte { b := bytes.Clone(valid); b[1] = 0; return b }(), ErrMalformed},
		{"mailbox length byte", func() []byte { b := bytes.Clone(valid); b[2] = 0x21; return b }(), ErrMalformed},
		{"version 0", append([]byte{0}, valid[1:]...), ErrUnsupportedVersion},
		{"version 2", append([]byte{2}, valid[1:]...), ErrUnsupportedVersion},
		{"ciphertext above max", func() []byte {
			e := &Envelope{Mailbox: fixtureMailbox, Ciphertext: make([]byte, MaxCiphertext)}
			b := mustMarshalEnvelope(t, e)
			copy(b[51:55], u32(MaxCiphertext+1))
			return append(b, 0)
		}(), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantErr(t, parseEnvelopeErr(tt.b), tt.want, "Unmarshal")
			if e, err := ParseEnvelope(tt.b); e != nil || err == nil {
				t.Errorf("ParseEnvelope = %v, %v", e, err)
			}
		})
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, valid, parseEnvelopeErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, valid, parseEnvelopeErr) })
	t.Run("failed unmarshal leaves the envelope alone", func(t *testing.T) {
		e := *fixtureEnvelope(3)
		before := e
		if err := e.Unmarshal(valid[:60]); err == nil {
			t.Fatal("accepted a truncated envelope")
		}
		if e.Mailbox != before.Mailbox || e.Expiry != before.Expiry || !bytes.Equal(e.Ciphertext, before.Ciphertext) {
			t.Fatal("Unmarshal changed the envelope on error")
		}
	})
}

func TestEnvelopeMarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		e    *Envelope
	}{
		{"no ciphertext", &Envelope{Mailbox: fixtureMailbox}},
		{"ciphertext above max", &Envelope{Mailbox: fixtureMailbox, Ciphertext: make([]byte, MaxCiphertext+1)}},
		{"zero mailbox", &Envelope{Ciphertext: []byte("x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.e.Marshal()
			wantErr(t, err, ErrMalformed, "Marshal")
			if b != nil {
				t.Errorf("Marshal returned %d bytes with its error", len(b))
			}
		})
	}
}

func TestEnvelopeMailboxRejects(t *testing.T) {
	valid := mustMarshalEnvelope(t, fixtureEnvelope(0))
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", valid[:54], ErrMalformed},
		{"version", append([]byte{9}, valid[1:]...), ErrUnsupportedVersion},
		{"version of a short envelope", []byte{9, 0x12}, ErrUnsupportedVersion},
		{"empty", nil, ErrMalformed},
		{"prefix", func() []byte { b := bytes.Clone(valid); b[1] = 0x13; return b }(), ErrMalformed},
	} {
		_, err := EnvelopeMailbox(tt.b)
		wantErr(t, err, tt.want, "%s", tt.name)
	}
}

func TestEnvelopeUnmarshalAllocs(t *testing.T) {
	b := mustMarshalEnvelope(t, &Envelope{Mailbox: fixtureMailbox, Ciphertext: make([]byte, 1024)})
	var e Envelope
	if n := testing.AllocsPerRun(100, func() {
		if err := e.Unmarshal(b); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Envelope.Unmarshal allocates %v times, want 0", n)
	}
	buf := make([]byte, 0, len(b))
	if n := testing.AllocsPerRun(100, func() {
		if _, err := e.AppendMarshal(buf[:0]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Envelope.AppendMarshal into a large enough buffer allocates %v times, want 0", n)
	}
}

func BenchmarkEnvelopeMarshal(b *testing.B) {
	e := &Envelope{Mailbox: fixtureMailbox, Expiry: fixtureExpiry, Ciphertext: make([]byte, 1024)}
	buf := make([]byte, 0, e.Size())
	b.SetBytes(int64(e.Size()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.AppendMarshal(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnvelopeParse(b *testing.B) {
	e := &Envelope{Mailbox: fixtureMailbox, Expiry: fixtureExpiry, Ciphertext: make([]byte, 1024)}
	enc := mustMarshalEnvelope(b, e)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	var out Envelope
	for b.Loop() {
		if err := out.Unmarshal(enc); err != nil {
			b.Fatal(err)
		}
	}
}
