package client

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Stored records of the client are hand-encoded: a version byte, then fixed
// fields and length-prefixed byte strings. enc appends; dec reads and
// remembers the first error, so a decoder checks once at the end.

// recordVersion is the version byte of every record this package stores.
const recordVersion = 0x01

// errCorruptRecord is returned for a stored record that does not decode.
var errCorruptRecord = errors.New("client: corrupt stored record")

type enc struct{ b []byte }

func newEnc(n int) *enc { return &enc{b: append(make([]byte, 0, n+1), recordVersion)} }

func (e *enc) u8(v uint8)   { e.b = append(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
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
func (e *enc) str(v string) { e.u32(uint32(len(v))); e.b = append(e.b, v...) }
func (e *enc) u64s(v []uint64) {
	e.u32(uint32(len(v)))
	for _, x := range v {
		e.u64(x)
	}
}

type dec struct {
	b   []byte
	err error
}

func newDec(b []byte) *dec {
	d := &dec{b: b}
	if len(b) == 0 || b[0] != recordVersion {
		d.err = errCorruptRecord
		return d
	}
	d.b = b[1:]
	return d
}

func (d *dec) need(n int) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.b) < n {
		d.err = errCorruptRecord
		return false
	}
	return true
}

func (d *dec) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *dec) bool() bool { return d.u8() == 1 }

// bytes returns a copy of a length-prefixed byte string.
func (d *dec) bytes() []byte {
	n := int(d.u32())
	if !d.need(n) {
		return nil
	}
	v := append([]byte(nil), d.b[:n]...)
	d.b = d.b[n:]
	return v
}

func (d *dec) str() string { return string(d.bytes()) }

func (d *dec) u64s() []uint64 {
	n := int(d.u32())
	if !d.need(8 * n) {
		return nil
	}
	v := make([]uint64, n)
	for i := range v {
		v[i] = d.u64()
	}
	return v
}

func (d *dec) fixed(dst []byte) {
	if !d.need(len(dst)) {
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

// done returns the decoder's error, or an error if bytes remain.
func (d *dec) done(what string) error {
	if d.err == nil && len(d.b) != 0 {
		d.err = errCorruptRecord
	}
	if d.err != nil {
		return fmt.Errorf("%s: %w", what, d.err)
	}
	return nil
}
