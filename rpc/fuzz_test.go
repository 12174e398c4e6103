package rpc

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// fuzzRelay is a fixed relay key, so the seed corpus stays valid across
// runs.
func fuzzRelay(t testing.TB) (crypto.PrivKey, peer.ID) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return k, id
}

// FuzzVerifyEntry feeds VerifyEntry what a malicious relay may send in a
// sync page or a push (SPEC.md §10.4, §10.5): any pb.Entry. An entry that
// verifies is the genuine origin stamp of exactly its envelope for the
// requested mailbox; anything else is refused with wire.ErrMalformed,
// wire.ErrUnsupportedVersion or wire.ErrBadSignature.
func FuzzVerifyEntry(f *testing.F) {
	k, id := fuzzRelay(f)
	mb := wire.MailboxOf(make(ed25519.PublicKey, ed25519.PublicKeySize))
	var envs [][]byte
	var rs []wire.Receipt
	for i := range 3 {
		env, err := (&wire.Envelope{Mailbox: mb, Expiry: 1 << 31, Ciphertext: []byte{byte(i), 1, 2, 3}}).Marshal()
		if err != nil {
			f.Fatal(err)
		}
		envs = append(envs, env)
		rs = append(rs, wire.Receipt{Origin: id, Mailbox: mb, CID: wire.CIDOf(env), Seq: uint64(i + 1), StoredAtMs: 1, Expiry: 1 << 31})
	}
	signed, err := wire.SignReceipts(k, rs)
	if err != nil {
		f.Fatal(err)
	}
	for i, s := range signed {
		stamp, err := s.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		b, err := proto.Marshal(&pb.Entry{Envelope: envs[i], Stamp: stamp})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e pb.Entry
		if proto.Unmarshal(data, &e) != nil {
			return
		}
		got, err := VerifyEntry(wire.NewReceiptVerifier(4), &e, mb)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) && !errors.Is(err, wire.ErrBadSignature) && !errors.Is(err, wire.ErrUnsupportedVersion) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if got.Stamp.Mailbox != mb || got.Stamp.CID != wire.CIDOf(got.Envelope) || got.Stamp.Origin != id {
			t.Fatalf("verified an entry that is not relay %s's stamp of its envelope for %s: %+v", id, mb, got.Stamp.Receipt)
		}
	})
}
