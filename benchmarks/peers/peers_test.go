package peers

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"fmt"
	"testing"

	"github.com/cairn-net/cairn/ratchet"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/serialize"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/state/record"
	"go.mau.fi/libsignal/tests"
	"go.mau.fi/libsignal/util/keyhelper"
)

var sizes = []int{256, 4096}

// ---- cairn ----

type cairnParty struct {
	id      *ratchet.Identity
	mailbox ed25519.PrivateKey
	keys    *ratchet.PrivateKeys
}

func newCairnParty(b *testing.B) *cairnParty {
	id, err := ratchet.GenerateIdentity(crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	_, mb, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := ratchet.NewPrivateKeys(crand.Reader, id, mb.Public().(ed25519.PublicKey))
	if err != nil {
		b.Fatal(err)
	}
	return &cairnParty{id: id, mailbox: mb, keys: keys}
}

func cairnPair(b *testing.B) (alice, bob *ratchet.Session) {
	a, r := newCairnParty(b), newCairnParty(b)
	alice, err := ratchet.Initiate(crand.Reader, a.id, r.keys.Bundle(), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	m, _ := alice.Encrypt(crand.Reader, []byte("hello"))
	bob, _, err = r.keys.Respond(crand.Reader, m)
	if err != nil {
		b.Fatal(err)
	}
	m, _ = bob.Encrypt(crand.Reader, []byte("reply"))
	if _, err := alice.Decrypt(crand.Reader, m); err != nil {
		b.Fatal(err)
	}
	m, _ = alice.Encrypt(crand.Reader, []byte("steady"))
	if _, err := bob.Decrypt(crand.Reader, m); err != nil {
		b.Fatal(err)
	}
	return alice, bob
}

// ---- libsignal ----

type lsUser struct {
	address  *protocol.SignalAddress
	idKey    *identity.KeyPair
	regID    uint32
	preKeys  []*record.PreKey
	signed   *record.SignedPreKey
	sessions *tests.InMemorySession
	prekeys  *tests.InMemoryPreKey
	signedPK *tests.InMemorySignedPreKey
	ids      *tests.InMemoryIdentityKey
}

func newLSUser(b *testing.B, name string, ser *serialize.Serializer, nPreKeys int) *lsUser {
	ctx := context.Background()
	u := &lsUser{address: protocol.NewSignalAddress(name, 1)}
	var err error
	if u.idKey, err = keyhelper.GenerateIdentityKeyPair(); err != nil {
		b.Fatal(err)
	}
	u.regID = keyhelper.GenerateRegistrationID()
	if u.preKeys, err = keyhelper.GeneratePreKeys(1, nPreKeys, ser.PreKeyRecord); err != nil {
		b.Fatal(err)
	}
	if u.signed, err = keyhelper.GenerateSignedPreKey(u.idKey, 0, ser.SignedPreKeyRecord); err != nil {
		b.Fatal(err)
	}
	u.sessions = tests.NewInMemorySession(ser)
	u.prekeys = tests.NewInMemoryPreKey()
	u.signedPK = tests.NewInMemorySignedPreKey()
	u.ids = tests.NewInMemoryIdentityKey(u.idKey, u.regID)
	for _, p := range u.preKeys {
		u.prekeys.StorePreKey(ctx, p.ID().Value, p)
	}
	u.signedPK.StoreSignedPreKey(ctx, u.signed.ID(), u.signed)
	return u
}

func (u *lsUser) builder(peer *protocol.SignalAddress, ser *serialize.Serializer) *session.Builder {
	return session.NewBuilder(u.sessions, u.prekeys, u.signedPK, u.ids, peer, ser)
}

func (u *lsUser) bundle(i int) *prekey.Bundle {
	return prekey.NewBundle(u.regID, 1, u.preKeys[i].ID(), u.signed.ID(),
		u.preKeys[i].KeyPair().PublicKey(), u.signed.KeyPair().PublicKey(), u.signed.Signature(), u.idKey.PublicKey())
}

// lsHandshake runs the X3DH handshake with Bob's i-th one-time prekey and
// returns both ciphers with the first message decrypted.
func lsHandshake(b *testing.B, ser *serialize.Serializer, alice, bob *lsUser, i int) (ac, bc *session.Cipher) {
	ctx := context.Background()
	ab := alice.builder(bob.address, ser)
	if err := ab.ProcessBundle(ctx, bob.bundle(i)); err != nil {
		b.Fatal(err)
	}
	ac = session.NewCipher(ab, bob.address)
	m, err := ac.Encrypt(ctx, []byte("hello"))
	if err != nil {
		b.Fatal(err)
	}
	pk, err := protocol.NewPreKeySignalMessageFromBytes(m.Serialize(), ser.PreKeySignalMessage, ser.SignalMessage)
	if err != nil {
		b.Fatal(err)
	}
	bc = session.NewCipher(bob.builder(alice.address, ser), alice.address)
	if _, err := bc.DecryptMessage(ctx, pk); err != nil {
		b.Fatal(err)
	}
	return ac, bc
}

func lsSend(b *testing.B, ser *serialize.Serializer, from *session.Cipher, pt []byte) []byte {
	m, err := from.Encrypt(context.Background(), pt)
	if err != nil {
		b.Fatal(err)
	}
	return m.Serialize()
}

func lsRecv(b *testing.B, ser *serialize.Serializer, to *session.Cipher, m []byte) {
	msg, err := protocol.NewSignalMessageFromBytes(m, ser.SignalMessage)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := to.Decrypt(context.Background(), msg); err != nil {
		b.Fatal(err)
	}
}

func lsPair(b *testing.B) (ser *serialize.Serializer, ac, bc *session.Cipher) {
	ser = serialize.NewProtoBufSerializer()
	alice, bob := newLSUser(b, "alice", ser, 1), newLSUser(b, "bob", ser, 1)
	ac, bc = lsHandshake(b, ser, alice, bob, 0)
	lsRecv(b, ser, ac, lsSend(b, ser, bc, []byte("reply")))
	lsRecv(b, ser, bc, lsSend(b, ser, ac, []byte("steady")))
	return ser, ac, bc
}

// ---- benchmarks: the same operations, each implementation bytes in, bytes out ----

func BenchmarkHandshake(b *testing.B) {
	b.Run("impl=cairn", func(b *testing.B) {
		a, r := newCairnParty(b), newCairnParty(b)
		dhs, err := r.keys.GenerateOneTimePrekeys(crand.Reader, ratchet.KindX25519, b.N, r.mailbox)
		if err != nil {
			b.Fatal(err)
		}
		kems, err := r.keys.GenerateOneTimePrekeys(crand.Reader, ratchet.KindMLKEM768, b.N, r.mailbox)
		if err != nil {
			b.Fatal(err)
		}
		bundle := r.keys.Bundle()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			s, err := ratchet.Initiate(crand.Reader, a.id, bundle, dhs[i], kems[i])
			if err != nil {
				b.Fatal(err)
			}
			m, _ := s.Encrypt(crand.Reader, []byte("hello"))
			if _, _, err := r.keys.Respond(crand.Reader, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=libsignal", func(b *testing.B) {
		ser := serialize.NewProtoBufSerializer()
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			alice, bob := newLSUser(b, "alice", ser, 1), newLSUser(b, "bob", ser, 1)
			b.StartTimer()
			lsHandshake(b, ser, alice, bob, 0)
		}
	})
}

func BenchmarkEncrypt(b *testing.B) {
	for _, size := range sizes {
		pt := make([]byte, size)
		b.Run(fmt.Sprintf("impl=cairn/size=%d", size), func(b *testing.B) {
			alice, _ := cairnPair(b)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := alice.Encrypt(crand.Reader, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("impl=libsignal/size=%d", size), func(b *testing.B) {
			ser, ac, _ := lsPair(b)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				lsSend(b, ser, ac, pt)
			}
		})
	}
}

// decryptBench decrypts in-order messages made in batches outside the timer.
func decryptBench(b *testing.B, size int, enc func() []byte, dec func([]byte)) {
	msgs := make([][]byte, 2048)
	next := len(msgs)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if next == len(msgs) {
			b.StopTimer()
			for j := range msgs {
				msgs[j] = enc()
			}
			next = 0
			b.StartTimer()
		}
		dec(msgs[next])
		next++
	}
}

func BenchmarkDecrypt(b *testing.B) {
	for _, size := range sizes {
		pt := make([]byte, size)
		b.Run(fmt.Sprintf("impl=cairn/size=%d", size), func(b *testing.B) {
			alice, bob := cairnPair(b)
			decryptBench(b, size, func() []byte {
				m, _ := alice.Encrypt(crand.Reader, pt)
				return m
			}, func(m []byte) {
				if _, err := bob.Decrypt(nil, m); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run(fmt.Sprintf("impl=libsignal/size=%d", size), func(b *testing.B) {
			ser, ac, bc := lsPair(b)
			decryptBench(b, size, func() []byte { return lsSend(b, ser, ac, pt) },
				func(m []byte) { lsRecv(b, ser, bc, m) })
		})
	}
}

// BenchmarkPingPong: every message starts a DH ratchet step; one op is one
// message, encrypted and decrypted.
func BenchmarkPingPong(b *testing.B) {
	pt := make([]byte, 256)
	b.Run("impl=cairn", func(b *testing.B) {
		alice, bob := cairnPair(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			from, to := alice, bob
			if i%2 == 1 {
				from, to = bob, alice
			}
			i++
			m, _ := from.Encrypt(crand.Reader, pt)
			if _, err := to.Decrypt(crand.Reader, m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=libsignal", func(b *testing.B) {
		ser, ac, bc := lsPair(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			from, to := ac, bc
			if i%2 == 1 {
				from, to = bc, ac
			}
			i++
			lsRecv(b, ser, to, lsSend(b, ser, from, pt))
		}
	})
}
