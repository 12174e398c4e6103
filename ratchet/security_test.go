package ratchet

import (
	"bytes"
	crand "crypto/rand"
	"errors"
	"fmt"
	"testing"
)

// forge builds a ratchet message for s whose header h is sealed under hk
// with the given nonce, followed by body (as if by someone who knows hk).
func forge(s *Session, hk *[keySize]byte, h header, nonce, body []byte) []byte {
	var hdr [headerSize]byte
	copy(hdr[:], h.dh[:])
	putU32(hdr[keySize:], h.pn)
	putU32(hdr[keySize+4:], h.n)
	had := append([]byte{0, adSize}, s.ad[:]...)
	m := append([]byte{TypeRatchet}, nonce...)
	m = seal(hk, m, nonce, hdr[:], had)
	return append(m, body...)
}

// splitMessage returns the nonce, header and body of a ratchet message.
func splitMessage(m []byte) (nonce, eh, body []byte) {
	p := m[1:]
	if m[0] == TypeHandshake {
		p = m[handshakePrefixSize:]
	}
	return p[:nonceSize], p[nonceSize : nonceSize+encHeaderSize], p[nonceSize+encHeaderSize:]
}

func encrypt(t testing.TB, s *Session, pt string) []byte {
	t.Helper()
	m, err := s.Encrypt(crand.Reader, []byte(pt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func decryptOK(t testing.TB, s *Session, m []byte, want string) {
	t.Helper()
	got, err := s.Decrypt(crand.Reader, m)
	if err != nil {
		t.Fatalf("decrypt %q: %v", want, err)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func decryptErr(t testing.TB, s *Session, m []byte, want error) {
	t.Helper()
	before := mustMarshal(t, s)
	if _, err := s.Decrypt(crand.Reader, m); !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	assertUnchanged(t, before, s)
}

// messageKey is the key the next message of s's sending chain will use.
func messageKey(s *Session) [keySize]byte { return hmacSHA256(&s.core.cks, labelChainMessage) }

// TestRatchetForwardSecrecy: once message n is decrypted, neither the live
// nor the serialised state decrypts it again, and neither state contains
// the key of any message already decrypted or the chain keys before them.
func TestRatchetForwardSecrecy(t *testing.T) {
	rand := testRand(3)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "reply")
	var used [][]byte // message and chain keys that must be gone
	var msgs [][]byte
	for i := range 6 {
		mk := messageKey(alice)
		used = append(used, bytes.Clone(mk[:]), bytes.Clone(alice.core.cks[:]))
		msgs = append(msgs, encrypt(t, alice, fmt.Sprint("m", i)))
	}
	// Deliver out of order: 3, 0, 5, 1 — 2 and 4 stay skipped.
	for _, i := range []int{3, 0, 5, 1} {
		decryptOK(t, bob, msgs[i], fmt.Sprint("m", i))
	}
	state := mustMarshal(t, bob)
	restored, err := ParseSession(state, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{3, 0, 5, 1} {
		decryptErr(t, bob, msgs[i], ErrDuplicate)
		decryptErr(t, restored, msgs[i], ErrDuplicate)
	}
	for _, st := range [][]byte{state, mustMarshal(t, alice)} {
		for i, k := range used {
			if i/2 == 2 || i/2 == 4 {
				if i%2 == 1 {
					continue // the chain keys of skipped messages are gone too
				}
				continue // skipped messages' keys are kept until they arrive
			}
			if bytes.Contains(st, k) {
				t.Fatalf("serialised state holds used key %d", i)
			}
		}
		for _, i := range []int{1, 3, 5, 7, 9, 11} {
			if bytes.Contains(st, used[i]) {
				t.Fatalf("serialised state holds old chain key %d", i/2)
			}
		}
	}
	decryptOK(t, restored, msgs[2], "m2")
	decryptOK(t, restored, msgs[4], "m4")
	if st := mustMarshal(t, restored); bytes.Contains(st, used[4]) || bytes.Contains(st, used[8]) {
		t.Fatal("used skipped key kept")
	}
}

// TestRatchetPostCompromise: an attacker holding a copy of a party's whole
// state (including its current ratchet private key) decrypts until one DH
// round trip happens without it — the peer's new ratchet key reaches the
// victim, the victim answers with a fresh one — then never again.
func TestRatchetPostCompromise(t *testing.T) {
	for _, victim := range []string{"alice", "bob"} {
		t.Run(victim, func(t *testing.T) {
			rand := testRand(4)
			alice, bob := pair(t, rand)
			exchange(t, rand, bob, alice, "reply")
			exchange(t, rand, alice, bob, "again")
			self, peer := bob, alice
			if victim == "alice" {
				self, peer = alice, bob
			}
			thief := cloneSession(t, self)
			// Compromised: the thief reads what the peer sends now.
			m := encrypt(t, peer, "secret 0")
			decryptOK(t, thief, m, "secret 0")
			decryptOK(t, self, m, "secret 0")
			// The round trip: the victim sends, the peer's new ratchet key
			// reaches the victim, and the victim answers with a fresh one.
			exchange(t, rand, self, peer, "exposed")
			exchange(t, rand, peer, self, "round")
			exchange(t, rand, self, peer, "trip")
			m = encrypt(t, peer, "secret 2")
			decryptOK(t, self, m, "secret 2")
			if _, err := thief.Decrypt(rand, m); err == nil {
				t.Fatal("thief still decrypts after a round trip")
			}
			for i := range 3 {
				exchange(t, rand, self, peer, "x")
				m = encrypt(t, peer, fmt.Sprint("later", i))
				decryptOK(t, self, m, fmt.Sprint("later", i))
				if _, err := thief.Decrypt(rand, m); err == nil {
					t.Fatal("thief decrypts a later message")
				}
			}
		})
	}
}

// TestRatchetTamper flips every byte of messages on each decryption path:
// each flip gives an error and leaves the state unchanged.
func TestRatchetTamper(t *testing.T) {
	rand := testRand(5)
	a, b := newParty(t, rand), newParty(t, rand)
	dh, kem := b.otps(t, rand)
	alice, err := Initiate(rand, a.id, b.keys.Bundle(), dh, kem)
	if err != nil {
		t.Fatal(err)
	}
	first := encrypt(t, alice, "first")
	second := encrypt(t, alice, "second")
	keysBefore := mustMarshal(t, b.keys)
	for i := range first {
		m := bytes.Clone(first)
		m[i] ^= 0x01
		if _, _, err := b.keys.Respond(rand, m); err == nil {
			t.Fatalf("respond accepted a flip at byte %d", i)
		}
	}
	assertBytes(t, keysBefore, mustMarshal(t, b.keys))
	bob, _, err := b.keys.Respond(rand, first)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{"handshake on session": second}
	// Current chain, a skipped key, a DH step.
	m1, m2, m3 := encrypt(t, alice, "1"), encrypt(t, alice, "2"), encrypt(t, alice, "3")
	decryptOK(t, bob, m2, "2")
	cases["current chain"] = m3
	cases["skipped key"] = m1
	exchange(t, rand, bob, alice, "reply")
	cases["dh step"] = encrypt(t, alice, "after reply")
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			before := mustMarshal(t, bob)
			for i := range msg {
				for _, mask := range []byte{0x01, 0x80} {
					m := bytes.Clone(msg)
					m[i] ^= mask
					if _, err := bob.Decrypt(rand, m); err == nil {
						t.Fatalf("accepted a flip of %#x at byte %d", mask, i)
					}
				}
			}
			assertUnchanged(t, before, bob)
			if _, err := bob.Decrypt(rand, msg); err != nil {
				t.Fatalf("genuine message after tampering: %v", err)
			}
		})
	}
}

func assertBytes(t testing.TB, want, got []byte) {
	t.Helper()
	if !bytes.Equal(want, got) {
		t.Fatal("state changed")
	}
}
