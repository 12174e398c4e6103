package store

import (
	"bytes"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// A relay cursor is kept per (mailbox, relay), apart from the mailbox's
// cursor, and survives a reopen.
func TestRelayCursor(t *testing.T) {
	dir := t.TempDir()
	open := func() *ClientDB {
		db, err := OpenClientDB(ClientOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	id := func(b byte) peer.ID {
		return peer.ID(append([]byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}, bytes.Repeat([]byte{b}, 32)...))
	}
	mb, other := wire.Mailbox{0x12, 0x20, 1}, wire.Mailbox{0x12, 0x20, 2}
	r1, r2 := id(1), id(2)
	var cur wire.Cursor
	if err := cur.Advance(id(9), 7); err != nil {
		t.Fatal(err)
	}
	db := open()
	if err := db.Update(func(tx *ClientTx) error { return tx.PutRelayCursor(mb, r1, &cur) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *ClientTx) error { return tx.PutRelayCursor(mb, "", &cur) }); err == nil {
		t.Error("a relay cursor without a relay was stored")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open()
	defer db.Close()
	err := db.View(func(tx *ClientTx) error {
		for _, c := range []struct {
			mb    wire.Mailbox
			relay peer.ID
			want  uint64
		}{{mb, r1, 7}, {mb, r2, 0}, {other, r1, 0}} {
			got, err := tx.RelayCursor(c.mb, c.relay)
			if err != nil {
				return err
			}
			if got.Get(id(9)) != c.want {
				t.Errorf("cursor of %v at %v: %v, want seq %d", c.mb, c.relay, got.String(), c.want)
			}
		}
		if got, err := tx.Cursor(mb); err != nil || got.Len() != 0 {
			t.Errorf("the mailbox's cursor: %v %v, want empty", got.String(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
