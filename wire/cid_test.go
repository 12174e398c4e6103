package wire

import (
	"bytes"
	"encoding/base32"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// specCIDText is SPEC.md §4's text form built by hand: multibase prefix b
// and RFC 4648 base32, lowercase, unpadded.
func specCIDText(bin []byte) string {
	return "b" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(bin))
}

func TestCIDGolden(t *testing.T) {
	var cases []golden
	var seeds []seedInput
	for _, tt := range []struct {
		name string
		env  *Envelope
	}{
		{"minimal-envelope", &Envelope{Mailbox: fixtureMailbox, Ciphertext: []byte{0x00}}},
		{"fixture-0", fixtureEnvelope(0)},
		{"fixture-1", fixtureEnvelope(1)},
	} {
		enc := mustMarshalEnvelope(t, tt.env)
		c := CIDOf(enc)
		// SPEC.md §4: 01 55 12 20 ‖ SHA-256(envelope), 36 bytes.
		checkLayout(t, c[:], []field{
			{"cid version", 0, 1, unhex("01")},
			{"codec raw", 1, 1, unhex("55")},
			{"multihash sha2-256", 2, 1, unhex("12")},
			{"digest length", 3, 1, unhex("20")},
			{"digest", 4, 32, sha(enc)},
		})
		if got, want := c.String(), specCIDText(c[:]); got != want {
			t.Errorf("%s: String() = %s, SPEC.md §4 text form %s", tt.name, got, want)
		}
		cases = append(cases, hexGolden(tt.name+".binary", c[:]), golden{tt.name + ".text", c.String()})
		seeds = append(seeds, seedInput{"golden-" + tt.name + "-binary", c[:]}, seedInput{"golden-" + tt.name + "-text", []byte(c.String())})
	}
	checkGolden(t, "cid.txt", `
Content IDs (SPEC.md §4) of the envelopes of envelope.txt: binary form (hex) and text form.`, cases)
	seeds = append(seeds,
		seedInput{"invalid-codec", unhex("01701220" + strings.Repeat("ab", 32))},
		seedInput{"invalid-short", unhex("01551220ab")},
		seedInput{"text-base58", []byte(base58Encoder{}.Encode(unhex("01551220" + strings.Repeat("cd", 32))))},
		seedInput{"text-v0", []byte("QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR")},
	)
	checkSeeds(t, "FuzzCID", seeds)
}

// base58Encoder prints a CID in multibase base58btc (z…).
type base58Encoder struct{}

func (base58Encoder) Encode(b []byte) string {
	c, err := cid.Cast(b)
	if err != nil {
		panic(err)
	}
	s, err := c.StringOfBase('z')
	if err != nil {
		panic(err)
	}
	return s
}

func TestCIDParse(t *testing.T) {
	c := CIDOf(mustMarshalEnvelope(t, fixtureEnvelope(0)))
	got, err := ParseCID(c[:])
	if err != nil || got != c {
		t.Fatalf("ParseCID(CIDOf) = %v, %v", got, err)
	}
	if got.Digest() != [32]byte(c[4:]) {
		t.Fatal("Digest is not the multihash digest")
	}
	if !bytes.Equal(got.Cid().Bytes(), c[:]) || got.Cid().Prefix().Codec != cid.Raw || got.Cid().Version() != 1 {
		t.Fatalf("Cid() = %v", got.Cid())
	}
	if c.IsZero() || !(CID{}).IsZero() {
		t.Fatal("IsZero")
	}
	mod := func(i int, v byte) []byte { b := bytes.Clone(c[:]); b[i] = v; return b }
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", c[:35]},
		{"long", append(bytes.Clone(c[:]), 0)},
		{"version 0", mod(0, 0x00)},
		{"codec dag-pb", mod(1, 0x70)},
		{"hash sha2-512", mod(2, 0x13)},
		{"digest length", mod(3, 0x21)},
		{"multihash only (CIDv0)", c[2:]},
	} {
		_, err := ParseCID(tt.b)
		wantErr(t, err, ErrMalformed, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) {
		checkTruncations(t, c[:], func(b []byte) error { _, err := ParseCID(b); return err })
	})
}

func TestCIDParseString(t *testing.T) {
	c := CIDOf(mustMarshalEnvelope(t, fixtureEnvelope(0)))
	text := c.String()
	if !strings.HasPrefix(text, "b") {
		t.Fatalf("text form %s does not start with b", text)
	}
	for _, tt := range []struct {
		name string
		s    string
	}{
		{"base32", text},
		{"base58btc", base58Encoder{}.Encode(c[:])},
	} {
		got, err := ParseCIDString(tt.s)
		if err != nil || got != c {
			t.Errorf("%s: ParseCIDString(%s) = %v, %v", tt.name, tt.s, got, err)
		}
	}
	dagpb := cid.NewCidV1(cid.DagProtobuf, mh.Multihash(c[2:]))
	v0 := cid.NewCidV0(mh.Multihash(c[2:]))
	for _, tt := range []struct {
		name string
		s    string
	}{
		{"empty", ""},
		{"garbage", "hello"},
		{"truncated", text[:len(text)-1]},
		{"dag-pb codec", dagpb.String()},
		{"CIDv0", v0.String()},
		{"uppercase base32 of a dag-pb CID", strings.ToUpper(dagpb.String())},
	} {
		_, err := ParseCIDString(tt.s)
		wantErr(t, err, ErrMalformed, "%s: %q", tt.name, tt.s)
	}
}

func TestCIDString(t *testing.T) {
	if got := (CID{}).String(); got != "<zero cid>" {
		t.Errorf("zero CID prints %q", got)
	}
	// A CID value that did not come from CIDOf or ParseCID must still
	// print (it may be logged), not panic.
	var bad CID
	bad[0] = 0x07
	if s := bad.String(); s == "" {
		t.Error("an invalid CID prints as the empty string")
	}
}

func TestCIDOfAllocs(t *testing.T) {
	env := make([]byte, 1024)
	if n := testing.AllocsPerRun(100, func() { _ = CIDOf(env) }); n != 0 {
		t.Errorf("CIDOf allocates %v times, want 0", n)
	}
	c := CIDOf(env)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ParseCID(c[:]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ParseCID allocates %v times, want 0", n)
	}
}

func BenchmarkCIDOf(b *testing.B) {
	env := make([]byte, 1024)
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	for b.Loop() {
		_ = CIDOf(env)
	}
}
