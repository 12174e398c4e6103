package wire

// Shared fixtures and helpers of the wire tests.
//
// Every key is derived from a fixed 32-byte seed, seed(b) = 32 bytes of b, so
// the golden files in testdata/golden are reproducible by any implementation:
//
//	relay A        libp2p Ed25519 key from ed25519.NewKeyFromSeed(seed(0x01))
//	relay B        libp2p Ed25519 key from ed25519.NewKeyFromSeed(seed(0x02))
//	mailbox key    ed25519.NewKeyFromSeed(seed(0x03))
//	other mailbox  ed25519.NewKeyFromSeed(seed(0x04))
//
// The fixtures built from them (envelopes, receipts, cursors, proofs,
// invites) are the functions named fixture… below; testdata/golden/keys.txt
// lists the derived public values.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.txt and the golden-derived seeds in testdata/fuzz")

// seed returns 32 bytes of b.
func seed(b byte) []byte { return bytes.Repeat([]byte{b}, ed25519.SeedSize) }

// testRelay is a relay identity: its libp2p key, the same key as a standard
// library key, and its peer ID.
type testRelay struct {
	priv crypto.PrivKey
	ed   ed25519.PrivateKey
	id   peer.ID
}

func newTestRelay(b byte) testRelay {
	ed := ed25519.NewKeyFromSeed(seed(b))
	priv, err := crypto.UnmarshalEd25519PrivateKey(ed)
	if err != nil {
		panic(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		panic(err)
	}
	return testRelay{priv: priv, ed: ed, id: id}
}

func (r testRelay) pub() ed25519.PublicKey { return r.ed.Public().(ed25519.PublicKey) }

var (
	relayA          = newTestRelay(0x01)
	relayB          = newTestRelay(0x02)
	mailboxKey      = ed25519.NewKeyFromSeed(seed(0x03))
	otherMailboxKey = ed25519.NewKeyFromSeed(seed(0x04))
	mailboxPub      = mailboxKey.Public().(ed25519.PublicKey)
	fixtureMailbox  = MailboxOf(mailboxPub)
	otherMailbox    = MailboxOf(otherMailboxKey.Public().(ed25519.PublicKey))
)

// Fixed times of the fixtures.
const (
	fixtureExpiry   = 1700000000 // 0x6553f100
	fixtureStoredAt = 1700000000123
	fixtureTimeMs   = 1700000000000
)

// fixtureEnvelope is the i-th envelope of the fixtures: ciphertext
// "cairn message <i>", expiry 1700000000 + i, postage 0x0102030405060708.
func fixtureEnvelope(i int) *Envelope {
	return &Envelope{
		Mailbox:    fixtureMailbox,
		Expiry:     fixtureExpiry + uint64(i),
		Postage:    0x0102030405060708,
		Ciphertext: fmt.Appendf(nil, "cairn message %d", i),
	}
}

func mustMarshalEnvelope(t testing.TB, e *Envelope) []byte {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureReceipt is relay A's receipt for fixtureEnvelope(i): seq i+1.
func fixtureReceipt(t testing.TB, i int) Receipt {
	t.Helper()
	return Receipt{
		Origin:     relayA.id,
		Mailbox:    fixtureMailbox,
		CID:        CIDOf(mustMarshalEnvelope(t, fixtureEnvelope(i))),
		Seq:        uint64(i) + 1,
		StoredAtMs: fixtureStoredAt + uint64(i),
		Expiry:     fixtureExpiry + uint64(i),
	}
}

func fixtureReceipts(t testing.TB, n int) []Receipt {
	t.Helper()
	rs := make([]Receipt, n)
	for i := range rs {
		rs[i] = fixtureReceipt(t, i)
	}
	return rs
}

func mustSign(t testing.TB, signer Signer, rs []Receipt) []SignedReceipt {
	t.Helper()
	srs, err := SignReceipts(signer, rs)
	if err != nil {
		t.Fatal(err)
	}
	return srs
}

func mustMarshal(t testing.TB, m interface{ Marshal() ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr fails unless err wraps want (or is nil when want is nil).
func wantErr(t testing.TB, err, want error, format string, args ...any) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s: unexpected error %v", fmt.Sprintf(format, args...), err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", fmt.Sprintf(format, args...), err, want)
	}
}

// flipBit returns a copy of b with bit i (0 = most significant bit of b[0])
// inverted.
func flipBit(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i/8] ^= 0x80 >> (i % 8)
	return c
}

// bitStride is the step of the loops that flip every bit of an encoding:
// 1 (every bit) normally, a sample under the race detector.
func bitStride() int {
	if raceEnabled {
		return 7
	}
	return 1
}

// Hand-built encodings used to check the code against SPEC.md's tables.

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func sha(parts ...[]byte) []byte {
	s := sha256.Sum256(cat(parts...))
	return s[:]
}

// field is one row of a SPEC.md byte table.
type field struct {
	name string
	off  int // offset; -1 to follow the previous field
	size int
	want []byte
}

// checkLayout checks that b is exactly the fields of a SPEC.md table, in
// order, without gaps, each at its offset and with its size.
func checkLayout(t *testing.T, b []byte, fields []field) {
	t.Helper()
	off := 0
	for _, f := range fields {
		if f.off >= 0 && f.off != off {
			t.Fatalf("table error: field %s at offset %d follows a field ending at %d", f.name, f.off, off)
		}
		if len(f.want) != f.size {
			t.Fatalf("table error: field %s has %d expected bytes for size %d", f.name, len(f.want), f.size)
		}
		if off+f.size > len(b) {
			t.Fatalf("encoding of %d bytes ends inside field %s (offset %d, size %d)", len(b), f.name, off, f.size)
		}
		if got := b[off : off+f.size]; !bytes.Equal(got, f.want) {
			t.Errorf("field %s (offset %d, size %d) = %x, want %x", f.name, off, f.size, got, f.want)
		}
		off += f.size
	}
	if off != len(b) {
		t.Errorf("encoding is %d bytes, the table covers %d", len(b), off)
	}
}

// golden is one named vector of a golden file.
type golden struct{ name, value string }

func hexGolden(name string, b []byte) golden { return golden{name, hex.EncodeToString(b)} }

// checkGolden compares cases with testdata/golden/<file>, or rewrites the
// file with -update. A golden file holds comment lines (#) and one
// "name value" line per case; binary values are lowercase hex.
func checkGolden(t *testing.T, file, header string, cases []golden) {
	t.Helper()
	path := filepath.Join("testdata", "golden", file)
	if *update {
		var sb strings.Builder
		for l := range strings.SplitSeq(strings.TrimSpace(header), "\n") {
			sb.WriteString(strings.TrimRight("# "+l, " ") + "\n")
		}
		sb.WriteString("# Generated by the wire tests; regenerate with go test ./wire -run Golden -update\n")
		for _, c := range cases {
			if strings.ContainsAny(c.name+c.value, " \n") || c.name == "" {
				t.Fatalf("golden case %q: name and value must be non-empty words", c.name)
			}
			fmt.Fprintf(&sb, "%s %s\n", c.name, c.value)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./wire -run Golden -update to create it)", err)
	}
	want := map[string]string{}
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, value, ok := strings.Cut(l, " ")
		if !ok {
			t.Fatalf("%s:%d: want \"name value\"", path, i+1)
		}
		if _, dup := want[name]; dup {
			t.Fatalf("%s:%d: duplicate case %s", path, i+1, name)
		}
		want[name] = value
	}
	for _, c := range cases {
		w, ok := want[c.name]
		if !ok {
			t.Errorf("%s: no case %s (got %s)", path, c.name, c.value)
			continue
		}
		if w != c.value {
			t.Errorf("%s: case %s\n got %s\nwant %s", path, c.name, c.value, w)
		}
		delete(want, c.name)
	}
	for name := range want {
		t.Errorf("%s: stale case %s", path, name)
	}
}

// corpusFile is Go's fuzz corpus file format for one []byte argument.
func corpusFile(b []byte) []byte { return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b) }

// checkSeeds writes (with -update) or checks the seed corpus files
// testdata/fuzz/<target>/<name>, so the corpora always hold the current
// golden encodings. Other files of the directory (for example inputs the
// fuzzer found) are left alone.
func checkSeeds(t *testing.T, target string, seeds []seedInput) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	for _, s := range seeds {
		path := filepath.Join(dir, s.name)
		want := corpusFile(s.data)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %v (run go test ./wire -run Golden -update)", err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("seed %s is stale (run go test ./wire -run Golden -update)", path)
		}
	}
}

type seedInput struct {
	name string
	data []byte
}

// invalidSeeds derives a few rejected inputs from a valid encoding: cut
// short, one trailing byte, and an unknown version.
func invalidSeeds(prefix string, valid []byte) []seedInput {
	return []seedInput{
		{prefix + "-truncated", valid[:len(valid)-1]},
		{prefix + "-trailing", append(bytes.Clone(valid), 0)},
		{prefix + "-version", append([]byte{0x02}, valid[1:]...)},
	}
}

func TestWireFixtureKeysGolden(t *testing.T) {
	// The identities every other golden file is built from.
	if len(relayA.id) != 38 || !bytes.Equal([]byte(relayA.id[:6]), unhex("002408011220")) {
		t.Fatalf("relay A peer ID %x is not the 38-byte identity form of SPEC.md §1", []byte(relayA.id))
	}
	if !bytes.Equal([]byte(relayA.id[6:]), relayA.pub()) {
		t.Fatalf("relay A peer ID does not end with its public key")
	}
	checkGolden(t, "keys.txt", `
Fixture identities of the wire golden files (seed(b) = 32 bytes of b).
relay-a: libp2p Ed25519 key from seed(0x01); relay-b: from seed(0x02).
mailbox: Ed25519 mailbox key from seed(0x03); other-mailbox: from seed(0x04).
*.peer-id is the binary peer ID (SPEC.md §1), *.address the mailbox address (SPEC.md §2).`,
		[]golden{
			hexGolden("relay-a.public-key", relayA.pub()),
			hexGolden("relay-a.peer-id", []byte(relayA.id)),
			hexGolden("relay-b.public-key", relayB.pub()),
			hexGolden("relay-b.peer-id", []byte(relayB.id)),
			hexGolden("mailbox.public-key", mailboxPub),
			hexGolden("mailbox.address", fixtureMailbox[:]),
			hexGolden("other-mailbox.address", otherMailbox[:]),
		})
}
