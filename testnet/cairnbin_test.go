package testnet_test

import (
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cairn-net/cairn/testnet"
)

// The process mode drives the real "cairn relay" command: built from
// ./cmd/cairn, three relays come up in one DHT, one is SIGKILLed and
// restarted on its data directory with its peer ID and entries.
func TestProcCairnBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cairn")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/cairn-net/cairn/cmd/cairn").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/cairn: %v\n%s", err, out)
	}
	pc := testnet.NewProcs(t, testnet.ProcOptions{Relays: 3, Binary: bin, Metrics: true})
	p := pc.Relays[0]
	if p.MetricsURL() == "" {
		t.Error("no metrics line from cairn relay")
	}
	key, mb := mailboxKey(t)
	set := pc.ReplicaSet(mb)
	if !slices.Contains(set, p) {
		p = set[0]
	}
	cids := deposit(t, pc.RPC(), p.ID, mb, 0, 20)
	id := p.ID
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Restart(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if p.ID != id {
		t.Fatalf("peer ID %s after restart, was %s", p.ID, id)
	}
	got := syncCIDs(t, pc.RPC(), p, key)
	for _, c := range cids {
		if !slices.Contains(got, c) {
			t.Fatalf("entry lost across SIGKILL of cairn relay (have %d of %d)", len(got), len(cids))
		}
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}
