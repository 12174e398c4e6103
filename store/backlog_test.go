package store

import (
	"context"
	"testing"
	"time"

	"github.com/cairn-net/cairn/wire"
)

// Backlog counts every operation submitted and not yet committed (the one
// in the commit being written and those waiting), and measures commits.
func TestStoreBacklog(t *testing.T) {
	l, _ := testLog(t, t.TempDir(), nil)
	ctx := context.Background()
	if b := l.Backlog(); b.Ops != 0 || b.Commit != 0 || b.Drain() != 0 || b.Batch != DefaultMaxCommitBatch {
		t.Fatalf("idle log: %+v", b)
	}
	mb := wire.MailboxOf(make([]byte, 32))
	inCommit, release := make(chan struct{}), make(chan struct{})
	l.beforeCommit = func() {
		inCommit <- struct{}{}
		<-release
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan []AppendManyResult, 2)
	go func() { done <- l.AppendMany(ctx, []Deposit{{Envelope: testEnvelope(t, mb, 100)}}) }()
	<-inCommit // the first commit holds one append
	const more = 300
	deps := make([]Deposit, more)
	for i := range deps {
		deps[i].Envelope = testEnvelope(t, mb, 100)
	}
	go func() { done <- l.AppendMany(ctx, deps) }()
	deadline := time.Now().Add(10 * time.Second)
	for l.Backlog().Ops != 1+more {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %+v, want %d ops", l.Backlog(), 1+more)
		}
		time.Sleep(time.Millisecond)
	}
	release <- struct{}{}
	<-done
	// Two more commits: 256, then 44.
	for range 2 {
		<-inCommit
		release <- struct{}{}
	}
	for _, r := range <-done {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	b := l.Backlog()
	if b.Ops != 0 || b.Commit < 5*time.Millisecond || b.LastCommit < 5*time.Millisecond {
		t.Fatalf("after the commits: %+v", b)
	}
	b.Ops = 2*b.Batch + 1 // three commits
	if d := b.Drain(); d != 3*max(b.Commit, b.LastCommit) {
		t.Fatalf("Drain of %d ops = %v (commit %v, last %v)", b.Ops, d, b.Commit, b.LastCommit)
	}
	l.beforeCommit = nil
}
