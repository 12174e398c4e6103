package ratchet

import (
	"errors"
	"fmt"
	"testing"
)

func TestRatchetRoundTrip(t *testing.T) {
	rand := testRand(1)
	alice, bob := pair(t, rand)
	if !alice.SendingHandshake() {
		t.Fatal("alice should still send handshakes")
	}
	exchange(t, rand, bob, alice, "hi alice")
	if alice.SendingHandshake() {
		t.Fatal("alice should stop sending handshakes after a reply")
	}
	for i := range 20 {
		exchange(t, rand, alice, bob, fmt.Sprint("a", i))
		if i%3 == 0 {
			exchange(t, rand, bob, alice, fmt.Sprint("b", i))
		}
	}
	if alice.PeerIdentity() != bob.LocalIdentity() || bob.PeerIdentity() != alice.LocalIdentity() {
		t.Fatal("identities do not match")
	}
	if alice.AssociatedData() != bob.AssociatedData() || alice.HandshakeID() != bob.HandshakeID() {
		t.Fatal("AD or handshake ID differ")
	}
}

func TestRatchetSerialiseRoundTrip(t *testing.T) {
	rand := testRand(2)
	alice, bob := pair(t, rand)
	for i := range 10 {
		alice, bob = cloneSession(t, alice), cloneSession(t, bob)
		exchange(t, rand, alice, bob, fmt.Sprint("a", i))
		exchange(t, rand, bob, alice, fmt.Sprint("b", i))
	}
	b := mustMarshal(t, alice)
	var s Session
	if err := s.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if c := mustMarshal(t, &s); string(c) != string(b) {
		t.Fatal("round trip differs")
	}
	if err := s.UnmarshalBinary(b[:len(b)-1]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("truncated: %v", err)
	}
}
