package wire

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/libp2p/go-msgio/pbio"
	"github.com/multiformats/go-varint"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire/pb"
)

// controlMessages lists every message of wire/pb/cairn.proto.
var controlMessages = []func() proto.Message{
	func() proto.Message { return new(pb.Authenticated) },
	func() proto.Message { return new(pb.Entry) },
	func() proto.Message { return new(pb.Position) },
	func() proto.Message { return new(pb.InfoRequest) },
	func() proto.Message { return new(pb.InfoResponse) },
	func() proto.Message { return new(pb.DepositRequest) },
	func() proto.Message { return new(pb.DepositResponse) },
	func() proto.Message { return new(pb.SyncRequest) },
	func() proto.Message { return new(pb.SyncPage) },
	func() proto.Message { return new(pb.SubscribeRequest) },
	func() proto.Message { return new(pb.SubscribeEvent) },
	func() proto.Message { return new(pb.AckRequest) },
	func() proto.Message { return new(pb.AckResponse) },
	func() proto.Message { return new(pb.StatusRequest) },
	func() proto.Message { return new(pb.StatusResponse) },
	func() proto.Message { return new(pb.PrekeyRequest) },
	func() proto.Message { return new(pb.PrekeyUpload) },
	func() proto.Message { return new(pb.PrekeyFetch) },
	func() proto.Message { return new(pb.PrekeyResponse) },
	func() proto.Message { return new(pb.Tombstone) },
	func() proto.Message { return new(pb.ReplicateRequest) },
	func() proto.Message { return new(pb.ReplicateResponse) },
	func() proto.Message { return new(pb.Range) },
	func() proto.Message { return new(pb.ReconcileMessage) },
}

// delimited is msg in pbio's framing: uvarint length ‖ message.
func delimited(t testing.TB, msgs ...proto.Message) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := pbio.NewDelimitedWriter(&buf)
	for _, m := range msgs {
		if err := w.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// fixtureControlFrames are frames of real messages carrying the golden
// structures: the seeds of FuzzControlFrame.
func fixtureControlFrames(t testing.TB) []seedInput {
	t.Helper()
	env := mustMarshalEnvelope(t, fixtureEnvelope(0))
	srs := mustSign(t, relayA.priv, fixtureReceipts(t, 2))
	stamp := mustMarshal(t, &srs[0])
	cur := cursorOf(t, Position{relayA.id, 3})
	sync := &pb.SyncRequest{Mailbox: fixtureMailbox[:], Cursor: cur.Marshal(), AfterOrigin: []byte(relayA.id), AfterSeq: 2, Limit: 10}
	body, err := proto.Marshal(sync)
	if err != nil {
		t.Fatal(err)
	}
	proof := mustMarshal(t, fixtureProof(t, AuthSync, body))
	cid := CIDOf(env)
	entry := &pb.Entry{Envelope: env, Stamp: stamp}
	return []seedInput{
		{"deposit-request", delimited(t, &pb.DepositRequest{Id: 1, Envelope: env})},
		{"deposit-response", delimited(t, &pb.DepositResponse{Id: 1, Status: pb.Status_STATUS_OK, Receipt: stamp, Replicas: 1})},
		{"authenticated-sync", delimited(t, &pb.Authenticated{Proof: proof, Body: body})},
		{"sync-page", delimited(t, &pb.SyncPage{Status: pb.Status_STATUS_OK, Entries: []*pb.Entry{entry}, Watermarks: []*pb.Position{{Origin: []byte(relayA.id), Seq: 1}}, Done: true})},
		{"ack-request", delimited(t, &pb.AckRequest{Mailbox: fixtureMailbox[:], Cids: [][]byte{cid[:]}, Signature: make([]byte, 64)})},
		{"status-response", delimited(t, &pb.StatusResponse{Status: pb.Status_STATUS_OK, States: []pb.EntryState{pb.EntryState_ENTRY_STATE_STORED, pb.EntryState_ENTRY_STATE_ACKED}})},
		{"info", delimited(t, &pb.InfoRequest{}, &pb.InfoResponse{Status: pb.Status_STATUS_OK, Version: "cairn/test", MaxEnvelopeBytes: 65536})},
		{"replicate-request", delimited(t, &pb.ReplicateRequest{Id: 7, Entries: []*pb.Entry{entry}})},
		{"oversized", varint.ToUvarint(MaxControlFrame + 1)},
		{"oversized-1GiB", append(varint.ToUvarint(1<<30), 0x0a, 0x00)},
		{"non-minimal-length", unhex("8000")},
		{"truncated-frame", delimited(t, &pb.DepositRequest{Id: 1, Envelope: env})[:20]},
	}
}

func TestControlFrameSeeds(t *testing.T) {
	checkSeeds(t, "FuzzControlFrame", fixtureControlFrames(t))
}

// countingReader serves data, then endless zeros, counting what is read.
type countingReader struct {
	data []byte
	read int
}

func (r *countingReader) Read(p []byte) (int, error) {
	n := 0
	if r.read < len(r.data) {
		n = copy(p, r.data[r.read:])
	} else {
		clear(p)
		n = len(p)
	}
	r.read += n
	return n, nil
}

func TestControlFrameOversized(t *testing.T) {
	// A frame that declares 1 GiB is refused after its length prefix,
	// before anything near that size is read or allocated.
	r := &countingReader{data: varint.ToUvarint(1 << 30)}
	pr := pbio.NewDelimitedReader(r, MaxControlFrame)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := pr.ReadMsg(new(pb.DepositRequest))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("1 GiB frame: %v, want io.ErrShortBuffer", err)
	}
	if r.read > 64<<10 {
		t.Errorf("read %d bytes of a refused frame", r.read)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Errorf("allocated %d bytes to refuse a frame", d)
	}

	// The limit is inclusive: a frame of exactly MaxControlFrame bytes is
	// read, one more is refused.
	for _, tt := range []struct {
		size int
		ok   bool
	}{{MaxControlFrame, true}, {MaxControlFrame + 1, false}} {
		// DepositRequest{id: 1 (2 bytes), envelope: n bytes (1 + 3 + n)}.
		m := &pb.DepositRequest{Id: 1, Envelope: make([]byte, tt.size-6)}
		if s := proto.Size(m); s != tt.size {
			t.Fatalf("test frame is %d bytes, want %d", s, tt.size)
		}
		err := pbio.NewDelimitedReader(bytes.NewReader(delimited(t, m)), MaxControlFrame).ReadMsg(new(pb.DepositRequest))
		if (err == nil) != tt.ok {
			t.Errorf("frame of %d bytes: %v", tt.size, err)
		}
	}
	// Frames that carry entries get MaxEntryFrame.
	m := &pb.SyncPage{Entries: []*pb.Entry{{Envelope: make([]byte, MaxControlFrame)}}}
	frame := delimited(t, m)
	if err := pbio.NewDelimitedReader(bytes.NewReader(frame), MaxControlFrame).ReadMsg(new(pb.SyncPage)); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("entry frame under MaxControlFrame: %v", err)
	}
	if err := pbio.NewDelimitedReader(bytes.NewReader(frame), MaxEntryFrame).ReadMsg(new(pb.SyncPage)); err != nil {
		t.Errorf("entry frame under MaxEntryFrame: %v", err)
	}
}

func FuzzControlFrame(f *testing.F) {
	for _, s := range fixtureControlFrames(f) {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Every message type decodes any bytes without panicking, and what
		// it decodes survives a round trip.
		for _, newMsg := range controlMessages {
			m := newMsg()
			if proto.Unmarshal(b, m) != nil {
				continue
			}
			enc, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("%T: Marshal of a decoded message: %v", m, err)
			}
			m2 := newMsg()
			if err := proto.Unmarshal(enc, m2); err != nil || !proto.Equal(m, m2) {
				t.Fatalf("%T: round trip: %v", m, err)
			}
		}
		// As a stream: frames read in turn as each message type, with the
		// size-bounded reader every protocol uses.
		length, _, lerr := varint.FromUvarint(b)
		r := pbio.NewDelimitedReader(bytes.NewReader(b), MaxControlFrame)
		for i := 0; ; i++ {
			err := r.ReadMsg(controlMessages[i%len(controlMessages)]())
			if i == 0 && lerr == nil && length > MaxControlFrame && !errors.Is(err, io.ErrShortBuffer) {
				t.Fatalf("frame declaring %d bytes: %v, want io.ErrShortBuffer", length, err)
			}
			if err != nil {
				if strings.Contains(err.Error(), "panic") {
					t.Fatalf("decoder panicked: %v", err)
				}
				break
			}
		}
	})
}
