package ratchet

// One test per bug that other ratchets shipped (CRYPTO-NOTES.md, "Bugs other
// implementations shipped"); each test name carries the bug's number.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// Bug 1: state changed before authentication. A forged header with a large
// counter, or with an unknown DH key, must not advance or rotate anything;
// a corrupted copy of a skipped message must not burn the skipped key.
func TestBug01StateChangedBeforeAuth(t *testing.T) {
	rand := testRand(11)
	alice, bob := pair(t, rand)
	exchange(t, rand, alice, bob, "warm")
	nonce := make([]byte, nonceSize)
	garbage := make([]byte, 40)

	// Large counter on the current chain, valid header, bad body.
	h := header{dh: bob.core.dhr, n: bob.core.nr + 500}
	decryptErr(t, bob, forge(bob, &bob.core.hkr, h, nonce, garbage), ErrAuth)
	// Unknown DH key under the next header key: would rotate the ratchet.
	k, _ := ecdh.X25519().GenerateKey(crand.Reader)
	h = header{dh: [32]byte(k.PublicKey().Bytes()), n: 3}
	decryptErr(t, bob, forge(bob, &bob.core.nhkr, h, nonce, garbage), ErrAuth)

	// A corrupted copy of a skipped message does not burn its key.
	m1, m2 := encrypt(t, alice, "one"), encrypt(t, alice, "two")
	decryptOK(t, bob, m2, "two")
	bad := bytes.Clone(m1)
	bad[len(bad)-1] ^= 1
	decryptErr(t, bob, bad, ErrAuth)
	decryptOK(t, bob, m1, "one")
	decryptErr(t, bob, m1, ErrDuplicate)
}

// Bug 2: skipped-key memory DoS. The per-chain jump is capped, the total
// across DH steps is capped with the oldest evicted, and the session keeps
// accepting traffic when the store is full.
func TestBug02SkippedKeysBounded(t *testing.T) {
	rand := testRand(12)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	cfg := Config{}
	var firstBatch [][]byte
	for round := range 4 {
		var last []byte
		for i := range cfg.maxSkip() + 1 {
			m := encrypt(t, alice, fmt.Sprint(round, "/", i))
			if round == 0 && i < 5 {
				firstBatch = append(firstBatch, m)
			}
			last = m
		}
		decryptOK(t, bob, last, fmt.Sprint(round, "/", cfg.maxSkip()))
		if bob.nkeys > cfg.maxSkippedKeys() {
			t.Fatalf("round %d: %d skipped keys stored", round, bob.nkeys)
		}
		exchange(t, rand, bob, alice, "turn")
	}
	if bob.nkeys != cfg.maxSkippedKeys() {
		t.Fatalf("%d skipped keys, want the cap %d", bob.nkeys, cfg.maxSkippedKeys())
	}
	// The oldest keys were evicted: their messages are refused, not decrypted.
	for _, m := range firstBatch {
		if _, err := bob.Decrypt(rand, m); err == nil {
			t.Fatal("evicted key still decrypts")
		}
	}
	// Traffic still flows with a full store.
	exchange(t, rand, alice, bob, "still")
	exchange(t, rand, bob, alice, "alive")
	// A new chain whose predecessor lost more than MaxSkip messages is
	// accepted (keeping MaxSkip keys of the old one), not wedged.
	exchange(t, rand, alice, bob, "new chain") // Bob steps
	reply := encrypt(t, bob, "reply")          // with a new ratchet key
	for range cfg.maxSkip() + 10 {
		encrypt(t, alice, "lost")
	}
	decryptOK(t, alice, reply, "reply") // Alice steps
	exchange(t, rand, alice, bob, "next chain after a long loss")
	// A jump beyond MaxSkip within one chain is refused, state unchanged.
	var far []byte
	for range cfg.maxSkip() + 2 {
		far = encrypt(t, alice, "far")
	}
	decryptErr(t, bob, far, ErrTooManySkipped)
}

// Bug 3: the header must be bound into the body's AD on every path: a DH
// step, the current chain, a skipped key in the current chain and in an old
// one. Each case reseals, under the same nonce and header key, a header with
// another PN, which leaves the message key unchanged: the body must fail.
func TestBug03HeaderBoundOnEveryPath(t *testing.T) {
	rand := testRand(13)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	reheader := func(m []byte, hk [keySize]byte) []byte {
		t.Helper()
		nonce, eh, body := splitMessage(m)
		h, ok := openHeader(&hk, make([]byte, headerSize), nonce, eh, append([]byte{0, adSize}, bob.ad[:]...))
		if !ok {
			t.Fatal("header does not open")
		}
		h.pn++
		return forge(bob, &hk, h, nonce, body)
	}
	// DH step: the first message of Alice's new chain.
	m := encrypt(t, alice, "step")
	decryptErr(t, bob, reheader(m, bob.core.nhkr), ErrAuth)
	decryptOK(t, bob, m, "step")
	// Current chain, then a skipped key of it.
	m1, m2, m3 := encrypt(t, alice, "one"), encrypt(t, alice, "two"), encrypt(t, alice, "three")
	decryptErr(t, bob, reheader(m3, bob.core.hkr), ErrAuth)
	decryptOK(t, bob, m3, "three")
	decryptErr(t, bob, reheader(m1, bob.core.hkr), ErrAuth)
	decryptOK(t, bob, m1, "one")
	decryptOK(t, bob, m2, "two")
	// A skipped key of an old chain.
	old := encrypt(t, alice, "old")
	exchange(t, rand, bob, alice, "turn")
	exchange(t, rand, alice, bob, "new chain")
	decryptErr(t, bob, reheader(old, bob.chains[len(bob.chains)-2].hk), ErrAuth)
	decryptOK(t, bob, old, "old")
}

// Bug 4: simultaneous initiation converges on one session on both sides,
// whichever identity key is smaller, and messages already in flight on the
// retired session still decrypt.
func TestBug04SimultaneousInitiation(t *testing.T) {
	orders := map[int]bool{}
	defer func() {
		if len(orders) != 2 {
			t.Error("the seeds did not cover both identity orders")
		}
	}()
	for seed := range byte(6) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rand := testRand(40 + seed)
			a, b := newParty(t, rand), newParty(t, rand)
			bdh, bkem := b.otps(t, rand)
			adh, akem := a.otps(t, rand)
			aInit, err := Initiate(rand, a.id, b.keys.Bundle(), bdh, bkem)
			if err != nil {
				t.Fatal(err)
			}
			bInit, err := Initiate(rand, b.id, a.keys.Bundle(), adh, akem)
			if err != nil {
				t.Fatal(err)
			}
			a1, b1 := encrypt(t, aInit, "a1"), encrypt(t, bInit, "b1")
			b2 := encrypt(t, bInit, "b2") // in flight on Bob's session
			aResp, pt, err := a.keys.Respond(rand, b1)
			if err != nil || string(pt) != "b1" {
				t.Fatal(err)
			}
			bResp, pt, err := b.keys.Respond(rand, a1)
			if err != nil || string(pt) != "a1" {
				t.Fatal(err)
			}
			orders[a.id.Public().Compare(b.id.Public())] = true
			aActive, aRetired := Converge(aInit, aResp)
			bActive, bRetired := Converge(bInit, bResp)
			if aActive.HandshakeID() != bActive.HandshakeID() {
				t.Fatal("the two sides chose different sessions")
			}
			if aRetired.HandshakeID() != bRetired.HandshakeID() {
				t.Fatal("the two sides retired different sessions")
			}
			// Both orders of the arguments give the same answer.
			if x, _ := Converge(aResp, aInit); x != aActive {
				t.Fatal("rule depends on argument order")
			}
			// The in-flight message decrypts on whichever session it belongs to.
			if id, ok := HandshakeID(b2); !ok || id != aResp.HandshakeID() {
				t.Fatal("in-flight message does not route to Alice's responder session")
			}
			decryptOK(t, aResp, b2, "b2")
			for i := range 5 {
				exchange(t, rand, aActive, bActive, fmt.Sprint("a", i))
				exchange(t, rand, bActive, aActive, fmt.Sprint("b", i))
			}
			if aActive.SendingHandshake() || bActive.SendingHandshake() {
				t.Fatal("active sessions still send handshakes")
			}
		})
	}
}

// Bug 5: restoring an old copy of a session (rollback) must not reuse a
// key stream: the same message key seals under a fresh random nonce, and the
// receiver refuses the second message as a duplicate.
func TestBug05RollbackNoKeystreamReuse(t *testing.T) {
	rand := testRand(15)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	backup := cloneSession(t, alice)
	p1, p2 := bytes.Repeat([]byte{'A'}, 64), bytes.Repeat([]byte{'B'}, 64)
	m1, err := alice.Encrypt(rand, p1)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := backup.Encrypt(rand, p2)
	if err != nil {
		t.Fatal(err)
	}
	n1, _, c1 := splitMessage(m1)
	n2, _, c2 := splitMessage(m2)
	if bytes.Equal(n1, n2) {
		t.Fatal("nonce repeated")
	}
	same := true
	for i := range p1 {
		if c1[i]^c2[i] != p1[i]^p2[i] {
			same = false
		}
	}
	if same {
		t.Fatal("key stream reused after rollback")
	}
	decryptOK(t, bob, m1, string(p1))
	decryptErr(t, bob, m2, ErrDuplicate)
}

// Bug 6: one-time prekey desync and pending prekeys never cleared. A
// handshake naming a consumed prekey fails without changing anything; a
// session consumes its prekeys exactly once however many handshake messages
// arrive, in whatever order; the initiator stops sending handshakes once it
// hears back.
func TestBug06OneTimePrekeys(t *testing.T) {
	rand := testRand(16)
	a, b := newParty(t, rand), newParty(t, rand)
	dh, kem := b.otps(t, rand)
	alice, err := Initiate(rand, a.id, b.keys.Bundle(), dh, kem)
	if err != nil {
		t.Fatal(err)
	}
	h1, h2, h3 := encrypt(t, alice, "h1"), encrypt(t, alice, "h2"), encrypt(t, alice, "h3")
	// h2 arrives first.
	bob, pt, err := b.keys.Respond(rand, h2)
	if err != nil || string(pt) != "h2" {
		t.Fatal(err)
	}
	if len(b.keys.OneTimePrekeyIDs(KindX25519))+len(b.keys.OneTimePrekeyIDs(KindMLKEM768)) != 0 {
		t.Fatal("one-time prekeys not consumed")
	}
	before := mustMarshal(t, b.keys)
	for _, m := range [][]byte{h1, h3} {
		if _, _, err := b.keys.Respond(rand, m); !errors.Is(err, ErrUnknownPrekey) {
			t.Fatalf("second Respond: %v", err)
		}
		assertBytes(t, before, mustMarshal(t, b.keys))
		id, ok := HandshakeID(m)
		if !ok || id != bob.HandshakeID() {
			t.Fatal("handshake ID does not route to the session")
		}
	}
	decryptOK(t, bob, h3, "h3")
	decryptOK(t, bob, h1, "h1")
	decryptErr(t, bob, h1, ErrDuplicate)
	// The pending handshake is cleared by the first reply, not before.
	if !alice.SendingHandshake() {
		t.Fatal("alice stopped sending handshakes too early")
	}
	exchange(t, rand, bob, alice, "reply")
	if alice.SendingHandshake() {
		t.Fatal("pending handshake not cleared")
	}
	if m := encrypt(t, alice, "plain"); m[0] != TypeRatchet {
		t.Fatal("still a handshake message")
	}
	if st := mustMarshal(t, alice); len(st) >= sessionFixed+pendingSize {
		t.Fatal("serialised session still holds the handshake")
	}
	// A consumed prekey named by a new handshake: ErrUnknownPrekey.
	dh2, kem2 := b.otps(t, rand)
	b.keys.ConsumeOneTimePrekey(KindX25519, dh2.ID)
	carol := newParty(t, rand)
	s, err := Initiate(rand, carol.id, b.keys.Bundle(), dh2, kem2)
	if err != nil {
		t.Fatal(err)
	}
	before = mustMarshal(t, b.keys)
	if _, _, err := b.keys.Respond(rand, encrypt(t, s, "x")); !errors.Is(err, ErrUnknownPrekey) {
		t.Fatalf("got %v", err)
	}
	assertBytes(t, before, mustMarshal(t, b.keys))
}

// Bug 7: counter wrap. The sending counter refuses to wrap, a header with
// the largest counter is refused, and skip arithmetic near 2^32 does not
// overflow.
func TestBug07CounterOverflow(t *testing.T) {
	rand := testRand(17)
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	alice.core.ns = math.MaxUint32
	before := mustMarshal(t, alice)
	if _, err := alice.Encrypt(rand, []byte("x")); !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("got %v", err)
	}
	assertUnchanged(t, before, alice)

	nonce := make([]byte, nonceSize)
	body := make([]byte, 32)
	h := header{dh: bob.core.dhr, n: math.MaxUint32}
	decryptErr(t, bob, forge(bob, &bob.core.hkr, h, nonce, body), ErrMalformed)
	h = header{dh: bob.core.dhr, n: math.MaxUint32}
	decryptErr(t, bob, forge(bob, &bob.core.nhkr, h, nonce, body), ErrMalformed)
	bob.core.nr = math.MaxUint32 - 3
	h = header{dh: bob.core.dhr, n: math.MaxUint32 - 1}
	decryptErr(t, bob, forge(bob, &bob.core.hkr, h, nonce, body), ErrAuth)
	h = header{dh: bob.core.dhr, n: 2}
	decryptErr(t, bob, forge(bob, &bob.core.hkr, h, nonce, body), ErrDuplicate)

	b := newParty(t, rand)
	b.keys.nextID = math.MaxUint32 - 1
	if _, err := b.keys.GenerateOneTimePrekeys(rand, KindX25519, 2, b.mailbox); !errors.Is(err, ErrCounterExhausted) {
		t.Fatalf("prekey IDs: %v", err)
	}
}

// Bug 8: low-order X25519 points give all-zero outputs that must be
// refused, and short input must give an error, never a panic.
func TestBug08LowOrderAndShortInput(t *testing.T) {
	rand := testRand(18)
	a, b := newParty(t, rand), newParty(t, rand)
	lowOrder := [][32]byte{{}, {1}} // 0 and 1 are of low order
	for _, p := range lowOrder {
		bundle := b.keys.Bundle()
		bundle.SignedPrekey = p
		copy(bundle.Signature[:], ed25519.Sign(b.id.sign, bundle.signedMessage()))
		if _, err := Initiate(rand, a.id, bundle, nil, nil); !errors.Is(err, ErrAuth) {
			t.Fatalf("low-order signed prekey: %v", err)
		}
	}
	alice, bob := pair(t, rand)
	exchange(t, rand, bob, alice, "start")
	for _, p := range lowOrder {
		h := header{dh: p}
		decryptErr(t, bob, forge(bob, &bob.core.nhkr, h, make([]byte, nonceSize), make([]byte, 16)), ErrAuth)
	}
	// Every prefix of valid messages: an error, no panic, no change.
	c, d := newParty(t, rand), newParty(t, rand)
	s, err := Initiate(rand, c.id, d.keys.Bundle(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := encrypt(t, s, "handshake")
	msg := encrypt(t, alice, "ratchet")
	keys := mustMarshal(t, d.keys)
	for n := range len(hs) {
		if _, _, err := d.keys.Respond(rand, hs[:n]); err == nil {
			t.Fatalf("respond accepted %d bytes", n)
		}
	}
	assertBytes(t, keys, mustMarshal(t, d.keys))
	before := mustMarshal(t, bob)
	for n := range len(msg) {
		if _, err := bob.Decrypt(rand, msg[:n]); err == nil {
			t.Fatalf("decrypt accepted %d bytes", n)
		}
	}
	assertUnchanged(t, before, bob)
}

// Bug 9: debug output of sessions and keys must not hold secrets.
func TestBug09NoSecretsInFormatting(t *testing.T) {
	rand := testRand(19)
	p := newParty(t, rand)
	p.otps(t, rand)
	alice, bob := pair(t, rand)
	secrets := [][]byte{p.id.seed[:], p.id.dh.Bytes(), p.keys.cur.spk.Bytes(), p.keys.cur.kemSeed[:]}
	for _, s := range []*Session{alice, bob} {
		c := &s.core
		secrets = append(secrets, c.rk[:], c.cks[:], c.ckr[:], c.hks[:], c.nhks[:], c.hkr[:], c.nhkr[:], c.dhsPriv[:])
	}
	for _, v := range []any{alice, *alice, bob, p.id, *p.id, p.keys, *p.keys} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q"} {
			out := fmt.Sprintf(verb, v)
			for _, sec := range secrets {
				if isZero((*[32]byte)(sec[:32])) {
					continue
				}
				for _, enc := range []string{fmt.Sprintf("%x", sec[:8]), fmt.Sprintf("%X", sec[:8]), string(sec[:8]), fmt.Sprint(sec[:4])[1:10]} {
					if strings.Contains(out, enc) {
						t.Fatalf("%s of %T leaks a secret: %s", verb, v, out)
					}
				}
			}
		}
	}
}

// Bug 10: domain separation. Every label is distinct and versioned, and a
// signature made for one use does not verify for another.
func TestBug10DomainSeparation(t *testing.T) {
	labels := []string{labelRoot, labelChainMessage, labelChainNext, labelPQXDH, labelSeal,
		labelSessionAD, labelHandshakeID, labelBundleSig, labelOneTimeSig, labelIdentitySig}
	seen := map[string]bool{}
	for _, l := range labels {
		if !strings.HasPrefix(l, "cairn/v1/") || seen[l] {
			t.Fatalf("label %q is not unique and versioned", l)
		}
		seen[l] = true
	}
	if mk, ck := hmacSHA256(&[32]byte{1}, labelChainMessage), hmacSHA256(&[32]byte{1}, labelChainNext); mk == ck {
		t.Fatal("chain KDF constants collide")
	}
	rand := testRand(20)
	p := newParty(t, rand)
	otps, err := p.keys.GenerateOneTimePrekeys(rand, KindX25519, 1, p.mailbox)
	if err != nil {
		t.Fatal(err)
	}
	// A one-time prekey signed by the identity key, not the prekey signer.
	forged, _ := SignOneTimePrekey(p.id.sign, KindX25519, otps[0].ID, otps[0].PublicKey)
	if err := forged.Verify(p.keys.signer); !errors.Is(err, ErrAuth) {
		t.Fatal("one-time prekey signed by the wrong key verifies")
	}
	// The identity signature over the X25519 key is not a bundle signature.
	b := p.keys.Bundle()
	b.Signature = p.id.cert
	if err := b.Verify(); !errors.Is(err, ErrAuth) {
		t.Fatal("identity signature accepted as a bundle signature")
	}
	// Changing a signed field breaks the bundle signature.
	b = p.keys.Bundle()
	b.PrekeySigner[0] ^= 1
	if err := b.Verify(); !errors.Is(err, ErrAuth) {
		t.Fatal("bundle signature does not cover the prekey signer")
	}
	// The kind is covered by the one-time prekey signature.
	o := *otps[0]
	o.Kind = KindMLKEM768
	if err := o.Verify(p.keys.signer); err == nil {
		t.Fatal("kind not covered")
	}
	_ = reflect.TypeOf(o)
}

// Bug 11: no message is accepted before a receiving chain exists: an
// initiator that has heard nothing accepts neither its own messages
// reflected back nor a message on the chain a responder would open.
func TestBug11NoMessageBeforeReceivingChain(t *testing.T) {
	rand := testRand(21)
	a, b := newParty(t, rand), newParty(t, rand)
	alice, err := Initiate(rand, a.id, b.keys.Bundle(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := encrypt(t, alice, "reflect me")
	decryptErr(t, alice, m, ErrNotForSession)
	ratchetOnly := append([]byte{TypeRatchet}, m[handshakePrefixSize:]...)
	decryptErr(t, alice, ratchetOnly, ErrNotForSession)
	h := header{dh: alice.core.dhsPub, n: 0}
	decryptErr(t, alice, forge(alice, &alice.core.hks, h, make([]byte, nonceSize), make([]byte, 16)), ErrNotForSession)
	if alice.core.flags&(fCKr|fHKr) != 0 {
		t.Fatal("receiving chain exists")
	}
}

// Bug 4 and 5 together: re-keying an existing contact (Replacing) or
// recovering from lost state (AfterStateLoss) makes both sides converge on
// the new session whichever identity key is smaller; simultaneous re-keys
// fall back to the identity rule; Converge ignores argument order.
func TestBug04ConvergeAfterRekey(t *testing.T) {
	for seed := range byte(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rand := testRand(60 + seed)
			a, b := newParty(t, rand), newParty(t, rand)
			start := func(from, to *party, opts ...InitiateOption) (init, resp *Session) {
				t.Helper()
				init, err := Initiate(rand, from.id, to.keys.Bundle(), nil, nil, opts...)
				if err != nil {
					t.Fatal(err)
				}
				resp, _, err = to.keys.Respond(rand, encrypt(t, init, "hello"))
				if err != nil {
					t.Fatal(err)
				}
				return init, resp
			}
			same := func(x, y *Session) {
				t.Helper()
				if x.HandshakeID() != y.HandshakeID() {
					t.Fatal("the two sides chose different sessions")
				}
				exchange(t, rand, x, y, "one way")
				exchange(t, rand, y, x, "other way")
			}
			both := func(x, y *Session) *Session {
				t.Helper()
				p, _ := Converge(x, y)
				if q, _ := Converge(y, x); p != q {
					t.Fatal("Converge depends on argument order")
				}
				return p
			}
			aS1, bS1 := start(a, b)
			same(aS1, bS1)

			// Bob re-keys on purpose: the new session wins on both sides.
			bS2, aS2 := start(b, a, Replacing(bS1))
			if aS2.Replaces() != aS1.HandshakeID() || cloneSession(t, aS2).Replaces() != aS1.HandshakeID() {
				t.Fatal("replaces not carried or not serialised")
			}
			same(both(aS1, aS2), both(bS1, bS2))

			// Then Alice re-keys: hers wins, replacing Bob's.
			aS3, bS3 := start(a, b, Replacing(aS2))
			same(both(aS2, aS3), both(bS2, bS3))

			// Bob loses his state and starts over: his new session wins
			// over every session Alice holds.
			bS4, aS4 := start(b, a, AfterStateLoss())
			same(both(aS3, aS4), bS4)

			// Simultaneous re-keys, each replacing the session in use: the
			// identity rule decides, identically on both sides.
			aS5 := must(Initiate(rand, a.id, b.keys.Bundle(), nil, nil, Replacing(aS4)))
			bS5 := must(Initiate(rand, b.id, a.keys.Bundle(), nil, nil, Replacing(bS4)))
			bR5, _, err := b.keys.Respond(rand, encrypt(t, aS5, "a5"))
			if err != nil {
				t.Fatal(err)
			}
			aR5, _, err := a.keys.Respond(rand, encrypt(t, bS5, "b5"))
			if err != nil {
				t.Fatal(err)
			}
			aActive, bActive := both(aS5, aR5), both(bS5, bR5)
			if aActive.HandshakeID() != bActive.HandshakeID() {
				t.Fatal("simultaneous re-keys diverged")
			}
			wantAlice := a.id.Public().Compare(b.id.Public()) < 0
			if (aActive == aS5) != wantAlice {
				t.Fatal("the smaller identity key did not win")
			}
			same(aActive, bActive)
		})
	}
}

func must(s *Session, err error) *Session {
	if err != nil {
		panic(err)
	}
	return s
}

// Bug 4, libsignal-protocol-c's "lost simultaneous initiate": Alice's first
// handshake message is lost while Bob's arrives. Every message of a pending
// initiator carries the handshake, so the sides still converge.
func TestBug04LostSimultaneousInitiation(t *testing.T) {
	for seed := range byte(4) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rand := testRand(80 + seed)
			a, b := newParty(t, rand), newParty(t, rand)
			aInit := must(Initiate(rand, a.id, b.keys.Bundle(), nil, nil))
			bInit := must(Initiate(rand, b.id, a.keys.Bundle(), nil, nil))
			_ = encrypt(t, aInit, "lost")
			aResp, _, err := a.keys.Respond(rand, encrypt(t, bInit, "b1"))
			if err != nil {
				t.Fatal(err)
			}
			aActive, _ := Converge(aInit, aResp)
			m := encrypt(t, aActive, "a2")
			var bActive *Session
			if id, ok := HandshakeID(m); ok && id != bInit.HandshakeID() {
				bResp, pt, err := b.keys.Respond(rand, m)
				if err != nil || string(pt) != "a2" {
					t.Fatal(err)
				}
				bActive, _ = Converge(bInit, bResp)
			} else {
				decryptOK(t, bInit, m, "a2")
				bActive = bInit
			}
			if aActive.HandshakeID() != bActive.HandshakeID() {
				t.Fatal("sides diverged")
			}
			for i := range 3 {
				exchange(t, rand, bActive, aActive, fmt.Sprint("b", i))
				exchange(t, rand, aActive, bActive, fmt.Sprint("a", i))
			}
		})
	}
}
