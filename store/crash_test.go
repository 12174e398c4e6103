package store_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// The crash test: a child process (this test binary, re-executed with
// crashChildEnv set; TestMain hands it to crashChild) appends to a mailbox
// log and updates a client store in a loop, and writes one line to stdout
// for every write that returned success. The parent SIGKILLs it at random
// moments, reopens both stores and checks that every acknowledged write is
// there and intact, and that no multi-key update is half applied.

const crashChildEnv = "CAIRN_STORE_CRASH_CHILD_DIR"

var crashKey = bytes.Repeat([]byte{7}, 32)

func crashRelay() (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{42}, 64)))
	if err != nil {
		panic(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return k, id
}

func crashOther() (crypto.PrivKey, peer.ID) {
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{43}, 64)))
	if err != nil {
		panic(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return k, id
}

func crashMailboxes() []wire.Mailbox {
	var out []wire.Mailbox
	for i := byte(0); i < 3; i++ {
		out = append(out, wire.MailboxOf(bytes.Repeat([]byte{i}, 32)))
	}
	return out
}

func openCrashStores(dir string) (*store.Log, *store.ClientDB, error) {
	k, id := crashRelay()
	l, err := store.OpenLog(store.LogOptions{Dir: filepath.Join(dir, "log"), Origin: id, Signer: k, GCInterval: -1})
	if err != nil {
		return nil, nil, err
	}
	c, err := store.OpenClientDB(store.ClientOptions{Dir: filepath.Join(dir, "client"), EncryptionKey: crashKey})
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return l, c, nil
}

// crashChild runs until killed.
func crashChild(dir string) {
	l, c, err := openCrashStores(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		mu.Unlock()
	}
	mbs := crashMailboxes()
	_, relayID := crashRelay()
	ctx := context.Background()
	// Relay side: four concurrent appenders (group commit), some acks.
	for w := 0; w < 4; w++ {
		go func() {
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			for {
				mb := mbs[r.IntN(len(mbs))]
				ct := make([]byte, 50+r.IntN(1500))
				for i := range ct {
					ct[i] = byte(r.Uint32())
				}
				env, _ := (&wire.Envelope{Mailbox: mb, Ciphertext: ct}).Marshal()
				res, err := l.Append(ctx, store.Deposit{Envelope: env})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(3)
				}
				sum := wire.CIDOf(env)
				report("A %x %d %x %d", mb[:], res.Receipt.Seq, sum[:], len(env))
				if r.IntN(8) == 0 {
					if _, err := l.Ack(ctx, mb, []wire.CID{sum}, [][]byte{[]byte("owner ack")}); err != nil {
						os.Exit(4)
					}
					report("K %x %x", mb[:], sum[:])
				}
			}
		}()
	}
	// Replication: entries of another origin, out of order in pairs (seq
	// 2k before 2k−1), so known_through moves over filled holes.
	go func() {
		other, otherID := crashOther()
		next := l.KnownThrough(mbs[1])
		seq := uint64(0)
		for _, p := range next {
			if p.Origin == otherID {
				seq = p.Seq
			}
		}
		seq -= seq % 2
		r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 99))
		for {
			for _, s := range []uint64{seq + 2, seq + 1} {
				if _, err := l.GetBySeq(mbs[1], otherID, s); err == nil {
					continue // stored before the last kill, above the hole
				}
				ct := make([]byte, 100)
				for i := range ct {
					ct[i] = byte(r.Uint32())
				}
				exp := uint64(time.Now().Unix()) + 3600
				env, _ := (&wire.Envelope{Mailbox: mbs[1], Expiry: exp, Ciphertext: ct}).Marshal()
				rc := wire.Receipt{Origin: otherID, Mailbox: mbs[1], CID: wire.CIDOf(env), Seq: s,
					StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: exp}
				st, _ := wire.SignReceipts(other, []wire.Receipt{rc})
				if _, err := l.Import(ctx, env, &st[0]); err != nil {
					fmt.Fprintln(os.Stderr, "child import:", err)
					os.Exit(7)
				}
				report("I %x %d", rc.CID[:], s)
			}
			seq += 2
		}
	}()
	// Client side: one sync page after another, as the client writes it.
	page, err := lastCrashPage(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(5)
	}
	report("READY")
	for {
		page++
		if err := c.Update(func(tx *store.ClientTx) error { return writeCrashPage(tx, mbs[0], relayID, page) }); err != nil {
			fmt.Fprintln(os.Stderr, "child page:", err)
			os.Exit(6)
		}
		report("P %d", page)
	}
}

// A client page of the crash test is what one transaction of the client
// holds for a sync page, plus a Send: crashPageSize incoming messages with
// their seen marks, the session they advanced, the receive state, the cursor
// and the local sequence number; an outbox entry with its outgoing message,
// its session and the contact's next counter; the pending set moved on by
// one entry; and every fifth page, an older outbox entry finished by a
// delivery receipt (deleted, its message marked delivered). Page n leaves:
//
//	incoming counters 1…n·crashPageSize; session "in" and cursor at n;
//	receive state next = n·crashPageSize+1; local seq n; outbox entries and
//	outgoing messages 1…n (entry k deleted and delivered iff k+3 ≤ n and
//	(k+3) % 5 == 0); contact next counter n+1; session "out" at n; pending
//	exactly {n}.
const crashPageSize = 8

var crashSessionIn, crashSessionOut = [32]byte{'i', 'n'}, [32]byte{'o', 'u', 't'}

func crashCID(counter uint64) wire.CID {
	return wire.CIDOf([]byte("msg" + strconv.FormatUint(counter, 10)))
}

func crashBody(counter uint64, n int) []byte { return bytes.Repeat([]byte{byte(counter)}, n) }

func lastCrashPage(c *store.ClientDB) (n uint64, err error) {
	err = c.View(func(tx *store.ClientTx) error {
		n, err = tx.LocalSeq()
		return err
	})
	return n, err
}

func writeCrashPage(tx *store.ClientTx, mb wire.Mailbox, relayID peer.ID, n uint64) error {
	for i := uint64(1); i <= crashPageSize; i++ {
		k := (n-1)*crashPageSize + i
		m := &store.Message{Direction: store.Incoming, Counter: k, Body: crashBody(k, 200), Seq: n, Released: true}
		if err := tx.PutMessage("peer", m); err != nil {
			return err
		}
		if err := tx.MarkSeen(crashCID(k), time.Now().Add(time.Hour)); err != nil {
			return err
		}
	}
	st := []byte(strconv.FormatUint(n, 10))
	if err := tx.PutSession(&store.Session{HandshakeID: crashSessionIn, Contact: "peer", Active: n, State: st}); err != nil {
		return err
	}
	if err := tx.PutRecvState("peer", &store.RecvState{Next: n*crashPageSize + 1, Acks: []uint64{n}}); err != nil {
		return err
	}
	cur, err := tx.Cursor(mb)
	if err != nil {
		return err
	}
	if err := cur.Advance(relayID, n); err != nil {
		return err
	}
	if err := tx.PutCursor(mb, &cur); err != nil {
		return err
	}
	if err := tx.PutLocalSeq(n); err != nil {
		return err
	}
	env := crashBody(n, 300)
	if err := tx.PutOutbox(&store.OutboxEntry{Contact: "peer", Counter: n, Kind: wire.PayloadText, Mailbox: mb, Envelope: env,
		CID: wire.CIDOf(env), Status: store.StatusQueued, Seq: n}); err != nil {
		return err
	}
	out := &store.Message{Direction: store.Outgoing, Counter: n, Body: crashBody(n, 100), Seq: n, Status: store.StatusQueued}
	if err := tx.PutMessage("peer", out); err != nil {
		return err
	}
	if err := tx.PutSession(&store.Session{HandshakeID: crashSessionOut, Contact: "peer", Active: n, State: st}); err != nil {
		return err
	}
	if err := tx.PutContact(&store.Contact{ID: "peer", Mailbox: mb, NextCounter: n + 1}); err != nil {
		return err
	}
	if err := tx.PutPending(n, &store.PendingEntry{CID: crashCID(n), Envelope: crashBody(n, 50)}); err != nil {
		return err
	}
	if err := tx.DeletePending(n - 1); err != nil {
		return err
	}
	if n >= 4 && n%5 == 0 {
		k := n - 3
		if err := tx.DeleteOutbox("peer", k); err != nil {
			return err
		}
		m, err := tx.Message("peer", store.Outgoing, k)
		if err != nil {
			return err
		}
		m.Status = store.StatusDelivered
		return tx.PutMessage("peer", m)
	}
	return nil
}

type crashEntry struct {
	mb   wire.Mailbox
	seq  uint64
	cid  wire.CID
	size int
}

func TestStoreCrash(t *testing.T) {
	dir := t.TempDir()
	const kills = 15
	appended := map[wire.CID]crashEntry{}
	acked := map[wire.CID]bool{}
	var maxPage uint64
	imported := map[wire.CID]uint64{}
	rng := rand.New(rand.NewPCG(1, 2))
	totalAcked := 0
	for round := 0; round < kills; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		ready := false
		deadline := time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		var got []string
	collect:
		for {
			select {
			case ln, ok := <-lines:
				if !ok {
					break collect
				}
				if ln == "READY" && !ready {
					ready = true
					deadline = time.After(time.Duration(20+rng.IntN(300)) * time.Millisecond)
					continue
				}
				got = append(got, ln)
			case <-deadline:
				if !ready {
					deadline = time.After(50 * time.Millisecond)
					continue
				}
				cmd.Process.Kill() // SIGKILL
				for ln := range lines {
					got = append(got, ln)
				}
				break collect
			}
		}
		wg.Wait()
		err = cmd.Wait()
		if !ready {
			t.Fatalf("round %d: child exited before it was ready: %v", round, err)
		}
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("round %d: child did not die of the kill: %v", round, err)
		}
		for _, ln := range got {
			f := strings.Fields(ln)
			switch f[0] {
			case "A":
				mbb, _ := hex.DecodeString(f[1])
				seq, _ := strconv.ParseUint(f[2], 10, 64)
				cb, _ := hex.DecodeString(f[3])
				size, _ := strconv.Atoi(f[4])
				e := crashEntry{mb: wire.Mailbox(mbb), seq: seq, cid: wire.CID(cb), size: size}
				appended[e.cid] = e
			case "K":
				cb, _ := hex.DecodeString(f[2])
				acked[wire.CID(cb)] = true
				totalAcked++
			case "I":
				cb, _ := hex.DecodeString(f[1])
				seq, _ := strconv.ParseUint(f[2], 10, 64)
				imported[wire.CID(cb)] = seq
			case "P":
				n, _ := strconv.ParseUint(f[1], 10, 64)
				maxPage = max(maxPage, n)
			}
		}
		checkCrashState(t, round, dir, appended, acked, imported, maxPage)
	}
	t.Logf("%d kills; %d acknowledged appends, %d acks, %d imports, %d client pages verified",
		kills, len(appended), totalAcked, len(imported), maxPage)
}

func checkCrashState(t *testing.T, round int, dir string, appended map[wire.CID]crashEntry, acked map[wire.CID]bool, imported map[wire.CID]uint64, maxPage uint64) {
	t.Helper()
	l, c, err := openCrashStores(dir)
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	defer l.Close()
	defer c.Close()
	_, relayID := crashRelay()
	// Every acknowledged append is there, intact, with its seq; acked ones
	// are acked.
	for cid, e := range appended {
		f, err := l.Fate(e.mb, cid)
		if err != nil {
			t.Fatalf("round %d: fate: %v", round, err)
		}
		if acked[cid] {
			if f != store.FateAcked {
				t.Fatalf("round %d: acked entry %s has fate %v", round, cid, f)
			}
			continue
		}
		if f != store.FateStored && f != store.FateAcked {
			t.Fatalf("round %d: acknowledged entry %s lost (fate %v)", round, cid, f)
		}
		if f == store.FateAcked {
			continue // acked by the child right before the kill
		}
		g, err := l.GetBySeq(e.mb, relayID, e.seq)
		if err != nil || wire.CIDOf(g.Envelope) != cid || len(g.Envelope) != e.size || g.Stamp.VerifyFor(g.Envelope) != nil {
			t.Fatalf("round %d: entry %s seq %d not intact: %v", round, cid, e.seq, err)
		}
	}
	// Every acknowledged import is there; known_through of the other
	// origin covers every completed pair and never passes a missing seq.
	_, otherID := crashOther()
	mbs0 := crashMailboxes()
	var otherKT uint64
	for _, p := range l.KnownThrough(mbs0[1]) {
		if p.Origin == otherID {
			otherKT = p.Seq
		}
	}
	var maxPair uint64
	for cid, seq := range imported {
		g, err := l.GetBySeq(mbs0[1], otherID, seq)
		if err != nil || wire.CIDOf(g.Envelope) != cid || g.Stamp.VerifyFor(g.Envelope) != nil {
			t.Fatalf("round %d: acknowledged import seq %d lost or damaged: %v", round, seq, err)
		}
		if seq%2 == 1 {
			maxPair = max(maxPair, seq+1)
		}
	}
	if otherKT < maxPair {
		t.Fatalf("round %d: known_through of the other origin %d, but pairs up to %d are complete", round, otherKT, maxPair)
	}
	for s := uint64(1); s <= otherKT; s++ {
		if _, err := l.GetBySeq(mbs0[1], otherID, s); err != nil {
			t.Fatalf("round %d: known_through %d passes seq %d: %v", round, otherKT, s, err)
		}
	}
	// No holes in the origin's own sequence, and the counters match what
	// is readable.
	var live int64
	for _, mb := range crashMailboxes() {
		kt := l.KnownThrough(mb)
		var top uint64
		for _, p := range kt {
			if p.Origin == relayID {
				top = p.Seq
			}
		}
		p, err := l.Read(mb, nil, nil, 0, 0)
		if err != nil || len(p.Corrupt) > 0 {
			t.Fatalf("round %d: read: %v %v", round, err, p.Corrupt)
		}
		live += int64(len(p.Entries))
		for _, en := range p.Entries {
			if en.Stamp.Origin == relayID && en.Stamp.Seq > top {
				t.Fatalf("round %d: entry seq %d above known_through %d", round, en.Stamp.Seq, top)
			}
		}
		info, _ := l.Mailbox(mb)
		if info.Entries != int64(len(p.Entries)) {
			t.Fatalf("round %d: mailbox counts %d entries, reads %d", round, info.Entries, len(p.Entries))
		}
	}
	if st := l.Stats(); st.Entries != live {
		t.Fatalf("round %d: stats count %d entries, reads %d", round, st.Entries, live)
	}
	// Client: every acknowledged page is there, and the last page that is
	// there is there whole: every record it wrote, nothing of the next.
	checkCrashClient(t, round, c, crashMailboxes()[0], relayID, maxPage)
}

func checkCrashClient(t *testing.T, round int, c *store.ClientDB, mb wire.Mailbox, relayID peer.ID, acknowledged uint64) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("round %d: client: "+format, append([]any{round}, args...)...)
	}
	err := c.View(func(tx *store.ClientTx) error {
		n, err := tx.LocalSeq()
		if err != nil {
			return err
		}
		if n < acknowledged {
			fail("page %d is the last stored, %d were acknowledged", n, acknowledged)
		}
		var in, out []*store.Message
		if err := tx.ForEachMessage("peer", func(m *store.Message) error {
			if m.Direction == store.Incoming {
				in = append(in, m)
			} else {
				out = append(out, m)
			}
			return nil
		}); err != nil {
			return err
		}
		if uint64(len(in)) != n*crashPageSize {
			fail("%d incoming messages after page %d", len(in), n)
		}
		for i, m := range in {
			k := uint64(i + 1)
			if m.Counter != k || !bytes.Equal(m.Body, crashBody(k, 200)) || !m.Released {
				fail("incoming message %d not intact", k)
			}
			if seen, err := tx.Seen(crashCID(k)); !seen || err != nil {
				fail("incoming message %d without its seen mark: %v", k, err)
			}
		}
		if seen, _ := tx.Seen(crashCID(n*crashPageSize + 1)); seen {
			fail("a seen mark of page %d", n+1)
		}
		delivered := func(k uint64) bool { return k+3 <= n && (k+3)%5 == 0 }
		if uint64(len(out)) != n {
			fail("%d outgoing messages after page %d", len(out), n)
		}
		for i, m := range out {
			k := uint64(i + 1)
			want := store.StatusQueued
			if delivered(k) {
				want = store.StatusDelivered
			}
			if m.Counter != k || !bytes.Equal(m.Body, crashBody(k, 100)) || m.Status != want {
				fail("outgoing message %d: counter %d status %d, want status %d", k, m.Counter, m.Status, want)
			}
		}
		var obs []uint64
		if err := tx.ForEachOutbox(func(o *store.OutboxEntry) error {
			if o.Contact != "peer" || !bytes.Equal(o.Envelope, crashBody(o.Counter, 300)) || o.CID != wire.CIDOf(o.Envelope) || o.Status != store.StatusQueued {
				fail("outbox entry %d not intact", o.Counter)
			}
			obs = append(obs, o.Counter)
			return nil
		}); err != nil {
			return err
		}
		var wantOb []uint64
		for k := uint64(1); k <= n; k++ {
			if !delivered(k) {
				wantOb = append(wantOb, k)
			}
		}
		if !slices.Equal(obs, wantOb) {
			fail("outbox %v after page %d, want %v", obs, n, wantOb)
		}
		if n == 0 {
			return nil
		}
		st := strconv.FormatUint(n, 10)
		for _, hid := range [][32]byte{crashSessionIn, crashSessionOut} {
			s, err := tx.Session(hid)
			if err != nil || string(s.State) != st || s.Active != n {
				fail("session %q after page %d: %+v %v", hid[:3], n, s, err)
			}
		}
		if r, err := tx.RecvState("peer"); err != nil || r.Next != n*crashPageSize+1 || !slices.Equal(r.Acks, []uint64{n}) {
			fail("receive state after page %d: %+v %v", n, r, err)
		}
		if cur, err := tx.Cursor(mb); err != nil || cur.Get(relayID) != n {
			fail("cursor %d after page %d: %v", cur.Get(relayID), n, err)
		}
		if ct, err := tx.Contact("peer"); err != nil || ct.NextCounter != n+1 {
			fail("contact after page %d: %+v %v", n, ct, err)
		}
		var pend []uint64
		if err := tx.ForEachPending(func(seq uint64, r *store.PendingEntry, err error) error {
			if err != nil || r.CID != crashCID(seq) || !bytes.Equal(r.Envelope, crashBody(seq, 50)) {
				fail("pending entry %d not intact: %v", seq, err)
			}
			pend = append(pend, seq)
			return nil
		}); err != nil {
			return err
		}
		if !slices.Equal(pend, []uint64{n}) {
			fail("pending %v after page %d", pend, n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("round %d: client: %v", round, err)
	}
}
