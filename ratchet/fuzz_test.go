package ratchet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fixture is the deterministic state the fuzz targets start from; the seed
// corpora in testdata/fuzz are made from the same state (go test -update).
type fixture struct {
	alice, bob []byte   // serialised sessions
	keys       []byte   // Bob's private keys before the handshake
	bundle     []byte   // Bob's bundle
	otps       [][]byte // Bob's one-time prekeys
	handshakes [][]byte // handshake messages to Bob
	toBob      [][]byte // messages the bob session can decrypt
	toAlice    [][]byte // messages the alice session can decrypt
	sealed     []byte   // a sealed-handshake plaintext
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	rand := testRand(0xF0)
	a, b := newParty(t, rand), newParty(t, rand)
	dh, kem := b.otps(t, rand)
	fx := &fixture{bundle: b.keys.Bundle().Marshal(), otps: [][]byte{dh.Marshal(), kem.Marshal()}}
	fx.keys = mustMarshal(t, b.keys)
	alice, err := initiate(rand, a.id, b.keys.Bundle(), dh, kem, detEncapsulate, initiateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s *Session, pt string) []byte {
		m, err := s.Encrypt(rand, []byte(pt))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h1, h2, h3 := enc(alice, "h1"), enc(alice, "h2"), enc(alice, "h3")
	fx.handshakes = [][]byte{h1, h2}
	bob, _, err := b.keys.Respond(rand, h1)
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := enc(bob, "r1"), enc(bob, "r2")
	fx.toAlice = [][]byte{r1, r2}
	fx.alice = mustMarshal(t, alice)
	if _, err := alice.Decrypt(rand, r2); err != nil {
		t.Fatal(err)
	}
	m1, m2, m3 := enc(alice, "m1"), enc(alice, "m2"), enc(alice, "m3")
	if _, err := bob.Decrypt(rand, m2); err != nil { // m1 is now skipped
		t.Fatal(err)
	}
	fx.bob = mustMarshal(t, bob)
	fx.toBob = [][]byte{h2, h3, m1, m3}
	fx.sealed = (&sealedHandshake{flags: 3, otpID: 7, kemID: 9, kemCT: make([]byte, kemCiphertextSize)}).marshal()
	return fx
}

func (fx *fixture) seeds(target string) [][]byte {
	switch target {
	case "FuzzSessionDecrypt":
		var s [][]byte
		s = append(s, fx.toBob...)
		s = append(s, fx.toAlice...)
		s = append(s, []byte{TypeRatchet}, []byte{0x03, 0x00})
		return s
	case "FuzzRespond":
		return append([][]byte{fx.toBob[2]}, fx.handshakes...)
	case "FuzzParseBundle":
		return [][]byte{fx.bundle}
	case "FuzzParseOneTimePrekey":
		return fx.otps
	case "FuzzUnmarshalSession":
		return [][]byte{fx.alice, fx.bob}
	case "FuzzParsePrivateKeys":
		return [][]byte{fx.keys}
	case "FuzzParseSealedHandshake":
		return [][]byte{fx.sealed}
	}
	return nil
}

// TestFuzzSeeds writes the seed corpora (with -update) or checks that each
// fuzz target has its seeds in testdata/fuzz.
func TestFuzzSeeds(t *testing.T) {
	fx := newFixture(t)
	// The session seeds are real messages of the fixture's sessions.
	for _, m := range fx.toBob {
		s, err := ParseSession(fx.bob, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Decrypt(testRand(1), m); err != nil {
			t.Fatalf("seed does not decrypt: %v", err)
		}
	}
	for _, target := range []string{"FuzzSessionDecrypt", "FuzzRespond", "FuzzParseBundle",
		"FuzzParseOneTimePrekey", "FuzzUnmarshalSession", "FuzzParsePrivateKeys", "FuzzParseSealedHandshake"} {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, s := range fx.seeds(target) {
			name := filepath.Join(dir, "seed-"+strconv.Itoa(i))
			data := fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", s)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(name, data, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(name)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s is missing or stale: run go test -run TestFuzzSeeds -update", name)
			}
		}
	}
}

// FuzzSessionDecrypt: arbitrary bytes to both sessions never panic, and on
// error leave the session unchanged.
func FuzzSessionDecrypt(f *testing.F) {
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, st := range [][]byte{fx.alice, fx.bob} {
			s, err := ParseSession(st, Config{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Decrypt(testRand(1), data); err != nil {
				assertUnchanged(t, st, s)
			}
		}
	})
}

// FuzzRespond: arbitrary handshake messages never panic, leave the private
// keys unchanged on error, and a parsed handshake message re-encodes to
// its input.
func FuzzRespond(f *testing.F) {
	fx := newFixture(f)
	parse := func() *PrivateKeys {
		k, err := ParsePrivateKeys(fx.keys)
		if err != nil {
			f.Fatal(err)
		}
		return k
	}
	// Parsing keys costs more than most inputs: parse again only after a
	// Respond that succeeded (and so changed them).
	keys := parse()
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := parseHandshakeMessage(data); err == nil && !bytes.Equal(m.marshal(), data) {
			t.Fatal("handshake message round trip differs")
		}
		HandshakeID(data)
		if _, _, err := keys.Respond(testRand(1), data); err != nil {
			assertBytes(t, fx.keys, mustMarshal(t, keys))
			return
		}
		keys = parse()
	})
}

// FuzzParseBundle: Marshal(Parse(b)) == b for every accepted bundle.
func FuzzParseBundle(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBundle(data)
		if err != nil {
			return
		}
		if !bytes.Equal(b.Marshal(), data) {
			t.Fatal("round trip differs")
		}
		if _, err := ParseBundle(data); err == nil && b.Verify() != nil {
			t.Fatal("verify disagrees")
		}
	})
}

// FuzzParseOneTimePrekey: Marshal(Parse(b)) == b for every accepted prekey.
func FuzzParseOneTimePrekey(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseOneTimePrekey(data)
		if err != nil {
			return
		}
		if !bytes.Equal(p.Marshal(), data) {
			t.Fatal("round trip differs")
		}
		_ = p.Verify([32]byte{})
	})
}

// FuzzUnmarshalSession: MarshalBinary(UnmarshalBinary(b)) == b, and an
// accepted session can be used without panicking.
func FuzzUnmarshalSession(f *testing.F) {
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSession(data, Config{})
		if err != nil {
			return
		}
		if !bytes.Equal(mustMarshal(t, s), data) {
			t.Fatal("round trip differs")
		}
		for _, m := range fx.toBob {
			s.Decrypt(testRand(2), m)
		}
		s.Encrypt(testRand(3), []byte("x"))
		_ = fmt.Sprint(s)
	})
}

// FuzzParsePrivateKeys: Marshal(Parse(b)) == b for accepted private keys.
func FuzzParsePrivateKeys(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKeys(data)
		if err != nil {
			return
		}
		if !bytes.Equal(mustMarshal(t, k), data) {
			t.Fatal("round trip differs")
		}
	})
}

// FuzzParseSealedHandshake: the sealed part's plaintext is canonical.
func FuzzParseSealedHandshake(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := parseSealed(data)
		if err != nil {
			return
		}
		if !bytes.Equal(h.marshal(), data) {
			t.Fatal("round trip differs")
		}
	})
}
