package wire

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

var (
	fixtureNow   = time.UnixMilli(fixtureTimeMs)
	fixtureNonce = unhex("000102030405060708090a0b0c0d0e0f")
)

// fixtureProof is the mailbox key's proof for op on relay A over body, made
// at fixtureNow with nonce 00 01 … 0f.
func fixtureProof(t testing.TB, op AuthOp, body []byte) *AuthProof {
	t.Helper()
	p, err := NewAuthProof(mailboxKey, op, relayA.id, body, fixtureNow, bytes.NewReader(fixtureNonce))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func parseAuthProofErr(b []byte) error { _, err := ParseAuthProof(b); return err }

func TestAuthGolden(t *testing.T) {
	var cases []golden
	for _, op := range []AuthOp{AuthSync, AuthSubscribe, AuthAck, AuthPrekeys} {
		body := fmt.Appendf(nil, "request body of op %d", op)
		cases = append(cases, hexGolden(fmt.Sprintf("op-%d", op), mustMarshal(t, fixtureProof(t, op, body))))
	}
	checkGolden(t, "auth_proof.txt", `
Auth proofs (SPEC.md §8) by the fixture mailbox key for relay A, time_ms 1700000000000,
nonce 000102…0f; op-N covers the body "request body of op N".`, cases)
	var seeds []seedInput
	for _, c := range cases {
		seeds = append(seeds, seedInput{"golden-" + c.name, unhex(c.value)})
	}
	valid := unhex(cases[0].value)
	seeds = append(seeds, invalidSeeds("op-1", valid)...)
	seeds = append(seeds, seedInput{"op-9", cat(valid[:1], []byte{9}, valid[2:])})
	checkSeeds(t, "FuzzAuthProof", seeds)
}

func TestAuthSpecLayout(t *testing.T) {
	body := []byte("request body of op 3")
	b := mustMarshal(t, fixtureProof(t, AuthAck, body))
	signed := cat(unhex("01 03 26"), []byte(relayA.id), mailboxPub, unhex("0000018bcfe56800"), fixtureNonce, sha(body))
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"op", 1, 1, unhex("03")},
		{"relay_len", 2, 1, unhex("26")},
		{"relay", 3, 38, []byte(relayA.id)},
		{"mailbox_key", 41, 32, mailboxPub},
		{"time_ms", 73, 8, unhex("0000018bcfe56800")},
		{"nonce", 81, 16, fixtureNonce},
		{"body_digest", 97, 32, sha(body)},
		{"signature", 129, 64, ed25519.Sign(mailboxKey, cat([]byte("cairn/v1/auth\x00"), signed))},
	})
}

func TestAuthVerify(t *testing.T) {
	body := []byte("the exact request bytes")
	p := fixtureProof(t, AuthSync, body)
	enc := mustMarshal(t, p)
	parsed, err := ParseAuthProof(enc)
	if err != nil {
		t.Fatal(err)
	}
	ms := func(d int64) time.Time { return fixtureNow.Add(time.Duration(d) * time.Millisecond) }
	tests := []struct {
		name    string
		op      AuthOp
		self    peer.ID
		mailbox Mailbox
		body    []byte
		now     time.Time
		want    error
	}{
		{"fresh", AuthSync, relayA.id, fixtureMailbox, body, fixtureNow, nil},
		{"60 s later", AuthSync, relayA.id, fixtureMailbox, body, ms(60_000), nil},
		{"60 s earlier", AuthSync, relayA.id, fixtureMailbox, body, ms(-60_000), nil},
		{"60.001 s later", AuthSync, relayA.id, fixtureMailbox, body, ms(60_001), ErrAuthStale},
		{"60.001 s earlier", AuthSync, relayA.id, fixtureMailbox, body, ms(-60_001), ErrAuthStale},
		{"an hour later", AuthSync, relayA.id, fixtureMailbox, body, ms(3_600_000), ErrAuthStale},
		{"far future relay clock", AuthSync, relayA.id, fixtureMailbox, body, time.Unix(1<<40, 0), ErrAuthStale},
		{"zero relay clock", AuthSync, relayA.id, fixtureMailbox, body, time.Time{}, ErrAuthStale},
		{"wrong op", AuthAck, relayA.id, fixtureMailbox, body, fixtureNow, ErrAuthFailed},
		{"another relay", AuthSync, relayB.id, fixtureMailbox, body, fixtureNow, ErrAuthFailed},
		{"another body", AuthSync, relayA.id, fixtureMailbox, []byte("the exact request bytes!"), fixtureNow, ErrAuthFailed},
		{"empty body", AuthSync, relayA.id, fixtureMailbox, nil, fixtureNow, ErrAuthFailed},
		{"key is not the mailbox's", AuthSync, relayA.id, otherMailbox, body, fixtureNow, ErrAuthFailed},
		// Cheap checks come first: a stale proof for the wrong relay is
		// refused as AUTH_FAILED (relay), a stale one with a bad body as
		// AUTH_STALE.
		{"wrong relay before stale", AuthSync, relayB.id, fixtureMailbox, body, ms(-120_000), ErrAuthFailed},
		{"stale before body", AuthSync, relayA.id, fixtureMailbox, nil, ms(120_000), ErrAuthStale},
	}
	for _, tt := range tests {
		for name, proof := range map[string]*AuthProof{"made": p, "parsed": parsed} {
			wantErr(t, proof.Verify(tt.op, tt.self, tt.mailbox, tt.body, tt.now), tt.want, "%s (%s)", tt.name, name)
		}
	}
	for bit := range 512 {
		q := *parsed
		q.Signature = [64]byte(flipBit(q.Signature[:], bit))
		wantErr(t, q.Verify(AuthSync, relayA.id, fixtureMailbox, body, fixtureNow), ErrAuthFailed, "signature bit %d", bit)
	}
	// Another mailbox key that signs for itself but claims this mailbox.
	other := *parsed
	other.MailboxKey = otherMailboxKey.Public().(ed25519.PublicKey)
	wantErr(t, other.Verify(AuthSync, relayA.id, fixtureMailbox, body, fixtureNow), ErrAuthFailed, "another key")
	q := *parsed
	q.MailboxKey = q.MailboxKey[:31]
	wantErr(t, q.Verify(AuthSync, relayA.id, MailboxOf(q.MailboxKey), body, fixtureNow), ErrAuthFailed, "short key")
	q = *parsed
	q.TimeMs = 1<<64 - 1
	wantErr(t, q.Verify(AuthSync, relayA.id, fixtureMailbox, body, fixtureNow), ErrAuthStale, "time 2^64-1")
}

func TestAuthTamperEveryBit(t *testing.T) {
	body := []byte("body")
	valid := mustMarshal(t, fixtureProof(t, AuthSubscribe, body))
	for bit := 0; bit < 8*len(valid); bit += bitStride() {
		p, err := ParseAuthProof(flipBit(valid, bit))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("bit %d: parse error %v", bit, err)
			}
			continue
		}
		err = p.Verify(AuthSubscribe, relayA.id, fixtureMailbox, body, fixtureNow)
		if !errors.Is(err, ErrAuthFailed) && !errors.Is(err, ErrAuthStale) {
			t.Fatalf("bit %d: Verify = %v", bit, err)
		}
	}
}

func TestAuthRoundTrip(t *testing.T) {
	for _, op := range []AuthOp{AuthSync, AuthSubscribe, AuthAck, AuthPrekeys} {
		for _, relay := range []peer.ID{relayA.id, originC} {
			p, err := NewAuthProof(otherMailboxKey, op, relay, []byte{byte(op)}, time.UnixMilli(1<<50), bytes.NewReader(bytes.Repeat([]byte{0xee}, 16)))
			if err != nil {
				t.Fatal(err)
			}
			b := mustMarshal(t, p)
			q, err := ParseAuthProof(b)
			if err != nil {
				t.Fatal(err)
			}
			if q.Op != p.Op || q.Relay != p.Relay || !q.MailboxKey.Equal(p.MailboxKey) || q.TimeMs != p.TimeMs || q.Nonce != p.Nonce || q.BodyDigest != p.BodyDigest || q.Signature != p.Signature {
				t.Fatalf("round trip changed the proof")
			}
			if !bytes.Equal(mustMarshal(t, q), b) {
				t.Fatal("Marshal(Parse(b)) != b")
			}
			if q.Mailbox() != otherMailbox {
				t.Fatal("Mailbox() is not the key's address")
			}
			// The parsed key does not alias the input.
			b[len(b)-1-64-32-16-8] ^= 0xff
			if !q.MailboxKey.Equal(p.MailboxKey) {
				t.Fatal("the parsed mailbox key aliases the input")
			}
		}
	}
}

func TestAuthReplayKey(t *testing.T) {
	p := fixtureProof(t, AuthAck, nil)
	k := p.ReplayKey()
	if !bytes.Equal(k.MailboxKey[:], mailboxPub) || !bytes.Equal(k.Nonce[:], fixtureNonce) {
		t.Fatalf("ReplayKey = %+v", k)
	}
	if got := p.ReplayExpiry(); !got.Equal(fixtureNow.Add(60 * time.Second)) {
		t.Fatalf("ReplayExpiry = %v", got)
	}
	q, err := NewAuthProof(mailboxKey, AuthAck, relayA.id, nil, fixtureNow, bytes.NewReader(bytes.Repeat([]byte{1}, 16)))
	if err != nil || q.ReplayKey() == k {
		t.Fatal("proofs with different nonces share a replay key")
	}
}

func TestAuthRejects(t *testing.T) {
	valid := mustMarshal(t, fixtureProof(t, AuthSync, []byte("x")))
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"trailing byte", append(bytes.Clone(valid), 0), ErrMalformed},
		{"op 0", cat(unhex("0100"), valid[2:]), ErrMalformed},
		{"op 5", cat(unhex("0105"), valid[2:]), ErrMalformed},
		{"op 255", cat(unhex("01ff"), valid[2:]), ErrMalformed},
		{"relay_len 0", cat(unhex("010100"), valid[3+38:]), ErrMalformed},
		{"relay_len 65", cat(unhex("010141"), bytes.Repeat([]byte{0}, 65), valid[3+38:]), ErrMalformed},
		{"relay not a multihash", cat(unhex("010103"), []byte("abc"), valid[3+38:]), ErrMalformed},
		{"version 2", cat(unhex("02"), valid[1:]), ErrUnsupportedVersion},
	}
	for _, tt := range tests {
		wantErr(t, parseAuthProofErr(tt.b), tt.want, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, valid, parseAuthProofErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, valid, parseAuthProofErr) })
}

func TestAuthNewRejects(t *testing.T) {
	for _, op := range []AuthOp{0, 5, 255} {
		_, err := NewAuthProof(mailboxKey, op, relayA.id, nil, fixtureNow, bytes.NewReader(fixtureNonce))
		wantErr(t, err, ErrMalformed, "op %d", op)
	}
	for _, relay := range []peer.ID{"", peer.ID("not a peer id"), peer.ID(bytes.Repeat([]byte{1}, 65))} {
		_, err := NewAuthProof(mailboxKey, AuthSync, relay, nil, fixtureNow, bytes.NewReader(fixtureNonce))
		wantErr(t, err, ErrMalformed, "relay %q", relay)
	}
	_, err := NewAuthProof(mailboxKey, AuthSync, relayA.id, nil, fixtureNow, bytes.NewReader(fixtureNonce[:15]))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short random source: %v", err)
	}
	p := fixtureProof(t, AuthSync, nil)
	p.MailboxKey = p.MailboxKey[:16]
	_, err = p.Marshal()
	wantErr(t, err, ErrMalformed, "Marshal with a 16-byte key")
}

func BenchmarkAuthVerify(b *testing.B) {
	body := make([]byte, 256)
	p := fixtureProof(b, AuthSync, body)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Verify(AuthSync, relayA.id, fixtureMailbox, body, fixtureNow); err != nil {
			b.Fatal(err)
		}
	}
}
