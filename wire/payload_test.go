package wire

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
)

func fixturePayloads() []struct {
	name string
	p    *Payload
} {
	return []struct {
		name string
		p    *Payload
	}{
		{"text", &Payload{Kind: PayloadText, Counter: 1, ReplyTo: fixtureMailbox, SentAtMs: fixtureTimeMs, Body: []byte("hello, cairn")}},
		{"text-empty", &Payload{Kind: PayloadText, Counter: 2, ReplyTo: fixtureMailbox, SentAtMs: fixtureTimeMs + 1}},
		{"text-one-block", &Payload{Kind: PayloadText, Counter: 3, ReplyTo: otherMailbox, Body: bytes.Repeat([]byte{'x'}, 64-payloadHeader)}},
		{"text-two-blocks", &Payload{Kind: PayloadText, Counter: 4, ReplyTo: otherMailbox, Body: bytes.Repeat([]byte{'y'}, 64-payloadHeader+1)}},
		{"delivery", &Payload{Kind: PayloadDelivery, Counter: 5, ReplyTo: fixtureMailbox, SentAtMs: 1<<64 - 1, Acks: []uint64{1, 3, 4}}},
	}
}

func parsePayloadBytesErr(b []byte) error { _, err := ParsePayload(b); return err }

func TestPayloadGolden(t *testing.T) {
	var cases []golden
	var seeds []seedInput
	for _, f := range fixturePayloads() {
		b := mustMarshal(t, f.p)
		cases = append(cases, hexGolden(f.name, b))
		seeds = append(seeds, seedInput{"golden-" + f.name, b})
	}
	checkGolden(t, "payload.txt", `
Client payloads (SPEC.md §16). reply-to is the fixture mailbox or the other mailbox of keys.txt.
text: counter 1, sent_at_ms 1700000000000, body "hello, cairn". text-empty: counter 2, no body.
text-one-block / text-two-blocks: bodies of 8 and 9 bytes (one and two padding blocks).
delivery: counter 5, sent_at_ms 2^64-1, acks 1, 3, 4.`, cases)
	valid := unhex(cases[0].value)
	seeds = append(seeds, invalidSeeds("text", valid)...)
	seeds = append(seeds,
		seedInput{"non-zero-padding", func() []byte { b := bytes.Clone(valid); b[len(b)-1] = 1; return b }()},
		seedInput{"extra-block", cat(valid, make([]byte, 64))},
	)
	checkSeeds(t, "FuzzPayload", seeds)
}

func TestPayloadSpecLayout(t *testing.T) {
	b := mustMarshal(t, fixturePayloads()[4].p) // delivery
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"kind", 1, 1, unhex("02")},
		{"counter", 2, 8, unhex("0000000000000005")},
		{"reply_to", 10, 34, cat(unhex("1220"), sha(mailboxPub))},
		{"sent_at_ms", 44, 8, unhex("ffffffffffffffff")},
		{"body_len", 52, 4, unhex("00000018")},
		{"body", 56, 24, unhex("0000000000000001 0000000000000003 0000000000000004")},
		{"padding", 80, 48, make([]byte, 48)},
	})
	b = mustMarshal(t, fixturePayloads()[0].p) // text
	checkLayout(t, b, []field{
		{"version", 0, 1, unhex("01")},
		{"kind", 1, 1, unhex("01")},
		{"counter", 2, 8, unhex("0000000000000001")},
		{"reply_to", 10, 34, cat(unhex("1220"), sha(mailboxPub))},
		{"sent_at_ms", 44, 8, unhex("0000018bcfe56800")},
		{"body_len", 52, 4, unhex("0000000c")},
		{"body", 56, 12, []byte("hello, cairn")},
		{"padding", 68, 60, make([]byte, 60)},
	})
	if MaxBody != 196608 || PayloadPadBlock != 64 || MaxPayloadAcks != 1024 {
		t.Errorf("MaxBody %d, PayloadPadBlock %d, MaxPayloadAcks %d: SPEC.md §16 says 196,608, 64 and 1,024", MaxBody, PayloadPadBlock, MaxPayloadAcks)
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	acks := make([]uint64, MaxPayloadAcks)
	for i := range acks {
		acks[i] = uint64(i) * 0x0101010101
	}
	tests := fixturePayloads()
	tests = append(tests,
		struct {
			name string
			p    *Payload
		}{"max body", &Payload{Kind: PayloadText, Counter: 1<<64 - 1, ReplyTo: fixtureMailbox, Body: bytes.Repeat([]byte{0xa5}, MaxBody)}},
		struct {
			name string
			p    *Payload
		}{"max acks", &Payload{Kind: PayloadDelivery, Counter: 9, ReplyTo: fixtureMailbox, Acks: acks}},
	)
	for n := range 200 {
		tests = append(tests, struct {
			name string
			p    *Payload
		}{fmt.Sprintf("body of %d", n), &Payload{Kind: PayloadText, Counter: 7, ReplyTo: fixtureMailbox, Body: bytes.Repeat([]byte{'z'}, n)}})
	}
	for _, tt := range tests {
		b := mustMarshal(t, tt.p)
		if len(b)%PayloadPadBlock != 0 || len(b) < payloadHeader || len(b)-PayloadPadBlock >= payloadHeader+len(tt.p.Body)+8*len(tt.p.Acks) {
			t.Fatalf("%s: %d bytes is not the padded size", tt.name, len(b))
		}
		p, err := ParsePayload(b)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if p.Kind != tt.p.Kind || p.Counter != tt.p.Counter || p.ReplyTo != tt.p.ReplyTo || p.SentAtMs != tt.p.SentAtMs ||
			!bytes.Equal(p.Body, tt.p.Body) || !slices.Equal(p.Acks, tt.p.Acks) {
			t.Fatalf("%s: round trip gave %+v", tt.name, p)
		}
		if again := mustMarshal(t, p); !bytes.Equal(again, b) {
			t.Fatalf("%s: Marshal(Parse(b)) != b", tt.name)
		}
	}
}

func TestPayloadRejects(t *testing.T) {
	text := mustMarshal(t, fixturePayloads()[0].p)     // body 12, 128 bytes
	delivery := mustMarshal(t, fixturePayloads()[4].p) // 3 acks, 128 bytes
	mod := func(b []byte, f func(b []byte)) []byte { c := bytes.Clone(b); f(c); return c }
	bodyLen := func(b []byte, n uint32) []byte { return mod(b, func(c []byte) { copy(c[52:56], u32(n)) }) }
	big := mustMarshal(t, &Payload{Kind: PayloadText, Counter: 1, ReplyTo: fixtureMailbox, Body: make([]byte, MaxBody)})
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"version 2", mod(text, func(c []byte) { c[0] = 2 }), ErrUnsupportedVersion},
		{"header only", text[:payloadHeader], ErrMalformed},
		{"one block short", text[:64], ErrMalformed},
		{"extra padding block", cat(text, make([]byte, 64)), ErrMalformed},
		{"trailing byte", append(bytes.Clone(text), 0), ErrMalformed},
		{"non-zero padding", mod(text, func(c []byte) { c[len(c)-1] = 0x80 }), ErrMalformed},
		{"non-zero first padding byte", mod(text, func(c []byte) { c[68] = 1 }), ErrMalformed},
		{"body_len past the end", bodyLen(text, 128-payloadHeader+1), ErrMalformed},
		{"body_len max", bodyLen(text, 1<<32-1), ErrMalformed},
		{"body_len leaving 64 bytes of padding", bodyLen(text, 8), ErrMalformed},
		{"kind 0", mod(text, func(c []byte) { c[1] = 0 }), ErrMalformed},
		{"kind 3", mod(text, func(c []byte) { c[1] = 3 }), ErrMalformed},
		{"counter 0", mod(text, func(c []byte) { copy(c[2:10], u64(0)) }), ErrMalformed},
		{"reply-to prefix", mod(text, func(c []byte) { c[10] = 0x13 }), ErrMalformed},
		{"delivery of 0 acks", bodyLen(delivery, 0), ErrMalformed},
		{"delivery of 12 bytes", bodyLen(delivery, 12), ErrMalformed},
		{"delivery of 1025 acks", mustPad(t, cat(delivery[:52], u32(8*1025), make([]byte, 8*1025))), ErrMalformed},
		{"text of MaxBody+1", mustPad(t, cat(big[:52], u32(MaxBody+1), make([]byte, MaxBody+1))), ErrMalformed},
	}
	for _, tt := range tests {
		wantErr(t, parsePayloadBytesErr(tt.b), tt.want, "%s", tt.name)
	}
	t.Run("truncations", func(t *testing.T) { checkTruncations(t, text, parsePayloadBytesErr) })
	t.Run("versions", func(t *testing.T) { checkVersions(t, text, parsePayloadBytesErr) })
}

// mustPad pads b with zeros to a multiple of PayloadPadBlock.
func mustPad(t testing.TB, b []byte) []byte {
	t.Helper()
	return append(b, make([]byte, (PayloadPadBlock-len(b)%PayloadPadBlock)%PayloadPadBlock)...)
}

func TestPayloadMarshalRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		p    Payload
	}{
		{"kind 0", Payload{Counter: 1, ReplyTo: fixtureMailbox}},
		{"kind 3", Payload{Kind: 3, Counter: 1, ReplyTo: fixtureMailbox}},
		{"counter 0", Payload{Kind: PayloadText, ReplyTo: fixtureMailbox}},
		{"zero reply-to", Payload{Kind: PayloadText, Counter: 1}},
		{"text above MaxBody", Payload{Kind: PayloadText, Counter: 1, ReplyTo: fixtureMailbox, Body: make([]byte, MaxBody+1)}},
		{"text with acks", Payload{Kind: PayloadText, Counter: 1, ReplyTo: fixtureMailbox, Acks: []uint64{1}}},
		{"delivery without acks", Payload{Kind: PayloadDelivery, Counter: 1, ReplyTo: fixtureMailbox}},
		{"delivery with a body", Payload{Kind: PayloadDelivery, Counter: 1, ReplyTo: fixtureMailbox, Acks: []uint64{1}, Body: []byte("x")}},
		{"delivery of 1025 acks", Payload{Kind: PayloadDelivery, Counter: 1, ReplyTo: fixtureMailbox, Acks: make([]uint64, MaxPayloadAcks+1)}},
	} {
		_, err := tt.p.Marshal()
		wantErr(t, err, ErrMalformed, "%s", tt.name)
	}
}

func FuzzPayload(f *testing.F) {
	f.Add(mustMarshal(f, fixturePayloads()[0].p))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePayload(b)
		if err != nil {
			checkParseErr(t, err)
			return
		}
		again, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed payload: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Marshal(Parse(b)) = %x, b = %x", again, b)
		}
	})
}
