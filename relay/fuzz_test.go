package relay

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-msgio/pbio"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Fuzz targets feed arbitrary bytes, as the content of an inbound stream,
// through each protocol handler (admission wrapper included) over an
// in-memory stream, against a started relay with a real store. Each checks
// that the handler returns, never panics, and writes only well-formed
// answers with a status. The seeds (testdata/fuzz) are valid and invalid
// requests signed at a fixed time; the fuzz relay's clock is fixed there.

var fuzzNow = time.Unix(1_800_000_000, 0)

// fuzzKeys are fixed so the seeds' proofs stay valid.
func fuzzKeys() (relayKey crypto.PrivKey, mailbox ed25519.PrivateKey) {
	rk, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)))
	if err != nil {
		panic(err)
	}
	return rk, ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
}

// memStream is an inbound stream whose remote side wrote in and closed.
type memStream struct {
	network.Stream // unimplemented methods panic
	remote         peer.ID

	mu     sync.Mutex
	in     *bytes.Reader
	out    bytes.Buffer
	closed bool
}

func (s *memStream) Read(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, network.ErrReset
	}
	return s.in.Read(b)
}

func (s *memStream) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, network.ErrReset
	}
	return s.out.Write(b)
}

func (s *memStream) output() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.out.Bytes())
}

func (s *memStream) Close() error                                 { return nil }
func (s *memStream) CloseWrite() error                            { return nil }
func (s *memStream) CloseRead() error                             { return nil }
func (s *memStream) Reset() error                                 { s.mu.Lock(); s.closed = true; s.mu.Unlock(); return nil }
func (s *memStream) ResetWithError(network.StreamErrorCode) error { return s.Reset() }
func (s *memStream) SetDeadline(time.Time) error                  { return nil }
func (s *memStream) SetReadDeadline(time.Time) error              { return nil }
func (s *memStream) SetWriteDeadline(time.Time) error             { return nil }
func (s *memStream) Scope() network.StreamScope                   { return &network.NullScope{} }
func (s *memStream) Conn() network.Conn                           { return memConn{remote: s.remote} }

type memConn struct {
	network.Conn
	remote peer.ID
}

func (c memConn) RemotePeer() peer.ID { return c.remote }

// fuzzNode starts a relay for fuzzing: fixed clock and identity, no rate
// limits in the way.
func fuzzNode(f *testing.F) *Node {
	rk, _ := fuzzKeys()
	return startNode(f, func(c *Config) {
		c.Identity = rk
		c.Now = func() time.Time { return fuzzNow }
		c.PeerDepositRate, c.PeerDepositBurst = 1e9, 1e9
		c.PeerRequestRate, c.PeerRequestBurst = 1e9, 1e9
		c.KeepaliveInterval = time.Hour
	})
}

// fuzzServe runs one handler on input and returns what it wrote.
func fuzzServe(n *Node, spec protocolSpec, input []byte) []byte {
	return fuzzServeFrom(n, spec, input, peer.ID("fuzz-peer"))
}

// fuzzServeFrom is fuzzServe with the stream coming from remote.
func fuzzServeFrom(n *Node, spec protocolSpec, input []byte, remote peer.ID) []byte {
	s := &memStream{remote: remote, in: bytes.NewReader(input)}
	n.serve(s, spec)
	return s.output()
}

// checkAnswers parses out as delimited frames of newMsg and checks each
// has a known, non-UNSPECIFIED status; it returns how many there were.
func checkAnswers(t *testing.T, out []byte, newMsg func() proto.Message) int {
	t.Helper()
	r := pbio.NewDelimitedReader(bytes.NewReader(out), rpc.MaxEntryFrame)
	count := 0
	for {
		m := newMsg()
		err := r.ReadMsg(m)
		if errors.Is(err, io.EOF) {
			return count
		}
		if err != nil {
			t.Fatalf("answer %d does not parse: %v", count, err)
		}
		st := m.(interface{ GetStatus() pb.Status }).GetStatus()
		if _, known := pb.Status_name[int32(st)]; !known || st == pb.Status_STATUS_UNSPECIFIED {
			t.Fatalf("answer %d has status %v", count, st)
		}
		count++
	}
}

func frames(msgs ...proto.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = rpc.AppendFrame(b, m); err != nil {
			panic(err)
		}
	}
	return b
}

func seedAuth(op wire.AuthOp, body proto.Message) *pb.Authenticated {
	rk, key := fuzzKeys()
	id, _ := peer.IDFromPrivateKey(rk)
	a, err := rpc.Authenticate(key, op, id, body, fuzzNow, bytes.NewReader(bytes.Repeat([]byte{byte(op)}, 16)))
	if err != nil {
		panic(err)
	}
	return a
}

func seedMailbox() wire.Mailbox {
	_, key := fuzzKeys()
	return wire.MailboxOf(key.Public().(ed25519.PublicKey))
}

func seedEnvelope(i byte) []byte {
	e := wire.Envelope{Mailbox: seedMailbox(), Ciphertext: bytes.Repeat([]byte{i}, 64)}
	b, _ := e.Marshal()
	return b
}

// seedEntry is an entry of the seed mailbox stamped by the fuzz relay at
// the fuzz clock.
func seedEntry(i byte) *pb.Entry {
	rk, _ := fuzzKeys()
	id, _ := peer.IDFromPrivateKey(rk)
	env := seedEnvelope(i)
	signed, err := wire.SignReceipts(rk, []wire.Receipt{{Origin: id, Mailbox: seedMailbox(), CID: wire.CIDOf(env), Seq: 1000 + uint64(i),
		StoredAtMs: uint64(fuzzNow.UnixMilli()), Expiry: uint64(fuzzNow.Add(time.Hour).Unix())}})
	if err != nil {
		panic(err)
	}
	stamp, _ := signed[0].Marshal()
	return &pb.Entry{Envelope: env, Stamp: stamp}
}

// seedTombstone is a well-formed tombstone of seedEntry(i): the mailbox
// owner's ack of its CID and its stamp.
func seedTombstone(i byte) *pb.Tombstone {
	_, mk := fuzzKeys()
	e := seedEntry(i)
	stamp, err := wire.ParseSignedReceipt(e.Stamp)
	if err != nil {
		panic(err)
	}
	sig, err := wire.SignOwnerAck(mk, []wire.CID{stamp.CID})
	if err != nil {
		panic(err)
	}
	acks, err := wire.OwnerAcks(mk.Public().(ed25519.PublicKey), []wire.CID{stamp.CID}, sig)
	if err != nil {
		panic(err)
	}
	ack, _ := acks[0].Marshal()
	return &pb.Tombstone{Mailbox: stamp.Mailbox[:], Cid: stamp.CID[:], Origin: []byte(stamp.Origin), Seq: stamp.Seq, Expiry: stamp.Expiry,
		OwnerAck: ack, Stamp: e.Stamp}
}

// fuzzSeeds are the seeds of each target, also written to testdata/fuzz
// by TestRelayWriteFuzzSeeds.
func fuzzSeeds() map[string][][]byte {
	mb := seedMailbox()
	var cur wire.Cursor
	cur.Advance(peer.ID("\x00\x04abcd"), 3)
	return map[string][][]byte{
		"FuzzRelayInfo": {frames(&pb.InfoRequest{}), {}, {0xff}},
		"FuzzRelayDeposit": {
			frames(&pb.DepositRequest{Id: 1, Envelope: seedEnvelope(1)}, &pb.DepositRequest{Id: 2, Envelope: seedEnvelope(2)}),
			frames(&pb.DepositRequest{Id: 3, Envelope: []byte{1, 2, 3}}),
			{2, 0x0f, 0x01},
		},
		"FuzzRelaySync": {
			frames(seedAuth(wire.AuthSync, &pb.SyncRequest{Mailbox: mb[:]})),
			frames(seedAuth(wire.AuthSync, &pb.SyncRequest{Mailbox: mb[:], Cursor: cur.Marshal(), AfterOrigin: []byte("\x00\x04abcd"), AfterSeq: 1, Limit: 2})),
			frames(&pb.Authenticated{Proof: []byte{1, 1}, Body: []byte{10, 1, 0}}),
		},
		"FuzzRelaySubscribe": {
			frames(seedAuth(wire.AuthSubscribe, &pb.SubscribeRequest{Mailbox: mb[:]})),
			frames(seedAuth(wire.AuthSubscribe, &pb.SubscribeRequest{Mailbox: mb[:]}), &pb.SubscribeRequest{}),
		},
		"FuzzRelayAck": {
			frames(seedAuth(wire.AuthAck, &pb.AckRequest{Mailbox: mb[:], Cids: [][]byte{make([]byte, 36)}, Signature: make([]byte, 64)})),
			frames(seedAuth(wire.AuthAck, &pb.AckRequest{Mailbox: mb[:], Cids: [][]byte{make([]byte, 36)}})),
		},
		"FuzzRelayStatus": {
			frames(&pb.StatusRequest{Mailbox: mb[:], Cids: [][]byte{wire.CIDOf(seedEnvelope(1)).Cid().Bytes()}}),
			frames(&pb.StatusRequest{Mailbox: []byte{1}}),
		},
		"FuzzRelayReplicate": {
			frames(&pb.ReplicateRequest{Id: 1, Entries: []*pb.Entry{seedEntry(1), seedEntry(2)},
				Tombstones: []*pb.Tombstone{{Mailbox: mb[:], Cid: wire.CIDOf(seedEnvelope(3)).Cid().Bytes(), Origin: []byte("\x00\x04abcd"), Seq: 7, Expiry: uint64(fuzzNow.Add(time.Hour).Unix())}}}),
			frames(&pb.ReplicateRequest{Id: 2, Entries: []*pb.Entry{{Envelope: seedEnvelope(4), Stamp: seedEntry(5).Stamp}}}, &pb.ReplicateRequest{Id: 3}),
			frames(&pb.ReplicateRequest{Id: 4, Entries: []*pb.Entry{seedEntry(7)}, Tombstones: []*pb.Tombstone{seedTombstone(7), seedTombstone(8)}}),
			{2, 0x0f, 0x01},
		},
		"FuzzRelayReconcile": {
			frames(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
				Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}, Entries: []*pb.Entry{seedEntry(6)}}),
			frames(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_TOMBSTONES,
				Ranges: []*pb.Range{{Upper: []byte{0x80}, Mode: pb.RangeMode_RANGE_MODE_FINGERPRINT, Fingerprint: make([]byte, 16), Count: 40}, {Mode: pb.RangeMode_RANGE_MODE_SKIP}},
				Want:   [][]byte{make([]byte, 32)}},
				&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_TOMBSTONES, Done: true}),
			frames(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: []byte{1, 2}}),
			frames(&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Set: pb.ReconcileSet_RECONCILE_SET_MAILBOXES,
				Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: [][]byte{make([]byte, 32)}}}, Mailboxes: [][]byte{mb[:]}},
				&pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Mailbox: mb[:], Set: pb.ReconcileSet_RECONCILE_SET_ENTRIES,
					Ranges: []*pb.Range{{Mode: pb.RangeMode_RANGE_MODE_IDS}}}),
		},
		"FuzzRelayPrekeys": {
			frames(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Fetch{Fetch: &pb.PrekeyFetch{Mailbox: mb[:]}}}),
			frames(&pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: seedAuth(wire.AuthPrekeys, &pb.PrekeyUpload{Mailbox: mb[:], Prekeys: [][]byte{{1, 1, 0, 0, 0, 1}}})}}),
		},
	}
}

// TestRelayWriteFuzzSeeds rewrites testdata/fuzz from fuzzSeeds when run
// with CAIRN_WRITE_FUZZ_SEEDS=1; otherwise it checks the files are current.
func TestRelayWriteFuzzSeeds(t *testing.T) {
	for name, seeds := range fuzzSeeds() {
		for i, seed := range seeds {
			path := filepath.Join("testdata", "fuzz", name, fmt.Sprintf("seed-%d", i))
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", seed)
			if os.Getenv("CAIRN_WRITE_FUZZ_SEEDS") == "1" {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != content {
				t.Errorf("%s is missing or stale: run CAIRN_WRITE_FUZZ_SEEDS=1 go test -run TestRelayWriteFuzzSeeds ./relay", path)
			}
		}
	}
}

func fuzzTarget(f *testing.F, name string, spec func(n *Node) protocolSpec, newMsg func() proto.Message, maxAnswers func(input []byte) int) {
	for _, s := range fuzzSeeds()[name] {
		f.Add(s)
	}
	n := fuzzNode(f)
	sp := spec(n)
	f.Fuzz(func(t *testing.T, input []byte) {
		out := fuzzServe(n, sp, input)
		count := checkAnswers(t, out, newMsg)
		if maxAnswers != nil && count > maxAnswers(input) {
			t.Fatalf("%d answers for the input", count)
		}
	})
}

func one([]byte) int { return 1 }

func FuzzRelayInfo(f *testing.F) {
	fuzzTarget(f, "FuzzRelayInfo", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolInfo, "info", replyInfo, n.serveInfo}
	}, func() proto.Message { return &pb.InfoResponse{} }, one)
}

func FuzzRelayDeposit(f *testing.F) {
	fuzzTarget(f, "FuzzRelayDeposit", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolDeposit, "deposit", nil, n.serveDeposit}
	}, func() proto.Message { return &pb.DepositResponse{} }, func(in []byte) int { return len(in) })
}

func FuzzRelaySync(f *testing.F) {
	fuzzTarget(f, "FuzzRelaySync", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolSync, "sync", replySync, n.serveSync}
	}, func() proto.Message { return &pb.SyncPage{} }, nil)
}

func FuzzRelaySubscribe(f *testing.F) {
	fuzzTarget(f, "FuzzRelaySubscribe", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolSubscribe, "subscribe", replySubscribe, n.serveSubscribe}
	}, func() proto.Message { return &pb.SubscribeEvent{} }, func([]byte) int { return 2 })
}

func FuzzRelayAck(f *testing.F) {
	fuzzTarget(f, "FuzzRelayAck", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolAck, "ack", replyAck, n.serveAck}
	}, func() proto.Message { return &pb.AckResponse{} }, one)
}

func FuzzRelayStatus(f *testing.F) {
	fuzzTarget(f, "FuzzRelayStatus", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolStatus, "status", replyStatus, n.serveStatus}
	}, func() proto.Message { return &pb.StatusResponse{} }, one)
}

// fuzzTargetFrom is fuzzTarget for streams from the relay's own peer ID,
// which its replica checks accept, so that inputs reach the store.
func fuzzTargetFrom(f *testing.F, name string, spec func(n *Node) protocolSpec, newMsg func() proto.Message) {
	for _, s := range fuzzSeeds()[name] {
		f.Add(s)
	}
	n := fuzzNode(f)
	sp := spec(n)
	f.Fuzz(func(t *testing.T, input []byte) {
		checkAnswers(t, fuzzServeFrom(n, sp, input, n.ID()), newMsg)
	})
}

func FuzzRelayReplicate(f *testing.F) {
	fuzzTargetFrom(f, "FuzzRelayReplicate", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolReplicate, "replicate", nil, n.serveReplicate}
	}, func() proto.Message { return &pb.ReplicateResponse{} })
}

func FuzzRelayReconcile(f *testing.F) {
	fuzzTargetFrom(f, "FuzzRelayReconcile", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolReconcile, "reconcile", replyReconcile, n.serveReconcile}
	}, func() proto.Message { return &pb.ReconcileMessage{} })
}

func FuzzRelayPrekeys(f *testing.F) {
	fuzzTarget(f, "FuzzRelayPrekeys", func(n *Node) protocolSpec {
		return protocolSpec{wire.ProtocolPrekeys, "prekeys", replyPrekeys, n.servePrekeys}
	}, func() proto.Message { return &pb.PrekeyResponse{} }, one)
}
