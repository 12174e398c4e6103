package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/cairn-net/cairn/wire"
)

// One-time prekeys a relay holds for mailboxes (SPEC.md §10.8): uploaded by
// the mailbox owner, handed out once each, oldest first, never replicated.
//
// Keys:
//
//	'Q' mbid(4) kind(1) n(8)    a prekey record, in upload order (n rises)
//	'q' mbid(4) kind(1) id(4)   n of the prekey with that ID (dedup by ID)
//
// A record is id(4) ‖ the encoding as uploaded (opaque here), sealed like
// every log record; a handed-out ID keeps its 'q' key for MaxTTL so a
// re-upload of that prekey is dropped. Counts and bytes are rebuilt from the keys when the log opens.

// RelayPrekey is one uploaded one-time prekey: its ID (unique per kind and
// mailbox) and its exact encoding.
type RelayPrekey struct {
	ID     uint32
	Record []byte
}

// DefaultPrekeyCapBytes bounds the bytes of all prekeys a log holds
// (LogOptions.PrekeyCapBytes).
const DefaultPrekeyCapBytes = 256 << 20

const (
	pPrekey         = 'Q'
	pPrekeyID       = 'q'
	kindRelayPrekey = 12
)

func prekeyPrefix(mbid uint32, kind uint8) []byte {
	b := binary.BigEndian.AppendUint32([]byte{pPrekey}, mbid)
	return append(b, kind)
}

func prekeyIDKey(mbid uint32, kind uint8, id uint32) []byte {
	b := binary.BigEndian.AppendUint32([]byte{pPrekeyID}, mbid)
	return binary.BigEndian.AppendUint32(append(b, kind), id)
}

type prekeyCount struct {
	n    int
	next uint64 // next upload number
}

// PutPrekeys stores uploaded one-time prekeys of one kind for mailbox,
// skipping IDs it already holds and anything beyond max per (mailbox,
// kind), and returns how many it holds of that kind. With no records it
// only counts. It fails with wire.ErrStorageFull (storing nothing) when the
// log's prekey cap would be exceeded. Durable when it returns.
func (l *Log) PutPrekeys(ctx context.Context, mailbox wire.Mailbox, kind uint8, recs []RelayPrekey, max int) (remaining int, err error) {
	o := &op{kind: opPrekeyPut, mb: mailbox, set: Set(kind), prekeys: recs, count: max}
	if err := l.submit(ctx, o); err != nil {
		return 0, err
	}
	return o.count2, o.err
}

// TakePrekey removes and returns the oldest prekey of kind for mailbox
// (nil when none is left) and how many remain. Each prekey is returned at
// most once, durably: a crash after TakePrekey returns never hands it out
// again.
func (l *Log) TakePrekey(ctx context.Context, mailbox wire.Mailbox, kind uint8) (record []byte, remaining int, err error) {
	o := &op{kind: opPrekeyTake, mb: mailbox, set: Set(kind)}
	if err := l.submit(ctx, o); err != nil {
		return nil, 0, err
	}
	return o.record, o.count2, o.err
}

// loadPrekeys rebuilds the prekey counts at open.
func (l *Log) loadPrekeys(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pPrekey}})
	defer it.Close()
	for it.Seek([]byte{pPrekey}); it.ValidForPrefix([]byte{pPrekey}); it.Next() {
		k := it.Item().Key()
		if len(k) != 14 {
			continue
		}
		c := l.prekeyCount(binary.BigEndian.Uint32(k[1:]), k[5])
		c.n++
		c.next = max(c.next, binary.BigEndian.Uint64(k[6:])+1)
		l.prekeyBytes += it.Item().ValueSize()
	}
	return nil
}

func (l *Log) prekeyCount(mbid uint32, kind uint8) *prekeyCount {
	k := [2]uint32{mbid, uint32(kind)}
	c := l.prekeys[k]
	if c == nil {
		c = &prekeyCount{}
		l.prekeys[k] = c
	}
	return c
}

func (b *batchCtx) doPrekeyPut(o *op) error {
	l := b.l
	kind := uint8(o.set)
	mb := l.mboxes[o.mb]
	if mb == nil && len(o.prekeys) == 0 {
		return nil
	}
	var add int64
	for _, r := range o.prekeys {
		add += int64(len(r.Record) + hdrLen)
	}
	if cap := l.opts.PrekeyCapBytes; cap >= 0 && l.prekeyBytes+add > cap {
		b.reject(o, fmt.Errorf("prekeys: %d bytes held: %w", l.prekeyBytes, wire.ErrStorageFull))
		return nil
	}
	mb = b.mailbox(o.mb)
	c := l.prekeyCount(mb.id, kind)
	for _, r := range o.prekeys {
		if c.n >= o.count {
			break
		}
		ik := prekeyIDKey(mb.id, kind, r.ID)
		if _, err := b.txn.Get(ik); err == nil {
			continue
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		n := c.next
		c.next++
		c.n++
		v := encodeBytes(kindRelayPrekey, append(binary.BigEndian.AppendUint32(nil, r.ID), r.Record...))
		if err := b.txn.Set(binary.BigEndian.AppendUint64(prekeyPrefix(mb.id, kind), n), v); err != nil {
			return err
		}
		if err := b.txn.Set(ik, binary.BigEndian.AppendUint64(nil, n)); err != nil {
			return err
		}
		l.prekeyBytes += int64(len(v))
	}
	o.count2 = c.n
	return nil
}

func (b *batchCtx) doPrekeyTake(o *op) error {
	l := b.l
	kind := uint8(o.set)
	mb := l.mboxes[o.mb]
	if mb == nil {
		return nil
	}
	c := l.prekeyCount(mb.id, kind)
	prefix := prekeyPrefix(mb.id, kind)
	for c.n > 0 {
		var k, v []byte
		it := b.txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		it.Seek(prefix)
		if it.ValidForPrefix(prefix) {
			k = it.Item().KeyCopy(nil)
			var err error
			if v, err = it.Item().ValueCopy(nil); err != nil {
				it.Close()
				return err
			}
		}
		it.Close()
		if k == nil {
			c.n = 0
			break
		}
		if err := b.txn.Delete(k); err != nil {
			return err
		}
		c.n--
		l.prekeyBytes -= int64(len(v))
		rec, err := decodeBytes(k, v, kindRelayPrekey)
		if err == nil && len(rec) < 4 {
			err = corrupt(k, "prekey of %d bytes", len(rec))
		}
		if err == nil {
			// The ID stays known for MaxTTL, so a re-upload of a prekey
			// that was handed out is dropped, never handed out twice.
			ik := prekeyIDKey(mb.id, kind, binary.BigEndian.Uint32(rec))
			if err := b.set(ik, []byte{}, 0, b.now+int64(l.opts.MaxTTL/time.Second), 0); err != nil {
				return err
			}
		}
		if err != nil {
			// A corrupt prekey is dropped, and the next one served.
			l.st.corrupt.Add(1)
			l.log.Error("store: corrupt prekey dropped", "err", err)
			continue
		}
		o.record = clone(rec[4:])
		break
	}
	o.count2 = c.n
	return nil
}
