package relay

import (
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

func TestRelayDepositPipelined(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(t, n)
	_, mb := mailboxKey(t)
	ds, err := c.OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	const count = 600 // more than MaxDepositInflight
	calls := make([]*rpc.DepositCall, count)
	envs := make([][]byte, count)
	for i := range count {
		envs[i] = envelope(t, mb, 1024, 0, uint64(i))
		if calls[i], err = ds.Send(ctxT(t), envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	seqs := map[uint64]bool{}
	for i, call := range calls {
		res, err := call.Wait(ctxT(t))
		if err != nil {
			t.Fatalf("deposit %d: %v", i, err)
		}
		if res.Duplicate || res.Receipt == nil || res.Replicas != 1 {
			t.Fatalf("deposit %d: %+v", i, res)
		}
		r := res.Receipt
		if r.Origin != n.ID() || r.Mailbox != mb || r.CID != wire.CIDOf(envs[i]) || seqs[r.Seq] {
			t.Fatalf("deposit %d: receipt %+v", i, r.Receipt)
		}
		if err := r.VerifyFor(envs[i]); err != nil {
			t.Fatalf("deposit %d: %v", i, err)
		}
		if r.Expiry == 0 {
			t.Fatal("effective expiry not set")
		}
		seqs[r.Seq] = true
	}
	// Sequence numbers are 1..count: in request order on one stream.
	for i, call := range calls {
		res, _ := call.Result()
		if res.Receipt.Seq != uint64(i+1) {
			t.Fatalf("deposit %d has seq %d", i, res.Receipt.Seq)
		}
	}
	// A duplicate stores nothing and returns the original receipt.
	res, err := ds.Deposit(ctxT(t), envs[7])
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := calls[7].Result()
	if !res.Duplicate || res.Receipt == nil || res.Receipt.Seq != orig.Receipt.Seq {
		t.Fatalf("duplicate: %+v", res)
	}
	if err := ds.Close(); err != nil {
		t.Fatal(err)
	}
	if got := n.Store().Stats().Entries; got != count {
		t.Fatalf("store holds %d entries, want %d", got, count)
	}
}

// rawDeposit writes DepositRequests on a new stream, closes its write
// side, and reads every answer until the relay closes the stream.
func rawDeposit(t testing.TB, c *rpc.Client, n *Node, envs ...[]byte) []*pb.DepositResponse {
	t.Helper()
	s, f := rawStream(t, c.Host, n.ID(), wire.ProtocolDeposit, rpc.MaxControlFrame)
	for i, env := range envs {
		if err := f.Buffer(&pb.DepositRequest{Id: uint64(100 + i), Envelope: env}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Flush(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	var out []*pb.DepositResponse
	for {
		var resp pb.DepositResponse
		if err := f.Read(&resp, 5*time.Second); err != nil {
			break
		}
		out = append(out, &resp)
	}
	return out
}

// expectStatuses checks answers' ids and statuses.
func expectStatuses(t testing.TB, got []*pb.DepositResponse, want ...pb.Status) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d answers, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].Id != uint64(100+i) || got[i].Status != want[i] {
			t.Fatalf("answer %d: id %d status %v, want id %d status %v (%s)", i, got[i].Id, got[i].Status, 100+i, want[i], got[i].Detail)
		}
	}
}

func TestRelayDepositChecks(t *testing.T) {
	clk := &clock{}
	p1, p2 := peerOf(t), peerOf(t)
	_, refusedMB := mailboxKey(t)
	n := startNode(t, func(c *Config) {
		c.Now = clk.Now
		c.MaxEnvelopeBytes = 2048
		c.Placement = placementFunc(func(mb wire.Mailbox) (bool, []peer.ID) {
			if mb == refusedMB {
				return false, []peer.ID{p1, p2}
			}
			return true, nil
		})
	})
	c := newClient(t, n)
	_, mb := mailboxKey(t)
	now := uint64(clk.Now().Unix())
	badLen := envelope(t, mb, 100, 0, 1)
	badLen[54] = 0xff
	v2 := envelope(t, mb, 100, 0, 2)
	v2[0] = 2
	badMB := envelope(t, mb, 100, 0, 3)
	badMB[1] = 0x13
	rejected := [][]byte{
		nil, badLen, v2, badMB,
		envelope(t, mb, 2049, 0, 4),
		envelope(t, mb, 100, now, 5),
		envelope(t, mb, 100, now+30*24*3600+1, 6),
		envelope(t, refusedMB, 100, 0, 7),
	}
	ok := envelope(t, mb, 100, now+30*24*3600, 8)
	got := rawDeposit(t, c, n, append(rejected, ok)...)
	expectStatuses(t, got,
		pb.Status_STATUS_MALFORMED, pb.Status_STATUS_MALFORMED, pb.Status_STATUS_UNSUPPORTED_VERSION, pb.Status_STATUS_MALFORMED,
		pb.Status_STATUS_TOO_LARGE, pb.Status_STATUS_EXPIRY_INVALID, pb.Status_STATUS_EXPIRY_INVALID,
		pb.Status_STATUS_NOT_REPLICA, pb.Status_STATUS_OK)
	if peers := got[7].ReplicaPeers; len(peers) != 2 || peer.ID(peers[0]) != p1 || peer.ID(peers[1]) != p2 {
		t.Fatalf("NOT_REPLICA names %v", peers)
	}
	r, err := wire.ParseSignedReceipt(got[8].Receipt)
	if err != nil || r.Expiry != now+30*24*3600 || r.Seq != 1 {
		t.Fatalf("receipt %+v, %v", r, err)
	}
	// Rejected envelopes changed nothing.
	assertUnknown(t, c, n, mb, rejected[1:7]...)
	assertUnknown(t, c, n, refusedMB, rejected[7])
	if got := n.Store().Stats().Entries; got != 1 {
		t.Fatalf("store holds %d entries, want 1", got)
	}
}

func assertUnknown(t testing.TB, c *rpc.Client, n *Node, mb wire.Mailbox, envs ...[]byte) {
	t.Helper()
	cids := make([]wire.CID, len(envs))
	for i, e := range envs {
		cids[i] = wire.CIDOf(e)
	}
	states, err := c.Status(ctxT(t), n.ID(), mb, cids)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range states {
		if s != pb.EntryState_ENTRY_STATE_UNKNOWN {
			t.Fatalf("rejected envelope %d is %v", i, s)
		}
	}
}

func peerOf(t testing.TB) peer.ID {
	id, err := peer.IDFromPrivateKey(newIdentity(t))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRelayDepositRateLimit(t *testing.T) {
	n := startNode(t, func(c *Config) { c.PeerDepositRate = 0.001; c.PeerDepositBurst = 3 })
	c := newClient(t, n)
	_, mb := mailboxKey(t)
	got := rawDeposit(t, c, n,
		envelope(t, mb, 100, 0, 1), envelope(t, mb, 100, 0, 2),
		envelope(t, mb, wire.MaxEnvelope, 0, 3), // TOO_LARGE: checked before the rate, takes no token
		envelope(t, mb, 100, 0, 4), envelope(t, mb, 100, 0, 5))
	expectStatuses(t, got, pb.Status_STATUS_OK, pb.Status_STATUS_OK, pb.Status_STATUS_TOO_LARGE, pb.Status_STATUS_OK, pb.Status_STATUS_RATE_LIMITED)
	if got[4].RetryAfterMs == 0 {
		t.Fatal("RATE_LIMITED without retry_after_ms")
	}
	// Through rpc: the typed error carries RetryAfter.
	ds, err := c.OpenDeposit(ctxT(t), n.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	_, err = ds.Deposit(ctxT(t), envelope(t, mb, 100, 0, 6))
	var e *rpc.Error
	if !errors.As(err, &e) || !errors.Is(err, wire.ErrRateLimited) || e.RetryAfter < time.Second {
		t.Fatalf("deposit = %v, want RATE_LIMITED with RetryAfter", err)
	}
	// Another peer has its own bucket.
	c2 := newClient(t, n)
	expectStatuses(t, rawDeposit(t, c2, n, envelope(t, mb, 100, 0, 7)), pb.Status_STATUS_OK)
}

func TestRelayDepositPostage(t *testing.T) {
	n := startNode(t, func(c *Config) { c.PostageDifficulty = 8 })
	c := newClient(t, n)
	_, mb := mailboxKey(t)
	e := wire.Envelope{Mailbox: mb, Ciphertext: []byte("hello")}
	for wire.PostageBits(&e) >= 8 { // make sure it is unsolved
		e.Postage++
	}
	unsolved, _ := e.Marshal()
	if err := wire.SolvePostage(ctxT(t), &e, 8); err != nil {
		t.Fatal(err)
	}
	solved, _ := e.Marshal()
	got := rawDeposit(t, c, n, unsolved, solved)
	expectStatuses(t, got, pb.Status_STATUS_POSTAGE_REQUIRED, pb.Status_STATUS_OK)
	if got[0].PostageDifficulty != 8 {
		t.Fatalf("POSTAGE_REQUIRED names difficulty %d", got[0].PostageDifficulty)
	}
	ds, _ := c.OpenDeposit(ctxT(t), n.ID())
	defer ds.Close()
	_, err := ds.Deposit(ctxT(t), unsolved)
	var re *rpc.Error
	if !errors.As(err, &re) || re.PostageDifficulty != 8 || !errors.Is(err, wire.ErrPostageRequired) {
		t.Fatalf("deposit = %v", err)
	}
}

func TestRelayDepositQuotas(t *testing.T) {
	n := startNode(t, func(c *Config) {
		c.MailboxQuotaEntries = 3
		c.MailboxQuotaBytes = 1 << 20
		c.StorageCapBytes = 6 * 1000
	})
	c := newClient(t, n)
	_, mb := mailboxKey(t)
	got := rawDeposit(t, c, n,
		envelope(t, mb, 1000, 0, 1), envelope(t, mb, 1000, 0, 2), envelope(t, mb, 1000, 0, 3),
		envelope(t, mb, 1000, 0, 4))
	expectStatuses(t, got, pb.Status_STATUS_OK, pb.Status_STATUS_OK, pb.Status_STATUS_OK, pb.Status_STATUS_MAILBOX_QUOTA)

	// The global cap: mb holds 3000 bytes, mb2 fills the rest; mb2 is then
	// the largest and is never evicted to make room for itself.
	_, mb2 := mailboxKey(t)
	n2 := startNode(t, func(c *Config) { c.StorageCapBytes = 5 * 1000 })
	c2 := newClient(t, n2)
	first := envelope(t, mb, 1000, 0, 10)
	got = rawDeposit(t, c2, n2,
		first, envelope(t, mb, 1000, 0, 11),
		envelope(t, mb2, 1000, 0, 12), envelope(t, mb2, 1000, 0, 13), envelope(t, mb2, 1000, 0, 14),
		envelope(t, mb2, 1000, 0, 15))
	expectStatuses(t, got, pb.Status_STATUS_OK, pb.Status_STATUS_OK, pb.Status_STATUS_OK, pb.Status_STATUS_OK,
		pb.Status_STATUS_OK, pb.Status_STATUS_STORAGE_FULL)
	// A deposit to the smaller mailbox evicts the largest's oldest entry.
	got = rawDeposit(t, c2, n2, envelope(t, mb, 1000, 0, 16))
	expectStatuses(t, got, pb.Status_STATUS_OK)
	states, err := c2.Status(ctxT(t), n2.ID(), mb2, []wire.CID{wire.CIDOf(envelope(t, mb2, 1000, 0, 12))})
	if err != nil || states[0] != pb.EntryState_ENTRY_STATE_EXPIRED {
		t.Fatalf("evicted entry: %v %v", states, err)
	}
}

// placementFunc adapts a function to Placement.
type placementFunc func(wire.Mailbox) (bool, []peer.ID)

func (f placementFunc) Accepts(mb wire.Mailbox) (bool, []peer.ID) { return f(mb) }
