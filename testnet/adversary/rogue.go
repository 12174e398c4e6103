package adversary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Rogue is a malicious relay: a real libp2p host (TCP on 127.0.0.1, Noise,
// yamux) with the Kademlia DHT in server mode under cairn's prefix, so that
// it lands in replica sets like any relay, and handlers for every cairn
// protocol written with package rpc's framing and wire/pb. It keeps what
// honest replicas replicate to it (entries with their genuine origin
// stamps, in memory) and answers clients according to its Behavior, which
// a test may change at any time.
//
// Left alone (the zero Behavior) it serves like an honest replica that
// refuses deposits with BUSY: sync pages with the entries the cursor does
// not cover and truthful watermarks, live pushes, info, status (UNKNOWN),
// acks (acknowledged, nothing deleted) and prekeys (none held, uploads
// claimed stored). It answers reconciliation with NOT_REPLICA.
type Rogue struct {
	key  crypto.PrivKey
	id   peer.ID
	host host.Host
	dht  *dht.IpfsDHT

	wg sync.WaitGroup

	mu       sync.Mutex
	behavior Behavior
	entries  map[wire.Mailbox][]*Held
	cids     map[wire.CID]bool
	subs     map[wire.Mailbox][]*rogueSub
	seen     []Observation
	counts   map[string]int
	closed   bool
}

// Held is an entry a rogue received from an honest replica, with its
// genuine origin stamp.
type Held struct {
	Envelope []byte
	Stamp    wire.SignedReceipt
	// Raw is the stamp's encoding as it arrived.
	Raw []byte
}

// Entry returns the held entry in its wire form (copies).
func (h *Held) Entry() *pb.Entry {
	return &pb.Entry{Envelope: bytes.Clone(h.Envelope), Stamp: bytes.Clone(h.Raw)}
}

// Observation is one request a rogue served: what a curious relay learns
// from its own traffic (SPEC.md §19).
type Observation struct {
	Peer     peer.ID
	Protocol string
	Mailbox  wire.Mailbox
}

// Behavior is how a rogue answers. A nil field keeps the default.
type Behavior struct {
	// Deposit answers one deposit. Default: BUSY with retry_after_ms 200
	// (the sender tries another replica).
	Deposit func(req *pb.DepositRequest) *pb.DepositResponse
	// Sync turns the truthful answer of a sync (the entries the cursor does
	// not cover, in (origin, seq) order, and the rogue's truthful
	// watermarks) into the single page it sends.
	Sync func(mb wire.Mailbox, entries []*pb.Entry, watermarks []*pb.Position) ([]*pb.Entry, []*pb.Position)
	// Push turns one newly held entry into the events pushed to the
	// mailbox's subscribers (nil or empty: push nothing).
	Push func(mb wire.Mailbox, e *pb.Entry) []*pb.Entry
	// Status answers a status request. Default: UNKNOWN for every CID.
	Status func(req *pb.StatusRequest) *pb.StatusResponse
	// PrekeyFetch answers a prekey fetch. Default: none held.
	PrekeyFetch func(req *pb.PrekeyFetch) *pb.PrekeyResponse
}

// NewRogue starts a rogue relay with key on 127.0.0.1 (an OS-chosen TCP
// port). Connect it to honest relays with Connect so that it enters their
// routing tables. Close stops it.
func NewRogue(key crypto.PrivKey) (*Rogue, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("rogue: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("rogue: host: %w", err)
	}
	d, err := dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(wire.DHTPrefix),
		dht.DisableProviders(),
		dht.DisableValues(),
		dht.BootstrapPeers(),
	)
	if err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("rogue: dht: %w", err)
	}
	r := &Rogue{
		key:     key,
		id:      id,
		host:    h,
		dht:     d,
		entries: map[wire.Mailbox][]*Held{},
		cids:    map[wire.CID]bool{},
		subs:    map[wire.Mailbox][]*rogueSub{},
		counts:  map[string]int{},
	}
	handlers := map[protocol.ID]func(network.Stream){
		wire.ProtocolInfo:      r.serveInfo,
		wire.ProtocolDeposit:   r.serveDeposit,
		wire.ProtocolSync:      r.serveSync,
		wire.ProtocolSubscribe: r.serveSubscribe,
		wire.ProtocolAck:       r.serveAck,
		wire.ProtocolStatus:    r.serveStatus,
		wire.ProtocolPrekeys:   r.servePrekeys,
		wire.ProtocolReplicate: r.serveReplicate,
		wire.ProtocolReconcile: r.serveReconcile,
	}
	for pid, f := range handlers {
		h.SetStreamHandler(pid, func(s network.Stream) {
			if !r.enter() {
				_ = s.Reset()
				return
			}
			defer r.wg.Done()
			f(s)
		})
	}
	return r, nil
}

func (r *Rogue) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	return true
}

// ID returns the rogue's peer ID.
func (r *Rogue) ID() peer.ID { return r.id }

// Key returns the rogue's private key (it signs its own stamps with it).
func (r *Rogue) Key() crypto.PrivKey { return r.key }

// Host returns the rogue's libp2p host.
func (r *Rogue) Host() host.Host { return r.host }

// RPC returns an rpc.Client on the rogue's host: the rogue uses it to
// speak to honest relays as a replica (replicate, reconcile).
func (r *Rogue) RPC() *rpc.Client { return &rpc.Client{Host: r.host, Timeout: rogueTimeout} }

// DHT returns the rogue's DHT.
func (r *Rogue) DHT() *dht.IpfsDHT { return r.dht }

// AddrInfo returns the rogue's peer ID and listen addresses.
func (r *Rogue) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: r.id, Addrs: r.host.Addrs()}
}

// Multiaddr returns the rogue's address with its /p2p/ part.
func (r *Rogue) Multiaddr() string {
	return r.host.Addrs()[0].Encapsulate(ma.StringCast("/p2p/" + r.id.String())).String()
}

// Connect connects the rogue to a peer (an honest relay).
func (r *Rogue) Connect(ctx context.Context, ai peer.AddrInfo) error {
	return r.host.Connect(ctx, ai)
}

// SetBehavior replaces how the rogue answers from now on.
func (r *Rogue) SetBehavior(b Behavior) {
	r.mu.Lock()
	r.behavior = b
	r.mu.Unlock()
}

func (r *Rogue) getBehavior() Behavior {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.behavior
}

// Held returns the entries the rogue holds for mb, in arrival order.
func (r *Rogue) Held(mb wire.Mailbox) []*Held {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries[mb])
}

// Count returns how many times the event name happened (the tests name
// events with Note; the rogue itself counts "deposit", "sync", "push",
// "replicated" and "subscribe").
func (r *Rogue) Count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[name]
}

// Note counts an event (a behaviour uses it to prove it misbehaved).
func (r *Rogue) Note(name string) {
	r.mu.Lock()
	r.counts[name]++
	r.mu.Unlock()
}

// Observations returns the requests served so far.
func (r *Rogue) Observations() []Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func (r *Rogue) observe(s network.Stream, proto string, mb []byte) {
	m, err := wire.ParseMailbox(mb)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.seen = append(r.seen, Observation{Peer: s.Conn().RemotePeer(), Protocol: proto, Mailbox: m})
	r.mu.Unlock()
}

// Stamp signs a receipt for envelope in mailbox mb as the rogue's own
// origin stamp (a valid signature by a key that is not an honest relay's).
func (r *Rogue) Stamp(envelope []byte, mb wire.Mailbox, seq uint64) ([]byte, error) {
	return SignStamp(r.key, envelope, mb, seq)
}

// SignStamp signs a one-receipt batch for envelope with key: a stamp whose
// origin is key's peer ID.
func SignStamp(key crypto.PrivKey, envelope []byte, mb wire.Mailbox, seq uint64) ([]byte, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	exp := uint64(time.Now().Add(time.Hour).Unix())
	if env, err := wire.ParseEnvelope(envelope); err == nil && env.Expiry != 0 {
		exp = env.Expiry
	}
	rs, err := wire.SignReceipts(key, []wire.Receipt{{
		Origin: id, Mailbox: mb, CID: wire.CIDOf(envelope), Seq: seq,
		StoredAtMs: uint64(time.Now().UnixMilli()), Expiry: exp,
	}})
	if err != nil {
		return nil, err
	}
	return rs[0].Marshal()
}

// Close stops the rogue: its DHT, its host (every stream is reset) and its
// handlers.
func (r *Rogue) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	subs := r.subs
	r.subs = map[wire.Mailbox][]*rogueSub{}
	r.mu.Unlock()
	for _, list := range subs {
		for _, s := range list {
			s.stop()
		}
	}
	err := r.dht.Close()
	if herr := r.host.Close(); err == nil {
		err = herr
	}
	r.wg.Wait()
	return err
}

// ---- handlers ----

const rogueTimeout = 10 * time.Second

func closeStream(s network.Stream) {
	_ = s.CloseWrite()
	_ = s.Close()
}

func (r *Rogue) serveInfo(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxControlFrame)
	var req pb.InfoRequest
	if err := f.Read(&req, rogueTimeout); err != nil {
		_ = s.Reset()
		return
	}
	_ = f.Write(&pb.InfoResponse{
		Status: pb.Status_STATUS_OK, Version: "rogue/0", MaxEnvelopeBytes: 65536,
		DefaultTtlSeconds: 7 * 86400, MaxTtlSeconds: 30 * 86400, ReplicationFactor: 3,
		MaxPageEntries: 512, ReceiptQuorum: 1,
	}, rogueTimeout)
	closeStream(s)
}

func (r *Rogue) serveDeposit(s network.Stream) {
	f := rpc.NewFramedBuffer(s, rpc.MaxDepositFrame, rpc.LargeWriteBuffer)
	for {
		var req pb.DepositRequest
		if err := f.Read(&req, rogueTimeout); err != nil {
			closeStream(s)
			return
		}
		if mb, err := wire.EnvelopeMailbox(req.Envelope); err == nil {
			r.observe(s, "deposit", mb[:])
		}
		r.Note("deposit")
		var resp *pb.DepositResponse
		if b := r.getBehavior(); b.Deposit != nil {
			resp = b.Deposit(&req)
		}
		if resp == nil {
			resp = &pb.DepositResponse{Status: pb.Status_STATUS_BUSY, RetryAfterMs: 200, Detail: "busy"}
		}
		resp.Id = req.Id
		if err := f.Write(resp, rogueTimeout); err != nil {
			_ = s.Reset()
			return
		}
	}
}

// truthful computes what an honest replica holding r's entries would send
// for a cursor: the uncovered entries in (origin, seq) order and the
// watermark of every origin (the highest seq up to which it holds every
// entry).
func (r *Rogue) truthful(mb wire.Mailbox, cur *wire.Cursor) ([]*pb.Entry, []*pb.Position) {
	held := r.Held(mb)
	slices.SortFunc(held, func(a, b *Held) int {
		if c := bytes.Compare([]byte(a.Stamp.Origin), []byte(b.Stamp.Origin)); c != 0 {
			return c
		}
		return cmpU64(a.Stamp.Seq, b.Stamp.Seq)
	})
	var out []*pb.Entry
	known := map[peer.ID]uint64{}
	var origins []peer.ID
	for _, h := range held {
		o := h.Stamp.Origin
		if _, ok := known[o]; !ok {
			origins = append(origins, o)
			known[o] = 0
		}
		if h.Stamp.Seq == known[o]+1 {
			known[o] = h.Stamp.Seq
		}
		if !cur.Covers(o, h.Stamp.Seq) {
			out = append(out, h.Entry())
		}
	}
	var wms []*pb.Position
	for _, o := range origins {
		if known[o] > 0 {
			wms = append(wms, &pb.Position{Origin: []byte(o), Seq: known[o]})
		}
	}
	return out, wms
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readAuthenticated reads an authenticated request (SPEC.md §8) into req
// and parses its mailbox. The rogue does not check the proof. Anything
// malformed resets the stream and returns false.
func readAuthenticated(s network.Stream, req interface {
	proto.Message
	GetMailbox() []byte
}) (*rpc.Framed, wire.Mailbox, bool) {
	f := rpc.NewFramed(s, rpc.MaxControlFrame)
	var a pb.Authenticated
	if err := f.Read(&a, rogueTimeout); err != nil {
		_ = s.Reset()
		return nil, wire.Mailbox{}, false
	}
	if err := proto.Unmarshal(a.Body, req); err != nil {
		_ = s.Reset()
		return nil, wire.Mailbox{}, false
	}
	mb, err := wire.ParseMailbox(req.GetMailbox())
	if err != nil {
		_ = s.Reset()
		return nil, wire.Mailbox{}, false
	}
	return f, mb, true
}

func (r *Rogue) serveSync(s network.Stream) {
	var req pb.SyncRequest
	f, mb, ok := readAuthenticated(s, &req)
	if !ok {
		return
	}
	r.observe(s, "sync", req.Mailbox)
	r.Note("sync")
	var cur wire.Cursor
	if len(req.Cursor) > 0 {
		var err error
		if cur, err = wire.ParseCursor(req.Cursor); err != nil {
			_ = s.Reset()
			return
		}
	}
	entries, wms := r.truthful(mb, &cur)
	if b := r.getBehavior(); b.Sync != nil {
		entries, wms = b.Sync(mb, entries, wms)
	}
	_ = f.Write(&pb.SyncPage{Status: pb.Status_STATUS_OK, Entries: entries, Watermarks: wms, Done: true}, rogueTimeout)
	closeStream(s)
}

// rogueSub is one live subscription to the rogue.
type rogueSub struct {
	ch   chan *pb.Entry
	quit chan struct{}
	once sync.Once
}

func (s *rogueSub) stop() { s.once.Do(func() { close(s.quit) }) }

func (r *Rogue) serveSubscribe(s network.Stream) {
	var req pb.SubscribeRequest
	f, mb, ok := readAuthenticated(s, &req)
	if !ok {
		return
	}
	r.observe(s, "subscribe", req.Mailbox)
	r.Note("subscribe")
	sub := &rogueSub{ch: make(chan *pb.Entry, 1024), quit: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = s.Reset()
		return
	}
	r.subs[mb] = append(r.subs[mb], sub)
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.subs[mb] = slices.DeleteFunc(r.subs[mb], func(x *rogueSub) bool { return x == sub })
		r.mu.Unlock()
	}()
	if err := f.Write(&pb.SubscribeEvent{Status: pb.Status_STATUS_OK}, rogueTimeout); err != nil {
		_ = s.Reset()
		return
	}
	peerDone := make(chan struct{})
	go func() {
		defer close(peerDone)
		var extra pb.SubscribeRequest
		_ = f.Read(&extra, 0)
		sub.stop()
	}()
	ka := time.NewTicker(5 * time.Second)
	defer ka.Stop()
	for {
		var ev *pb.SubscribeEvent
		select {
		case <-sub.quit:
			_ = s.Reset()
			<-peerDone
			return
		case e := <-sub.ch:
			ev = &pb.SubscribeEvent{Status: pb.Status_STATUS_OK, Entry: e}
		case <-ka.C:
			ev = &pb.SubscribeEvent{Status: pb.Status_STATUS_OK, KeepaliveMs: 5000}
		}
		if err := f.Write(ev, rogueTimeout); err != nil {
			_ = s.Reset()
			<-peerDone
			return
		}
	}
}

// PushRaw pushes an entry to every subscriber of mb as it is, whatever
// the Behavior (a test uses it to replay or inject).
func (r *Rogue) PushRaw(mb wire.Mailbox, e *pb.Entry) {
	r.mu.Lock()
	subs := slices.Clone(r.subs[mb])
	r.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- e:
		default:
		}
	}
}

// Subscribers returns how many live subscriptions mb has at the rogue.
func (r *Rogue) Subscribers(mb wire.Mailbox) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs[mb])
}

func (r *Rogue) serveAck(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxControlFrame)
	var a pb.Authenticated
	if err := f.Read(&a, rogueTimeout); err != nil {
		_ = s.Reset()
		return
	}
	var req pb.AckRequest
	_ = proto.Unmarshal(a.Body, &req)
	r.observe(s, "ack", req.Mailbox)
	_ = f.Write(&pb.AckResponse{Status: pb.Status_STATUS_OK, Acked: uint32(len(req.Cids))}, rogueTimeout)
	closeStream(s)
}

func (r *Rogue) serveStatus(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxControlFrame)
	var req pb.StatusRequest
	if err := f.Read(&req, rogueTimeout); err != nil {
		_ = s.Reset()
		return
	}
	r.observe(s, "status", req.Mailbox)
	var resp *pb.StatusResponse
	if b := r.getBehavior(); b.Status != nil {
		resp = b.Status(&req)
	}
	if resp == nil {
		resp = &pb.StatusResponse{Status: pb.Status_STATUS_OK, States: make([]pb.EntryState, len(req.Cids))}
	}
	_ = f.Write(resp, rogueTimeout)
	closeStream(s)
}

func (r *Rogue) servePrekeys(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxControlFrame)
	var req pb.PrekeyRequest
	if err := f.Read(&req, rogueTimeout); err != nil {
		_ = s.Reset()
		return
	}
	resp := &pb.PrekeyResponse{Status: pb.Status_STATUS_OK}
	switch k := req.Kind.(type) {
	case *pb.PrekeyRequest_Upload:
		var body pb.PrekeyUpload
		_ = proto.Unmarshal(k.Upload.GetBody(), &body)
		r.observe(s, "prekey-upload", body.Mailbox)
		// Claim a full store so that the client uploads nothing more.
		resp.RemainingX25519, resp.RemainingMlkem = 200, 200
	case *pb.PrekeyRequest_Fetch:
		r.observe(s, "prekey-fetch", k.Fetch.GetMailbox())
		if b := r.getBehavior(); b.PrekeyFetch != nil {
			if x := b.PrekeyFetch(k.Fetch); x != nil {
				resp = x
			}
		}
	}
	_ = f.Write(resp, rogueTimeout)
	closeStream(s)
}

func (r *Rogue) serveReplicate(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxEntryFrame)
	for {
		var req pb.ReplicateRequest
		if err := f.Read(&req, 0); err != nil {
			if errors.Is(err, rpc.ErrFrameTooLarge) || errors.Is(err, wire.ErrMalformed) {
				_ = s.Reset()
				return
			}
			closeStream(s)
			return
		}
		statuses := make([]pb.Status, len(req.Entries)+len(req.Tombstones))
		for i, e := range req.Entries {
			statuses[i] = pb.Status_STATUS_OK
			r.hold(e)
		}
		for i := range req.Tombstones {
			// Tombstones are ignored: the rogue keeps what was acked.
			statuses[len(req.Entries)+i] = pb.Status_STATUS_OK
		}
		if err := f.Write(&pb.ReplicateResponse{Id: req.Id, Status: pb.Status_STATUS_OK, Statuses: statuses}, rogueTimeout); err != nil {
			_ = s.Reset()
			return
		}
	}
}

// hold keeps a replicated entry (once per CID) and pushes it to the
// mailbox's subscribers through Behavior.Push.
func (r *Rogue) hold(e *pb.Entry) {
	st, err := wire.ParseSignedReceipt(e.Stamp)
	if err != nil {
		return
	}
	h := &Held{Envelope: bytes.Clone(e.Envelope), Stamp: *st, Raw: bytes.Clone(e.Stamp)}
	r.mu.Lock()
	if r.cids[st.CID] {
		r.mu.Unlock()
		return
	}
	r.cids[st.CID] = true
	r.entries[st.Mailbox] = append(r.entries[st.Mailbox], h)
	r.counts["replicated"]++
	b := r.behavior
	r.mu.Unlock()
	out := []*pb.Entry{h.Entry()}
	if b.Push != nil {
		out = b.Push(st.Mailbox, h.Entry())
	}
	for _, x := range out {
		r.Note("push")
		r.PushRaw(st.Mailbox, x)
	}
}

func (r *Rogue) serveReconcile(s network.Stream) {
	f := rpc.NewFramed(s, rpc.MaxEntryFrame)
	for {
		var m pb.ReconcileMessage
		if err := f.Read(&m, rogueTimeout); err != nil {
			closeStream(s)
			return
		}
		if err := f.Write(&pb.ReconcileMessage{Status: pb.Status_STATUS_NOT_REPLICA, Mailbox: m.Mailbox, Set: m.Set}, rogueTimeout); err != nil {
			_ = s.Reset()
			return
		}
	}
}
