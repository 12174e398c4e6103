package client

import (
	"context"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// wmRelay is a relay that answers every sync with no entries and the
// watermarks it is given, and records the cursor of each request.
type wmRelay struct {
	h   host.Host
	wms []wire.Position

	mu      sync.Mutex
	cursors []wire.Cursor
}

func newWMRelay(t *testing.T, wms ...wire.Position) *wmRelay {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	r := &wmRelay{h: h, wms: wms}
	h.SetStreamHandler(wire.ProtocolSync, func(s network.Stream) {
		defer s.Close()
		f := rpc.NewFramed(s, rpc.MaxControlFrame)
		var auth pb.Authenticated
		var req pb.SyncRequest
		if f.Read(&auth, 5*time.Second) != nil || proto.Unmarshal(auth.Body, &req) != nil {
			_ = s.Reset()
			return
		}
		var cur wire.Cursor
		if len(req.Cursor) > 0 {
			if cur, err = wire.ParseCursor(req.Cursor); err != nil {
				_ = s.Reset()
				return
			}
		}
		r.mu.Lock()
		r.cursors = append(r.cursors, cur)
		r.mu.Unlock()
		page := &pb.SyncPage{Status: pb.Status_STATUS_OK, Done: true}
		for _, w := range r.wms {
			page.Watermarks = append(page.Watermarks, &pb.Position{Origin: []byte(w.Origin), Seq: w.Seq})
		}
		_ = f.Write(page, 5*time.Second)
	})
	return r
}

// requests returns the cursors of the syncs the relay was asked for.
func (r *wmRelay) requests() []wire.Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cursors)
}

func (r *wmRelay) last(t *testing.T) wire.Cursor {
	t.Helper()
	rs := r.requests()
	if len(rs) == 0 {
		t.Fatal("relay was not synced")
	}
	return rs[len(rs)-1]
}

func randomPeer(t *testing.T) peer.ID {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startWith starts a client that knows the relays' addresses (and no
// bootstrap relay, so its own loops sync nothing).
func startWith(t *testing.T, cfg Config, relays ...*wmRelay) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range relays {
		c.net.host.Peerstore().AddAddrs(r.h.ID(), r.h.Addrs(), peerstore.PermanentAddrTTL)
	}
	return c
}

func round(t *testing.T, c *Client, relays ...*wmRelay) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var ids []peer.ID
	for _, r := range relays {
		ids = append(ids, r.h.ID())
	}
	if err := c.syncRound(ctx, ids); err != nil {
		t.Fatal(err)
	}
}

// A relay's watermarks change only what the client asks of that relay
// (SPEC.md §7): a replica that claims W(o) = 3 while it withholds o:2 does
// not make the honest replica skip o:2, neither in the same round nor
// after a restart; each relay is asked from its own durable cursor.
func TestCursorPerRelay(t *testing.T) {
	origin := randomPeer(t)
	liar := newWMRelay(t, wire.Position{Origin: origin, Seq: 3})
	honest := newWMRelay(t, wire.Position{Origin: origin, Seq: 1})
	cfg := Config{DataDir: t.TempDir()}

	c := startWith(t, cfg, liar, honest)
	round(t, c, liar, honest)
	if got := honest.last(t); got.Covers(origin, 2) {
		t.Fatalf("the honest relay was asked from cursor %v: the liar's watermark made it skip %s:2", got.String(), origin.ShortString())
	}
	round(t, c, liar, honest)
	if got := honest.last(t); got.Get(origin) != 1 {
		t.Fatalf("second round: honest relay asked from %v, want its own watermark %s:1", got.String(), origin.ShortString())
	}
	if got := liar.last(t); got.Get(origin) != 3 {
		t.Fatalf("second round: the other relay asked from %v, want its own watermark %s:3", got.String(), origin.ShortString())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The cursors are durable, per relay.
	c = startWith(t, cfg, liar, honest)
	defer c.Close()
	round(t, c, honest, liar)
	if got := honest.last(t); got.Get(origin) != 1 {
		t.Fatalf("after a restart: honest relay asked from %v, want %s:1", got.String(), origin.ShortString())
	}
	if got := liar.last(t); got.Get(origin) != 3 {
		t.Fatalf("after a restart: the other relay asked from %v, want %s:3", got.String(), origin.ShortString())
	}
}

// A sync round that will report a gap syncs every replica from the empty
// cursor: whatever a relay's watermarks once said, a replica that holds a
// missing entry sends it before the client gives up on it (SPEC.md §17.5).
func TestGapRoundSyncsFromEmptyCursor(t *testing.T) {
	origin := randomPeer(t)
	r := newWMRelay(t, wire.Position{Origin: origin, Seq: 5})
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = time.Now()
	now := func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		return clock.t
	}
	c := startWith(t, Config{Now: now, GapGrace: time.Minute}, r)
	defer c.Close()
	round(t, c, r)
	round(t, c, r)
	if got := r.last(t); got.Get(origin) != 5 {
		t.Fatalf("asked from %v, want %s:5", got.String(), origin.ShortString())
	}
	// A conversation with a hole: counter 1 missing, 2 held.
	c.mu.Lock()
	c.recv["someone"] = &store.RecvState{Next: 1, Above: []uint64{2}, HoleSinceMs: uint64(now().UnixMilli())}
	c.mu.Unlock()
	round(t, c, r)
	if got := r.last(t); got.Get(origin) != 5 {
		t.Fatalf("within the gap's grace period: asked from %v, want %s:5", got.String(), origin.ShortString())
	}
	clock.Lock()
	clock.t = clock.t.Add(time.Minute)
	clock.Unlock()
	round(t, c, r)
	if got := r.last(t); got.Len() != 0 {
		t.Fatalf("the round that reports the gap asked from %v, want the empty cursor", got.String())
	}
	c.mu.Lock()
	reported := c.recv["someone"].HoleSinceMs == 0
	c.mu.Unlock()
	if !reported {
		t.Fatal("gap not reported after the round")
	}
	// The relay's cursor was kept.
	round(t, c, r)
	if got := r.last(t); got.Get(origin) != 5 {
		t.Fatalf("after the gap report: asked from %v, want %s:5", got.String(), origin.ShortString())
	}
}
