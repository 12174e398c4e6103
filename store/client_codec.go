package store

import (
	"encoding/binary"
	"fmt"
)

// enc and dec are the field codec of the client's records (client_records.go):
// u8, u32, u64, booleans (one byte, 0 or 1), fixed-size byte arrays,
// length-prefixed byte strings (u32 length) and u64 lists (u32 count), in a
// fixed order per record kind, big-endian. Every record is sealed with the
// common header of records.go (version, kind, CRC-32C), so a flipped byte is
// caught before any field is read. dec remembers the first error, so a
// decoder checks once, at done; every length is checked against the bytes
// left before anything is allocated, and a decoder accepts only what enc
// writes (a boolean byte above 1 or a trailing byte is corrupt), so the
// encodings are canonical.

type enc struct{ b []byte }

// newEnc starts a record with room for n body bytes after the header.
func newEnc(n int) *enc { return &enc{b: make([]byte, hdrLen, hdrLen+n)} }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) fixed(v []byte) {
	e.b = append(e.b, v...)
}
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *enc) bytes(v []byte) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *enc) str(v string) {
	e.u32(uint32(len(v)))
	e.b = append(e.b, v...)
}
func (e *enc) u64s(v []uint64) {
	e.u32(uint32(len(v)))
	for _, x := range v {
		e.u64(x)
	}
}

// seal writes the header and returns the record.
func (e *enc) seal(kind byte) []byte { return seal(e.b, kind) }

type dec struct {
	key  []byte
	b    []byte
	err  error
	kind byte
}

// newDec checks a record's header (records.go: open) and reads its body.
func newDec(key, v []byte, kind byte) *dec {
	body, err := open(key, v, kind)
	return &dec{key: key, b: body, err: err, kind: kind}
}

func (d *dec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = corrupt(d.key, "record kind %d: %s", d.kind, fmt.Sprintf(format, args...))
	}
}

// take returns the next n bytes (aliasing the input), or nil after an
// error.
func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail("%s: %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() uint8 {
	if v := d.take(1, "u8"); v != nil {
		return v[0]
	}
	return 0
}

func (d *dec) u32() uint32 {
	if v := d.take(4, "u32"); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *dec) u64() uint64 {
	if v := d.take(8, "u64"); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *dec) bool() bool {
	v := d.u8()
	if v > 1 {
		d.fail("boolean %d", v)
	}
	return v == 1
}

// fixed fills dst.
func (d *dec) fixed(dst []byte) {
	copy(dst, d.take(len(dst), "fixed field"))
}

// bytes returns a copy of a length-prefixed byte string (records outlive
// badger's value buffers).
func (d *dec) bytes() []byte {
	n := d.u32()
	if v := d.take(int(min(uint64(n), uint64(len(d.b))+1)), "byte string"); v != nil {
		return append([]byte(nil), v...)
	}
	return nil
}

func (d *dec) str() string { return string(d.bytes()) }

func (d *dec) u64s() []uint64 {
	n := uint64(d.u32())
	if d.err != nil {
		return nil
	}
	if n*8 > uint64(len(d.b)) {
		d.fail("list of %d u64 in %d bytes", n, len(d.b))
		return nil
	}
	if n == 0 {
		return nil
	}
	v := make([]uint64, n)
	for i := range v {
		v[i] = d.u64()
	}
	return v
}

// done returns the first error, or one if bytes are left.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}
