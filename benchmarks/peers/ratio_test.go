package peers

import (
	crand "crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cairn-net/cairn/ratchet"
	"go.mau.fi/libsignal/serialize"
)

// pairedMedians times every call of a and of b, alternating them b.N times,
// and reports the median of each and their ratio: on a shared, noisy
// machine the median of single calls is much steadier than a loop mean, and
// alternating exposes both implementations to the same conditions.
func pairedMedians(b *testing.B, a, l func(), between func()) {
	da := make([]time.Duration, 0, b.N)
	dl := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if between != nil {
			between()
		}
		t0 := time.Now()
		a()
		t1 := time.Now()
		l()
		t2 := time.Now()
		da = append(da, t1.Sub(t0))
		dl = append(dl, t2.Sub(t1))
	}
	b.StopTimer()
	slices.Sort(da)
	slices.Sort(dl)
	ma, ml := da[len(da)/2], dl[len(dl)/2]
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(ma.Nanoseconds()), "ns/cairn")
	b.ReportMetric(float64(ml.Nanoseconds()), "ns/libsignal")
	b.ReportMetric(float64(ma)/float64(ml), "cairn/libsignal")
}

// BenchmarkPaired runs each operation through both implementations
// alternately and reports both medians and their ratio.
func BenchmarkPaired(b *testing.B) {
	for _, size := range sizes {
		pt := make([]byte, size)
		b.Run(fmt.Sprint("encrypt/", size), func(b *testing.B) {
			alice, _ := cairnPair(b)
			ser, ac, _ := lsPair(b)
			pairedMedians(b, func() {
				if _, err := alice.Encrypt(crand.Reader, pt); err != nil {
					b.Fatal(err)
				}
			}, func() { lsSend(b, ser, ac, pt) }, nil)
		})
		b.Run(fmt.Sprint("decrypt/", size), func(b *testing.B) {
			alice, bob := cairnPair(b)
			ser, ac, bc := lsPair(b)
			var cm, lm []byte
			pairedMedians(b, func() {
				if _, err := bob.Decrypt(nil, cm); err != nil {
					b.Fatal(err)
				}
			}, func() { lsRecv(b, ser, bc, lm) }, func() {
				cm, _ = alice.Encrypt(crand.Reader, pt)
				lm = lsSend(b, ser, ac, pt)
			})
		})
	}
	b.Run("pingpong", func(b *testing.B) {
		pt := make([]byte, 256)
		alice, bob := cairnPair(b)
		ser, ac, bc := lsPair(b)
		i := 0
		pairedMedians(b, func() {
			from, to := alice, bob
			if i%2 == 1 {
				from, to = bob, alice
			}
			m, _ := from.Encrypt(crand.Reader, pt)
			if _, err := to.Decrypt(crand.Reader, m); err != nil {
				b.Fatal(err)
			}
		}, func() {
			from, to := ac, bc
			if i%2 == 1 {
				from, to = bc, ac
			}
			lsRecv(b, ser, to, lsSend(b, ser, from, pt))
		}, func() { i++ })
	})
	b.Run("handshake", func(b *testing.B) {
		ser := serialize.NewProtoBufSerializer()
		a, r := newCairnParty(b), newCairnParty(b)
		bundle := r.keys.Bundle()
		var dh, kem *ratchet.OneTimePrekey
		var la, lb *lsUser
		pairedMedians(b, func() {
			s, err := ratchet.Initiate(crand.Reader, a.id, bundle, dh, kem)
			if err != nil {
				b.Fatal(err)
			}
			m, _ := s.Encrypt(crand.Reader, []byte("hello"))
			if _, _, err := r.keys.Respond(crand.Reader, m); err != nil {
				b.Fatal(err)
			}
		}, func() { lsHandshake(b, ser, la, lb, 0) }, func() {
			d, err := r.keys.GenerateOneTimePrekeys(crand.Reader, ratchet.KindX25519, 1, r.mailbox)
			if err != nil {
				b.Fatal(err)
			}
			k, err := r.keys.GenerateOneTimePrekeys(crand.Reader, ratchet.KindMLKEM768, 1, r.mailbox)
			if err != nil {
				b.Fatal(err)
			}
			dh, kem = d[0], k[0]
			la, lb = newLSUser(b, "alice", ser, 1), newLSUser(b, "bob", ser, 1)
		})
	})
}
