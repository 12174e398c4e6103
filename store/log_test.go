package store_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/store/storetest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir) // never returns; killed by the parent
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"))
}

func openDisk(t testing.TB, dir string, opts store.LogOptions) *store.Log {
	opts.Dir = dir
	l, err := store.OpenLog(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func openMem(t testing.TB, _ string, opts store.LogOptions) *store.Log {
	opts.Dir = ""
	l, err := store.OpenLog(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLogDisk(t *testing.T) {
	storetest.RunLog(t, storetest.Opener{Name: "disk", Persistent: true, Open: openDisk})
}

func TestLogMemory(t *testing.T) {
	storetest.RunLog(t, storetest.Opener{Name: "memory", Open: openMem})
}

func openClientDisk(t testing.TB, dir string, opts store.ClientOptions) *store.ClientDB {
	opts.Dir = dir
	c, err := store.OpenClientDB(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openClientMem(t testing.TB, _ string, opts store.ClientOptions) *store.ClientDB {
	opts.Dir = ""
	c, err := store.OpenClientDB(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientDisk(t *testing.T) {
	storetest.RunClient(t, storetest.ClientOpener{Name: "disk", Persistent: true, Open: openClientDisk})
}

func TestClientMemory(t *testing.T) {
	storetest.RunClient(t, storetest.ClientOpener{Name: "memory", Open: openClientMem})
}
