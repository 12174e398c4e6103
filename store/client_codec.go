package store

import (
	"encoding/binary"
	"fmt"
)

// enc and dec are a minimal field codec for the client's records: u8, u64
// and length-prefixed byte strings (u32 length), in a fixed order per record
// type. Every record is sealed with the common header (version, kind,
// crc32c) of records.go.

type enc struct{ b []byte }

func newEnc() *enc { return &enc{b: make([]byte, hdrLen, 64)} }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }
func (e *enc) bytes(v []byte) {
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *enc) str(v string)       { e.bytes([]byte(v)) }
func (e *enc) seal(k byte) []byte { return seal(e.b, k) }

type dec struct {
	key  []byte
	b    []byte
	err  error
	kind byte
}

func newDec(key, v []byte, kind byte) *dec {
	body, err := open(key, v, kind)
	return &dec{key: key, b: body, err: err, kind: kind}
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = corrupt(d.key, "record kind %d: %s", d.kind, what)
	}
}

func (d *dec) u8() uint8 {
	if d.err != nil || len(d.b) < 1 {
		d.fail("short u8")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("short u64")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) i64() int64 { return int64(d.u64()) }

// bytes returns a copy (records outlive badger's value buffers).
func (d *dec) bytes() []byte {
	if d.err != nil || len(d.b) < 4 {
		d.fail("short length")
		return nil
	}
	n := binary.BigEndian.Uint32(d.b)
	if uint64(n) > uint64(len(d.b)-4) {
		d.fail(fmt.Sprintf("length %d beyond %d bytes", n, len(d.b)-4))
		return nil
	}
	v := append([]byte(nil), d.b[4:4+n]...)
	d.b = d.b[4+n:]
	return v
}

func (d *dec) str() string { return string(d.bytes()) }

// done checks that nothing is left.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}
