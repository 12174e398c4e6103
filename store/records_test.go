package store

import (
	"bytes"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-net/cairn/wire"
)

// Fuzz targets for every decoder of stored records: no input may panic, and
// every accepted input re-encodes to itself (records are canonical). Seeds
// live in testdata/fuzz/<target>/.

var fuzzKey = []byte("k")

func FuzzDecodeEntry(f *testing.F) {
	env, _ := (&wire.Envelope{Mailbox: wire.MailboxOf(make([]byte, 32)), Ciphertext: []byte("hello")}).Marshal()
	f.Add((&entryRec{kind: kindLocalEntry, storedAtMs: 1, expiry: 2, batch: 3, index: 4, envelope: env}).encode())
	f.Add((&entryRec{kind: kindImportedEntry, stamp: []byte("stamp"), envelope: env}).encode())
	f.Add((&entryRec{kind: kindTombstoneMark, digest: [32]byte{1}, expiry: 9, size: 7, ownerAck: []byte("owner ack"), tombStamp: []byte("stamp")}).encode())
	f.Add((&entryRec{kind: kindExpiredMark, digest: [32]byte{2}, expiry: 9}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		// The raw bytes, and the same bytes as a body under a valid
		// header (so the fuzzer gets past the checksum).
		for _, in := range [][]byte{b, sealedBody(b, kindLocalEntry+b0(b)%4)} {
			r, err := decodeEntry(fuzzKey, in)
			if err != nil {
				continue
			}
			if got := r.encode(); !bytes.Equal(got, in) {
				t.Fatalf("re-encoding differs:\n%x\n%x", got, in)
			}
		}
	})
}

// sealedBody puts b under a valid header of kind (skipping b's own first
// hdrLen bytes, which are a header in the seeds).
func sealedBody(b []byte, kind byte) []byte {
	body := b
	if len(body) >= hdrLen {
		body = body[hdrLen:]
	}
	return seal(append(make([]byte, hdrLen), body...), kind)
}

func b0(b []byte) byte {
	if len(b) > 1 {
		return b[1] - kindLocalEntry
	}
	return 0
}

func FuzzDecodeFate(f *testing.F) {
	f.Add((&fateRec{fate: FateStored, origin: 1, seq: 2, expiry: 3, size: 4}).encode())
	f.Add((&fateRec{fate: FateAcked, origin: 1, seq: 2, expiry: 3}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeFate(fuzzKey, b)
		if err != nil {
			return
		}
		if got := r.encode(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add((&batchRec{sig: [64]byte{1}, leaves: [][32]byte{{1}, {2}, {3}}}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeBatch(fuzzKey, b)
		if err != nil {
			return
		}
		if got := r.encode(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs")
		}
		// Rebuilding paths from any accepted batch never panics.
		tr, err := newBatchTree(r)
		if err != nil {
			return
		}
		for i := range r.leaves {
			tr.path(i)
		}
	})
}

func FuzzDecodeMailbox(f *testing.F) {
	f.Add((&mailboxRec{addr: wire.MailboxOf(nil), entries: 1, bytes: 2, tombstones: 3}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeMailbox(fuzzKey, b)
		if err != nil {
			return
		}
		if got := r.encode(); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeU64(f *testing.F) {
	f.Add(encodeU64(kindKnown, 42))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeU64(fuzzKey, b, kindKnown)
		if err != nil {
			return
		}
		if got := encodeU64(kindKnown, v); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzDecodeDue(f *testing.F) {
	f.Add(encodeDue([][32]byte{{1}, {2}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, sealedBody(b, kindDue)} {
			ds, err := decodeDue(fuzzKey, in)
			if err != nil {
				continue
			}
			if got := encodeDue(ds); !bytes.Equal(got, in) {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}

func TestRecordRoundTrips(t *testing.T) {
	env, _ := (&wire.Envelope{Mailbox: wire.MailboxOf(nil), Ciphertext: []byte("x")}).Marshal()
	e := entryRec{kind: kindLocalEntry, storedAtMs: 5, expiry: 6, batch: 7, index: 8, envelope: env}
	b := e.encode()
	got, err := decodeEntry(fuzzKey, b)
	if err != nil || got.expiry != 6 || got.batch != 7 || got.index != 8 || !bytes.Equal(got.envelope, env) {
		t.Fatalf("%+v %v", got, err)
	}
	// Every single-bit flip is detected.
	for i := range b {
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if _, err := decodeEntry(fuzzKey, c); err == nil {
				t.Fatalf("flip of byte %d bit %d not detected", i, bit)
			}
		}
	}
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// vary returns a valid record, a truncated and a bit-flipped copy of it.
func vary(b []byte) [][]any {
	flip := bytes.Clone(b)
	flip[len(flip)-1] ^= 1
	return [][]any{{b}, {b[:len(b)/2]}, {flip}}
}

// seedCorpus is the checked-in seed corpus: valid records of every kind and
// a truncated and a bit-flipped copy of each.
func seedCorpus() map[string][][]any {
	env, _ := (&wire.Envelope{Mailbox: wire.MailboxOf(make([]byte, 32)), Ciphertext: []byte("hello")}).Marshal()
	c := map[string][][]any{}
	for _, b := range [][]byte{
		(&entryRec{kind: kindLocalEntry, storedAtMs: 1, expiry: 2, batch: 3, index: 4, envelope: env}).encode(),
		(&entryRec{kind: kindImportedEntry, stamp: []byte("stamp"), envelope: env}).encode(),
		(&entryRec{kind: kindTombstoneMark, digest: [32]byte{1}, expiry: 9, size: 7, ownerAck: []byte("owner ack"), tombStamp: []byte("stamp")}).encode(),
	} {
		c["FuzzDecodeEntry"] = append(c["FuzzDecodeEntry"], vary(b)...)
	}
	c["FuzzDecodeFate"] = vary((&fateRec{fate: FateStored, origin: 1, seq: 2, expiry: 3, size: 4}).encode())
	c["FuzzDecodeBatch"] = vary((&batchRec{sig: [64]byte{1}, leaves: [][32]byte{{1}, {2}, {3}}}).encode())
	c["FuzzDecodeMailbox"] = vary((&mailboxRec{addr: wire.MailboxOf(nil), entries: 1}).encode())
	c["FuzzDecodeU64"] = vary(encodeU64(kindKnown, 42))
	c["FuzzDecodeDue"] = vary(encodeDue([][32]byte{{1}, {2}, {3}}))
	for target, seeds := range clientSeedCorpus() {
		c[target] = seeds
	}
	return c
}

func encodeSeed(args []any) []byte {
	var sb strings.Builder
	sb.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&sb, "[]byte(%q)\n", v)
		case byte:
			fmt.Fprintf(&sb, "byte(%q)\n", v)
		}
	}
	return []byte(sb.String())
}

// TestFuzzSeedCorpus checks that the checked-in seeds are the current
// encodings (run with -update-seeds to rewrite them after a format change).
func TestFuzzSeedCorpus(t *testing.T) {
	for target, seeds := range seedCorpus() {
		dir := filepath.Join("testdata", "fuzz", target)
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			want := encodeSeed(s)
			if *updateSeeds {
				os.MkdirAll(dir, 0o755)
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s is missing or stale (go test ./store -run TestFuzzSeedCorpus -update-seeds): %v", path, err)
			}
		}
	}
}

func TestFateFilter(t *testing.T) {
	f := newFateFilter(1000)
	var ds [][32]byte
	for i := 0; i < minFilterItems+1; i++ {
		var d [32]byte
		rand.Read(d[:])
		ds = append(ds, d)
		f.add(d)
	}
	for _, d := range ds {
		if !f.mayContain(d) {
			t.Fatal("false negative")
		}
	}
	if !f.full() {
		t.Fatal("a filter past its size does not ask for a rebuild")
	}
	fp := 0
	for i := 0; i < 100000; i++ {
		var d [32]byte
		rand.Read(d[:])
		if f.mayContain(d) {
			fp++
		}
	}
	// At its design load the filter errs ~0.24% of the time.
	if fp > 500 {
		t.Fatalf("%d false positives in 100,000", fp)
	}
}
