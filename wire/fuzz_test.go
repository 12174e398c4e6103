package wire

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Fuzz targets, one per decoder. Each checks that the decoder never panics,
// fails only with the package's sentinels, and that every input it accepts
// is canonical: Marshal(Parse(b)) == b (SPEC.md §1). Seeds live in
// testdata/fuzz/<target> and are checked against the golden encodings by the
// Test…Golden tests.

func checkParseErr(t *testing.T, err error, allowed ...error) {
	t.Helper()
	if len(allowed) == 0 {
		allowed = []error{ErrMalformed, ErrUnsupportedVersion}
	}
	for _, a := range allowed {
		if errors.Is(err, a) {
			return
		}
	}
	t.Fatalf("error %v wraps none of %v", err, allowed)
}

func FuzzEnvelope(f *testing.F) {
	f.Add(mustMarshalEnvelope(f, fixtureEnvelope(0)))
	f.Fuzz(func(t *testing.T, b []byte) {
		mb, mbErr := EnvelopeMailbox(b)
		_ = CIDOf(b)
		e, err := ParseEnvelope(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := e.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed envelope: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
		if mbErr != nil || mb != e.Mailbox {
			t.Fatalf("EnvelopeMailbox = %v, %v; Parse says %v", mb, mbErr, e.Mailbox)
		}
		if e.Size() != len(b) {
			t.Fatalf("Size %d for %d bytes", e.Size(), len(b))
		}
		_ = PostageBits(e)
	})
}

func FuzzReceipt(f *testing.F) {
	r := fixtureReceipt(f, 0)
	f.Add(mustMarshal(f, &r))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The package's peer ID check is libp2p's.
		if len(b) >= 1 && len(b) <= MaxPeerIDLen {
			_, libp2pErr := peer.IDFromBytes(b)
			if err := checkPeerID(peer.ID(b)); (err == nil) != (libp2pErr == nil) {
				t.Fatalf("peer ID %x: checkPeerID %v, peer.IDFromBytes %v", b, err, libp2pErr)
			}
		}
		r, err := ParseReceipt(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := r.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed receipt: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
	})
}

func FuzzSignedReceipt(f *testing.F) {
	srs := mustSign(f, relayA.priv, fixtureReceipts(f, 5))
	f.Add(mustMarshal(f, &srs[3]))
	v := NewReceiptVerifier(64)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignedReceipt(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := s.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed signed receipt: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
		err = s.Verify()
		cached := v.Verify(s)
		if (err == nil) != (cached == nil) {
			t.Fatalf("Verify = %v, ReceiptVerifier.Verify = %v", err, cached)
		}
		if err != nil {
			checkParseErr(t, err, ErrBadSignature, ErrMalformed)
		}
		_ = s.VerifyFor(b)
	})
}

func FuzzCursor(f *testing.F) {
	f.Add(unhex("0100"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCursor(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		if again := c.Marshal(); !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
		ps := c.Positions()
		if !slices.IsSortedFunc(ps, func(a, b Position) int { return strings.Compare(string(a.Origin), string(b.Origin)) }) {
			t.Fatal("parsed positions are not sorted")
		}
		// Advancing keeps the cursor canonical.
		for _, p := range ps {
			if c.Get(p.Origin) != p.Seq || !c.Covers(p.Origin, p.Seq) {
				t.Fatal("Get/Covers disagree with Positions")
			}
			if err := c.Advance(p.Origin, p.Seq+1); err != nil && p.Seq != 1<<64-1 {
				t.Fatal(err)
			}
		}
		if err := c.Advance(relayA.id, 5); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatal(err)
		}
		if _, err := ParseCursor(c.Marshal()); err != nil {
			t.Fatalf("an advanced cursor does not parse: %v", err)
		}
	})
}

func FuzzAuthProof(f *testing.F) {
	f.Add(mustMarshal(f, fixtureProof(f, AuthSync, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseAuthProof(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed proof: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
		err = p.Verify(p.Op, p.Relay, p.Mailbox(), nil, time.UnixMilli(int64(p.TimeMs)))
		if err != nil && !errors.Is(err, ErrAuthFailed) && !errors.Is(err, ErrAuthStale) {
			t.Fatalf("Verify error %v", err)
		}
		_ = p.ReplayKey()
		_ = p.ReplayExpiry()
	})
}

// FuzzInvite reads its input three ways: as a payload, as the same payload
// with its checksum fixed (so the fuzzer gets past the checksum), and as an
// invite string.
func FuzzInvite(f *testing.F) {
	p, err := minimalInvite().MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(p)
	f.Fuzz(func(t *testing.T, b []byte) {
		payloads := [][]byte{b}
		if len(b) >= 4 {
			payloads = append(payloads, withChecksum(b))
		}
		for _, p := range payloads {
			var inv Invite
			err := inv.UnmarshalBinary(p)
			if err != nil {
				checkParseErr(t, err, ErrMalformed, ErrUnsupportedVersion, ErrInviteChecksum)
				continue
			}
			again, err := inv.MarshalBinary()
			if err != nil {
				t.Fatalf("MarshalBinary of a parsed invite: %v", err)
			}
			if !bytes.Equal(again, p) {
				t.Fatalf("MarshalBinary(UnmarshalBinary(p)) = %x, p = %x", again, p)
			}
			// Its string form parses to the same payload.
			s, err := inv.String()
			if err != nil {
				t.Fatal(err)
			}
			q, err := ParseInvite(s)
			if err != nil {
				t.Fatalf("ParseInvite(String()): %v", err)
			}
			if qb, _ := q.MarshalBinary(); !bytes.Equal(qb, p) {
				t.Fatal("string form does not round-trip")
			}
		}
		inv, err := ParseInvite(string(b))
		if err != nil {
			checkParseErr(t, err, ErrMalformed, ErrUnsupportedVersion, ErrInviteChecksum)
			return
		}
		// An accepted string is the canonical one up to ASCII case and
		// whitespace.
		s, err := inv.String()
		if err != nil {
			t.Fatalf("String of a parsed invite: %v", err)
		}
		norm := strings.Map(func(r rune) rune {
			if strings.ContainsRune(" \t\n\r\v\f", r) {
				return -1
			}
			if r >= 'A' && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return r
		}, string(b))
		if s != norm {
			t.Fatalf("accepted %q, whose canonical form is %q", b, s)
		}
	})
}

func FuzzCID(f *testing.F) {
	c := CIDOf([]byte("x"))
	f.Add(c[:])
	f.Add([]byte(c.String()))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == CIDLen {
			_ = CID(b).String() // any 36 bytes print without panicking
		}
		if c, err := ParseCID(b); err != nil {
			checkParseErr(t, err)
		} else if !bytes.Equal(c[:], b) {
			t.Fatalf("ParseCID(%x) = %x", b, c)
		} else if c.String() != specCIDText(b) {
			t.Fatalf("String() = %s, SPEC.md §4 says %s", c.String(), specCIDText(b))
		}
		c, err := ParseCIDString(string(b))
		if err != nil {
			checkParseErr(t, err)
			return
		}
		// Any accepted text form names a v1 raw sha2-256 CID whose
		// canonical text parses back to it.
		if _, err := ParseCID(c[:]); err != nil {
			t.Fatalf("ParseCIDString(%q) gave a CID ParseCID rejects: %v", b, err)
		}
		back, err := ParseCIDString(c.String())
		if err != nil || back != c {
			t.Fatalf("canonical text %s does not parse back: %v", c.String(), err)
		}
	})
}

func FuzzOwnerAck(f *testing.F) {
	cids := fixtureAckCIDs(5)
	acks := mustOwnerAcks(f, cids)
	f.Add(mustMarshal(f, &acks[4]))
	v := NewOwnerAckVerifier(64)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseOwnerAck(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := a.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed owner ack: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
		for _, c := range cids {
			err := a.VerifyFor(fixtureMailbox, c)
			cached := v.VerifyFor(a, fixtureMailbox, c)
			if (err == nil) != (cached == nil) {
				t.Fatalf("VerifyFor = %v, OwnerAckVerifier.VerifyFor = %v", err, cached)
			}
			if err != nil {
				checkParseErr(t, err, ErrBadSignature)
			}
		}
	})
}
