package testnet_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/testnet"
	"github.com/cairn-net/cairn/wire"
)

// syncCIDs reads every entry of the key's mailbox from relay.
func syncCIDs(t testing.TB, c *rpc.Client, p *testnet.Proc, key ed25519.PrivateKey) []wire.CID {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Sync(forceDial(ctx), p.ID, key, rpc.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []wire.CID
	for {
		page, err := s.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			out = append(out, e.CID())
		}
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// Relay processes (this test binary re-executed as relay children) come
// up in one DHT; one is SIGKILLed and restarted on its data directory with
// the same peer ID and every acknowledged entry; Close leaves no process.
func TestProcKillRestart(t *testing.T) {
	exited := make(chan int, 8)
	pc := testnet.NewProcs(t, testnet.ProcOptions{
		Relays:  3,
		Metrics: true,
		OnExit:  func(p *testnet.Proc, err error) { exited <- p.Index },
	})
	var pids []int
	for _, p := range pc.Relays {
		if !p.Running() || p.ID == "" {
			t.Fatalf("%s not running", p)
		}
		pids = append(pids, p.Pid())
	}
	p := pc.Relays[1]
	key, mb := mailboxKey(t)
	cids := deposit(t, pc.RPC(), p.ID, mb, 0, 40)
	id, pid := p.ID, p.Pid()

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || alive(pid) {
		t.Fatal("killed relay process still alive")
	}
	if err := p.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if p.ID != id || p.Pid() == pid {
		t.Fatalf("restarted as %s (pid %d), was %s (pid %d)", p.ID, p.Pid(), id, pid)
	}
	got := syncCIDs(t, pc.RPC(), p, key)
	for _, c := range cids {
		if !slices.Contains(got, c) {
			t.Fatalf("entry %s lost across SIGKILL (have %d of %d)", c, len(got), len(cids))
		}
	}
	if err := pc.WaitRouting(ctxT(t)); err != nil {
		t.Fatal(err)
	}

	// Metrics are served.
	resp, err := http.Get(p.MetricsURL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "cairn_") {
		t.Fatalf("metrics at %s: %s", p.MetricsURL(), resp.Status)
	}

	// A relay that dies on its own (killed behind the cluster's back) is
	// reported; Kill and Stop are not.
	select {
	case i := <-exited:
		t.Fatalf("OnExit for relay %d, which the cluster ended", i)
	default:
	}
	other := pc.Relays[2]
	if err := syscall.Kill(other.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case i := <-exited:
		if i != 2 {
			t.Fatalf("OnExit for relay %d, want 2", i)
		}
	case <-time.After(time.Minute):
		t.Fatal("no OnExit for a relay that died")
	}

	// A graceful stop answers SIGTERM with a clean exit.
	if err := pc.Relays[0].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pc.Relays[0].Stop(); !errors.Is(err, testnet.ErrDown) {
		t.Fatalf("second stop: %v", err)
	}
	pids = append(pids, p.Pid())
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d outlived the cluster", pid)
		}
	}
}
