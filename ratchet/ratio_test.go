package ratchet

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/mlkem"
	crand "crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"
)

// pairedMedians times every call of a and of b, alternating them b.N times,
// and reports the median of each and their ratio. On a shared, noisy
// machine the median of single calls is far steadier than a mean over a
// loop (a call preempted by another process is an outlier, not a shift),
// and alternating exposes both to the same conditions.
func pairedMedians(b *testing.B, nameA, nameB string, a, b2 func(), between func()) {
	da := make([]time.Duration, 0, b.N)
	db := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if between != nil {
			between()
		}
		t0 := time.Now()
		a()
		t1 := time.Now()
		b2()
		t2 := time.Now()
		da = append(da, t1.Sub(t0))
		db = append(db, t2.Sub(t1))
	}
	b.StopTimer()
	slices.Sort(da)
	slices.Sort(db)
	ma, mb := da[len(da)/2], db[len(db)/2]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(ma.Nanoseconds()), "ns/"+nameA)
	b.ReportMetric(float64(mb.Nanoseconds()), "ns/"+nameB)
	b.ReportMetric(float64(ma)/float64(mb), nameA+"/"+nameB)
}

// BenchmarkRatioNotForSession reports the median cost of learning that a
// message belongs to another session (steady state: the current and next
// header keys are tried) next to the bound of two short header opens.
func BenchmarkRatioNotForSession(b *testing.B) {
	_, bob := benchPair(b)
	other, _ := benchPair(b)
	m, err := other.Encrypt(crand.Reader, make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	nonce, eh, _ := splitMessage(m)
	var hk [32]byte
	ad := make([]byte, headerADSize)
	hbuf := make([]byte, 0, headerSize)
	pairedMedians(b, "trial", "bound", func() {
		if _, err := bob.Decrypt(nil, m); err != ErrNotForSession {
			b.Fatal(err)
		}
	}, func() {
		open(&hk, hbuf, nonce, eh, ad)
		open(&hk, hbuf, nonce, eh, ad)
	}, nil)
}

// BenchmarkRatioToBound reports the median time of one steady-state
// Encrypt (Decrypt) next to the median of its primitive bound (the chain
// step and the two AEAD seals, or opens), measured alternately.
func BenchmarkRatioToBound(b *testing.B) {
	for _, size := range benchSizes {
		pt := make([]byte, size)
		var ck, hk [32]byte
		nonce := make([]byte, nonceSize)
		hdr := make([]byte, headerSize)
		ad := make([]byte, bodyADSize)
		b.Run(fmt.Sprint("encrypt/", size), func(b *testing.B) {
			alice, _ := benchPair(b)
			out := make([]byte, 0, nonceSize+encHeaderSize+size+tagSize)
			pairedMedians(b, "encrypt", "bound", func() {
				if _, err := alice.Encrypt(crand.Reader, pt); err != nil {
					b.Fatal(err)
				}
			}, func() {
				mk, next := chainStep(&ck)
				ck = next
				o := seal(&hk, out, nonce, hdr, ad[:headerADSize])
				seal(&mk, o, nonce, pt, ad)
			}, nil)
		})
		b.Run(fmt.Sprint("decrypt/", size), func(b *testing.B) {
			alice, bob := benchPair(b)
			mk, _ := chainStep(&ck)
			eh := seal(&hk, nil, nonce, hdr, ad[:headerADSize])
			body := seal(&mk, nil, nonce, pt, ad)
			hbuf := make([]byte, 0, headerSize)
			var m []byte
			pairedMedians(b, "decrypt", "bound", func() {
				if _, err := bob.Decrypt(nil, m); err != nil {
					b.Fatal(err)
				}
			}, func() {
				k, next := chainStep(&ck)
				_, _ = k, next
				if _, ok := open(&hk, hbuf, nonce, eh, ad[:headerADSize]); !ok {
					b.Fatal("header")
				}
				if _, ok := open(&mk, nil, nonce, body, ad); !ok {
					b.Fatal("body")
				}
			}, func() {
				var err error
				if m, err = alice.Encrypt(crand.Reader, pt); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// handshakeBound performs the public-key operations a handshake with both
// one-time prekeys cannot avoid, as counted in BENCHMARKS.md: 15 X25519
// scalar multiplications (7 by the initiator, 8 by the responder, key
// generation included), one ML-KEM-768 encapsulation, one decapsulation
// and one decapsulation-key expansion (the one-time KEM prekey), and four
// Ed25519 verifications (bundle, two one-time prekeys, identity signature).
func handshakeBound(b *testing.B) func() {
	p := newParty(b, crand.Reader)
	dk, err := mlkem.GenerateKey768()
	if err != nil {
		b.Fatal(err)
	}
	seed := dk.Bytes()
	ek := dk.EncapsulationKey()
	msg := []byte("a signed message of about the size of a bundle")
	sig := ed25519.Sign(p.id.sign, msg)
	pub := p.id.sign.Public().(ed25519.PublicKey)
	priv := [32]byte{1}
	peer := p.id.dh.PublicKey().Bytes()
	return func() {
		for range 15 {
			k, _ := ecdh.X25519().NewPrivateKey(priv[:]) // one scalar multiplication
			_ = k
		}
		_, ct := ek.Encapsulate()
		k2, _ := mlkem.NewDecapsulationKey768(seed)
		if _, err := k2.Decapsulate(ct); err != nil {
			b.Fatal(err)
		}
		for range 4 {
			if !ed25519.Verify(pub, msg, sig) {
				b.Fatal("verify")
			}
		}
		_ = peer
	}
}

// BenchmarkRatioHandshake reports the median of a whole handshake
// (Initiate, the first Encrypt, Respond, with both one-time prekeys) next
// to the median of the public-key operations it cannot avoid.
func BenchmarkRatioHandshake(b *testing.B) {
	a, r := newParty(b, crand.Reader), newParty(b, crand.Reader)
	bundle := r.keys.Bundle()
	bound := handshakeBound(b)
	var dh, kem *OneTimePrekey
	pairedMedians(b, "handshake", "bound", func() {
		s, err := Initiate(crand.Reader, a.id, bundle, dh, kem)
		if err != nil {
			b.Fatal(err)
		}
		m, err := s.Encrypt(crand.Reader, make([]byte, 256))
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.keys.Respond(crand.Reader, m); err != nil {
			b.Fatal(err)
		}
	}, bound, func() { dh, kem = r.otps(b, crand.Reader) })
}

// BenchmarkRatioPingPong reports the median of one message that starts a
// DH ratchet step (encrypt and decrypt) next to its bound: three X25519
// multiplications (DH, key generation, DH), two root KDFs and the
// one-message bound.
func BenchmarkRatioPingPong(b *testing.B) {
	alice, bob := benchPair(b)
	pt := make([]byte, 256)
	var rk, dh, ck, hk [32]byte
	nonce := make([]byte, nonceSize)
	hdr := make([]byte, headerSize)
	ad := make([]byte, bodyADSize)
	priv := [32]byte{1}
	i := 0
	pairedMedians(b, "message", "bound", func() {
		from, to := alice, bob
		if i%2 == 1 {
			from, to = bob, alice
		}
		m, err := from.Encrypt(crand.Reader, pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := to.Decrypt(crand.Reader, m); err != nil {
			b.Fatal(err)
		}
	}, func() {
		for range 3 {
			k, _ := ecdh.X25519().NewPrivateKey(priv[:])
			_ = k
		}
		rootStep(&rk, &dh)
		rootStep(&rk, &dh)
		mk, next := chainStep(&ck)
		ck = next
		o := seal(&hk, nil, nonce, hdr, ad[:headerADSize])
		seal(&mk, o, nonce, pt, ad)
		mk2, _ := chainStep(&ck)
		open(&hk, nil, nonce, o[:encHeaderSize], ad[:headerADSize])
		open(&mk2, nil, nonce, o[encHeaderSize:], ad)
	}, func() { i++ })
}
