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

// A message delayed across more DH steps than MaxOldChains (a store-and-
// forward relay cut from the others holds it while the conversation goes
// on through another) still decrypts: the old chain that holds its skipped
// key is kept although chains without skipped keys that are newer are
// dropped. Only MaxOldChains such key-holding chains are kept beyond the
// newest MaxOldChains; older ones are dropped with their keys.
func TestRatchetDelayedAcrossManySteps(t *testing.T) {
	rand := testRand(21)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	maxOld := bob.Config.maxOldChains()
	maxKept := bob.Config.maxSkippedChains()
	// One held message per chain of alice, for maxKept+1 chains (more than
	// maxOld: many messages delayed at once, as in a chaos soak); the next
	// message of each chain arrives, so bob keeps the held one's key.
	var held [][]byte
	for i := range maxKept + 1 {
		held = append(held, encrypt(t, alice, fmt.Sprint("held ", i)))
		exchange(t, rand, alice, bob, fmt.Sprint("a", i))
		exchange(t, rand, bob, alice, fmt.Sprint("b", i))
	}
	// More steps than MaxOldChains with nothing missing.
	for i := range 2 * maxOld {
		exchange(t, rand, alice, bob, fmt.Sprint("c", i))
		exchange(t, rand, bob, alice, fmt.Sprint("d", i))
	}
	if n := len(bob.chains); n > 1+maxOld+maxKept {
		t.Fatalf("%d receiving chains kept, want at most %d", n, 1+maxOld+maxKept)
	}
	bob = cloneSession(t, bob) // what a client reloads from its store
	// The oldest key-holding chain beyond the bound was dropped.
	decryptErr(t, bob, held[0], ErrNotForSession)
	for i := 1; i < len(held); i++ {
		decryptOK(t, bob, held[i], fmt.Sprint("held ", i))
	}
	// Decrypting them emptied their chains: the next step drops them.
	exchange(t, rand, alice, bob, "e")
	exchange(t, rand, bob, alice, "f")
	exchange(t, rand, alice, bob, "g")
	if n := len(bob.chains); n != 1+maxOld {
		t.Fatalf("%d receiving chains kept, want %d", n, 1+maxOld)
	}
}
