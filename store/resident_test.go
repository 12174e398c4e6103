package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// TestResidentFindsBadgerState: the memory trim finds badger's tables,
// write-ahead logs and builder pool in the badger version go.mod pins (a
// version that moves them fails here instead of losing the trim), and on
// Linux a trim unmaps the table files' pages from the process while every
// entry still reads back.
func TestResidentFindsBadgerState(t *testing.T) {
	l, ds, r := flattenedResident(t)
	// Badger may still be compacting (reading and writing tables) after
	// Flatten: trim until the table files stay unmapped.
	before := mappedRss(t, ".sst")
	var (
		st  trimStats
		err error
	)
	after := before
	for try := 0; try < 50 && (try == 0 || after > before/8); try++ {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		if st, err = r.trim(); err != nil {
			t.Fatal(err)
		}
		after = mappedRss(t, ".sst")
	}
	t.Logf("trim: %+v; table files resident %d KiB before, %d KiB after", st, before>>10, after>>10)
	if st.tables == 0 || st.wals == 0 {
		t.Fatalf("trim found no tables or write-ahead logs: %+v", st)
	}
	if runtime.GOOS == "linux" && (before < 4<<20 || after > before/8) {
		t.Fatalf("table files resident %d bytes before the trim, %d after", before, after)
	}
	page, err := l.Read(wire.MailboxOf(make([]byte, 32)), nil, nil, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(page.Entries); got != len(ds) {
		t.Fatalf("read %d entries after the trim, want %d", got, len(ds))
	}
	for i, e := range page.Entries {
		if !bytes.Equal(e.Envelope, ds[i].Envelope) {
			t.Fatalf("entry %d differs after the trim", i)
		}
	}
}

// TestResidentTrimLoop: an on-disk log with a memory budget unmaps its
// table files (trimLoop), and Close stops the loop. (Outside Linux mappedRss is 0 and only the stop is
// checked.)
func TestResidentTrimLoop(t *testing.T) {
	l, _ := residentLog(t, MinMemoryBudget)
	if err := l.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	// Within trimEvery of the end of the writes (and of Flatten), the
	// pages are gone; allow for a slow machine.
	deadline := time.Now().Add(5 * trimEvery)
	rss := mappedRss(t, ".sst")
	for rss > 0 && time.Now().Before(deadline) {
		time.Sleep(trimPoll / 2)
		rss = mappedRss(t, ".sst")
	}
	if rss > 0 {
		t.Fatalf("table files still resident (%d bytes) %v after the writes", rss, 5*trimEvery)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.trimDone:
	default:
		t.Fatal("trim loop still running after Close")
	}
}

// flattenedResident opens residentLog without a memory budget (the log
// does not trim on its own), flattens its tables and finds badger's state.
func flattenedResident(t *testing.T) (*Log, []Deposit, *resident) {
	l, ds := residentLog(t, -1)
	if err := l.db.Flatten(1); err != nil {
		t.Fatal(err)
	}
	r, err := newResident(l.db)
	if err != nil {
		t.Fatal(err)
	}
	return l, ds, r
}

// residentLog opens an on-disk log with small memtables and tables and
// the memory budget budget, and stores 3,000 entries of 4 KB in it.
func residentLog(t *testing.T, budget int64) (*Log, []Deposit) {
	k, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	id, _ := peer.IDFromPrivateKey(k)
	l, err := OpenLog(LogOptions{Dir: t.TempDir(), Origin: id, Signer: k, GCInterval: -1, MemoryBudget: budget,
		tweak: func(o *badger.Options) { *o = o.WithMemTableSize(4 << 20).WithBaseTableSize(1 << 20) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	ctx := context.Background()
	mb := wire.MailboxOf(make([]byte, 32))
	var ds []Deposit
	for range 3000 {
		ds = append(ds, Deposit{Envelope: testEnvelope(t, mb, 4000), Expiry: uint64(time.Now().Unix() + 3600)})
	}
	for i := 0; i < len(ds); i += 100 {
		for _, r := range l.AppendMany(ctx, ds[i:i+100]) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
		}
	}
	return l, ds
}

// mappedRss is the resident memory of this process's mappings of files
// whose names end in suffix (/proc/self/smaps; 0 where there is none).
func mappedRss(t *testing.T, suffix string) int64 {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0
	}
	var sum int64
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":"):
			in = len(f) >= 6 && strings.HasSuffix(f[5], suffix)
		case in && len(f) == 3 && f[0] == "Rss:":
			v, _ := strconv.ParseInt(f[1], 10, 64)
			sum += v << 10
		}
	}
	return sum
}
