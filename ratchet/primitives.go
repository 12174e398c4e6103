package ratchet

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sizes of the primitives' values.
const (
	keySize       = 32 // every symmetric key, X25519 key and hash
	nonceSize     = chacha20poly1305.NonceSizeX
	tagSize       = chacha20poly1305.Overhead
	headerSize    = keySize + 4 + 4 // ratchet public key ‖ PN ‖ N
	encHeaderSize = headerSize + tagSize
	// ratchetPartMin is the shortest ratchet part: nonce, sealed header and
	// the tag of an empty body.
	ratchetPartMin = nonceSize + encHeaderSize + tagSize
	// adSize is the length of every session AD (a SHA-256 output).
	adSize = 32
	// headerADSize and bodyADSize are the associated data lengths:
	// u16(len(AD)) ‖ AD, and u16(len(AD)) ‖ AD ‖ nonce ‖ sealed header.
	headerADSize = 2 + adSize
	bodyADSize   = headerADSize + nonceSize + encHeaderSize
)

// readRand fills b from r, or fails with ErrRandom.
func readRand(r io.Reader, b []byte) error {
	if r == nil {
		return fmt.Errorf("%w: nil reader", ErrRandom)
	}
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%w: %v", ErrRandom, err)
	}
	return nil
}

// newX25519 draws 32 bytes from r and makes an X25519 private key of them.
func newX25519(r io.Reader) (*ecdh.PrivateKey, error) {
	var b [keySize]byte
	defer clear(b[:])
	if err := readRand(r, b[:]); err != nil {
		return nil, err
	}
	return ecdh.X25519().NewPrivateKey(b[:])
}

// x25519 computes X25519(priv, pub) into out. crypto/ecdh rejects an
// all-zero output (a low-order public key); that, like any malformed public
// key, is reported as ErrAuth.
func x25519(out *[keySize]byte, priv *ecdh.PrivateKey, pub []byte) error {
	p, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return ErrAuth
	}
	s, err := priv.ECDH(p)
	if err != nil {
		return ErrAuth
	}
	copy(out[:], s)
	clear(s)
	return nil
}

// hmacSHA256 computes HMAC-SHA256(key, msg) for a 32-byte key and a message
// of at most 55 bytes without allocating: the inner hash is two blocks and
// the outer one two blocks, exactly as crypto/hmac would compute them.
func hmacSHA256(key *[keySize]byte, msg string) [keySize]byte {
	var in [64 + 55]byte
	for i := range 64 {
		in[i] = 0x36
	}
	for i, k := range key {
		in[i] ^= k
	}
	n := copy(in[64:], msg)
	inner := sha256.Sum256(in[:64+n])
	var out [64 + keySize]byte
	for i := range 64 {
		out[i] = 0x5c
	}
	for i, k := range key {
		out[i] ^= k
	}
	copy(out[64:], inner[:])
	mac := sha256.Sum256(out[:])
	clear(in[:])
	clear(out[:])
	clear(inner[:])
	return mac
}

// chainStep is the chain KDF: it returns the message key of chain key ck and
// the next chain key.
func chainStep(ck *[keySize]byte) (mk, next [keySize]byte) {
	return hmacSHA256(ck, labelChainMessage), hmacSHA256(ck, labelChainNext)
}

// rootStep is the root KDF: HKDF-SHA256(salt = rk, ikm = dh, info =
// labelRoot) expanded to 96 bytes: new root key ‖ chain key ‖ next header key.
func rootStep(rk, dh *[keySize]byte) (newRK, ck, nhk [keySize]byte) {
	out, err := hkdf.Key(sha256.New, dh[:], rk[:], labelRoot, 3*keySize)
	if err != nil {
		panic("ratchet: hkdf: " + err.Error()) // unreachable: fixed length
	}
	copy(newRK[:], out[0:32])
	copy(ck[:], out[32:64])
	copy(nhk[:], out[64:96])
	clear(out)
	return
}

// seal encrypts with XChaCha20-Poly1305 and appends to dst.
func seal(key *[keySize]byte, dst, nonce, plaintext, ad []byte) []byte {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic("ratchet: xchacha20poly1305: " + err.Error()) // unreachable: fixed key size
	}
	return a.Seal(dst, nonce, plaintext, ad)
}

// open decrypts with XChaCha20-Poly1305 and appends to dst.
func open(key *[keySize]byte, dst, nonce, ciphertext, ad []byte) ([]byte, bool) {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic("ratchet: xchacha20poly1305: " + err.Error()) // unreachable: fixed key size
	}
	out, err := a.Open(dst, nonce, ciphertext, ad)
	return out, err == nil
}

// labelled returns label ‖ 0x00 ‖ parts..., the input of every signature
// and hash that takes a domain label (SPEC.md §1).
func labelled(label string, parts ...[]byte) []byte {
	n := len(label) + 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	b = append(b, label...)
	b = append(b, 0)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// Big-endian helpers for the fixed layouts.
func putU32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func getU32(b []byte) uint32    { return binary.BigEndian.Uint32(b) }
