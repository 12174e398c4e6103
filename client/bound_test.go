package client

import (
	"encoding/binary"
	"log/slog"
	"testing"
)

// BenchmarkBoundSyncedCommit measures the floor under every durable step of
// the client: one synchronous badger transaction writing a 1 KiB record (as
// Send, and each received page, do). A live round trip holds three of them
// in series (the sender's outbox, the relay's append, the recipient's
// store); BENCHMARKS.md states the round trip as a ratio to this.
func BenchmarkBoundSyncedCommit(b *testing.B) {
	db, err := openBadger(b.TempDir(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer db.close()
	v := make([]byte, 1024)
	var i uint64
	for b.Loop() {
		i++
		k := binary.BigEndian.AppendUint64([]byte("bench/"), i)
		if err := db.update(func(tx kvTx) error { return tx.set(k, v) }); err != nil {
			b.Fatal(err)
		}
	}
}
