package wire

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// fixtureAckCIDs returns n distinct CIDs (of the fixture envelopes).
func fixtureAckCIDs(n int) []CID {
	out := make([]CID, n)
	for i := range out {
		out[i] = CIDOf(fmt.Appendf(nil, "acked envelope %d", i))
	}
	return out
}

func mustOwnerAcks(t testing.TB, cids []CID) []OwnerAck {
	t.Helper()
	sig, err := SignOwnerAck(mailboxKey, cids)
	if err != nil {
		t.Fatal(err)
	}
	acks, err := OwnerAcks(mailboxPub, cids, sig)
	if err != nil {
		t.Fatal(err)
	}
	return acks
}

func TestOwnerAckGolden(t *testing.T) {
	var cases []golden
	for _, n := range []int{1, 5} {
		acks := mustOwnerAcks(t, fixtureAckCIDs(n))
		for _, i := range slices.Compact([]int{0, n - 1}) {
			cases = append(cases, hexGolden(fmt.Sprintf("batch-%d.index-%d", n, i), mustMarshal(t, &acks[i])))
		}
	}
	checkGolden(t, "owner_ack.txt", `
Owner acks (SPEC.md §6.3) by the fixture mailbox key; batch-N acks the CIDs of
"acked envelope 0" … "acked envelope N-1" in that order; index-i is the ack of CID i.`, cases)
	var seeds []seedInput
	for _, c := range cases {
		seeds = append(seeds, seedInput{"golden-" + c.name, unhex(c.value)})
	}
	seeds = append(seeds, invalidSeeds("batch-5.index-4", unhex(cases[2].value))...)
	checkSeeds(t, "FuzzOwnerAck", seeds)
}

func TestOwnerAckSpecLayout(t *testing.T) {
	cids := fixtureAckCIDs(3)
	acks := mustOwnerAcks(t, cids)
	b := mustMarshal(t, &acks[2])
	// Batch of 3: leaf 2's path is the root of leaves 0–1.
	l0, l1, l2 := sha(cat([]byte{0}, cids[0][:])), sha(cat([]byte{0}, cids[1][:])), sha(cat([]byte{0}, cids[2][:]))
	n01 := sha(cat([]byte{1}, l0, l1))
	root := sha(cat([]byte{1}, n01, l2))
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"mailbox_key", 1, 32, mailboxPub},
		{"batch_size", 33, 2, unhex("0003")},
		{"index", 35, 2, unhex("0002")},
		{"path_len", 37, 1, unhex("01")},
		{"path", 38, 32, n01},
		{"signature", 70, 64, ed25519.Sign(mailboxKey, cat([]byte("cairn/v1/ack\x00"), unhex("0003"), root))},
	})
}

func TestOwnerAckVerify(t *testing.T) {
	cids := fixtureAckCIDs(64)
	acks := mustOwnerAcks(t, cids)
	v := NewOwnerAckVerifier(4)
	for i := range acks {
		a, err := ParseOwnerAck(mustMarshal(t, &acks[i]))
		if err != nil {
			t.Fatal(err)
		}
		wantErr(t, a.VerifyFor(fixtureMailbox, cids[i]), nil, "ack %d: VerifyFor", i)
		wantErr(t, v.VerifyFor(a, fixtureMailbox, cids[i]), nil, "ack %d: OwnerAckVerifier.VerifyFor", i)
	}
	// One batch, one remembered root (hence one signature check).
	if n := len(v.roots.seen); n != 1 {
		t.Fatalf("verifier remembers %d roots after one batch, want 1", n)
	}
	other := ed25519.NewKeyFromSeed(seed(0x44))
	otherSig, err := SignOwnerAck(other, cids)
	if err != nil {
		t.Fatal(err)
	}
	// Neither the plain check nor the cached one vouches for a tampered
	// ack, another CID, another mailbox, or another key's signature.
	for _, tt := range []struct {
		name    string
		mod     func(a *OwnerAck)
		mailbox Mailbox
		cid     CID
	}{
		{"another cid", func(*OwnerAck) {}, fixtureMailbox, cids[10]},
		{"another mailbox", func(*OwnerAck) {}, MailboxOf(other.Public().(ed25519.PublicKey)), cids[9]},
		{"path", func(a *OwnerAck) { a.Path = slices.Clone(a.Path); a.Path[0][0] ^= 1 }, fixtureMailbox, cids[9]},
		{"index", func(a *OwnerAck) { a.Index = 8 }, fixtureMailbox, cids[9]},
		{"batch size", func(a *OwnerAck) { a.BatchSize = 65 }, fixtureMailbox, cids[9]},
		{"signature", func(a *OwnerAck) { a.Signature[63] ^= 0x10 }, fixtureMailbox, cids[9]},
		{"key of another mailbox", func(a *OwnerAck) { a.MailboxKey = other.Public().(ed25519.PublicKey) }, fixtureMailbox, cids[9]},
		{"another key's signature", func(a *OwnerAck) {
			a.MailboxKey = other.Public().(ed25519.PublicKey)
			a.Signature = otherSig
		}, fixtureMailbox, cids[9]},
	} {
		a := acks[9]
		tt.mod(&a)
		wantErr(t, a.VerifyFor(tt.mailbox, tt.cid), ErrBadSignature, "%s: VerifyFor", tt.name)
		wantErr(t, v.VerifyFor(&a, tt.mailbox, tt.cid), ErrBadSignature, "%s: OwnerAckVerifier.VerifyFor", tt.name)
	}
	// OwnerAcks refuses a signature that is not the key's over these CIDs.
	sig, _ := SignOwnerAck(mailboxKey, cids)
	if _, err := OwnerAcks(mailboxPub, cids[1:], sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("OwnerAcks over other CIDs: %v, want ErrBadSignature", err)
	}
	if _, err := OwnerAcks(other.Public().(ed25519.PublicKey), cids, sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("OwnerAcks with another key: %v, want ErrBadSignature", err)
	}
}

func TestOwnerAckLimits(t *testing.T) {
	for _, n := range []int{0, MaxAckCIDs + 1} {
		if _, err := SignOwnerAck(mailboxKey, fixtureAckCIDs(n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("SignOwnerAck of %d cids: %v, want ErrMalformed", n, err)
		}
	}
	acks := mustOwnerAcks(t, fixtureAckCIDs(MaxAckCIDs))
	b := mustMarshal(t, &acks[MaxAckCIDs-1])
	if len(b) != MaxOwnerAckLen {
		t.Errorf("ack of the last of %d cids: %d bytes, MaxOwnerAckLen %d", MaxAckCIDs, len(b), MaxOwnerAckLen)
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version", cat([]byte{2}, b[1:]), ErrUnsupportedVersion},
		{"truncated", b[:len(b)-1], ErrMalformed},
		{"trailing", cat(b, []byte{0}), ErrMalformed},
		{"batch 0", cat(b[:33], unhex("0000"), b[35:]), ErrMalformed},
		{"index ≥ batch", cat(b[:35], unhex("0400"), b[37:]), ErrMalformed},
		{"path_len", cat(b[:37], []byte{9}, b[38:]), ErrMalformed},
	} {
		_, err := ParseOwnerAck(tt.b)
		wantErr(t, err, tt.want, "%s", tt.name)
	}
}

func BenchmarkOwnerAck(b *testing.B) {
	cids := fixtureAckCIDs(64)
	sig, err := SignOwnerAck(mailboxKey, cids)
	if err != nil {
		b.Fatal(err)
	}
	acks, err := OwnerAcks(mailboxPub, cids, sig)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("sign-64", func(b *testing.B) {
		for b.Loop() {
			if _, err := SignOwnerAck(mailboxKey, cids); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if err := acks[5].VerifyFor(fixtureMailbox, cids[5]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify-cached-root", func(b *testing.B) {
		v := NewOwnerAckVerifier(16)
		for b.Loop() {
			if err := v.VerifyFor(&acks[5], fixtureMailbox, cids[5]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
