package store

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/cairn-net/cairn/wire"
)

// Stored records of the mailbox log. Every value starts with
//
//	version(1) ‖ kind(1) ‖ crc32c(4) ‖ body
//
// where crc32c (Castagnoli) covers version ‖ kind ‖ body, so a flipped byte
// anywhere in the value is detected and reported as a *CorruptError for that
// record only. Decoders never panic on any input; each is fuzzed
// (FuzzDecode* in records_test.go) and each accepted input re-encodes to
// itself.

// recordVersion is the version byte of every log record.
const recordVersion = 0x01

// Record kinds.
const (
	kindLocalEntry    = 1 // E: an entry this relay originated
	kindImportedEntry = 2 // E: an entry replicated from another origin
	kindTombstoneMark = 3 // E: an acked entry's tombstone
	kindExpiredMark   = 4 // E: an expired entry kept as a seq placeholder
	kindFate          = 5 // C: a CID's fate
	kindBatch         = 6 // B: a signed receipt batch
	kindMailbox       = 7 // S: a mailbox's counters
	kindKnown         = 8 // K: known_through of (mailbox, origin)
	kindDue           = 9 // X: a wake-up of the sweep
	kindOrigin        = 10
	kindMeta          = 11
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const hdrLen = 6

// seal writes the header of a record whose body starts at b[hdrLen:].
func seal(b []byte, kind byte) []byte {
	b[0] = recordVersion
	b[1] = kind
	c := crc32.Update(0, crcTable, b[:2])
	c = crc32.Update(c, crcTable, b[hdrLen:])
	binary.BigEndian.PutUint32(b[2:6], c)
	return b
}

// open checks a record's header and returns its body.
func open(key, b []byte, kind byte) ([]byte, error) {
	if len(b) < hdrLen {
		return nil, &CorruptError{Key: clone(key), Reason: fmt.Sprintf("%d bytes", len(b))}
	}
	c := crc32.Update(0, crcTable, b[:2])
	c = crc32.Update(c, crcTable, b[hdrLen:])
	if c != binary.BigEndian.Uint32(b[2:6]) {
		return nil, &CorruptError{Key: clone(key), Reason: "checksum mismatch"}
	}
	if b[0] != recordVersion {
		return nil, &CorruptError{Key: clone(key), Reason: fmt.Sprintf("version %d", b[0])}
	}
	if b[1] != kind {
		return nil, &CorruptError{Key: clone(key), Reason: fmt.Sprintf("kind %d, want %d", b[1], kind)}
	}
	return b[hdrLen:], nil
}

// recordKind returns the kind byte of a record, after checking its checksum.
func recordKind(key, b []byte) (byte, error) {
	if len(b) < hdrLen {
		return 0, &CorruptError{Key: clone(key), Reason: fmt.Sprintf("%d bytes", len(b))}
	}
	_, err := open(key, b, b[1])
	return b[1], err
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func corrupt(key []byte, format string, args ...any) error {
	return &CorruptError{Key: clone(key), Reason: fmt.Sprintf(format, args...)}
}

// entryRec is an E record: a live entry or a marker in the (origin, seq)
// space of a mailbox.
//
//	local:    storedAtMs(8) ‖ expiry(8) ‖ batch(8) ‖ index(2) ‖ digest(32) ‖ envelope
//	imported: stampLen(2) ‖ stamp ‖ envelope
//	marks:    digest(32) ‖ expiry(8) ‖ size(4)
//	          tombstones add: ackLen(2) ‖ owner ack (1…wire.MaxOwnerAckLen) ‖ stamp (1…maxStampLen)
type entryRec struct {
	kind byte
	// local
	storedAtMs uint64
	expiry     uint64
	batch      uint64
	index      uint16
	// imported
	stamp []byte
	// both entry kinds
	envelope []byte
	// local entries and marks: the CID's digest (a local entry keeps it so
	// reads need not hash the envelope)
	digest [32]byte
	size   uint32
	// tombstone marks: the owner's ack (wire.OwnerAck encoding) and the
	// acked entry's origin stamp (wire.SignedReceipt encoding)
	ownerAck  []byte
	tombStamp []byte
}

// maxStampLen bounds a stored stamp: a signed receipt with the longest
// peer ID and inclusion path.
const maxStampLen = 2 + wire.MaxPeerIDLen + wire.MailboxLen + wire.CIDLen + 24 + 5 + 32*10 + 64

func (r *entryRec) encode() []byte {
	var b []byte
	switch r.kind {
	case kindLocalEntry:
		b = make([]byte, hdrLen, hdrLen+58+len(r.envelope))
		b = binary.BigEndian.AppendUint64(b, r.storedAtMs)
		b = binary.BigEndian.AppendUint64(b, r.expiry)
		b = binary.BigEndian.AppendUint64(b, r.batch)
		b = binary.BigEndian.AppendUint16(b, r.index)
		b = append(b, r.digest[:]...)
		b = append(b, r.envelope...)
	case kindImportedEntry:
		b = make([]byte, hdrLen, hdrLen+2+len(r.stamp)+len(r.envelope))
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.stamp)))
		b = append(b, r.stamp...)
		b = append(b, r.envelope...)
	default:
		b = make([]byte, hdrLen, hdrLen+46+len(r.ownerAck)+len(r.tombStamp))
		b = append(b, r.digest[:]...)
		b = binary.BigEndian.AppendUint64(b, r.expiry)
		b = binary.BigEndian.AppendUint32(b, r.size)
		if r.kind == kindTombstoneMark {
			b = binary.BigEndian.AppendUint16(b, uint16(len(r.ownerAck)))
			b = append(b, r.ownerAck...)
			b = append(b, r.tombStamp...)
		}
	}
	return seal(b, r.kind)
}

// decodeEntry decodes an E record. Slices alias b.
func decodeEntry(key, b []byte) (entryRec, error) {
	var r entryRec
	kind, err := recordKind(key, b)
	if err != nil {
		return r, err
	}
	body := b[hdrLen:]
	r.kind = kind
	switch kind {
	case kindLocalEntry:
		if len(body) < 58+wire.EnvelopeOverhead+1 {
			return r, corrupt(key, "local entry of %d bytes", len(body))
		}
		r.storedAtMs = binary.BigEndian.Uint64(body[0:])
		r.expiry = binary.BigEndian.Uint64(body[8:])
		r.batch = binary.BigEndian.Uint64(body[16:])
		r.index = binary.BigEndian.Uint16(body[24:])
		r.digest = [32]byte(body[26:58])
		r.envelope = body[58:]
	case kindImportedEntry:
		if len(body) < 2 {
			return r, corrupt(key, "imported entry of %d bytes", len(body))
		}
		n := int(binary.BigEndian.Uint16(body))
		if len(body) < 2+n+wire.EnvelopeOverhead+1 {
			return r, corrupt(key, "imported entry: stamp of %d in %d bytes", n, len(body))
		}
		r.stamp = body[2 : 2+n]
		r.envelope = body[2+n:]
	case kindTombstoneMark, kindExpiredMark:
		if len(body) < 44 || (kind == kindExpiredMark && len(body) != 44) {
			return r, corrupt(key, "mark of %d bytes", len(body))
		}
		r.digest = [32]byte(body[:32])
		r.expiry = binary.BigEndian.Uint64(body[32:])
		r.size = binary.BigEndian.Uint32(body[40:44])
		if kind == kindTombstoneMark {
			rest := body[44:]
			if len(rest) < 2 {
				return r, corrupt(key, "tombstone of %d bytes", len(body))
			}
			a := int(binary.BigEndian.Uint16(rest))
			rest = rest[2:]
			if a == 0 || a > wire.MaxOwnerAckLen || len(rest) <= a || len(rest)-a > maxStampLen {
				return r, corrupt(key, "tombstone: owner ack of %d and stamp of %d bytes", a, len(rest)-a)
			}
			r.ownerAck, r.tombStamp = rest[:a], rest[a:]
		}
	default:
		return r, corrupt(key, "entry kind %d", kind)
	}
	return r, nil
}

// fateRec is a C record: what became of a CID in a mailbox.
//
//	fate(1) ‖ origin(4) ‖ seq(8) ‖ expiry(8) ‖ size(4)
type fateRec struct {
	fate   Fate
	origin uint32
	seq    uint64
	expiry uint64
	size   uint32
}

const fateBodyLen = 25

func (r *fateRec) encode() []byte {
	b := make([]byte, hdrLen, hdrLen+fateBodyLen)
	b = append(b, byte(r.fate))
	b = binary.BigEndian.AppendUint32(b, r.origin)
	b = binary.BigEndian.AppendUint64(b, r.seq)
	b = binary.BigEndian.AppendUint64(b, r.expiry)
	b = binary.BigEndian.AppendUint32(b, r.size)
	return seal(b, kindFate)
}

func decodeFate(key, b []byte) (fateRec, error) {
	var r fateRec
	body, err := open(key, b, kindFate)
	if err != nil {
		return r, err
	}
	if len(body) != fateBodyLen {
		return r, corrupt(key, "fate of %d bytes", len(body))
	}
	r.fate = Fate(body[0])
	if r.fate < FateStored || r.fate > FateExpired {
		return r, corrupt(key, "fate %d", body[0])
	}
	r.origin = binary.BigEndian.Uint32(body[1:])
	r.seq = binary.BigEndian.Uint64(body[5:])
	r.expiry = binary.BigEndian.Uint64(body[13:])
	r.size = binary.BigEndian.Uint32(body[21:])
	return r, nil
}

// batchRec is a B record: one receipt batch signed by this relay, with the
// Merkle leaf of every receipt, so each entry's inclusion path is rebuilt on
// read instead of being stored with every entry (32 bytes per entry instead
// of 32·log2(N) + 64).
//
//	n(2) ‖ signature(64) ‖ leaves(32·n)
type batchRec struct {
	sig    [64]byte
	leaves [][32]byte
}

func (r *batchRec) encode() []byte {
	b := make([]byte, hdrLen, hdrLen+66+32*len(r.leaves))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.leaves)))
	b = append(b, r.sig[:]...)
	for i := range r.leaves {
		b = append(b, r.leaves[i][:]...)
	}
	return seal(b, kindBatch)
}

func decodeBatch(key, b []byte) (batchRec, error) {
	var r batchRec
	body, err := open(key, b, kindBatch)
	if err != nil {
		return r, err
	}
	if len(body) < 66 {
		return r, corrupt(key, "batch of %d bytes", len(body))
	}
	n := int(binary.BigEndian.Uint16(body))
	if n == 0 || n > wire.MaxReceiptBatch || len(body) != 66+32*n {
		return r, corrupt(key, "batch of %d leaves in %d bytes", n, len(body))
	}
	r.sig = [64]byte(body[2:66])
	r.leaves = make([][32]byte, n)
	for i := range r.leaves {
		r.leaves[i] = [32]byte(body[66+32*i:])
	}
	return r, nil
}

// mailboxRec is an S record: a mailbox's address and counters.
//
//	mailbox(34) ‖ entries(8) ‖ bytes(8) ‖ tombstones(8)
type mailboxRec struct {
	addr       wire.Mailbox
	entries    int64
	bytes      int64
	tombstones int64
}

const mailboxBodyLen = wire.MailboxLen + 24

func (r *mailboxRec) encode() []byte {
	b := make([]byte, hdrLen, hdrLen+mailboxBodyLen)
	b = append(b, r.addr[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(r.entries))
	b = binary.BigEndian.AppendUint64(b, uint64(r.bytes))
	b = binary.BigEndian.AppendUint64(b, uint64(r.tombstones))
	return seal(b, kindMailbox)
}

func decodeMailbox(key, b []byte) (mailboxRec, error) {
	var r mailboxRec
	body, err := open(key, b, kindMailbox)
	if err != nil {
		return r, err
	}
	if len(body) != mailboxBodyLen {
		return r, corrupt(key, "mailbox of %d bytes", len(body))
	}
	r.addr, err = wire.ParseMailbox(body[:wire.MailboxLen])
	if err != nil {
		return r, corrupt(key, "mailbox address")
	}
	body = body[wire.MailboxLen:]
	r.entries = int64(binary.BigEndian.Uint64(body))
	r.bytes = int64(binary.BigEndian.Uint64(body[8:]))
	r.tombstones = int64(binary.BigEndian.Uint64(body[16:]))
	if r.entries < 0 || r.bytes < 0 || r.tombstones < 0 {
		return r, corrupt(key, "negative counter")
	}
	return r, nil
}

// u64Rec is a record holding one u64 (K: known_through; meta values).
func encodeU64(kind byte, v uint64) []byte {
	b := make([]byte, hdrLen, hdrLen+8)
	b = binary.BigEndian.AppendUint64(b, v)
	return seal(b, kind)
}

func decodeU64(key, b []byte, kind byte) (uint64, error) {
	body, err := open(key, b, kind)
	if err != nil {
		return 0, err
	}
	if len(body) != 8 {
		return 0, corrupt(key, "u64 of %d bytes", len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// encodeBytes/decodeBytes: a record holding opaque bytes (P: origin peer
// IDs).
func encodeBytes(kind byte, v []byte) []byte {
	b := make([]byte, hdrLen, hdrLen+len(v))
	b = append(b, v...)
	return seal(b, kind)
}

func decodeBytes(key, b []byte, kind byte) ([]byte, error) {
	return open(key, b, kind)
}

// encodeDue and decodeDue: an X record, the digests due at one time in one
// mailbox from one commit.
//
//	n(2) ‖ digests(32·n)
func encodeDue(ds [][32]byte) []byte {
	b := make([]byte, hdrLen, hdrLen+2+32*len(ds))
	b = binary.BigEndian.AppendUint16(b, uint16(len(ds)))
	for i := range ds {
		b = append(b, ds[i][:]...)
	}
	return seal(b, kindDue)
}

func decodeDue(key, b []byte) ([][32]byte, error) {
	body, err := open(key, b, kindDue)
	if err != nil {
		return nil, err
	}
	if len(body) < 2 {
		return nil, corrupt(key, "due record of %d bytes", len(body))
	}
	n := int(binary.BigEndian.Uint16(body))
	if n == 0 || len(body) != 2+32*n {
		return nil, corrupt(key, "due record of %d digests in %d bytes", n, len(body))
	}
	ds := make([][32]byte, n)
	for i := range ds {
		ds[i] = [32]byte(body[2+32*i:])
	}
	return ds, nil
}
