package ratchet

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	"fmt"
	"io"
)

// Key sizes on the wire.
const (
	// KEMPublicKeySize is the size of an ML-KEM-768 encapsulation key.
	KEMPublicKeySize  = mlkem.EncapsulationKeySize768
	kemCiphertextSize = mlkem.CiphertextSize768
	kemSeedSize       = mlkem.SeedSize
	sigSize           = ed25519.SignatureSize
)

// IdentityKey is the public half of an Identity: an Ed25519 signing key and
// an X25519 DH key. It is comparable and can be used as a map key.
type IdentityKey struct {
	Ed25519 [32]byte
	X25519  [32]byte
}

// Compare orders identity keys lexicographically by Ed25519 key, then by
// X25519 key. It returns -1, 0 or +1.
func (k IdentityKey) Compare(o IdentityKey) int {
	if c := bytes.Compare(k.Ed25519[:], o.Ed25519[:]); c != 0 {
		return c
	}
	return bytes.Compare(k.X25519[:], o.X25519[:])
}

// Identity is a party's long-term key pair: an Ed25519 key that signs, and
// an X25519 key that takes part in the handshake. The X25519 public key is
// bound to the Ed25519 key by a signature (in the bundle for a responder,
// in the sealed handshake for an initiator).
type Identity struct {
	seed [32]byte
	sign ed25519.PrivateKey
	dh   *ecdh.PrivateKey
	pub  IdentityKey
	// cert is the Ed25519 signature over labelIdentitySig ‖ Ed25519 ‖ X25519.
	cert [sigSize]byte
}

// GenerateIdentity makes a new identity from 64 bytes of rand (the Ed25519
// seed, then the X25519 private key).
func GenerateIdentity(rand io.Reader) (*Identity, error) {
	var b [64]byte
	defer clear(b[:])
	if err := readRand(rand, b[:]); err != nil {
		return nil, err
	}
	return newIdentity(b[:32], b[32:])
}

func newIdentity(seed, dh []byte) (*Identity, error) {
	id := &Identity{}
	copy(id.seed[:], seed)
	id.sign = ed25519.NewKeyFromSeed(seed)
	k, err := ecdh.X25519().NewPrivateKey(dh)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", ErrMalformed)
	}
	id.dh = k
	copy(id.pub.Ed25519[:], id.sign.Public().(ed25519.PublicKey))
	copy(id.pub.X25519[:], k.PublicKey().Bytes())
	copy(id.cert[:], ed25519.Sign(id.sign, identityCertMessage(id.pub)))
	return id, nil
}

func identityCertMessage(k IdentityKey) []byte {
	return labelled(labelIdentitySig, k.Ed25519[:], k.X25519[:])
}

// Public returns the identity's public keys.
func (id *Identity) Public() IdentityKey { return id.pub }

// SigningKey returns the identity's Ed25519 private key, for signing device
// records and the like outside this package.
func (id *Identity) SigningKey() ed25519.PrivateKey { return id.sign }

// identitySize is the length of a marshalled Identity.
const identitySize = 1 + 32 + 32

// MarshalBinary encodes the identity's private keys: version ‖ Ed25519 seed
// ‖ X25519 private key. The output is secret.
func (id *Identity) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, identitySize)
	b = append(b, versionIdentity)
	b = append(b, id.seed[:]...)
	return append(b, id.dh.Bytes()...), nil
}

// ParseIdentity decodes the output of Identity.MarshalBinary.
func ParseIdentity(b []byte) (*Identity, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("identity: %w", ErrMalformed)
	}
	if b[0] != versionIdentity {
		return nil, fmt.Errorf("identity: %w", ErrUnsupportedVersion)
	}
	if len(b) != identitySize {
		return nil, fmt.Errorf("identity: %w", ErrMalformed)
	}
	return newIdentity(b[1:33], b[33:65])
}

// PublicBundle is what a party publishes in its invite: everything an
// initiator needs besides one-time prekeys. Relays never see it.
type PublicBundle struct {
	Identity IdentityKey
	// SignedPrekeyID and SignedPrekey are the X25519 signed prekey.
	SignedPrekeyID uint32
	SignedPrekey   [32]byte
	// KEMPrekeyID and KEMPrekey are the last-resort ML-KEM-768 prekey
	// (KEMPublicKeySize bytes).
	KEMPrekeyID uint32
	KEMPrekey   []byte
	// PrekeySigner is the Ed25519 key that signs one-time prekeys (in cairn
	// the mailbox key).
	PrekeySigner [32]byte
	// Signature is the identity key's Ed25519 signature over labelBundleSig
	// ‖ the encoding of all fields above.
	Signature [sigSize]byte
}

// BundleSize is the length of a marshalled PublicBundle.
const BundleSize = 1 + 32 + 32 + 4 + 32 + 4 + KEMPublicKeySize + 32 + sigSize

const bundleSignedSize = BundleSize - sigSize

// Marshal encodes the bundle in its fixed layout (SPEC.md §15.2).
func (b *PublicBundle) Marshal() []byte {
	out := make([]byte, BundleSize)
	b.putSigned(out)
	copy(out[bundleSignedSize:], b.Signature[:])
	return out
}

func (b *PublicBundle) putSigned(out []byte) {
	out[0] = versionBundle
	copy(out[1:33], b.Identity.Ed25519[:])
	copy(out[33:65], b.Identity.X25519[:])
	putU32(out[65:69], b.SignedPrekeyID)
	copy(out[69:101], b.SignedPrekey[:])
	putU32(out[101:105], b.KEMPrekeyID)
	copy(out[105:105+KEMPublicKeySize], b.KEMPrekey)
	copy(out[105+KEMPublicKeySize:bundleSignedSize], b.PrekeySigner[:])
}

func (b *PublicBundle) signedMessage() []byte {
	m := labelled(labelBundleSig, make([]byte, bundleSignedSize))
	b.putSigned(m[len(labelBundleSig)+1:])
	return m
}

// ParseBundle decodes a bundle and verifies its signature. It returns
// ErrUnsupportedVersion, ErrMalformed, or ErrAuth for a bad signature.
func ParseBundle(data []byte) (*PublicBundle, error) {
	b, err := parseBundle(data)
	if err != nil {
		return nil, err
	}
	if err := b.Verify(); err != nil {
		return nil, err
	}
	return b, nil
}

// parseBundle decodes without verifying the signature.
func parseBundle(data []byte) (*PublicBundle, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("bundle: %w", ErrMalformed)
	}
	if data[0] != versionBundle {
		return nil, fmt.Errorf("bundle: %w", ErrUnsupportedVersion)
	}
	if len(data) != BundleSize {
		return nil, fmt.Errorf("bundle: %w", ErrMalformed)
	}
	b := &PublicBundle{}
	copy(b.Identity.Ed25519[:], data[1:33])
	copy(b.Identity.X25519[:], data[33:65])
	b.SignedPrekeyID = getU32(data[65:69])
	copy(b.SignedPrekey[:], data[69:101])
	b.KEMPrekeyID = getU32(data[101:105])
	b.KEMPrekey = bytes.Clone(data[105 : 105+KEMPublicKeySize])
	if _, err := mlkem.NewEncapsulationKey768(b.KEMPrekey); err != nil {
		return nil, fmt.Errorf("bundle: KEM prekey: %w", ErrMalformed)
	}
	copy(b.PrekeySigner[:], data[105+KEMPublicKeySize:bundleSignedSize])
	copy(b.Signature[:], data[bundleSignedSize:])
	return b, nil
}

// Verify checks the bundle's identity signature and the shape of its keys.
// It returns ErrAuth or ErrMalformed.
func (b *PublicBundle) Verify() error {
	if len(b.KEMPrekey) != KEMPublicKeySize {
		return fmt.Errorf("bundle: %w", ErrMalformed)
	}
	if !ed25519.Verify(b.Identity.Ed25519[:], b.signedMessage(), b.Signature[:]) {
		return fmt.Errorf("bundle: %w", ErrAuth)
	}
	return nil
}

// PrekeyKind says which algorithm a one-time prekey is for.
type PrekeyKind byte

// The kinds of one-time prekey.
const (
	KindX25519   PrekeyKind = 1
	KindMLKEM768 PrekeyKind = 2
)

func (k PrekeyKind) keySize() int {
	switch k {
	case KindX25519:
		return 32
	case KindMLKEM768:
		return KEMPublicKeySize
	}
	return -1
}

func (k PrekeyKind) String() string {
	switch k {
	case KindX25519:
		return "X25519"
	case KindMLKEM768:
		return "ML-KEM-768"
	}
	return fmt.Sprintf("PrekeyKind(%d)", byte(k))
}

// OneTimePrekey is a signed one-time prekey as relays store and serve it.
type OneTimePrekey struct {
	Kind PrekeyKind
	ID   uint32
	// PublicKey is 32 bytes for KindX25519, KEMPublicKeySize for KindMLKEM768.
	PublicKey []byte
	// Signature is the PrekeySigner's Ed25519 signature over
	// labelOneTimeSig ‖ version ‖ kind ‖ ID ‖ public key.
	Signature [sigSize]byte
}

func oneTimeSize(k PrekeyKind) int { return 1 + 1 + 4 + k.keySize() + sigSize }

// SignOneTimePrekey builds and signs a one-time prekey. signer is the
// PrekeySigner's private key (in cairn, the mailbox key).
func SignOneTimePrekey(signer ed25519.PrivateKey, kind PrekeyKind, id uint32, pub []byte) (*OneTimePrekey, error) {
	if kind.keySize() < 0 || len(pub) != kind.keySize() {
		return nil, fmt.Errorf("one-time prekey: %w", ErrMalformed)
	}
	if len(signer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("one-time prekey: signer: %w", ErrMalformed)
	}
	p := &OneTimePrekey{Kind: kind, ID: id, PublicKey: bytes.Clone(pub)}
	copy(p.Signature[:], ed25519.Sign(signer, p.signedMessage()))
	return p, nil
}

func (p *OneTimePrekey) putSigned(out []byte) int {
	out[0] = versionOneTime
	out[1] = byte(p.Kind)
	putU32(out[2:6], p.ID)
	return 6 + copy(out[6:], p.PublicKey)
}

func (p *OneTimePrekey) signedMessage() []byte {
	m := labelled(labelOneTimeSig, make([]byte, 6+len(p.PublicKey)))
	p.putSigned(m[len(labelOneTimeSig)+1:])
	return m
}

// Verify checks the prekey's signature by signer (the bundle's PrekeySigner)
// and the shape of its key. It returns ErrAuth or ErrMalformed.
func (p *OneTimePrekey) Verify(signer [32]byte) error {
	if p.Kind.keySize() < 0 || len(p.PublicKey) != p.Kind.keySize() {
		return fmt.Errorf("one-time prekey: %w", ErrMalformed)
	}
	if !ed25519.Verify(signer[:], p.signedMessage(), p.Signature[:]) {
		return fmt.Errorf("one-time prekey: %w", ErrAuth)
	}
	return nil
}

// Marshal encodes the prekey: version ‖ kind ‖ ID ‖ public key ‖ signature.
func (p *OneTimePrekey) Marshal() []byte {
	out := make([]byte, oneTimeSize(p.Kind))
	n := p.putSigned(out)
	copy(out[n:], p.Signature[:])
	return out
}

// ParseOneTimePrekey decodes a one-time prekey. It does not verify the
// signature (the verifier needs the PrekeySigner key): call Verify.
func ParseOneTimePrekey(data []byte) (*OneTimePrekey, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("one-time prekey: %w", ErrMalformed)
	}
	if data[0] != versionOneTime {
		return nil, fmt.Errorf("one-time prekey: %w", ErrUnsupportedVersion)
	}
	if len(data) < 2 {
		return nil, fmt.Errorf("one-time prekey: %w", ErrMalformed)
	}
	kind := PrekeyKind(data[1])
	if kind.keySize() < 0 {
		return nil, fmt.Errorf("one-time prekey: kind: %w", ErrUnsupportedVersion)
	}
	if len(data) != oneTimeSize(kind) {
		return nil, fmt.Errorf("one-time prekey: %w", ErrMalformed)
	}
	p := &OneTimePrekey{Kind: kind, ID: getU32(data[2:6])}
	p.PublicKey = bytes.Clone(data[6 : 6+kind.keySize()])
	if kind == KindMLKEM768 {
		if _, err := mlkem.NewEncapsulationKey768(p.PublicKey); err != nil {
			return nil, fmt.Errorf("one-time prekey: %w", ErrMalformed)
		}
	}
	copy(p.Signature[:], data[6+kind.keySize():])
	return p, nil
}
