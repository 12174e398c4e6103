package ratchet

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
)

func TestPrekeysBundleRoundTrip(t *testing.T) {
	rand := testRand(30)
	p := newParty(t, rand)
	b := p.keys.Bundle()
	enc := b.Marshal()
	if len(enc) != BundleSize {
		t.Fatalf("bundle is %d bytes", len(enc))
	}
	got, err := ParseBundle(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Marshal(), enc) {
		t.Fatal("round trip differs")
	}
	if got.Identity != p.id.Public() || !bytes.Equal(got.PrekeySigner[:], p.mailbox.Public().(ed25519.PublicKey)) {
		t.Fatal("fields differ")
	}
	for i := range enc {
		bad := bytes.Clone(enc)
		bad[i] ^= 1
		if _, err := ParseBundle(bad); err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
	}
	if _, err := ParseBundle(append([]byte{2}, enc[1:]...)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("version: %v", err)
	}
	if _, err := ParseBundle(append(enc, 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestPrekeysOneTimeRoundTrip(t *testing.T) {
	rand := testRand(31)
	p := newParty(t, rand)
	for _, kind := range []PrekeyKind{KindX25519, KindMLKEM768} {
		ps, err := p.keys.GenerateOneTimePrekeys(rand, kind, 3, p.mailbox)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ps {
			enc := o.Marshal()
			got, err := ParseOneTimePrekey(enc)
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Verify(p.keys.signer); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Marshal(), enc) {
				t.Fatal("round trip differs")
			}
			bad := bytes.Clone(enc)
			bad[len(bad)-1] ^= 1
			if o2, err := ParseOneTimePrekey(bad); err == nil && o2.Verify(p.keys.signer) == nil {
				t.Fatal("bad signature verifies")
			}
		}
		if ids := p.keys.OneTimePrekeyIDs(kind); len(ids) != 3 {
			t.Fatalf("%v: %d ids", kind, len(ids))
		}
	}
	// IDs are fresh across kinds and generations.
	seen := map[uint32]bool{}
	spk, kem := p.keys.SignedPrekeyIDs()
	for _, id := range append(append(p.keys.OneTimePrekeyIDs(KindX25519), p.keys.OneTimePrekeyIDs(KindMLKEM768)...), spk, kem) {
		if seen[id] || id == 0 {
			t.Fatalf("ID %d reused", id)
		}
		seen[id] = true
	}
	other := newParty(t, rand)
	if _, err := p.keys.GenerateOneTimePrekeys(rand, KindX25519, 1, other.mailbox); err == nil {
		t.Fatal("signed with a key that is not the prekey signer")
	}
}

func TestPrekeysPrivateKeysRoundTrip(t *testing.T) {
	rand := testRand(32)
	p := newParty(t, rand)
	p.otps(t, rand)
	p.otps(t, rand)
	if err := p.keys.RotateSignedPrekey(rand); err != nil {
		t.Fatal(err)
	}
	// A replay record in each generation.
	a := newParty(t, rand)
	s, err := Initiate(rand, a.id, p.keys.Bundle(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.keys.Respond(rand, encrypt(t, s, "x")); err != nil {
		t.Fatal(err)
	}
	enc := mustMarshal(t, p.keys)
	got, err := ParsePrivateKeys(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, got), enc) {
		t.Fatal("round trip differs")
	}
	if !bytes.Equal(got.Bundle().Marshal(), p.keys.Bundle().Marshal()) {
		t.Fatal("bundle differs after round trip")
	}
	id, err := ParseIdentity(mustMarshal(t, p.id))
	if err != nil || id.Public() != p.id.Public() {
		t.Fatal("identity round trip", err)
	}
	for n := range len(enc) {
		if _, err := ParsePrivateKeys(enc[:n]); err == nil {
			t.Fatalf("accepted %d bytes", n)
		}
	}
}

// TestPrekeysRotation: handshakes to the previous signed prekey work during
// the grace period and fail (ErrAuth) after it.
func TestPrekeysRotation(t *testing.T) {
	rand := testRand(33)
	a, b := newParty(t, rand), newParty(t, rand)
	oldBundle := b.keys.Bundle()
	mk := func() []byte {
		s, err := Initiate(rand, a.id, oldBundle, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return encrypt(t, s, "to the old prekey")
	}
	m1, m2 := mk(), mk()
	if err := b.keys.RotateSignedPrekey(rand); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(oldBundle.Marshal(), b.keys.Bundle().Marshal()) {
		t.Fatal("bundle did not change")
	}
	if _, _, err := b.keys.Respond(rand, m1); err != nil {
		t.Fatalf("grace period: %v", err)
	}
	b.keys.DropPreviousSignedPrekey()
	if _, _, err := b.keys.Respond(rand, m2); !errors.Is(err, ErrAuth) {
		t.Fatalf("after the grace period: %v", err)
	}
}

// TestPrekeysReplayWithoutOneTimePrekey: a handshake that used no one-time
// prekey is accepted once; its replay gives ErrDuplicate, also after a
// round trip through MarshalBinary, and the record is bounded.
func TestPrekeysReplayWithoutOneTimePrekey(t *testing.T) {
	rand := testRand(34)
	a, b := newParty(t, rand), newParty(t, rand)
	b.keys.Config.MaxReplayRecords = 2
	var msgs [][]byte
	for range 3 {
		s, err := Initiate(rand, a.id, b.keys.Bundle(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := encrypt(t, s, "once")
		if _, _, err := b.keys.Respond(rand, m); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	keys, err := ParsePrivateKeys(mustMarshal(t, b.keys))
	if err != nil {
		t.Fatal(err)
	}
	keys.Config = b.keys.Config
	for _, k := range []*PrivateKeys{b.keys, keys} {
		for _, m := range msgs[1:] {
			if _, _, err := k.Respond(rand, m); !errors.Is(err, ErrDuplicate) {
				t.Fatalf("replay: %v", err)
			}
		}
	}
	// The oldest record was evicted (documented limit): replay window is
	// MaxReplayRecords handshakes per signed prekey.
	if _, _, err := b.keys.Respond(rand, msgs[0]); err != nil {
		t.Fatalf("evicted record: %v", err)
	}
}

func TestPrekeysInitiateVerifies(t *testing.T) {
	rand := testRand(35)
	a, b := newParty(t, rand), newParty(t, rand)
	dh, kem := b.otps(t, rand)
	bundle := b.keys.Bundle()
	bundle.SignedPrekey[0] ^= 1
	if _, err := Initiate(rand, a.id, bundle, nil, nil); !errors.Is(err, ErrAuth) {
		t.Fatalf("bad bundle: %v", err)
	}
	bad := *dh
	bad.PublicKey = bytes.Clone(dh.PublicKey)
	bad.PublicKey[0] ^= 1
	if _, err := Initiate(rand, a.id, b.keys.Bundle(), &bad, kem); !errors.Is(err, ErrAuth) {
		t.Fatalf("bad one-time prekey: %v", err)
	}
	if _, err := Initiate(rand, a.id, b.keys.Bundle(), kem, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("wrong kind: %v", err)
	}
	// Each combination of one-time prekeys works.
	for _, c := range [][2]*OneTimePrekey{{nil, nil}, {dh, nil}, {nil, kem}} {
		d2, k2 := b.otps(t, rand)
		if c[0] != nil {
			c[0] = d2
		}
		if c[1] != nil {
			c[1] = k2
		}
		s, err := Initiate(rand, a.id, b.keys.Bundle(), c[0], c[1])
		if err != nil {
			t.Fatal(err)
		}
		if _, pt, err := b.keys.Respond(rand, encrypt(t, s, "hi")); err != nil || string(pt) != "hi" {
			t.Fatal(err)
		}
	}
}
