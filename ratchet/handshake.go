package ratchet

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/mlkem"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Layout of the handshake (SPEC.md §15.3, §15.5).
const (
	// sealedPlainSize: flags ‖ one-time X25519 prekey ID ‖ KEM prekey ID ‖
	// replaces ‖ initiator Ed25519 ‖ initiator X25519 ‖ identity signature ‖
	// KEM ciphertext.
	sealedPlainSize = 1 + 4 + 4 + 32 + 32 + 32 + sigSize + kemCiphertextSize
	sealedSize      = sealedPlainSize + tagSize
	// handshakePrefixSize: type ‖ ephemeral key ‖ sealed handshake.
	handshakePrefixSize = 1 + keySize + sealedSize

	sealedFlagOneTimeDH  = 1 << 0 // a one-time X25519 prekey was used
	sealedFlagOneTimeKEM = 1 << 1 // the KEM prekey is a one-time prekey
	sealedFlagsKnown     = sealedFlagOneTimeDH | sealedFlagOneTimeKEM
)

// replacesAny returns the replaces value of a handshake made after losing
// all session state with the peer (AfterStateLoss): 32×0xFF, any session.
func replacesAny() (v [32]byte) {
	for i := range v {
		v[i] = 0xff
	}
	return v
}

// An InitiateOption changes what Initiate does.
type InitiateOption func(*initiateOptions)

type initiateOptions struct{ replaces [32]byte }

// Replacing marks the new session as the successor of old, the session
// with the same peer that this party uses now: re-keying, for example after
// ErrTooManySkipped or ErrCounterExhausted. The peer learns it (inside the
// sealed handshake), so both sides' Converge prefer the new session.
func Replacing(old *Session) InitiateOption {
	return func(o *initiateOptions) { o.replaces = old.id }
}

// AfterStateLoss marks the new session as replacing any session with the
// peer: use it when this party lost its sessions with a known contact
// (restored from a backup without them). Not for a first contact.
func AfterStateLoss() InitiateOption {
	return func(o *initiateOptions) { o.replaces = replacesAny() }
}

// HandshakeID returns the handshake ID of a handshake message (a hash of its
// ephemeral key and sealed part, identical in every handshake message of one
// session) and true, or false if msg is not a well-formed handshake
// message. A responder that already has a session with this
// Session.HandshakeID must decrypt the message with that session instead of
// calling Respond again.
func HandshakeID(msg []byte) ([32]byte, bool) {
	if len(msg) < handshakePrefixSize+ratchetPartMin || msg[0] != TypeHandshake {
		return [32]byte{}, false
	}
	return handshakeID(msg[1:handshakePrefixSize]), true
}

// handshakeID hashes the handshake prefix (ephemeral key ‖ sealed part), so
// that any change to it gives another ID.
func handshakeID(prefix []byte) [32]byte {
	return sha256.Sum256(labelled(labelHandshakeID, prefix))
}

// sessionAD is the associated data of a session: SHA-256 of the label, both
// identity keys (initiator first), the signed prekey, the KEM public key
// used and the ephemeral key.
func sessionAD(initiator, responder IdentityKey, spk, kemPub, ek []byte) [adSize]byte {
	return sha256.Sum256(labelled(labelSessionAD, initiator.Ed25519[:], initiator.X25519[:],
		responder.Ed25519[:], responder.X25519[:], spk, kemPub, ek))
}

// sealKey derives the sealed-sender key from DH(ephemeral, signed prekey).
func sealKey(dh *[keySize]byte, ek, spk []byte) []byte {
	k, err := hkdf.Key(sha256.New, dh[:], nil, string(labelled(labelSeal, ek, spk)), keySize)
	if err != nil {
		panic("ratchet: hkdf: " + err.Error()) // unreachable
	}
	return k
}

// sealAEAD is ChaCha20-Poly1305 under a key used for one plaintext only
// (the ephemeral key is fresh per handshake), with an all-zero nonce.
func sealAEAD(key []byte) (aead interface {
	Seal(dst, nonce, plaintext, ad []byte) []byte
	Open(dst, nonce, ciphertext, ad []byte) ([]byte, error)
}, nonce []byte) {
	a, err := chacha20poly1305.New(key)
	if err != nil {
		panic("ratchet: chacha20poly1305: " + err.Error()) // unreachable
	}
	return a, make([]byte, chacha20poly1305.NonceSize)
}

// handshakeSecrets derives root key ‖ HKa ‖ NHKb from the DH outputs and the
// KEM shared secret: HKDF-SHA256(salt = 32 zero bytes, ikm = 32×0xFF ‖ dh...
// ‖ ss, info = labelPQXDH), 96 bytes.
func handshakeSecrets(dhs [][keySize]byte, ss []byte) (rk, hka, nhkb [keySize]byte) {
	ikm := make([]byte, 0, keySize*(1+len(dhs))+len(ss))
	ikm = append(ikm, bytes.Repeat([]byte{0xff}, keySize)...)
	for i := range dhs {
		ikm = append(ikm, dhs[i][:]...)
	}
	ikm = append(ikm, ss...)
	var salt [keySize]byte
	out, err := hkdf.Key(sha256.New, ikm, salt[:], labelPQXDH, 3*keySize)
	if err != nil {
		panic("ratchet: hkdf: " + err.Error()) // unreachable
	}
	copy(rk[:], out[:32])
	copy(hka[:], out[32:64])
	copy(nhkb[:], out[64:])
	clear(out)
	clear(ikm)
	return
}

// sealedHandshake is the plaintext of the sealed part of a handshake.
type sealedHandshake struct {
	flags    byte
	otpID    uint32
	kemID    uint32
	replaces [32]byte
	identity IdentityKey
	cert     [sigSize]byte
	kemCT    []byte
}

func (h *sealedHandshake) marshal() []byte {
	b := make([]byte, 0, sealedPlainSize)
	b = append(b, h.flags)
	b = appendU32(b, h.otpID)
	b = appendU32(b, h.kemID)
	b = append(b, h.replaces[:]...)
	b = append(b, h.identity.Ed25519[:]...)
	b = append(b, h.identity.X25519[:]...)
	b = append(b, h.cert[:]...)
	return append(b, h.kemCT...)
}

func parseSealed(b []byte) (*sealedHandshake, error) {
	if len(b) != sealedPlainSize {
		return nil, ErrMalformed
	}
	h := &sealedHandshake{flags: b[0], otpID: getU32(b[1:5]), kemID: getU32(b[5:9])}
	if h.flags&^sealedFlagsKnown != 0 ||
		(h.flags&sealedFlagOneTimeDH == 0 && h.otpID != 0) {
		return nil, ErrMalformed
	}
	copy(h.replaces[:], b[9:41])
	copy(h.identity.Ed25519[:], b[41:73])
	copy(h.identity.X25519[:], b[73:105])
	copy(h.cert[:], b[105:169])
	h.kemCT = b[169:]
	return h, nil
}

// handshakeMessage is a parsed handshake message.
type handshakeMessage struct {
	ek     [keySize]byte
	sealed []byte
	part   []byte // the ratchet part: nonce ‖ sealed header ‖ body
}

func parseHandshakeMessage(b []byte) (*handshakeMessage, error) {
	if len(b) == 0 {
		return nil, ErrMalformed
	}
	if b[0] != TypeHandshake {
		if b[0] == TypeRatchet {
			return nil, ErrMalformed
		}
		return nil, ErrUnsupportedVersion
	}
	if len(b) < handshakePrefixSize+ratchetPartMin {
		return nil, ErrMalformed
	}
	m := &handshakeMessage{sealed: b[1+keySize : handshakePrefixSize], part: b[handshakePrefixSize:]}
	copy(m.ek[:], b[1:1+keySize])
	return m, nil
}

func (m *handshakeMessage) marshal() []byte {
	b := make([]byte, 0, handshakePrefixSize+len(m.part))
	b = append(b, TypeHandshake)
	b = append(b, m.ek[:]...)
	b = append(b, m.sealed...)
	return append(b, m.part...)
}

// encapsulator is ML-KEM-768 encapsulation. Initiate uses the standard
// library's, whose randomness comes from crypto/rand; tests substitute a
// derandomised one for known-answer vectors.
type encapsulator func(ek *mlkem.EncapsulationKey768, rand io.Reader) (sharedKey, ciphertext []byte, err error)

func stdEncapsulate(ek *mlkem.EncapsulationKey768, _ io.Reader) ([]byte, []byte, error) {
	ss, ct := ek.Encapsulate()
	return ss, ct, nil
}

// Initiate starts a session with the owner of bundle. oneTimeDH (an X25519
// one-time prekey) and oneTimeKEM (an ML-KEM-768 one-time prekey) are those
// the relays served, or nil; without oneTimeKEM the bundle's last-resort KEM
// prekey is used. Every signature is verified first.
//
// Initiate reads 64 bytes from rand (the ephemeral key, then the first
// ratchet key). ML-KEM encapsulation draws its randomness from the standard
// library's crypto/rand, which offers no way to inject it.
//
// The returned session is SendingHandshake: each message it encrypts
// carries the sealed handshake until one from the responder decrypts.
// All signature failures return ErrAuth.
func Initiate(rand io.Reader, self *Identity, bundle *PublicBundle, oneTimeDH, oneTimeKEM *OneTimePrekey, opts ...InitiateOption) (*Session, error) {
	var o initiateOptions
	for _, f := range opts {
		f(&o)
	}
	s, err := initiate(rand, self, bundle, oneTimeDH, oneTimeKEM, stdEncapsulate, o)
	if err != nil {
		return nil, fmt.Errorf("initiate: %w", err)
	}
	return s, nil
}

func initiate(rand io.Reader, self *Identity, bundle *PublicBundle, oneTimeDH, oneTimeKEM *OneTimePrekey, encaps encapsulator, o initiateOptions) (*Session, error) {
	if err := bundle.Verify(); err != nil {
		return nil, err
	}
	if oneTimeDH != nil {
		if oneTimeDH.Kind != KindX25519 {
			return nil, fmt.Errorf("one-time prekey kind %v: %w", oneTimeDH.Kind, ErrMalformed)
		}
		if err := oneTimeDH.Verify(bundle.PrekeySigner); err != nil {
			return nil, err
		}
	}
	kemPub := bundle.KEMPrekey
	sh := &sealedHandshake{identity: self.pub, cert: self.cert, kemID: bundle.KEMPrekeyID}
	if oneTimeKEM != nil {
		if oneTimeKEM.Kind != KindMLKEM768 {
			return nil, fmt.Errorf("one-time prekey kind %v: %w", oneTimeKEM.Kind, ErrMalformed)
		}
		if err := oneTimeKEM.Verify(bundle.PrekeySigner); err != nil {
			return nil, err
		}
		kemPub = oneTimeKEM.PublicKey
		sh.kemID = oneTimeKEM.ID
		sh.flags |= sealedFlagOneTimeKEM
	}
	if oneTimeDH != nil {
		sh.otpID = oneTimeDH.ID
		sh.flags |= sealedFlagOneTimeDH
	}
	sh.replaces = o.replaces
	ekKEM, err := mlkem.NewEncapsulationKey768(kemPub)
	if err != nil {
		return nil, fmt.Errorf("KEM prekey: %w", ErrMalformed)
	}

	eph, err := newX25519(rand)
	if err != nil {
		return nil, err
	}
	ratchetKey, err := newX25519(rand)
	if err != nil {
		return nil, err
	}
	ss, ct, err := encaps(ekKEM, rand)
	if err != nil {
		return nil, err
	}
	defer clear(ss)
	sh.kemCT = ct
	ek := eph.PublicKey().Bytes()

	dhs := make([][keySize]byte, 3, 4)
	defer func() {
		for i := range dhs {
			clear(dhs[i][:])
		}
	}()
	if err := x25519(&dhs[0], self.dh, bundle.SignedPrekey[:]); err != nil {
		return nil, err
	}
	if err := x25519(&dhs[1], eph, bundle.Identity.X25519[:]); err != nil {
		return nil, err
	}
	if err := x25519(&dhs[2], eph, bundle.SignedPrekey[:]); err != nil {
		return nil, err
	}
	if oneTimeDH != nil {
		dhs = dhs[:4]
		if err := x25519(&dhs[3], eph, oneTimeDH.PublicKey); err != nil {
			return nil, err
		}
	}
	rk, hka, nhkb := handshakeSecrets(dhs, ss)
	defer clear(rk[:])

	key := sealKey(&dhs[2], ek, bundle.SignedPrekey[:])
	aead, nonce := sealAEAD(key)
	clear(key)
	plain := sh.marshal()
	sealAD := append([]byte{TypeHandshake}, ek...)
	pending := make([]byte, 0, keySize+sealedSize)
	pending = append(pending, ek...)
	pending = aead.Seal(pending, nonce, plain, sealAD)

	s := &Session{
		initiator: true,
		replaces:  o.replaces,
		local:     self.pub,
		peer:      bundle.Identity,
		id:        handshakeID(pending),
		ad:        sessionAD(self.pub, bundle.Identity, bundle.SignedPrekey[:], kemPub, ek),
		pending:   pending,
		dhs:       ratchetKey,
	}
	c := &s.core
	copy(c.dhsPriv[:], ratchetKey.Bytes())
	copy(c.dhsPub[:], ratchetKey.PublicKey().Bytes())
	c.dhr = bundle.SignedPrekey
	var dh [keySize]byte
	defer clear(dh[:])
	if err := x25519(&dh, ratchetKey, bundle.SignedPrekey[:]); err != nil {
		return nil, err
	}
	c.rk, c.cks, c.nhks = rootStep(&rk, &dh)
	c.hks = hka
	c.nhkr = nhkb
	c.flags = fDHr | fCKs | fHKs
	return s, nil
}

// Respond answers a handshake message that starts a new session: it opens
// the sealed part with the current or previous signed prekey, verifies the
// initiator's identity signature, derives the session, and decrypts the
// message. Only if all of that succeeds does it consume the one-time
// prekeys used (or record the handshake against replay if none was used)
// and return the session and the plaintext; otherwise k is unchanged.
//
// Before calling Respond, look up HandshakeID(msg) among existing sessions:
// a further message of a known handshake must go to Session.Decrypt.
//
// Respond reads 32 bytes from rand (the responder's next ratchet key).
// Errors: ErrAuth for every authentication failure (revealing nothing
// more), ErrUnknownPrekey, ErrDuplicate for a replayed handshake without
// one-time prekeys, ErrTooManySkipped, ErrMalformed, ErrUnsupportedVersion.
func (k *PrivateKeys) Respond(rand io.Reader, msg []byte) (*Session, []byte, error) {
	s, pt, err := k.respond(rand, msg)
	if err != nil {
		return nil, nil, fmt.Errorf("respond: %w", err)
	}
	return s, pt, nil
}

func (k *PrivateKeys) respond(rand io.Reader, msg []byte) (*Session, []byte, error) {
	hm, err := parseHandshakeMessage(msg)
	if err != nil {
		return nil, nil, err
	}
	ek := hm.ek[:]
	var g *generation
	var plain []byte
	var dh3 [keySize]byte
	defer clear(dh3[:])
	for _, cand := range []*generation{k.cur, k.prev} {
		if cand == nil {
			continue
		}
		if err := x25519(&dh3, cand.spk, ek); err != nil {
			return nil, nil, ErrAuth
		}
		spk := cand.spk.PublicKey().Bytes()
		key := sealKey(&dh3, ek, spk)
		aead, nonce := sealAEAD(key)
		clear(key)
		p, err := aead.Open(nil, nonce, hm.sealed, append([]byte{TypeHandshake}, ek...))
		if err == nil {
			g, plain = cand, p
			break
		}
	}
	if g == nil {
		return nil, nil, ErrAuth
	}
	sh, err := parseSealed(plain)
	if err != nil {
		return nil, nil, ErrAuth
	}
	if !ed25519.Verify(sh.identity.Ed25519[:], identityCertMessage(sh.identity), sh.cert[:]) {
		return nil, nil, ErrAuth
	}
	var otp *ecdh.PrivateKey
	if sh.flags&sealedFlagOneTimeDH != 0 {
		priv, ok := k.otpDH[sh.otpID]
		if !ok {
			return nil, nil, ErrUnknownPrekey
		}
		if otp, err = ecdh.X25519().NewPrivateKey(priv[:]); err != nil {
			return nil, nil, ErrUnknownPrekey
		}
	}
	dk, kemPub, err := k.lookupKEM(g, sh.kemID, sh.flags&sealedFlagOneTimeKEM != 0)
	if err != nil {
		return nil, nil, err
	}
	id := handshakeID(msg[1:handshakePrefixSize])
	replayID := [replayIDSize]byte(id[:replayIDSize])
	noOneTime := sh.flags&(sealedFlagOneTimeDH|sealedFlagOneTimeKEM) == 0
	if noOneTime {
		if _, seen := g.seen[replayID]; seen {
			return nil, nil, ErrDuplicate
		}
	}
	ss, err := dk.Decapsulate(sh.kemCT)
	if err != nil {
		return nil, nil, ErrAuth
	}
	defer clear(ss)

	dhs := make([][keySize]byte, 3, 4)
	defer func() {
		for i := range dhs {
			clear(dhs[i][:])
		}
	}()
	if err := x25519(&dhs[0], g.spk, sh.identity.X25519[:]); err != nil {
		return nil, nil, ErrAuth
	}
	if err := x25519(&dhs[1], k.id.dh, ek); err != nil {
		return nil, nil, ErrAuth
	}
	dhs[2] = dh3
	if otp != nil {
		dhs = dhs[:4]
		if err := x25519(&dhs[3], otp, ek); err != nil {
			return nil, nil, ErrAuth
		}
	}
	rk, hka, nhkb := handshakeSecrets(dhs, ss)
	spk := g.spk.PublicKey().Bytes()
	s := &Session{
		Config:   k.Config,
		replaces: sh.replaces,
		local:    k.id.pub,
		peer:     sh.identity,
		id:       id,
		ad:       sessionAD(sh.identity, k.id.pub, spk, kemPub, ek),
		dhs:      g.spk,
	}
	c := &s.core
	copy(c.dhsPriv[:], g.spk.Bytes())
	copy(c.dhsPub[:], spk)
	c.rk, c.nhks, c.nhkr = rk, nhkb, hka
	clear(rk[:])
	pt, err := s.decrypt(rand, hm.part)
	if err != nil {
		switch {
		case errors.Is(err, ErrTooManySkipped), errors.Is(err, ErrRandom):
			return nil, nil, err
		}
		return nil, nil, ErrAuth
	}
	// Commit: the handshake is authentic.
	if sh.flags&sealedFlagOneTimeDH != 0 {
		k.ConsumeOneTimePrekey(KindX25519, sh.otpID)
	}
	if sh.flags&sealedFlagOneTimeKEM != 0 {
		k.ConsumeOneTimePrekey(KindMLKEM768, sh.kemID)
	}
	if noOneTime {
		g.remember(replayID, k.Config.maxReplayRecords())
	}
	return s, pt, nil
}

// Converge chooses between two sessions with the same peer (SPEC.md
// §15.10); the answer does not depend on the order of the arguments, and
// both parties reach the same one from values they both hold:
//
//  1. a session made Replacing the other wins;
//  2. else a session made AfterStateLoss wins over one that was not;
//  3. else (simultaneous initiation) the one whose initiator has the
//     lexicographically smaller identity key (IdentityKey.Compare) wins,
//     and between two of the same initiator the smaller handshake ID.
//
// Encrypt only with the active session; keep the retired one to decrypt
// messages already in flight, and drop it once the active session has
// decrypted a message from the peer.
func Converge(a, b *Session) (active, retired *Session) {
	switch {
	case b.replaces == a.id:
		return b, a
	case a.replaces == b.id:
		return a, b
	case (a.replaces == replacesAny()) != (b.replaces == replacesAny()):
		if a.replaces == replacesAny() {
			return a, b
		}
		return b, a
	}
	if c := a.InitiatorIdentity().Compare(b.InitiatorIdentity()); c != 0 {
		if c < 0 {
			return a, b
		}
		return b, a
	}
	if bytes.Compare(a.id[:], b.id[:]) <= 0 {
		return a, b
	}
	return b, a
}
