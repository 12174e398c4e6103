package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
)

// BenchmarkBound measures the primitives that bound the wire operations, in
// the same run, for BENCHMARKS.md's ratios: SHA-256 of a 1 KiB envelope
// (CIDOf), an Ed25519 signature (SignReceipts, AuthProof) and an Ed25519
// verification (SignedReceipt.Verify, AuthProof.Verify).
func BenchmarkBound(b *testing.B) {
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	msg := make([]byte, 64)
	sig := ed25519.Sign(priv, msg)
	b.Run("sha256-1KiB", func(b *testing.B) {
		env := make([]byte, 1024)
		b.SetBytes(int64(len(env)))
		for b.Loop() {
			_ = sha256.Sum256(env)
		}
	})
	b.Run("ed25519-sign", func(b *testing.B) {
		for b.Loop() {
			_ = ed25519.Sign(priv, msg)
		}
	})
	b.Run("ed25519-verify", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
		}
	})
}
