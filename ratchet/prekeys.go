package ratchet

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	"fmt"
	"io"
	"math"
	"slices"
)

// replayIDSize is how many bytes of a handshake ID a replay record keeps.
const replayIDSize = 16

// generation is one signed X25519 prekey with the last-resort ML-KEM-768
// prekey published beside it, and the replay records of the handshakes that
// used them without any one-time prekey.
type generation struct {
	spkID   uint32
	spk     *ecdh.PrivateKey
	kemID   uint32
	kemSeed [kemSeedSize]byte
	kem     *mlkem.DecapsulationKey768
	replay  [][replayIDSize]byte // oldest first
	seen    map[[replayIDSize]byte]struct{}
}

func newGeneration(rand io.Reader, spkID, kemID uint32) (*generation, error) {
	g := &generation{spkID: spkID, kemID: kemID, seen: map[[replayIDSize]byte]struct{}{}}
	var err error
	if g.spk, err = newX25519(rand); err != nil {
		return nil, err
	}
	if err := readRand(rand, g.kemSeed[:]); err != nil {
		return nil, err
	}
	if g.kem, err = mlkem.NewDecapsulationKey768(g.kemSeed[:]); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *generation) remember(id [replayIDSize]byte, max int) {
	g.replay = append(g.replay, id)
	g.seen[id] = struct{}{}
	for len(g.replay) > max {
		delete(g.seen, g.replay[0])
		g.replay = slices.Delete(g.replay, 0, 1)
	}
}

// PrivateKeys is a party's private prekey material: its identity, the
// current signed prekey generation (X25519 signed prekey and last-resort
// ML-KEM-768 prekey), the previous generation during its grace period, and
// the private halves of unused one-time prekeys. It is the state behind
// Respond; persist it (MarshalBinary) after every change, in the same
// transaction as any session Respond returned.
//
// A PrivateKeys is not safe for concurrent use.
type PrivateKeys struct {
	// Config bounds the replay records and the first session Respond makes
	// (copied into it). The zero value means the defaults.
	Config Config

	id     *Identity
	signer [32]byte
	nextID uint32
	cur    *generation
	prev   *generation
	otpDH  map[uint32][keySize]byte
	otpKEM map[uint32][kemSeedSize]byte
}

// NewPrivateKeys makes the prekey state of identity id, with a fresh signed
// prekey generation. prekeySigner is the public key that signs one-time
// prekeys (in cairn, the mailbox key).
func NewPrivateKeys(rand io.Reader, id *Identity, prekeySigner ed25519.PublicKey) (*PrivateKeys, error) {
	if len(prekeySigner) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("prekeys: signer: %w", ErrMalformed)
	}
	k := &PrivateKeys{id: id, nextID: 1, otpDH: map[uint32][keySize]byte{}, otpKEM: map[uint32][kemSeedSize]byte{}}
	copy(k.signer[:], prekeySigner)
	if err := k.RotateSignedPrekey(rand); err != nil {
		return nil, err
	}
	k.prev = nil
	return k, nil
}

// Identity returns the identity these prekeys belong to.
func (k *PrivateKeys) Identity() *Identity { return k.id }

// PrekeySigner returns the public key that signs one-time prekeys.
func (k *PrivateKeys) PrekeySigner() ed25519.PublicKey { return ed25519.PublicKey(k.signer[:]) }

// SetPrekeySigner replaces the key that signs one-time prekeys (when the
// mailbox key rotates). Publish a new bundle afterwards; one-time prekeys
// signed by the old key stay valid for initiators that hold the old bundle.
func (k *PrivateKeys) SetPrekeySigner(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("prekeys: signer: %w", ErrMalformed)
	}
	copy(k.signer[:], pub)
	return nil
}

func (k *PrivateKeys) allocID() (uint32, error) {
	if k.nextID == math.MaxUint32 {
		return 0, fmt.Errorf("prekeys: IDs: %w", ErrCounterExhausted)
	}
	id := k.nextID
	k.nextID++
	return id, nil
}

// RotateSignedPrekey makes a new signed prekey generation current. The
// current one becomes the previous one and still answers handshakes (its
// grace period) until DropPreviousSignedPrekey or the next rotation; the
// previous one is forgotten. The caller decides when to rotate (weekly to
// monthly) and must publish a new Bundle.
func (k *PrivateKeys) RotateSignedPrekey(rand io.Reader) error {
	next := k.nextID
	spkID, err := k.allocID()
	if err != nil {
		return err
	}
	kemID, err := k.allocID()
	if err != nil {
		k.nextID = next
		return err
	}
	g, err := newGeneration(rand, spkID, kemID)
	if err != nil {
		k.nextID = next
		return err
	}
	k.prev, k.cur = k.cur, g
	return nil
}

// DropPreviousSignedPrekey ends the grace period of the previous signed
// prekey generation: handshakes made to it fail from now on.
func (k *PrivateKeys) DropPreviousSignedPrekey() { k.prev = nil }

// SignedPrekeyIDs returns the IDs of the current signed X25519 prekey and
// last-resort ML-KEM prekey.
func (k *PrivateKeys) SignedPrekeyIDs() (spk, kem uint32) { return k.cur.spkID, k.cur.kemID }

// Bundle returns the signed public bundle of the current generation.
func (k *PrivateKeys) Bundle() *PublicBundle {
	b := &PublicBundle{
		Identity:       k.id.pub,
		SignedPrekeyID: k.cur.spkID,
		KEMPrekeyID:    k.cur.kemID,
		KEMPrekey:      k.cur.kem.EncapsulationKey().Bytes(),
		PrekeySigner:   k.signer,
	}
	copy(b.SignedPrekey[:], k.cur.spk.PublicKey().Bytes())
	copy(b.Signature[:], ed25519.Sign(k.id.sign, b.signedMessage()))
	return b
}

// GenerateOneTimePrekeys makes n one-time prekeys of the given kind with
// fresh IDs, keeps their private halves, and returns the public halves
// signed by signer, whose public key must be the PrekeySigner.
func (k *PrivateKeys) GenerateOneTimePrekeys(rand io.Reader, kind PrekeyKind, n int, signer ed25519.PrivateKey) ([]*OneTimePrekey, error) {
	if kind.keySize() < 0 {
		return nil, fmt.Errorf("prekeys: kind %v: %w", kind, ErrUnsupportedVersion)
	}
	if len(signer) != ed25519.PrivateKeySize || !signer.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(k.signer[:])) {
		return nil, fmt.Errorf("prekeys: signer is not the bundle's prekey signer: %w", ErrMalformed)
	}
	if n < 0 || uint64(n) > uint64(math.MaxUint32-k.nextID) {
		return nil, fmt.Errorf("prekeys: IDs: %w", ErrCounterExhausted)
	}
	out := make([]*OneTimePrekey, 0, n)
	dh := map[uint32][keySize]byte{}
	kem := map[uint32][kemSeedSize]byte{}
	next := k.nextID
	for range n {
		id := next
		next++
		var pub []byte
		switch kind {
		case KindX25519:
			p, err := newX25519(rand)
			if err != nil {
				return nil, err
			}
			dh[id] = [keySize]byte(p.Bytes())
			pub = p.PublicKey().Bytes()
		case KindMLKEM768:
			var seed [kemSeedSize]byte
			if err := readRand(rand, seed[:]); err != nil {
				return nil, err
			}
			dk, err := mlkem.NewDecapsulationKey768(seed[:])
			if err != nil {
				return nil, err
			}
			kem[id] = seed
			pub = dk.EncapsulationKey().Bytes()
		}
		p, err := SignOneTimePrekey(signer, kind, id, pub)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	// Commit only once every key was made.
	k.nextID = next
	for id, v := range dh {
		k.otpDH[id] = v
	}
	for id, v := range kem {
		k.otpKEM[id] = v
	}
	return out, nil
}

// ConsumeOneTimePrekey forgets the private half of a one-time prekey, and
// reports whether it was held. Respond does this itself; call it when a
// prekey is known to be lost (for example withdrawn from the relays).
func (k *PrivateKeys) ConsumeOneTimePrekey(kind PrekeyKind, id uint32) bool {
	switch kind {
	case KindX25519:
		v, ok := k.otpDH[id]
		clear(v[:])
		delete(k.otpDH, id)
		return ok
	case KindMLKEM768:
		v, ok := k.otpKEM[id]
		clear(v[:])
		delete(k.otpKEM, id)
		return ok
	}
	return false
}

// OneTimePrekeyIDs returns the IDs of the unused one-time prekeys of a kind,
// in increasing order.
func (k *PrivateKeys) OneTimePrekeyIDs(kind PrekeyKind) []uint32 {
	var ids []uint32
	switch kind {
	case KindX25519:
		for id := range k.otpDH {
			ids = append(ids, id)
		}
	case KindMLKEM768:
		for id := range k.otpKEM {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// lookupKEM returns the decapsulation key for a KEM prekey ID: a one-time
// one (oneTime) or the last-resort key of the generation g.
func (k *PrivateKeys) lookupKEM(g *generation, id uint32, oneTime bool) (*mlkem.DecapsulationKey768, []byte, error) {
	if oneTime {
		seed, ok := k.otpKEM[id]
		if !ok {
			return nil, nil, ErrUnknownPrekey
		}
		dk, err := mlkem.NewDecapsulationKey768(seed[:])
		if err != nil {
			return nil, nil, ErrUnknownPrekey
		}
		return dk, dk.EncapsulationKey().Bytes(), nil
	}
	if g.kemID != id {
		return nil, nil, ErrUnknownPrekey
	}
	return g.kem, g.kem.EncapsulationKey().Bytes(), nil
}

// MarshalBinary encodes the private keys (SPEC.md §15.12). The
// output is secret.
func (k *PrivateKeys) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 256+len(k.otpDH)*36+len(k.otpKEM)*68)
	b = append(b, versionPrivateKeys)
	b = append(b, k.id.seed[:]...)
	b = append(b, k.id.dh.Bytes()...)
	b = append(b, k.signer[:]...)
	b = appendU32(b, k.nextID)
	var flags byte
	if k.prev != nil {
		flags |= 1
	}
	b = append(b, flags)
	b = k.cur.appendTo(b)
	if k.prev != nil {
		b = k.prev.appendTo(b)
	}
	ids := k.OneTimePrekeyIDs(KindX25519)
	b = appendU32(b, uint32(len(ids)))
	for _, id := range ids {
		v := k.otpDH[id]
		b = appendU32(b, id)
		b = append(b, v[:]...)
	}
	ids = k.OneTimePrekeyIDs(KindMLKEM768)
	b = appendU32(b, uint32(len(ids)))
	for _, id := range ids {
		v := k.otpKEM[id]
		b = appendU32(b, id)
		b = append(b, v[:]...)
	}
	return b, nil
}

func (g *generation) appendTo(b []byte) []byte {
	b = appendU32(b, g.spkID)
	b = append(b, g.spk.Bytes()...)
	b = appendU32(b, g.kemID)
	b = append(b, g.kemSeed[:]...)
	b = appendU32(b, uint32(len(g.replay)))
	for _, r := range g.replay {
		b = append(b, r[:]...)
	}
	return b
}

func appendU32(b []byte, v uint32) []byte {
	return append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// reader consumes a byte slice with bounds checks; the first failure sticks.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return make([]byte, max(n, 0))
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte    { return r.take(1)[0] }
func (r *reader) u32() uint32 { return getU32(r.take(4)) }

// count reads a uint32 element count and checks that n elements of size
// bytes each can fit in what is left, before anything is allocated.
func (r *reader) count(size int) int {
	n := r.u32()
	if r.bad || uint64(n)*uint64(size) > uint64(len(r.b)) {
		r.bad = true
		return 0
	}
	return int(n)
}

// ParsePrivateKeys decodes the output of PrivateKeys.MarshalBinary.
func ParsePrivateKeys(data []byte) (*PrivateKeys, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("prekeys: %w", ErrMalformed)
	}
	if data[0] != versionPrivateKeys {
		return nil, fmt.Errorf("prekeys: %w", ErrUnsupportedVersion)
	}
	r := &reader{b: data[1:]}
	bad := fmt.Errorf("prekeys: %w", ErrMalformed)
	idb := r.take(64)
	signer := r.take(32)
	nextID := r.u32()
	flags := r.u8()
	if r.bad || flags&^1 != 0 || nextID == 0 {
		return nil, bad
	}
	id, err := newIdentity(idb[:32], idb[32:])
	if err != nil {
		return nil, bad
	}
	k := &PrivateKeys{id: id, nextID: nextID, otpDH: map[uint32][keySize]byte{}, otpKEM: map[uint32][kemSeedSize]byte{}}
	copy(k.signer[:], signer)
	used := map[uint32]bool{}
	useID := func(v uint32) bool {
		if v == 0 || v >= nextID || used[v] {
			return false
		}
		used[v] = true
		return true
	}
	if k.cur, err = parseGeneration(r, useID); err != nil {
		return nil, bad
	}
	if flags&1 != 0 {
		if k.prev, err = parseGeneration(r, useID); err != nil {
			return nil, bad
		}
	}
	var last uint32
	n := r.count(4 + keySize)
	for i := range n {
		v := r.u32()
		if (i > 0 && v <= last) || !useID(v) {
			return nil, bad
		}
		last = v
		k.otpDH[v] = [keySize]byte(r.take(keySize))
	}
	n = r.count(4 + kemSeedSize)
	for i := range n {
		v := r.u32()
		if (i > 0 && v <= last) || !useID(v) {
			return nil, bad
		}
		last = v
		k.otpKEM[v] = [kemSeedSize]byte(r.take(kemSeedSize))
	}
	if r.bad || len(r.b) != 0 {
		return nil, bad
	}
	return k, nil
}

func parseGeneration(r *reader, useID func(uint32) bool) (*generation, error) {
	g := &generation{seen: map[[replayIDSize]byte]struct{}{}}
	g.spkID = r.u32()
	spk := r.take(keySize)
	g.kemID = r.u32()
	copy(g.kemSeed[:], r.take(kemSeedSize))
	n := r.count(replayIDSize)
	for range n {
		id := [replayIDSize]byte(r.take(replayIDSize))
		if _, dup := g.seen[id]; dup {
			return nil, ErrMalformed
		}
		g.seen[id] = struct{}{}
		g.replay = append(g.replay, id)
	}
	if r.bad || !useID(g.spkID) || !useID(g.kemID) {
		return nil, ErrMalformed
	}
	var err error
	if g.spk, err = ecdh.X25519().NewPrivateKey(spk); err != nil {
		return nil, ErrMalformed
	}
	if g.kem, err = mlkem.NewDecapsulationKey768(g.kemSeed[:]); err != nil {
		return nil, ErrMalformed
	}
	return g, nil
}
