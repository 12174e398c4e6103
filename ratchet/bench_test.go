package ratchet

import (
	crand "crypto/rand"
	"fmt"
	"testing"
)

var benchSizes = []int{256, 4096}

// benchPair returns established sessions (one round trip done), so that
// Alice's sending chain is in its steady state.
func benchPair(b *testing.B) (alice, bob *Session) {
	b.Helper()
	alice, bob = pair(b, crand.Reader)
	exchange(b, crand.Reader, bob, alice, "reply")
	exchange(b, crand.Reader, alice, bob, "steady")
	return alice, bob
}

// BenchmarkHandshake measures Initiate, the first Encrypt and Respond
// together: everything both parties compute to start a session.
func BenchmarkHandshake(b *testing.B) {
	for _, oneTime := range []bool{false, true} {
		name := "last-resort"
		if oneTime {
			name = "one-time-prekeys"
		}
		b.Run(name, func(b *testing.B) {
			rand := crand.Reader
			a, r := newParty(b, rand), newParty(b, rand)
			bundle := r.keys.Bundle()
			pt := make([]byte, 256)
			var dhs, kems []*OneTimePrekey
			if oneTime {
				var err error
				if dhs, err = r.keys.GenerateOneTimePrekeys(rand, KindX25519, b.N, r.mailbox); err != nil {
					b.Fatal(err)
				}
				if kems, err = r.keys.GenerateOneTimePrekeys(rand, KindMLKEM768, b.N, r.mailbox); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var dh, kem *OneTimePrekey
				if oneTime {
					dh, kem = dhs[i], kems[i]
				}
				s, err := Initiate(rand, a.id, bundle, dh, kem)
				if err != nil {
					b.Fatal(err)
				}
				m, err := s.Encrypt(rand, pt)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := r.keys.Respond(rand, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncrypt is one message on a sending chain in its steady state.
func BenchmarkEncrypt(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			alice, _ := benchPair(b)
			pt := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := alice.Encrypt(crand.Reader, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecrypt is one in-order message of a receiving chain in its
// steady state. Messages are made in batches outside the timer.
func BenchmarkDecrypt(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			alice, bob := benchPair(b)
			pt := make([]byte, size)
			msgs := make([][]byte, 4096)
			next := len(msgs)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if next == len(msgs) {
					b.StopTimer()
					for j := range msgs {
						m, err := alice.Encrypt(crand.Reader, pt)
						if err != nil {
							b.Fatal(err)
						}
						msgs[j] = m
					}
					next = 0
					b.StartTimer()
				}
				if _, err := bob.Decrypt(nil, msgs[next]); err != nil {
					b.Fatal(err)
				}
				next++
			}
		})
	}
}

// BenchmarkDecryptNotForSession is the cost of learning that a message
// belongs to another session (the header trial of a steady-state session).
func BenchmarkDecryptNotForSession(b *testing.B) {
	_, bob := benchPair(b)
	other, _ := benchPair(b)
	m, err := other.Encrypt(crand.Reader, make([]byte, 256))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bob.Decrypt(nil, m); err == nil {
			b.Fatal("decrypted a foreign message")
		}
	}
}

// BenchmarkPingPong alternates directions so that every message starts a
// DH ratchet step; one op is one message (encrypt and decrypt).
func BenchmarkPingPong(b *testing.B) {
	alice, bob := benchPair(b)
	pt := make([]byte, 256)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		from, to := alice, bob
		if i%2 == 1 {
			from, to = bob, alice
		}
		i++
		m, err := from.Encrypt(crand.Reader, pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := to.Decrypt(crand.Reader, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOneWay is encrypt plus decrypt of one message on a one-way chain.
func BenchmarkOneWay(b *testing.B) {
	alice, bob := benchPair(b)
	pt := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		m, err := alice.Encrypt(crand.Reader, pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bob.Decrypt(nil, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBound is the primitive bound of one message: the chain KDF step
// (two HMAC-SHA256), the header seal and the body seal (XChaCha20-Poly1305)
// for encrypt; the chain step and both opens for decrypt. Nothing else.
func BenchmarkBound(b *testing.B) {
	for _, size := range benchSizes {
		var ck, hk [32]byte
		nonce := make([]byte, nonceSize)
		hdr := make([]byte, headerSize)
		ad := make([]byte, bodyADSize)
		pt := make([]byte, size)
		b.Run(fmt.Sprint("encrypt/", size), func(b *testing.B) {
			out := make([]byte, 0, nonceSize+encHeaderSize+size+tagSize)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				mk, next := chainStep(&ck)
				ck = next
				o := seal(&hk, out, nonce, hdr, ad[:headerADSize])
				seal(&mk, o, nonce, pt, ad)
			}
		})
		b.Run(fmt.Sprint("decrypt/", size), func(b *testing.B) {
			mk, _ := chainStep(&ck)
			eh := seal(&hk, nil, nonce, hdr, ad[:headerADSize])
			body := seal(&mk, nil, nonce, pt, ad)
			hbuf := make([]byte, 0, headerSize)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				k, next := chainStep(&ck)
				_ = next
				_ = k
				if _, ok := open(&hk, hbuf, nonce, eh, ad[:headerADSize]); !ok {
					b.Fatal("header")
				}
				if _, ok := open(&mk, nil, nonce, body, ad); !ok {
					b.Fatal("body")
				}
			}
		})
	}
}

// TestRatchetAllocs: steady-state encrypt and decrypt allocate a constant
// number of times per message, whatever its size.
func TestRatchetAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	alice, bob := pair(t, crand.Reader)
	exchange(t, crand.Reader, bob, alice, "reply")
	exchange(t, crand.Reader, alice, bob, "steady")
	const runs = 100
	var enc, dec []float64
	for _, size := range benchSizes {
		pt := make([]byte, size)
		enc = append(enc, testing.AllocsPerRun(runs, func() {
			if _, err := alice.Encrypt(crand.Reader, pt); err != nil {
				t.Fatal(err)
			}
		}))
		exchange(t, crand.Reader, bob, alice, "turn")
		exchange(t, crand.Reader, alice, bob, "again")
		msgs := make([][]byte, runs+1)
		for i := range msgs {
			msgs[i], _ = alice.Encrypt(crand.Reader, pt)
		}
		i := 0
		dec = append(dec, testing.AllocsPerRun(runs, func() {
			if _, err := bob.Decrypt(nil, msgs[i]); err != nil {
				t.Fatal(err)
			}
			i++
		}))
	}
	t.Logf("allocations per message: encrypt %v, decrypt %v (sizes %v)", enc, dec, benchSizes)
	const limit = 16
	for i := range benchSizes {
		if enc[i] != enc[0] || dec[i] != dec[0] || enc[i] > limit || dec[i] > limit {
			t.Fatalf("allocations: encrypt %v, decrypt %v", enc, dec)
		}
	}
}
