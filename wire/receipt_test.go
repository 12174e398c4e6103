package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"
)

// handReceipt is SPEC.md §6.1's encoding of fixtureReceipt(i), built from
// the table without the package's encoder.
func handReceipt(t testing.TB, i int) []byte {
	env := mustMarshalEnvelope(t, fixtureEnvelope(i))
	return cat(
		unhex("01"),                  // version
		unhex("26"),                  // origin_len 38
		[]byte(relayA.id),            // origin
		unhex("1220"),                // mailbox: sha2-256 multihash
		sha(mailboxPub),              //   of the mailbox key
		unhex("01551220"),            // cid: CIDv1 raw sha2-256
		sha(env),                     //   of the envelope
		u64(uint64(i)+1),             // seq
		u64(1700000000123+uint64(i)), // stored_at_ms
		u64(1700000000+uint64(i)),    // expiry
	)
}

// handBatchSignature is SPEC.md §6.2's batch signature computed with the
// reference Merkle tree and the standard library's Ed25519.
func handBatchSignature(t testing.TB, key ed25519.PrivateKey, receipts [][]byte) (root [32]byte, sig []byte) {
	root = refMTH(receipts)
	msg := cat([]byte("cairn/v1/receipt"), []byte{0}, u16(uint16(len(receipts))), root[:])
	return root, ed25519.Sign(key, msg)
}

func parseReceiptErr(b []byte) error { _, err := ParseReceipt(b); return err }

func parseSignedReceiptErr(b []byte) error { _, err := ParseSignedReceipt(b); return err }

func TestReceiptGolden(t *testing.T) {
	var cases []golden
	var seeds []seedInput
	for i := range 3 {
		r := fixtureReceipt(t, i)
		b := mustMarshal(t, &r)
		if hand := handReceipt(t, i); !bytes.Equal(b, hand) {
			t.Errorf("receipt %d:\n got %x\nwant %x (SPEC.md §6.1 by hand)", i, b, hand)
		}
		name := fmt.Sprintf("fixture-%d", i)
		cases = append(cases, hexGolden(name, b))
		seeds = append(seeds, seedInput{"golden-" + name, b})
	}
	checkGolden(t, "receipt.txt", `
Receipt (SPEC.md §6.1). fixture-i: origin relay A, fixture mailbox, cid of envelope.txt fixture-i,
seq i+1, stored_at_ms 1700000000123+i, expiry 1700000000+i.`, cases)
	seeds = append(seeds, invalidSeeds("fixture-0", unhex(cases[0].value))...)
	seeds = append(seeds, seedInput{"seq-zero", cat(unhex(cases[0].value)[:110], u64(0), unhex(cases[0].value)[118:])})
	checkSeeds(t, "FuzzReceipt", seeds)
}

func TestReceiptSpecLayout(t *testing.T) {
	r := fixtureReceipt(t, 4)
	b := mustMarshal(t, &r)
	env := mustMarshalEnvelope(t, fixtureEnvelope(4))
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"origin_len", 1, 1, unhex("26")},
		{"origin", 2, 38, cat(unhex("002408011220"), relayA.pub())},
		{"mailbox", 40, 34, cat(unhex("1220"), sha(mailboxPub))},
		{"cid", 74, 36, cat(unhex("01551220"), sha(env))},
		{"seq", 110, 8, unhex("0000000000000005")},
		{"stored_at_ms", 118, 8, unhex("0000018bcfe5687f")},
		{"expiry", 126, 8, unhex("000000006553f104")},
	})
}

func TestReceiptSignedGolden(t *testing.T) {
	var cases []golden
	var seeds []seedInput
	for _, n := range []int{1, 2, 3, 5} {
		srs := mustSign(t, relayA.priv, fixtureReceipts(t, n))
		hand := make([][]byte, n)
		for i := range hand {
			hand[i] = handReceipt(t, i)
		}
		root, sig := handBatchSignature(t, relayA.ed, hand)
		for i := range srs {
			b := mustMarshal(t, &srs[i])
			if !bytes.Equal(srs[i].Signature[:], sig) {
				t.Errorf("batch %d: signature differs from SPEC.md §6.2 by hand", n)
			}
			// SPEC.md §6.2 table, by hand: receipt, batch_size, index,
			// path_len, path (the RFC 9162 reference path), signature.
			path := refPATH(i, hand)
			fields := []field{
				{"receipt", 0, len(hand[i]), hand[i]},
				{"batch_size", -1, 2, u16(uint16(n))},
				{"index", -1, 2, u16(uint16(i))},
				{"path_len", -1, 1, []byte{byte(len(path))}},
			}
			for j, p := range path {
				fields = append(fields, field{fmt.Sprintf("path[%d]", j), -1, 32, p[:]})
			}
			fields = append(fields, field{"signature", -1, 64, sig})
			checkLayout(t, b, fields)
			if got, ok := refRootFromPath(i, n, refLeafHash(hand[i]), path); !ok || got != root {
				t.Fatal("reference path does not lead to the reference root")
			}
			name := fmt.Sprintf("batch-%d.index-%d", n, i)
			cases = append(cases, hexGolden(name, b))
			seeds = append(seeds, seedInput{"golden-" + name, b})
		}
	}
	checkGolden(t, "signed_receipt.txt", `
Signed receipts (SPEC.md §6.2): relay A signs the batch of receipt.txt's fixture-0 … fixture-(N-1)
(extended the same way) for N = 1, 2, 3, 5; batch-N.index-i is the signed receipt of fixture-i.`, cases)
	b5 := unhex(cases[len(cases)-2].value) // batch 5, index 3
	seeds = append(seeds, invalidSeeds("batch-5.index-3", b5)...)
	wrongPath := bytes.Clone(b5)
	wrongPath[134+4]-- // path_len 2 for a leaf whose path has 3 hashes
	seeds = append(seeds, seedInput{"path-len", wrongPath})
	checkSeeds(t, "FuzzSignedReceipt", seeds)
}

func TestReceiptRoundTrip(t *testing.T) {
	otherOrigin := peer.ID(mustMultihash(t, []byte("an RSA relay"))) // a sha2-256 peer ID
	for _, r := range []Receipt{
		fixtureReceipt(t, 0),
		{Origin: otherOrigin, Mailbox: otherMailbox, CID: CIDOf([]byte("x")), Seq: 1<<64 - 1, StoredAtMs: 1<<64 - 1, Expiry: 1<<64 - 1},
		{Origin: relayB.id, Mailbox: fixtureMailbox, CID: CIDOf(nil), Seq: 1},
	} {
		b := mustMarshal(t, &r)
		got, err := ParseReceipt(b)
		if err != nil {
			t.Fatal(err)
		}
		if *got != r {
			t.Fatalf("round trip: %+v, want %+v", *got, r)
		}
		if again := mustMarshal(t, got); !bytes.Equal(again, b) {
			t.Fatal("Marshal(Parse(b)) != b")
		}
	}
}

func mustMultihash(t testing.TB, data []byte) []byte {
	h, err := mh.Sum(data, mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestReceiptRejects(t *testing.T) {
	r := fixtureReceipt(t, 0)
	valid := mustMarshal(t, &r)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"version 2", mod(func(b []byte) []byte { b[0] = 2; return b }), ErrUnsupportedVersion},
		{"origin_len 0", cat(unhex("0100"), valid[2:]), ErrMalformed},
		{"origin_len 65", cat(unhex("0141"), bytes.Repeat([]byte{0}, 65), valid[40:]), ErrMalformed},
		{"origin_len past the end", unhex("0140"), ErrMalformed},
		{"origin not a multihash", mod(func(b []byte) []byte { b[3] = 0x25; return b }), ErrMalformed},
		{"mailbox prefix", mod(func(b []byte) []byte { b[40] = 0x13; return b }), ErrMalformed},
		{"cid codec", mod(func(b []byte) []byte { b[75] = 0x70; return b }), ErrMalformed},
		{"seq 0", cat(valid[:110], u64(0), valid[118:]), ErrMalformed},
	}
	for _, tt := range tests {
		wantErr(t, parseReceiptErr(tt.b), tt.want, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, valid, parseReceiptErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, valid, parseReceiptErr) })
}

func TestReceiptMarshalRejects(t *testing.T) {
	// Marshal refuses exactly what Parse would refuse, so a relay can never
	// sign a receipt nobody can parse.
	good := fixtureReceipt(t, 0)
	for _, tt := range []struct {
		name string
		mod  func(r *Receipt)
	}{
		{"seq 0", func(r *Receipt) { r.Seq = 0 }},
		{"empty origin", func(r *Receipt) { r.Origin = "" }},
		{"origin of 65 bytes", func(r *Receipt) { r.Origin = peer.ID(bytes.Repeat([]byte{1}, 65)) }},
		{"origin not a multihash", func(r *Receipt) { r.Origin = peer.ID("not a peer id") }},
		{"zero mailbox", func(r *Receipt) { r.Mailbox = Mailbox{} }},
		{"zero cid", func(r *Receipt) { r.CID = CID{} }},
	} {
		r := good
		tt.mod(&r)
		_, err := r.Marshal()
		wantErr(t, err, ErrMalformed, "%s", tt.name)
		_, err = SignReceipts(relayA.priv, []Receipt{good, r})
		wantErr(t, err, ErrMalformed, "SignReceipts with %s", tt.name)
	}
}

func TestReceiptSignedRejects(t *testing.T) {
	srs := mustSign(t, relayA.priv, fixtureReceipts(t, 5))
	valid := mustMarshal(t, &srs[3])
	const rl = 134 // receipt length
	with := func(batch, index uint16, pathLen byte, rest []byte) []byte {
		return cat(valid[:rl], u16(batch), u16(index), []byte{pathLen}, rest)
	}
	tail := valid[rl+5:]
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"version", cat(unhex("02"), valid[1:]), ErrUnsupportedVersion},
		{"receipt only", valid[:rl], ErrMalformed},
		{"batch 0", with(0, 0, 0, tail), ErrMalformed},
		{"batch 1025", with(1025, 3, 11, cat(tail, make([]byte, 32*8))), ErrMalformed},
		{"batch 65535", with(65535, 3, 16, cat(tail, make([]byte, 32*13))), ErrMalformed},
		{"index = batch", with(5, 5, 3, tail), ErrMalformed},
		{"index > batch", with(5, 9, 3, tail), ErrMalformed},
		{"path_len one short", with(5, 3, 2, tail[32:]), ErrMalformed},
		{"path_len one long", with(5, 3, 4, cat(tail, make([]byte, 32))), ErrMalformed},
		{"path_len 255", with(5, 3, 255, tail), ErrMalformed},
		{"path_len for another index", with(5, 4, 3, tail), ErrMalformed},
		{"no signature", valid[:len(valid)-64], ErrMalformed},
		{"seq 0", cat(valid[:110], u64(0), valid[118:]), ErrMalformed},
	}
	for _, tt := range tests {
		wantErr(t, parseSignedReceiptErr(tt.b), tt.want, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, valid, parseSignedReceiptErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, valid, parseSignedReceiptErr) })
	t.Run("marshal", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			mod  func(s *SignedReceipt)
		}{
			{"batch 0", func(s *SignedReceipt) { s.BatchSize = 0 }},
			{"batch 1025", func(s *SignedReceipt) { s.BatchSize = 1025 }},
			{"index = batch", func(s *SignedReceipt) { s.Index = 5 }},
			{"path too short", func(s *SignedReceipt) { s.Path = s.Path[:2] }},
			{"path too long", func(s *SignedReceipt) { s.Path = append(slices.Clone(s.Path), [32]byte{}) }},
			{"seq 0", func(s *SignedReceipt) { s.Seq = 0 }},
		} {
			s := srs[3]
			tt.mod(&s)
			_, err := s.Marshal()
			wantErr(t, err, ErrMalformed, "%s", tt.name)
		}
	})
}

// checkBatch verifies every receipt of a signed batch on its own, after a
// round trip through its encoding, against the reference Merkle tree.
func checkBatch(t *testing.T, srs []SignedReceipt, rs []Receipt, withPaths bool) {
	t.Helper()
	n := len(rs)
	enc := make([][]byte, n)
	for i := range rs {
		enc[i] = mustMarshal(t, &rs[i])
	}
	root, sig := handBatchSignature(t, relayA.ed, enc)
	if len(srs) != n {
		t.Fatalf("SignReceipts returned %d receipts for %d", len(srs), n)
	}
	for i := range srs {
		s := &srs[i]
		if s.Receipt != rs[i] || int(s.BatchSize) != n || int(s.Index) != i || !bytes.Equal(s.Signature[:], sig) {
			t.Fatalf("batch %d receipt %d: fields %+v", n, i, s)
		}
		if withPaths && !slices.Equal(s.Path, refPATH(i, enc)) {
			t.Fatalf("batch %d receipt %d: path differs from RFC 9162 PATH", n, i)
		}
		if r, ok := refRootFromPath(i, n, refLeafHash(enc[i]), s.Path); !ok || r != root {
			t.Fatalf("batch %d receipt %d: path does not lead to the reference root", n, i)
		}
		b := mustMarshal(t, s)
		p, err := ParseSignedReceipt(b)
		if err != nil {
			t.Fatalf("batch %d receipt %d: %v", n, i, err)
		}
		if err := p.Verify(); err != nil {
			t.Fatalf("batch %d receipt %d: %v", n, i, err)
		}
		if again := mustMarshal(t, p); !bytes.Equal(again, b) {
			t.Fatalf("batch %d receipt %d: Marshal(Parse(b)) != b", n, i)
		}
	}
}

func TestReceiptSignVerifyEverySize(t *testing.T) {
	for n := 1; n <= 64; n++ {
		rs := fixtureReceipts(t, n)
		checkBatch(t, mustSign(t, relayA.priv, rs), rs, true)
	}
}

func TestReceiptSignVerifyMaxBatch(t *testing.T) {
	rs := fixtureReceipts(t, MaxReceiptBatch)
	srs := mustSign(t, relayA.priv, rs)
	checkBatch(t, srs, rs, false)
	if l := len(srs[MaxReceiptBatch-1].Path); l != 10 {
		t.Errorf("path of the last of 1024 receipts has %d hashes, want 10", l)
	}
	if _, err := SignReceipts(relayA.priv, fixtureReceipts(t, MaxReceiptBatch+1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("SignReceipts of 1025 receipts: %v", err)
	}
	if _, err := SignReceipts(relayA.priv, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("SignReceipts of no receipt: %v", err)
	}
}

// checkRejected fails unless the (tampered) encoding b is rejected by
// parsing or by verification, with one of the sentinels allowed.
func checkRejected(t *testing.T, b []byte, v *ReceiptVerifier, what string) {
	t.Helper()
	s, err := ParseSignedReceipt(b)
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("%s: parse error %v", what, err)
		}
		return
	}
	for name, verify := range map[string]func() error{
		"Verify":                 s.Verify,
		"ReceiptVerifier.Verify": func() error { return v.Verify(s) },
	} {
		err := verify()
		if err == nil {
			t.Fatalf("%s: %s accepted a tampered receipt", what, name)
		}
		if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %s error %v", what, name, err)
		}
	}
}

func TestReceiptTamperEveryBit(t *testing.T) {
	for _, tt := range []struct{ n, i int }{{1, 0}, {2, 1}, {5, 3}, {64, 37}} {
		t.Run(fmt.Sprintf("batch-%d.index-%d", tt.n, tt.i), func(t *testing.T) {
			t.Parallel()
			srs := mustSign(t, relayA.priv, fixtureReceipts(t, tt.n))
			valid := mustMarshal(t, &srs[tt.i])
			// The verifier has seen the genuine root: a cached root must
			// not make a tampered leaf, path or signature pass.
			v := NewReceiptVerifier(16)
			for i := range srs {
				if err := v.Verify(&srs[i]); err != nil {
					t.Fatal(err)
				}
			}
			for bit := 0; bit < 8*len(valid); bit += bitStride() {
				checkRejected(t, flipBit(valid, bit), v, fmt.Sprintf("bit %d", bit))
			}
		})
	}
}

func TestReceiptTamperFields(t *testing.T) {
	srs := mustSign(t, relayA.priv, fixtureReceipts(t, 7))
	v := NewReceiptVerifier(16)
	for i := range srs {
		if err := v.Verify(&srs[i]); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, s SignedReceipt) {
		t.Helper()
		for name, err := range map[string]error{"Verify": s.Verify(), "cached": v.Verify(&s)} {
			if err == nil {
				t.Errorf("%s: %s accepted it", what, name)
			} else if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: %s error %v", what, name, err)
			}
		}
	}
	for bit := range 16 {
		s := srs[5]
		s.Index ^= 1 << bit
		check(fmt.Sprintf("index bit %d", bit), s)
		s = srs[5]
		s.BatchSize ^= 1 << bit
		check(fmt.Sprintf("batch size bit %d", bit), s)
	}
	for j := range srs[5].Path {
		for bit := range 256 {
			s := srs[5]
			s.Path = slices.Clone(s.Path)
			s.Path[j] = [32]byte(flipBit(s.Path[j][:], bit))
			check(fmt.Sprintf("path[%d] bit %d", j, bit), s)
		}
	}
	for bit := range 512 {
		s := srs[5]
		s.Signature = [64]byte(flipBit(s.Signature[:], bit))
		check(fmt.Sprintf("signature bit %d", bit), s)
	}
	s := srs[5]
	s.Path = nil
	check("no path", s)
	s = srs[5]
	s.Receipt = srs[4].Receipt
	check("another receipt of the batch", s)
	s = srs[5]
	s.Index = 4
	check("index of a sibling with the same path length", s)
	s = srs[5]
	s.BatchSize = 8
	check("batch size with the same path length", s)
	s = srs[5]
	s.StoredAtMs++
	check("stored_at", s)
	s = srs[5]
	s.Expiry++
	check("expiry", s)
}

func TestReceiptOtherKey(t *testing.T) {
	rs := fixtureReceipts(t, 3)
	// Relay B signs receipts that name relay A as origin.
	forged := mustSign(t, relayB.priv, rs)
	// Relay A signs receipts that name relay B as origin.
	bs := slices.Clone(rs)
	for i := range bs {
		bs[i].Origin = relayB.id
	}
	misnamed := mustSign(t, relayA.priv, bs)
	// Genuine receipts whose origin is swapped for another relay.
	swapped := mustSign(t, relayA.priv, rs)
	for i := range swapped {
		swapped[i].Origin = relayB.id
	}
	v := NewReceiptVerifier(8)
	for name, srs := range map[string][]SignedReceipt{"forged": forged, "misnamed": misnamed, "swapped": swapped} {
		for i := range srs {
			wantErr(t, srs[i].Verify(), ErrBadSignature, "%s %d: Verify", name, i)
			wantErr(t, v.Verify(&srs[i]), ErrBadSignature, "%s %d: ReceiptVerifier", name, i)
		}
	}
	// A signature from another batch of the same receipts (another size)
	// does not carry over.
	two := mustSign(t, relayA.priv, rs[:2])
	s := mustSign(t, relayA.priv, rs)[1]
	s.Signature = two[1].Signature
	wantErr(t, s.Verify(), ErrBadSignature, "signature of another batch")
}

func TestReceiptOriginKey(t *testing.T) {
	got, err := OriginKey(relayA.id)
	if err != nil || !bytes.Equal(got, relayA.pub()) {
		t.Fatalf("OriginKey(relay A) = %x, %v", got, err)
	}
	secp, _, err := crypto.GenerateSecp256k1Key(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	secpID, err := peer.IDFromPrivateKey(secp)
	if err != nil {
		t.Fatal(err)
	}
	identity := func(pb []byte) peer.ID {
		id, err := mh.Sum(pb, mh.IDENTITY, -1)
		if err != nil {
			t.Fatal(err)
		}
		return peer.ID(id)
	}
	for _, tt := range []struct {
		name string
		id   peer.ID
	}{
		{"sha2-256 peer ID (key not embedded)", peer.ID(mustMultihash(t, []byte("rsa")))},
		{"secp256k1 key", secpID},
		{"empty", ""},
		{"not a multihash", peer.ID("xyz")},
		// The same Ed25519 key under a non-canonical protobuf encoding is
		// not the relay's peer ID (SPEC.md §1: exactly 00 24 08 01 12 20 ‖ key).
		{"Ed25519 key with an unknown protobuf field", identity(cat(unhex("08011220"), relayA.pub(), unhex("1800")))},
		{"Ed25519 key with a repeated type field", identity(cat(unhex("08010801"+"1220"), relayA.pub()))},
		{"Ed25519 key with fields swapped", identity(cat(unhex("1220"), relayA.pub(), unhex("0801")))},
	} {
		_, err := OriginKey(tt.id)
		wantErr(t, err, ErrBadSignature, "%s", tt.name)
		// Receipts signed by relay A under that origin do not verify.
		if _, err := mh.Cast([]byte(tt.id)); err != nil || tt.id == "" {
			continue
		}
		r := fixtureReceipt(t, 0)
		r.Origin = tt.id
		srs := mustSign(t, relayA.priv, []Receipt{r})
		wantErr(t, srs[0].Verify(), ErrBadSignature, "%s: Verify", tt.name)
	}
}

func TestReceiptVerifyFor(t *testing.T) {
	envs := [][]byte{mustMarshalEnvelope(t, fixtureEnvelope(0)), mustMarshalEnvelope(t, fixtureEnvelope(1))}
	rs := fixtureReceipts(t, 2)
	// A receipt that names the CID of envelope 0 but another mailbox.
	wrongMailbox := rs[0]
	wrongMailbox.Mailbox = otherMailbox
	wrongMailbox.Seq = 3
	// Receipts for bytes that are not an envelope: of another version, and
	// of version 1 but too short.
	garbage := []byte("not an envelope")
	notEnvelope := rs[0]
	notEnvelope.CID = CIDOf(garbage)
	notEnvelope.Seq = 4
	short := []byte("\x01 short")
	shortEnvelope := rs[0]
	shortEnvelope.CID = CIDOf(short)
	shortEnvelope.Seq = 5
	srs := mustSign(t, relayA.priv, []Receipt{rs[0], rs[1], wrongMailbox, notEnvelope, shortEnvelope})
	v := NewReceiptVerifier(8)
	for _, tt := range []struct {
		name  string
		stamp int
		env   []byte
		want  error
	}{
		{"own envelope 0", 0, envs[0], nil},
		{"own envelope 1", 1, envs[1], nil},
		{"another envelope", 0, envs[1], ErrBadSignature},
		{"another envelope 2", 1, envs[0], ErrBadSignature},
		{"another mailbox", 2, envs[0], ErrBadSignature},
		{"not an envelope", 3, garbage, ErrUnsupportedVersion},
		{"short envelope", 4, short, ErrMalformed},
		{"empty envelope", 0, nil, ErrBadSignature},
	} {
		wantErr(t, srs[tt.stamp].VerifyFor(tt.env), tt.want, "%s: VerifyFor", tt.name)
		wantErr(t, v.VerifyFor(&srs[tt.stamp], tt.env), tt.want, "%s: ReceiptVerifier.VerifyFor", tt.name)
	}
	// A stamp that is right for the envelope but badly signed.
	bad := srs[0]
	bad.Signature[0] ^= 1
	wantErr(t, bad.VerifyFor(envs[0]), ErrBadSignature, "bad signature: VerifyFor")
	wantErr(t, v.VerifyFor(&bad, envs[0]), ErrBadSignature, "bad signature: ReceiptVerifier.VerifyFor")
}

func TestReceiptVerifierCache(t *testing.T) {
	srs := mustSign(t, relayA.priv, fixtureReceipts(t, 64))
	v := NewReceiptVerifier(4)
	for i := range srs {
		if err := v.Verify(&srs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// One batch, one remembered root (hence one signature check).
	if n := len(v.roots.seen); n != 1 {
		t.Fatalf("verifier remembers %d roots after one batch, want 1", n)
	}
	// The cached root does not vouch for a tampered leaf, path, signature
	// or batch size, nor for the same root under another origin.
	for name, mod := range map[string]func(s *SignedReceipt){
		"leaf":       func(s *SignedReceipt) { s.Seq++ },
		"path":       func(s *SignedReceipt) { s.Path = slices.Clone(s.Path); s.Path[0][0] ^= 1 },
		"signature":  func(s *SignedReceipt) { s.Signature[63] ^= 0x10 },
		"batch size": func(s *SignedReceipt) { s.BatchSize = 65 },
		"origin":     func(s *SignedReceipt) { s.Origin = relayB.id },
	} {
		s := srs[9]
		mod(&s)
		if err := v.Verify(&s); err == nil {
			t.Errorf("cached verifier accepted a tampered %s", name)
		}
	}
	if n := len(v.roots.seen); n != 1 {
		t.Fatalf("rejected receipts were cached: %d roots", n)
	}
	// Bounded: many batches never grow it beyond its size.
	for b := range 10 {
		rs := fixtureReceipts(t, 2)
		for i := range rs {
			rs[i].Seq += uint64(100 * (b + 1))
		}
		for _, s := range mustSign(t, relayA.priv, rs) {
			if err := v.Verify(&s); err != nil {
				t.Fatal(err)
			}
			if len(v.roots.seen) > 4 {
				t.Fatalf("verifier of size 4 holds %d roots", len(v.roots.seen))
			}
		}
	}
	if NewReceiptVerifier(0).roots.max != 1 || NewReceiptVerifier(-5).roots.max != 1 {
		t.Error("a verifier of size < 1 is not clamped to 1")
	}
	one := NewReceiptVerifier(0)
	for i := range 3 {
		if err := one.Verify(&srs[i]); err != nil || len(one.roots.seen) != 1 {
			t.Fatalf("verifier of size 1: %v, %d roots", err, len(one.roots.seen))
		}
	}
}

func TestReceiptVerifierConcurrent(t *testing.T) {
	batches := make([][]SignedReceipt, 4)
	for b := range batches {
		rs := fixtureReceipts(t, 16)
		for i := range rs {
			rs[i].Seq += uint64(1000 * b)
		}
		batches[b] = mustSign(t, relayA.priv, rs)
	}
	v := NewReceiptVerifier(2)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 16 {
				s := batches[(g+i)%4][i]
				if err := v.Verify(&s); err != nil {
					t.Error(err)
				}
				s.Signature[0] ^= 1
				if err := v.Verify(&s); err == nil {
					t.Error("accepted a bad signature")
				}
			}
		})
	}
	wg.Wait()
}

func TestReceiptVerifierCachedAllocs(t *testing.T) {
	srs := mustSign(t, relayA.priv, fixtureReceipts(t, 64))
	v := NewReceiptVerifier(8)
	if err := v.Verify(&srs[0]); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := v.Verify(&srs[37]); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ReceiptVerifier.Verify of a cached batch allocates %v times, want 0", n)
	}
}

// failingSigner is a Signer that fails or returns a signature of the wrong
// size.
type failingSigner struct{ sig []byte }

var errSigner = errors.New("signer failed")

func (f failingSigner) Sign([]byte) ([]byte, error) {
	if f.sig == nil {
		return nil, errSigner
	}
	return f.sig, nil
}

func TestReceiptSignerErrors(t *testing.T) {
	rs := fixtureReceipts(t, 2)
	if _, err := SignReceipts(failingSigner{}, rs); !errors.Is(err, errSigner) {
		t.Errorf("signer error not passed on: %v", err)
	}
	if _, err := SignReceipts(failingSigner{sig: make([]byte, 32)}, rs); err == nil {
		t.Error("accepted a 32-byte signature")
	}
}

func BenchmarkReceiptSign(b *testing.B) {
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			rs := fixtureReceipts(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := SignReceipts(relayA.priv, rs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/receipt")
		})
	}
}

func BenchmarkReceiptVerify(b *testing.B) {
	srs := mustSign(b, relayA.priv, fixtureReceipts(b, 64))
	b.Run("SignedReceipt.Verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := srs[37].Verify(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReceiptVerifier.Verify/cached", func(b *testing.B) {
		v := NewReceiptVerifier(1024)
		if err := v.Verify(&srs[0]); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Verify(&srs[37]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
