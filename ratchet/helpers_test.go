package ratchet

import (
	"bytes"
	"crypto/ed25519"
	"crypto/mlkem"
	"crypto/mlkem/mlkemtest"
	"io"
	mrand "math/rand/v2"
	"testing"
)

// testRand returns a deterministic random source for tests.
func testRand(seed byte) io.Reader {
	var s [32]byte
	s[0] = seed
	return mrand.NewChaCha8(s)
}

// detEncapsulate is derandomised ML-KEM encapsulation with 32 bytes of rand,
// for known-answer tests.
func detEncapsulate(ek *mlkem.EncapsulationKey768, rand io.Reader) ([]byte, []byte, error) {
	var m [32]byte
	if err := readRand(rand, m[:]); err != nil {
		return nil, nil, err
	}
	return mlkemtest.Encapsulate768(ek, m[:])
}

// party is a test participant: identity, mailbox (prekey signer) and prekeys.
type party struct {
	id      *Identity
	mailbox ed25519.PrivateKey
	keys    *PrivateKeys
}

func newParty(t testing.TB, rand io.Reader) *party {
	t.Helper()
	id, err := GenerateIdentity(rand)
	if err != nil {
		t.Fatal(err)
	}
	var seed [32]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		t.Fatal(err)
	}
	mb := ed25519.NewKeyFromSeed(seed[:])
	keys, err := NewPrivateKeys(rand, id, mb.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return &party{id: id, mailbox: mb, keys: keys}
}

// otps makes one one-time prekey of each kind.
func (p *party) otps(t testing.TB, rand io.Reader) (dh, kem *OneTimePrekey) {
	t.Helper()
	a, err := p.keys.GenerateOneTimePrekeys(rand, KindX25519, 1, p.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.keys.GenerateOneTimePrekeys(rand, KindMLKEM768, 1, p.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	return a[0], b[0]
}

// pair sets up Alice (initiator) and Bob (responder) with an exchanged first
// message, so both sessions are established.
func pair(t testing.TB, rand io.Reader) (alice, bob *Session) {
	t.Helper()
	a, b := newParty(t, rand), newParty(t, rand)
	dh, kem := b.otps(t, rand)
	alice, err := Initiate(rand, a.id, b.keys.Bundle(), dh, kem)
	if err != nil {
		t.Fatal(err)
	}
	m, err := alice.Encrypt(rand, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	bob, pt, err := b.keys.Respond(rand, m)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != "hello" {
		t.Fatalf("got %q", pt)
	}
	return alice, bob
}

// exchange sends pt from s to r and checks it decrypts.
func exchange(t testing.TB, rand io.Reader, s, r *Session, pt string) {
	t.Helper()
	m, err := s.Encrypt(rand, []byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Decrypt(rand, m)
	if err != nil {
		t.Fatalf("decrypt %q: %v", pt, err)
	}
	if string(got) != pt {
		t.Fatalf("got %q, want %q", got, pt)
	}
}

func mustMarshal(t testing.TB, s interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func cloneSession(t testing.TB, s *Session) *Session {
	t.Helper()
	c, err := ParseSession(mustMarshal(t, s), s.Config)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertUnchanged(t testing.TB, before []byte, s *Session) {
	t.Helper()
	if after := mustMarshal(t, s); !bytes.Equal(before, after) {
		t.Fatal("session state changed on a failed operation")
	}
}
