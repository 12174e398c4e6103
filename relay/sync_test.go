package relay

import (
	"crypto/ed25519"
	"errors"
	"io"
	"testing"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// fill deposits count envelopes of size bytes to mb and returns them.
func fill(t testing.TB, c *rpc.Client, n *Node, mb wire.Mailbox, count, size int, base uint64) [][]byte {
	t.Helper()
	ds, err := c.OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	envs := make([][]byte, count)
	calls := make([]*rpc.DepositCall, count)
	for i := range count {
		envs[i] = envelope(t, mb, size, 0, base+uint64(i))
		if calls[i], err = ds.Send(ctxT(t), envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, call := range calls {
		if _, err := call.Wait(ctxT(t)); err != nil {
			t.Fatalf("deposit %d: %v", i, err)
		}
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	return envs
}

// syncAll runs one sync to its end and returns its pages.
func syncAll(t testing.TB, c *rpc.Client, n *Node, key ed25519.PrivateKey, req rpc.SyncRequest) []*rpc.SyncPage {
	t.Helper()
	st, err := c.Sync(ctxT(t), n.ID(), key, req)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var pages []*rpc.SyncPage
	for {
		p, err := st.Next()
		if err == io.EOF {
			return pages
		}
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, p)
	}
}

func TestRelaySync(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxPageEntries = 7 })
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	envs := fill(t, c, n, mb, 50, 300, 0)

	pages := syncAll(t, c, n, key, rpc.SyncRequest{})
	if len(pages) != 8 {
		t.Fatalf("%d pages, want 8 (50 entries by 7)", len(pages))
	}
	var cursor wire.Cursor
	got := 0
	for i, p := range pages {
		if p.Done != (i == len(pages)-1) {
			t.Fatalf("page %d done=%v", i, p.Done)
		}
		for _, e := range p.Entries {
			if string(e.Envelope) != string(envs[got]) || e.Stamp.Seq != uint64(got+1) {
				t.Fatalf("entry %d out of order", got)
			}
			got++
		}
		if len(p.Watermarks) != 1 || p.Watermarks[0].Origin != n.ID() || p.Watermarks[0].Seq != uint64(got) {
			t.Fatalf("page %d watermarks %v after %d entries", i, p.Watermarks, got)
		}
		for _, w := range p.Watermarks {
			cursor.Advance(w.Origin, w.Seq)
		}
	}
	if got != 50 {
		t.Fatalf("%d entries", got)
	}
	// With the advanced cursor nothing is left; the last page still
	// lists the origin's watermark.
	pages = syncAll(t, c, n, key, rpc.SyncRequest{Cursor: cursor})
	if len(pages) != 1 || len(pages[0].Entries) != 0 || !pages[0].Done || len(pages[0].Watermarks) != 1 {
		t.Fatalf("sync after cursor: %+v", pages)
	}
	// Limit: a page that reaches it is the last.
	pages = syncAll(t, c, n, key, rpc.SyncRequest{Limit: 10})
	total := 0
	for _, p := range pages {
		total += len(p.Entries)
	}
	if total != 10 || !pages[len(pages)-1].Done {
		t.Fatalf("limit 10: %d entries", total)
	}
	// An empty mailbox: one empty done page.
	key2, _ := mailboxKey(t)
	pages = syncAll(t, c, n, key2, rpc.SyncRequest{})
	if len(pages) != 1 || len(pages[0].Entries) != 0 || !pages[0].Done {
		t.Fatalf("empty mailbox: %+v", pages)
	}
}

// TestRelaySyncResume cuts a sync mid-stream, after a partly read page,
// and resumes it twice: from the resume position, and from the durable
// cursor alone. Every entry arrives exactly once.
func TestRelaySyncResume(t *testing.T) {
	n := startNode(t, func(c *Config) { c.MaxPageEntries = 16 })
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	envs := fill(t, c, n, mb, 100, 500, 0)
	seen := map[wire.CID]int{}

	// First session: take two pages, "store" them, and die.
	st, err := c.Sync(ctxT(t), n.ID(), key, rpc.SyncRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var cursor wire.Cursor
	for range 2 {
		p, err := st.Next()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			seen[e.CID()]++
		}
		for _, w := range p.Watermarks {
			cursor.Advance(w.Origin, w.Seq)
		}
	}
	last, _ := st.LastPosition()
	st.Close() // resets the stream mid-sync

	// Second session: resume position; read one page and die too, this
	// time without advancing the cursor.
	st, err = c.Sync(ctxT(t), n.ID(), key, rpc.SyncRequest{Cursor: cursor, After: &last})
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.Next()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Entries {
		seen[e.CID()]++
	}
	last, _ = st.LastPosition()
	st.Close()

	// Third session resumes from that position and runs to the end.
	for _, p := range syncAll(t, c, n, key, rpc.SyncRequest{Cursor: cursor, After: &last}) {
		for _, e := range p.Entries {
			seen[e.CID()]++
		}
	}
	for i, e := range envs {
		if seen[wire.CIDOf(e)] != 1 {
			t.Fatalf("entry %d seen %d times", i, seen[wire.CIDOf(e)])
		}
	}
	// A resume from the cursor alone re-sends what the cursor does not
	// cover (duplicates are the client's to drop), and nothing it covers.
	pages := syncAll(t, c, n, key, rpc.SyncRequest{Cursor: cursor})
	count := 0
	for _, p := range pages {
		for _, e := range p.Entries {
			if cursor.Covers(e.Stamp.Origin, e.Stamp.Seq) {
				t.Fatal("covered entry re-sent")
			}
			count++
		}
	}
	if count != 100-32 {
		t.Fatalf("cursor resume sent %d entries, want 68", count)
	}
}

func TestRelaySyncMalformedRequest(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	key, mb := mailboxKey(t)
	for name, body := range map[string]*pb.SyncRequest{
		"bad cursor":           {Mailbox: mb[:], Cursor: []byte{1}},
		"cursor version":       {Mailbox: mb[:], Cursor: []byte{2, 0}},
		"resume seq no origin": {Mailbox: mb[:], AfterSeq: 3},
		"resume bad origin":    {Mailbox: mb[:], AfterOrigin: []byte{1, 2, 3}},
	} {
		t.Run(name, func(t *testing.T) {
			a, err := rpc.Authenticate(key, wire.AuthSync, n.ID(), body, n.now(), randReader{})
			if err != nil {
				t.Fatal(err)
			}
			var page pb.SyncPage
			if err := roundTrip(t, c.Host, n.ID(), wire.ProtocolSync, a, &page); err != nil {
				t.Fatal(err)
			}
			want := pb.Status_STATUS_MALFORMED
			if name == "cursor version" {
				want = pb.Status_STATUS_UNSUPPORTED_VERSION
			}
			if page.Status != want {
				t.Fatalf("status %v, want %v", page.Status, want)
			}
		})
	}
	_ = errors.New
}
