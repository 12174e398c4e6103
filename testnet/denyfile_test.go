package testnet_test

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/testnet"
)

// A deny file cuts pairs of names; a process refuses the peer IDs it is
// cut from, by any of its names, and Watch reports the new ones.
func TestDenyFile(t *testing.T) {
	ids := make([]peer.ID, 3)
	for i := range ids {
		ids[i] = peerID(t)
	}
	path := filepath.Join(t.TempDir(), "deny")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	d := testnet.NewDenyFile(path, "client-1") // a missing file refuses nothing
	if d.Denied(ids[0]) || !d.InterceptPeerDial(ids[0]) {
		t.Fatal("refused with no file")
	}
	write("# cuts\nclient-1 " + ids[0].String() + "\n" + ids[1].String() + " " + ids[2].String() + "\n")
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var fresh []peer.ID
	var wg sync.WaitGroup
	wg.Go(func() {
		d.Watch(ctx, func(p peer.ID) {
			mu.Lock()
			fresh = append(fresh, p)
			mu.Unlock()
		})
	})
	testnet.Eventually(t, testnet.Cond(func() bool { return d.Denied(ids[0]) }, "client-1 not cut from ids[0]"), "the cut")
	if d.Denied(ids[1]) || d.Denied(ids[2]) {
		t.Error("a cut between two others applies here")
	}
	d.AddName(ids[2].String()) // the same process, by its peer ID
	if !d.Denied(ids[1]) || d.InterceptSecured(0, ids[1], nil) {
		t.Error("not cut by its second name")
	}
	write("")
	testnet.Eventually(t, testnet.Cond(func() bool { return !d.Denied(ids[0]) && !d.Denied(ids[1]) }, "still refused"), "the heal")
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(fresh) != 1 || fresh[0] != ids[0] {
		t.Errorf("Watch reported %v, want [%s]", fresh, ids[0])
	}
}

func peerID(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
