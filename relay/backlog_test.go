package relay

import (
	"errors"
	"sync"
	"testing"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// A relay whose store falls behind refuses deposits relay-wide with BUSY
// and a retry_after (SPEC.md §10.3 store backlog, §12 MaxStoreBacklog)
// instead of queueing them behind flow control; what it refused is not
// stored, and it accepts again once the backlog has drained. The store is
// made slow by holding every batch before it reaches the store.
func TestRelayDepositStoreBacklogBusy(t *testing.T) {
	const backlog = 8
	gate := make(chan struct{})
	n := startNode(t, func(c *Config) {
		c.MaxCommitBatch = 4
		c.MaxStoreBacklog = backlog
	})
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	t.Cleanup(release)                 // before the node's Close (cleanups run last first)
	n.beforeAppend = func() { <-gate } // set before any deposit stream runs
	busy := func() float64 {
		mfs, err := n.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "cairn_relay_rejects_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "reason" && lp.GetValue() == statusName(pb.Status_STATUS_BUSY) {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}

	_, mb := mailboxKey(t)
	ds, err := newClient(t, n).OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	const count = 20
	envs := make([][]byte, count)
	calls := make([]*rpc.DepositCall, count)
	for i := range count {
		envs[i] = envelope(t, mb, 512, 0, uint64(i))
		if calls[i], err = ds.Send(ctxT(t), envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The first batch waits at the gate; the relay reads on, admits up to
	// MaxStoreBacklog and refuses the rest while nothing drains.
	waitFor(t, "the relay to refuse what is above its backlog", func() bool { return busy() >= count-backlog })

	// The bound is relay-wide: another sender on another stream is
	// refused too.
	other := envelope(t, mb, 512, 0, 1000)
	ds2, err := newClient(t, n).OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds2.Close()
	_, err = ds2.Deposit(ctxT(t), other)
	var re *rpc.Error
	if !errors.As(err, &re) || re.Status != pb.Status_STATUS_BUSY || re.RetryAfter <= 0 {
		t.Fatalf("second stream's deposit while the backlog is full: %v, want BUSY with retry_after", err)
	}

	release()
	for i, call := range calls {
		res, err := call.Wait(ctxT(t))
		if i < backlog {
			if err != nil || res.Receipt == nil {
				t.Fatalf("deposit %d (within the backlog): %+v, %v", i, res, err)
			}
			continue
		}
		if !errors.As(err, &re) || re.Status != pb.Status_STATUS_BUSY {
			t.Fatalf("deposit %d (above the backlog): %+v, %v; want BUSY", i, res, err)
		}
		if re.RetryAfter <= 0 || re.RetryAfter > maxBusyRetry {
			t.Fatalf("deposit %d: BUSY with retry_after %v", i, re.RetryAfter)
		}
	}
	// Nothing refused was stored.
	if got := n.Store().Stats().Entries; got != backlog {
		t.Fatalf("store holds %d entries, want %d", got, backlog)
	}
	for _, env := range append(envs[backlog:], other) {
		if _, err := n.Store().Get(mb, wire.CIDOf(env)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a refused envelope: Get = %v, want ErrNotFound", err)
		}
	}
	if q := n.depositQueue.Load(); q != 0 {
		t.Fatalf("%d deposits still counted as queued", q)
	}
	// The backlog drained: the refused deposits go through now.
	for i := backlog; i < count; i++ {
		if res, err := ds.Deposit(ctxT(t), envs[i]); err != nil || res.Duplicate {
			t.Fatalf("deposit %d again: %+v, %v", i, res, err)
		}
	}
	if got := n.Store().Stats().Entries; got != count {
		t.Fatalf("store holds %d entries, want %d", got, count)
	}
}

// MaxStoreBacklog below MaxCommitBatch would refuse a single full batch.
func TestRelayConfigStoreBacklog(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxStoreBacklog = cfg.MaxCommitBatch - 1
	if _, err := New(cfg); err == nil {
		t.Fatal("MaxStoreBacklog below MaxCommitBatch accepted")
	}
}
