package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// clientCodec is the decoder and encoder of one kind of client record, on
// values of type any (for the table-driven tests and the fuzz target).
type clientCodec struct {
	name   string
	kind   byte
	decode func(v []byte) (any, error)
	encode func(r any) []byte
	sample any // a record with every field set
}

func codec[T any](name string, kind byte, dec func(k, v []byte) (T, error), enc func(T) []byte, sample T) clientCodec {
	return clientCodec{
		name: name, kind: kind, sample: sample,
		decode: func(v []byte) (any, error) { return dec(fuzzKey, v) },
		encode: func(r any) []byte { return enc(r.(T)) },
	}
}

func clientCodecs() []clientCodec {
	var cur wire.Cursor
	// A fixed origin (an identity peer ID: 0x00 0x24 + 36 bytes).
	origin := append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, bytes.Repeat([]byte{7}, 32)...)
	if err := cur.Advance(peer.ID(origin), 42); err != nil {
		panic(err)
	}
	return []clientCodec{
		codec("identity", kindIdentity, decodeIdentity, encodeIdentity,
			&Identity{Keys: []byte("private keys"), MailboxSeed: bytes.Repeat([]byte{1}, 32)}),
		codec("contact", kindContact, decodeContact, encodeContact,
			&Contact{Name: "Bob", IdentityEd25519: [32]byte{1}, IdentityX25519: [32]byte{2}, Mailbox: wire.Mailbox{0x12, 0x20, 3},
				Bundle: []byte{4, 5}, Hints: [][]byte{{6}, {7, 8}}, NextCounter: 9, AddedMs: 10}),
		codec("session", kindSession, decodeSession, encodeSession,
			&Session{Contact: "abc", Active: 11, Retired: true, State: []byte("ratchet state")}),
		codec("outbox", kindOutbox, decodeOutbox, encodeOutbox,
			&OutboxEntry{Kind: wire.PayloadDelivery, Mailbox: wire.Mailbox{1}, Envelope: []byte{1, 2, 3}, CID: wire.CID{4},
				Status: StatusStored, Retries: 5, NextAttemptMs: 6, Seq: 7, Expiry: 8, Receipt: []byte{9}}),
		codec("message", kindMessage, decodeMessage, encodeMessage,
			&Message{Body: []byte("hi"), SentAtMs: 3, AtMs: 4, Seq: 5, Status: StatusDelivered, Late: true, Released: true}),
		codec("recv", kindRecv, decodeRecv, encodeRecv,
			&RecvState{Next: 4, Above: []uint64{6, 7}, Missing: []uint64{2}, HoleSinceMs: 9, Acks: []uint64{1, 3}}),
		codec("pending", kindPending, decodePending, encodePending,
			&PendingEntry{CID: wire.CID{1}, Envelope: []byte{2}}),
		codec("cursor", kindCursor, decodeCursor, func(c wire.Cursor) []byte { return encodeCursor(&c) }, cur),
	}
}

// FuzzDecodeClientRecord: no input makes a client record decoder panic, and
// every accepted input re-encodes to itself (records are canonical). kind
// picks the decoder; the input is tried as is and as a body under a valid
// header, so the fuzzer gets past the checksum.
func FuzzDecodeClientRecord(f *testing.F) {
	codecs := clientCodecs()
	for _, c := range codecs {
		f.Add(c.kind, c.encode(c.sample))
	}
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		for _, c := range codecs {
			if c.kind != kind {
				continue
			}
			for _, in := range [][]byte{b, sealedBody(b, kind)} {
				r, err := c.decode(in)
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("%s: error %v is not ErrCorrupt", c.name, err)
					}
					continue
				}
				if got := c.encode(r); !bytes.Equal(got, in) {
					t.Fatalf("%s: re-encoding differs:\n%x\n%x", c.name, got, in)
				}
			}
		}
	})
}

// clientSeedCorpus is the checked-in seed corpus of FuzzDecodeClientRecord
// (see TestFuzzSeedCorpus): each kind's sample, truncated and bit-flipped.
func clientSeedCorpus() map[string][][]any {
	var seeds [][]any
	for _, c := range clientCodecs() {
		for _, v := range vary(c.encode(c.sample)) {
			seeds = append(seeds, []any{c.kind, v[0]})
		}
	}
	return map[string][][]any{"FuzzDecodeClientRecord": seeds}
}

func TestStoreClientRecordsRoundTrip(t *testing.T) {
	for _, c := range clientCodecs() {
		got, err := c.decode(c.encode(c.sample))
		if err != nil || !reflect.DeepEqual(got, c.sample) {
			t.Errorf("%s: %v\n got %+v\nwant %+v", c.name, err, got, c.sample)
		}
	}
}

// Every truncation, every extra byte, every flipped bit, an unknown version
// and another kind's header are refused with a *CorruptError, never a panic.
func TestStoreClientRecordsRejectDamage(t *testing.T) {
	for _, c := range clientCodecs() {
		b := c.encode(c.sample)
		refused := func(what string, in []byte) {
			t.Helper()
			_, err := c.decode(in)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Errorf("%s %s: %v", c.name, what, err)
			}
		}
		for n := range len(b) {
			refused(fmt.Sprintf("truncated to %d bytes", n), b[:n])
		}
		refused("with a trailing byte", append(slices.Clone(b), 0))
		refused("with a trailing byte under a valid header", sealedBody(append(slices.Clone(b), 0), c.kind))
		for i := range b {
			for bit := range 8 {
				d := slices.Clone(b)
				d[i] ^= 1 << bit
				refused(fmt.Sprintf("with bit %d of byte %d flipped", bit, i), d)
			}
		}
		v2 := slices.Clone(b)
		v2[0] = 2
		crc := crc32.Update(crc32.Update(0, crcTable, v2[:2]), crcTable, v2[hdrLen:])
		binary.BigEndian.PutUint32(v2[2:], crc)
		refused("of version 2", v2)
		refused("of another kind", sealedBody(b, c.kind+1))
	}
	// Field checks behind a valid checksum.
	for _, tc := range []struct {
		name string
		b    []byte
		dec  func([]byte) error
	}{
		{"boolean 2", func() []byte {
			e := newEnc(0)
			e.str("c")
			e.u64(1)
			e.u8(2)
			e.bytes(nil)
			return e.seal(kindSession)
		}(), func(b []byte) error { _, err := decodeSession(fuzzKey, b); return err }},
		{"outbox status 0", encodeOutbox(&OutboxEntry{}), func(b []byte) error { _, err := decodeOutbox(fuzzKey, b); return err }},
		{"message status 6", encodeMessage(&Message{Status: StatusFailed + 1}), func(b []byte) error { _, err := decodeMessage(fuzzKey, b); return err }},
		{"byte string past the end", func() []byte {
			e := newEnc(0)
			e.u32(1 << 31)
			return e.seal(kindPending)
		}(), func(b []byte) error { _, err := decodePending(fuzzKey, b); return err }},
		{"2^31 hints", func() []byte {
			e := newEnc(0)
			e.str("n")
			e.fixed(make([]byte, 64+wire.MailboxLen))
			e.bytes(nil)
			e.u32(1 << 31)
			return e.seal(kindContact)
		}(), func(b []byte) error { _, err := decodeContact(fuzzKey, b); return err }},
		{"2^31 counters", func() []byte {
			e := newEnc(0)
			e.u64(1)
			e.u32(1 << 31)
			return e.seal(kindRecv)
		}(), func(b []byte) error { _, err := decodeRecv(fuzzKey, b); return err }},
	} {
		if err := tc.dec(tc.b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestStoreClientRecordsGolden pins the stored encodings (a change breaks every
// existing database, so it needs a new record version): the samples'
// encodings are in testdata/client-records.golden (rewritten with
// -update-seeds).
func TestStoreClientRecordsGolden(t *testing.T) {
	var sb strings.Builder
	for _, c := range clientCodecs() {
		fmt.Fprintf(&sb, "%s %x\n", c.name, c.encode(c.sample))
	}
	fmt.Fprintf(&sb, "seen %x\n", seenRecord)
	fmt.Fprintf(&sb, "schema %x\n", encodeU64(kindClientMeta, clientSchemaVersion))
	path := filepath.Join("testdata", "client-records.golden")
	if *updateSeeds {
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sb.String() != string(want) {
		t.Fatalf("encodings differ from %s:\n%s", path, sb.String())
	}
	// The golden records decode (the file is also a reference for other
	// implementations).
	for _, ln := range strings.Split(strings.TrimSpace(string(want)), "\n") {
		name, hx, _ := strings.Cut(ln, " ")
		b, err := hex.DecodeString(hx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range clientCodecs() {
			if c.name == name {
				if _, err := c.decode(b); err != nil {
					t.Errorf("golden %s: %v", name, err)
				}
			}
		}
	}
}

func openTestClientDB(t *testing.T, dir string) *ClientDB {
	t.Helper()
	db, err := OpenClientDB(ClientOptions{Dir: dir, EncryptionKey: bytes.Repeat([]byte{3}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A corrupt value in the database is reported for that record only: the
// getter and the walk that meet it return a *CorruptError, the other records
// read fine, and a corrupt pending entry is handed to the caller to drop.
func TestStoreClientCorruptRecords(t *testing.T) {
	db := openTestClientDB(t, "")
	err := db.Update(func(tx *ClientTx) error {
		for _, id := range []string{"a", "b"} {
			if err := tx.PutContact(&Contact{ID: id, Name: id}); err != nil {
				return err
			}
			if err := tx.PutMessage(id, &Message{Direction: Incoming, Counter: 1, Body: []byte(id)}); err != nil {
				return err
			}
		}
		for seq := uint64(1); seq <= 3; seq++ {
			if err := tx.PutPending(seq, &PendingEntry{Envelope: []byte{byte(seq)}}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Flip a byte of contact a, message a/1 and pending entry 2 (rewrite
	// works on a Log's badger database).
	raw := &Log{db: db.db}
	for _, k := range [][]byte{contactKey("a"), messageKey("a", Incoming, 1), pendingKey(2)} {
		rewrite(t, raw, k, func(v []byte) { v[len(v)-1] ^= 0x40 })
	}
	err = db.View(func(tx *ClientTx) error {
		if _, err := tx.Contact("a"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("corrupt contact: %v", err)
		}
		if c, err := tx.Contact("b"); err != nil || c.Name != "b" {
			t.Errorf("intact contact: %v %v", c, err)
		}
		if err := tx.ForEachContact(func(*Contact) error { return nil }); !errors.Is(err, ErrCorrupt) {
			t.Errorf("walk over a corrupt contact: %v", err)
		}
		if _, err := tx.Message("a", Incoming, 1); !errors.Is(err, ErrCorrupt) {
			t.Errorf("corrupt message: %v", err)
		}
		if err := tx.ForEachMessage("b", func(*Message) error { return nil }); err != nil {
			t.Errorf("history next to a corrupt one: %v", err)
		}
		var got []string
		err := tx.ForEachPending(func(seq uint64, r *PendingEntry, err error) error {
			got = append(got, fmt.Sprint(seq, r != nil, errors.Is(err, ErrCorrupt)))
			return nil
		})
		if w := []string{"1 true false", "2 false true", "3 true false"}; err != nil || !slices.Equal(got, w) {
			t.Errorf("pending walk %v %v, want %v", got, err, w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// MarkSeen converts its time, on the database's clock, to badger's TTL on
// the wall clock.
func TestStoreClientSeenTTL(t *testing.T) {
	clock := time.Now().Add(-50 * 24 * time.Hour)
	db, err := OpenClientDB(ClientOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cid := wire.CIDOf([]byte("x"))
	if err := db.Update(func(tx *ClientTx) error { return tx.MarkSeen(cid, clock.Add(2*time.Hour)) }); err != nil {
		t.Fatal(err)
	}
	err = db.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(seenKey(cid))
		if err != nil {
			return err
		}
		want := time.Now().Add(2 * time.Hour).Unix()
		if got := int64(item.ExpiresAt()); got < want-2 || got > want+2 {
			t.Errorf("expires at %d, want %d", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A database that holds keys but no client schema version (a mailbox log,
// or a client database of the format before versioning) is refused, and so
// is one of another version.
func TestStoreClientSchemaRefused(t *testing.T) {
	dir := t.TempDir()
	bdb, err := badger.Open(badgerOptions(dir, nil).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(txn *badger.Txn) error { return txn.Set([]byte("m/keys"), []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	if db, err := OpenClientDB(ClientOptions{Dir: dir}); err == nil {
		db.Close()
		t.Fatal("a database without a schema version opened")
	}

	dir = t.TempDir()
	db, err := OpenClientDB(ClientOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyClientSchema, encodeU64(kindClientMeta, clientSchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err := OpenClientDB(ClientOptions{Dir: dir}); err == nil || !strings.Contains(err.Error(), "schema version 2") {
		if err == nil {
			db.Close()
		}
		t.Fatalf("a database of schema version 2: %v", err)
	}
}
