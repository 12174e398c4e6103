package client

import (
	"testing"

	"github.com/cairn-net/cairn/store"
)

// BenchmarkBoundSyncedCommit measures the floor under every durable step of
// the client: one synchronous badger transaction writing a 1 KiB record (as
// Send, and each received page, do). A live round trip holds three of them
// in series (the sender's outbox, the relay's append, the recipient's
// store); BENCHMARKS.md states the round trip as a ratio to this.
func BenchmarkBoundSyncedCommit(b *testing.B) {
	db, err := store.OpenClientDB(store.ClientOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	m := &store.Message{Direction: store.Incoming, Body: make([]byte, 1024)}
	for b.Loop() {
		m.Counter++
		if err := db.Update(func(tx *store.ClientTx) error { return tx.PutMessage("bench", m) }); err != nil {
			b.Fatal(err)
		}
	}
}
