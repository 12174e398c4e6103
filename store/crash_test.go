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

func openCrashStores(dir string) (*store.Log, *store.Client, error) {
	k, id := crashRelay()
	l, err := store.OpenLog(store.LogOptions{Dir: filepath.Join(dir, "log"), Origin: id, Signer: k, GCInterval: -1})
	if err != nil {
		return nil, nil, err
	}
	c, err := store.OpenClient(store.ClientOptions{Dir: filepath.Join(dir, "client"), EncryptionKey: crashKey})
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
					if _, err := l.Ack(ctx, mb, []wire.CID{sum}, nil); err != nil {
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
	// Client side: received messages with their session and cursor, and
	// outbox entries with their session, one after another.
	msgs, _ := c.Messages("peer", 0, 0)
	n := uint64(len(msgs))
	report("READY")
	for {
		n++
		var cur wire.Cursor
		cur.Advance(relayID, n)
		cid := wire.CIDOf([]byte("msg" + strconv.FormatUint(n, 10)))
		if _, err := c.StoreReceived(store.Received{
			Mailbox: mbs[0], CID: cid,
			Message: &store.Message{Contact: "peer", Counter: n, Body: bytes.Repeat([]byte{byte(n)}, 200)},
			Session: &store.Session{Contact: "peer", ID: "in", State: []byte(strconv.FormatUint(n, 10))},
			Cursor:  &cur,
		}); err != nil {
			os.Exit(5)
		}
		report("R %d", n)
		var id store.OutboxID
		copy(id[:], strconv.FormatUint(n, 10))
		if err := c.Enqueue(store.OutboxEntry{ID: id, Contact: "peer", Envelope: bytes.Repeat([]byte{1}, 300), NextAttempt: time.Now()},
			&store.Session{Contact: "peer", ID: "out", State: []byte(strconv.FormatUint(n, 10))}); err != nil {
			os.Exit(6)
		}
		report("O %d", n)
	}
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
	var maxR uint64
	outbox := map[uint64]bool{}
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
			case "R":
				n, _ := strconv.ParseUint(f[1], 10, 64)
				maxR = max(maxR, n)
			case "O":
				n, _ := strconv.ParseUint(f[1], 10, 64)
				outbox[n] = true
			}
		}
		checkCrashState(t, round, dir, appended, acked, imported, maxR, outbox)
	}
	t.Logf("%d kills; %d acknowledged appends, %d acks, %d imports, %d received, %d outbox entries verified",
		kills, len(appended), totalAcked, len(imported), maxR, len(outbox))
}

func checkCrashState(t *testing.T, round int, dir string, appended map[wire.CID]crashEntry, acked map[wire.CID]bool, imported map[wire.CID]uint64, maxR uint64, acknowledgedO map[uint64]bool) {
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
	// Client: every acknowledged received message is there; every stored
	// message came with its session, seen mark and cursor (never half).
	mbs := crashMailboxes()
	msgs, err := c.Messages("peer", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(msgs)) < maxR {
		t.Fatalf("round %d: %d messages stored, %d acknowledged", round, len(msgs), maxR)
	}
	for i, m := range msgs {
		if m.Counter != uint64(i+1) || len(m.Body) != 200 || m.Body[0] != byte(m.Counter) {
			t.Fatalf("round %d: message %d not intact", round, i)
		}
		if seen, _ := c.Seen(mbs[0], m.CID); !seen {
			t.Fatalf("round %d: message %d stored without its seen mark", round, m.Counter)
		}
	}
	n := uint64(len(msgs))
	cur, _ := c.Cursor(mbs[0])
	s, err := c.Session("peer", "in")
	if n > 0 && (err != nil || string(s.State) != strconv.FormatUint(n, 10) || cur.Get(relayID) != n) {
		t.Fatalf("round %d: %d messages but session %q cursor %d", round, n, s.State, cur.Get(relayID))
	}
	obs, _ := c.OutboxEntries()
	present := map[uint64]bool{}
	var top uint64
	for _, o := range obs {
		n, err := strconv.ParseUint(string(bytes.TrimRight(o.ID[:], "\x00")), 10, 64)
		if err != nil || len(o.Envelope) != 300 || o.Status != store.OutboxQueued {
			t.Fatalf("round %d: outbox entry %q not intact", round, o.ID)
		}
		present[n] = true
		top = max(top, n)
	}
	for n := range acknowledgedO {
		if !present[n] {
			t.Fatalf("round %d: acknowledged outbox entry %d lost", round, n)
		}
	}
	so, err := c.Session("peer", "out")
	if len(obs) > 0 && (err != nil || string(so.State) != strconv.FormatUint(top, 10)) {
		t.Fatalf("round %d: newest outbox entry %d but session %q", round, top, so.State)
	}
}
