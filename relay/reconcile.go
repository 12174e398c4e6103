package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/relay/reconcile"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// reconcile — /cairn/reconcile/1.0.0 (SPEC.md §10.10): anti-entropy between
// two replicas by range-based set reconciliation (package relay/reconcile
// over the store's reconciliation indexes).
//
// A stream carries exchanges, one per (mailbox, set), ENTRIES then
// TOMBSTONES for each mailbox the initiator names, each exchange at most
// once per stream. In an exchange the two sides take turns; a turn is one
// or more frames: prelude frames that carry only items (entries or
// tombstones) and done = false, then one turn frame. A side owes an answer
// to a turn frame that has a range other than SKIP or a non-empty want;
// every other turn frame has done = true and ends the exchange. Answering,
// a side stores the items it received (each entry verified as in §10.9),
// answers the ranges with the engine, asks (want) for the items the engine
// found it lacks, and sends the items the engine found the peer lacks plus
// those the peer's want asked for.
//
// The first turn frame of each side in an ENTRIES exchange carries, in
// watermarks, its own origin's known_through for the mailbox, read before
// the frame's ranges were computed. After both exchanges of a mailbox ended and every
// item a side asked for is now known to it (stored, acked or expired)
// and nothing it received failed to store, the side adopts the peer's
// known_through for the peer's own origin (store.AdoptKnownThrough).

// Limits of one exchange beyond SPEC.md §12's MaxReconcileRounds.
const (
	// maxPreludes bounds the item-only frames before one turn frame.
	maxPreludes = 256
	// reconcileItemBudget bounds the item bytes of one frame, leaving room
	// for ranges and want within MaxEntryFrame.
	reconcileItemBudget = rpc.MaxEntryFrame - (1 << 20)
)

// Summary exchanges (SPEC.md §10.10).
const (
	// maxSummaryMailboxes bounds the mailboxes one side sends in a summary
	// exchange (the rest are found by a later pass, once these are
	// reconciled); receiving more is a protocol violation.
	maxSummaryMailboxes = 65536
	// summaryMinInterval is the least time between two summary exchanges
	// a relay answers for one peer (each costs a pass over its mailboxes).
	summaryMinInterval = time.Second
)

// errReconcileProtocol is a peer breaking the turn rules.
var errReconcileProtocol = errors.New("reconcile: protocol violation")

// storeSource is the reconciliation engine's view of one set of one
// mailbox in the store's indexes.
type storeSource struct {
	st  *store.Log
	mb  wire.Mailbox
	set store.Set
}

func (s *storeSource) Fingerprint(lower, upper []byte) (wire.FingerprintAcc, error) {
	return s.st.RangeFingerprint(s.mb, s.set, lower, upper)
}

func (s *storeSource) Items(lower, upper []byte) ([]reconcile.Item, error) {
	return s.st.RangeItems(s.mb, s.set, lower, upper, 0)
}

// Split splits with the store and shortens each inner bound: the store
// returns the first digest of the next subrange, and the shortest prefix
// p of it with no item in [p, digest) separates the two subranges just as
// well (a binary search over the prefix length, one fingerprint query
// each).
func (s *storeSource) Split(lower, upper []byte, k int) ([]reconcile.Sub, error) {
	subs, err := s.st.SplitRange(s.mb, s.set, lower, upper, k)
	if err != nil {
		return nil, err
	}
	out := make([]reconcile.Sub, len(subs))
	for i, sub := range subs {
		out[i] = reconcile.Sub{Upper: sub.Upper, Acc: sub.Acc}
		if i == len(subs)-1 || len(sub.Upper) != 32 {
			continue
		}
		lo, hi := 1, 32 // the full digest always separates
		for lo < hi {
			mid := (lo + hi) / 2
			acc, err := s.st.RangeFingerprint(s.mb, s.set, sub.Upper[:mid], sub.Upper)
			if err != nil {
				return nil, err
			}
			if acc.Count() == 0 {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		// A shorter bound must still be above the previous one.
		if i == 0 || len(out[i-1].Upper) == 0 || padLess(out[i-1].Upper, sub.Upper[:lo]) {
			out[i].Upper = sub.Upper[:lo:lo]
		}
	}
	return out, nil
}

// padLess compares two bounds padded with zero bytes to 32.
func padLess(a, b []byte) bool {
	var pa, pb [32]byte
	copy(pa[:], a)
	copy(pb[:], b)
	return string(pa[:]) < string(pb[:])
}

func setOf(s pb.ReconcileSet) (store.Set, bool) {
	switch s {
	case pb.ReconcileSet_RECONCILE_SET_ENTRIES:
		return store.SetEntries, true
	case pb.ReconcileSet_RECONCILE_SET_TOMBSTONES:
		return store.SetTombstones, true
	}
	return 0, false
}

// hasWork reports whether a frame asks for an answer.
func hasWork(m *pb.ReconcileMessage) bool {
	return len(m.Want) > 0 || (len(m.Ranges) > 0 && !reconcile.Complete(m.Ranges))
}

// session is one side's state for one mailbox on one stream.
type session struct {
	n    *Node
	peer peer.ID
	mb   wire.Mailbox
	// peerCurrent: the peer is a current replica in this relay's view;
	// its entries of origins that are not replicas here are then accepted
	// if the origin is among the mailbox's 2R closest relays.
	peerCurrent bool
	view        *replicaView

	peerKT, ownKT uint64
	havePeerKT    bool
	failed        bool // something received could not be stored
	wanted        map[[32]byte]store.Set
	exchanges     int // exchanges that ended normally
	received      int // items received
	sent          int // items sent
	// sum is set on the session of a summary exchange (mb is then zero).
	sum *summary
}

// summary is one side's state in a summary exchange (SPEC.md §10.10): its
// items, each standing for one mailbox it shares with the peer, and the
// mailboxes found to differ — those of the items it sent (the peer lacked
// them) and those the peer sent.
type summary struct {
	set       *reconcile.Set
	mailboxOf map[[32]byte]wire.Mailbox
	diff      map[wire.Mailbox]bool
	sent, got int // mailboxes sent and received
}

// summaryLimiter remembers when each peer last started a summary exchange
// with this relay as responder, and bounds all peers' together.
type summaryLimiter struct {
	mu   sync.Mutex
	last map[peer.ID]time.Time
	min  time.Duration // 0: summaryMinInterval (tests change it)
	all  *rate.Limiter // Config.SummaryRate; nil: no bound
}

func newSummaryLimiter(r rate.Limit) summaryLimiter {
	return summaryLimiter{all: rate.NewLimiter(r, max(1, int(math.Ceil(float64(r)))))}
}

// allow says whether p may start a summary exchange now.
func (l *summaryLimiter) allow(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil || len(l.last) > 4096 {
		l.last = make(map[peer.ID]time.Time)
	}
	least := l.min
	if least == 0 {
		least = summaryMinInterval
	}
	if t, ok := l.last[p]; ok && now.Sub(t) < least {
		return false
	}
	if l.all != nil && !l.all.AllowN(now, 1) {
		return false
	}
	l.last[p] = now
	return true
}

// summarySession builds this side's summary of the mailboxes it shares with
// p (SPEC.md §10.10), one item per mailbox: those of shared, or if shared
// is nil those sharedWith(p) finds.
func (n *Node) summarySession(p peer.ID, shared []wire.Mailbox) (*session, error) {
	if shared == nil {
		shared = n.sharedWith(p)
	}
	sum := &summary{mailboxOf: map[[32]byte]wire.Mailbox{}, diff: map[wire.Mailbox]bool{}}
	var items []reconcile.Item
	for _, mb := range shared {
		en, tb, err := n.store.Summary(mb)
		if err != nil {
			return nil, fmt.Errorf("summary of %s: %w", mb, err)
		}
		d := wire.MailboxSummary(mb, &en, &tb)
		sum.mailboxOf[d] = mb
		items = append(items, d)
	}
	slices.SortFunc(items, func(a, b reconcile.Item) int { return bytes.Compare(a[:], b[:]) })
	set, err := reconcile.NewSet(items, n.reconcileConfig())
	if err != nil {
		return nil, err
	}
	sum.set = set
	return &session{n: n, peer: p, wanted: map[[32]byte]store.Set{}, sum: sum}, nil
}

// reconcileConfig is the engine's tuning from the relay's config.
func (n *Node) reconcileConfig() reconcile.Config {
	c := &n.cfg
	return reconcile.Config{IDThreshold: c.ReconcileIDThreshold, Branching: c.ReconcileBranching,
		MaxRanges: reconcile.DefaultConfig().MaxRanges, MaxIDs: reconcile.DefaultConfig().MaxIDs}
}

// exchange is one side of one (mailbox, set) exchange.
type exchange struct {
	s         *session
	initiator bool
	set       store.Set // 0 in a summary exchange
	pset      pb.ReconcileSet
	src       reconcile.Source
	cfg       reconcile.Config
	rounds    int
	preludes  int
	sentAny   bool
	ended     bool
	refused   error
}

func (s *session) exchange(set pb.ReconcileSet) *exchange {
	x := &exchange{s: s, pset: set, cfg: s.n.reconcileConfig()}
	if s.sum != nil {
		x.src = s.sum.set
		return x
	}
	x.set, _ = setOf(set)
	x.src = &storeSource{st: s.n.store, mb: s.mb, set: x.set}
	return x
}

// initiate returns the initiator's first frame.
func (x *exchange) initiate() (*pb.ReconcileMessage, error) {
	x.initiator = true
	m := x.frame()
	x.watermark(m)
	ranges, err := reconcile.Initiate(x.src, x.cfg)
	if err != nil {
		return nil, err
	}
	m.Ranges = ranges
	x.rounds++
	return m, nil
}

func (x *exchange) frame() *pb.ReconcileMessage {
	m := &pb.ReconcileMessage{Status: pb.Status_STATUS_OK, Set: x.pset}
	if x.s.sum == nil {
		m.Mailbox = x.s.mb[:]
	}
	return m
}

// ownFrame says whether m belongs to this exchange.
func (x *exchange) ownFrame(m *pb.ReconcileMessage) bool {
	if x.s.sum != nil {
		return len(m.Mailbox) == 0 && m.Set == x.pset
	}
	return string(m.Mailbox) == string(x.s.mb[:]) && m.Set == x.pset
}

// watermark adds this side's own known_through to its first turn frame of
// an ENTRIES exchange.
func (x *exchange) watermark(m *pb.ReconcileMessage) {
	if x.sentAny {
		return
	}
	x.sentAny = true
	if x.set != store.SetEntries {
		return
	}
	for _, w := range x.s.n.store.KnownThrough(x.s.mb) {
		if w.Origin == x.s.n.id {
			x.s.ownKT = w.Seq
			m.Watermarks = []*pb.Position{{Origin: []byte(w.Origin), Seq: w.Seq}}
		}
	}
}

// emitter writes one frame of this side's turn; flush ends the turn.
type emitter interface {
	emit(m *pb.ReconcileMessage) error
	flush() error
}

// receive handles one frame of the peer and writes this side's answer
// through out, if it owes one. Errors are protocol violations (the stream
// is reset), store failures or write failures.
func (x *exchange) receive(ctx context.Context, m *pb.ReconcileMessage, out emitter) error {
	if !x.ownFrame(m) {
		return fmt.Errorf("%w: frame for another exchange", errReconcileProtocol)
	}
	if m.Status != pb.Status_STATUS_OK {
		// Only the responder refuses, only an exchange's first frame, and
		// only with NOT_REPLICA (runExchange ends the stream on other
		// statuses before they get here).
		if !x.initiator || x.rounds != 1 || m.Status != pb.Status_STATUS_NOT_REPLICA {
			return fmt.Errorf("%w: status %v", errReconcileProtocol, m.Status)
		}
		x.ended = true
		x.refused = wire.StatusError(m.Status)
		return nil
	}
	if err := x.storeItems(ctx, m); err != nil {
		return err
	}
	for _, w := range m.Watermarks {
		if peer.ID(w.GetOrigin()) == x.s.peer && x.set == store.SetEntries {
			x.s.peerKT, x.s.havePeerKT = w.GetSeq(), true
		}
	}
	work := hasWork(m)
	if !work && !m.Done {
		// A prelude: items only, more frames of this turn follow.
		x.preludes++
		if x.preludes > maxPreludes || len(m.Entries)+len(m.Tombstones)+len(m.Mailboxes) == 0 || len(m.Ranges) > 0 {
			return fmt.Errorf("%w: empty or excessive prelude", errReconcileProtocol)
		}
		return nil
	}
	x.preludes = 0
	x.rounds++
	if x.rounds > x.s.n.cfg.MaxReconcileRounds {
		return fmt.Errorf("%w: more than %d rounds", errReconcileProtocol, x.s.n.cfg.MaxReconcileRounds)
	}
	if m.Done {
		if work {
			return fmt.Errorf("%w: done with work left", errReconcileProtocol)
		}
		x.ended = true
		return nil
	}
	return x.answer(m, out)
}

// answer writes the frames that answer a turn frame with work: preludes
// with the items as they are read, then the turn frame.
func (x *exchange) answer(m *pb.ReconcileMessage, out emitter) error {
	final := x.frame()
	x.watermark(final)
	var res reconcile.Result
	if len(m.Ranges) > 0 {
		var err error
		if res, err = reconcile.Respond(x.src, x.cfg, m.Ranges); err != nil {
			if errors.Is(err, wire.ErrMalformed) {
				return fmt.Errorf("%w: %v", errReconcileProtocol, err)
			}
			return err
		}
	}
	if len(m.Want) > reconcile.DefaultConfig().MaxIDs {
		return fmt.Errorf("%w: want of %d", errReconcileProtocol, len(m.Want))
	}
	final.Ranges = res.Ranges
	for _, d := range res.Need {
		final.Want = append(final.Want, d[:])
		x.s.wanted[d] = x.set
	}
	send := res.Have
	for _, w := range m.Want {
		if len(w) != 32 {
			return fmt.Errorf("%w: want of %d bytes", errReconcileProtocol, len(w))
		}
		send = append(send, [32]byte(w))
	}
	// Items go out in preludes as they are read; what is left when the
	// items end rides in the turn frame if it fits.
	last, err := x.sendItems(send, out)
	if err != nil {
		return err
	}
	if last != nil {
		if proto.Size(last)+proto.Size(final) < rpc.MaxEntryFrame-1024 {
			final.Entries, final.Tombstones, final.Mailboxes = last.Entries, last.Tombstones, last.Mailboxes
		} else if err := out.emit(last); err != nil {
			return err
		}
	}
	final.Done = !hasWork(final)
	if final.Done {
		x.ended = true
	}
	x.rounds++
	if err := out.emit(final); err != nil {
		return err
	}
	return out.flush()
}

// sendItems reads the items to send and writes them in prelude frames of
// at most reconcileItemBudget bytes; it returns the last, unwritten frame
// (nil if there is none).
func (x *exchange) sendItems(ds [][32]byte, out emitter) (*pb.ReconcileMessage, error) {
	cur, size := x.frame(), 0
	flush := func() error {
		if len(cur.Entries)+len(cur.Tombstones)+len(cur.Mailboxes) == 0 {
			return nil
		}
		if err := out.emit(cur); err != nil {
			return err
		}
		cur, size = x.frame(), 0
		return nil
	}
	st := x.s.n.store
	for _, d := range ds {
		if sum := x.s.sum; sum != nil {
			mb, ok := sum.mailboxOf[d]
			if !ok || sum.sent == maxSummaryMailboxes {
				continue // a want for an item this side does not have, or past the bound
			}
			sum.sent++
			if size+48 > reconcileItemBudget || len(cur.Mailboxes) == reconcile.DefaultConfig().MaxIDs {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			sum.diff[mb] = true
			cur.Mailboxes = append(cur.Mailboxes, mb[:])
			size += 48
			x.s.sent++
			continue
		}
		c := wire.CIDFromDigest(d)
		switch x.set {
		case store.SetEntries:
			e, err := st.Get(x.s.mb, c)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCorrupt) {
				continue // acked or expired meanwhile, or unreadable here
			}
			if err != nil {
				return nil, err
			}
			stamp, err := e.Stamp.Marshal()
			if err != nil {
				continue
			}
			n := len(e.Envelope) + len(stamp) + 16
			if size+n > reconcileItemBudget {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			cur.Entries = append(cur.Entries, &pb.Entry{Envelope: e.Envelope, Stamp: stamp})
			size += n
		case store.SetTombstones:
			t, err := st.Tombstone(x.s.mb, c)
			if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCorrupt) {
				continue
			}
			if err != nil {
				return nil, err
			}
			n := 160 + len(t.OwnerAck) + len(t.Stamp)
			if size+n > reconcileItemBudget {
				if err := flush(); err != nil {
					return nil, err
				}
			}
			cur.Tombstones = append(cur.Tombstones, tombstoneToPB(t))
			size += n
		}
		x.s.sent++
	}
	if len(cur.Entries)+len(cur.Tombstones)+len(cur.Mailboxes) == 0 {
		return nil, nil
	}
	return cur, nil
}

// storeItems verifies and stores the items of a frame.
func (x *exchange) storeItems(ctx context.Context, m *pb.ReconcileMessage) error {
	s := x.s
	n := s.n
	if len(m.Entries) > 0 && x.set != store.SetEntries || len(m.Tombstones) > 0 && x.set != store.SetTombstones ||
		len(m.Mailboxes) > 0 && s.sum == nil {
		return fmt.Errorf("%w: items of the other set", errReconcileProtocol)
	}
	if s.sum != nil {
		if len(m.Mailboxes) > reconcile.DefaultConfig().MaxIDs {
			return fmt.Errorf("%w: %d mailboxes in a frame", errReconcileProtocol, len(m.Mailboxes))
		}
		if s.sum.got += len(m.Mailboxes); s.sum.got > maxSummaryMailboxes {
			return fmt.Errorf("%w: more than %d mailboxes in a summary exchange", errReconcileProtocol, maxSummaryMailboxes)
		}
		for _, b := range m.Mailboxes {
			mb, err := wire.ParseMailbox(b)
			if err != nil {
				return fmt.Errorf("%w: summary: %v", errReconcileProtocol, err)
			}
			s.sum.diff[mb] = true
		}
		s.received += len(m.Mailboxes)
		return nil
	}
	s.received += len(m.Entries) + len(m.Tombstones)
	if n.reconcileNoImport {
		return nil
	}
	var imports []store.Import
	for _, e := range m.Entries {
		stamp, err := wire.ParseSignedReceipt(e.GetStamp())
		if err != nil {
			return fmt.Errorf("%w: stamp: %v", errReconcileProtocol, err)
		}
		if stamp.Mailbox != s.mb {
			return fmt.Errorf("%w: entry of another mailbox", errReconcileProtocol)
		}
		var env wire.Envelope
		if err := env.Unmarshal(e.GetEnvelope()); err != nil {
			s.failed = true
			n.m.reconciled.WithLabelValues("refused_" + statusName(statusOf(err))).Inc()
			continue
		}
		if err := n.verifier.VerifyFor(stamp, e.GetEnvelope()); err != nil {
			s.failed = true
			n.m.reconciled.WithLabelValues("refused_BAD_SIGNATURE").Inc()
			continue
		}
		if !s.originOK(ctx, stamp.Origin) {
			s.failed = true
			n.m.reconciled.WithLabelValues("refused_NOT_REPLICA").Inc()
			continue
		}
		imports = append(imports, store.Import{Envelope: e.Envelope, Stamp: *stamp})
	}
	if len(imports) > 0 {
		for _, r := range n.store.ImportMany(n.workCtx, imports) {
			switch {
			case r.Err != nil && errors.Is(r.Err, wire.ErrExpiryInvalid):
				// Expired on the way: nothing to hold.
			case r.Err != nil:
				s.failed = true
				n.m.reconciled.WithLabelValues("refused_" + statusName(statusOf(r.Err))).Inc()
				if statusOf(r.Err) == pb.Status_STATUS_INTERNAL {
					return r.Err
				}
			case r.Duplicate:
				n.m.reconciled.WithLabelValues("duplicate").Inc()
			default:
				n.m.reconciled.WithLabelValues("received").Inc()
			}
		}
	}
	if len(m.Tombstones) > 0 {
		ts := make([]store.Tombstone, 0, len(m.Tombstones))
		for _, t := range m.Tombstones {
			tomb, stamp, err := tombstoneFromPB(t)
			if err != nil || tomb.Mailbox != s.mb {
				return fmt.Errorf("%w: tombstone: %v", errReconcileProtocol, err)
			}
			if err := n.checkOwnerAck(tomb, stamp); err != nil {
				// Not the owner's: dropped, as an entry whose stamp
				// does not verify (SPEC.md §10.10).
				s.failed = true
				n.m.reconciled.WithLabelValues("refused_" + statusName(statusOf(err))).Inc()
				continue
			}
			ts = append(ts, tomb)
		}
		if len(ts) == 0 {
			return nil
		}
		if _, err := n.store.ImportTombstones(n.workCtx, ts); err != nil {
			return err
		}
		n.m.reconciled.WithLabelValues("tombstone").Add(float64(len(ts)))
	}
	return nil
}

// originOK applies the origin rule of SPEC.md §10.10 to an entry received
// in this session.
func (s *session) originOK(ctx context.Context, origin peer.ID) bool {
	if origin == s.n.id || origin == s.peer {
		return true
	}
	st, v := s.n.placer.standingOf(ctx, s.mb, origin)
	if st != stranger {
		return true
	}
	return s.peerCurrent && v.isNeighbour(origin)
}

// finish runs after both exchanges of the mailbox: it adopts the peer's
// known_through if everything this side asked for is now known to it.
func (s *session) finish(ctx context.Context) {
	if s.exchanges < 2 || s.failed || !s.havePeerKT || s.n.reconcileNoImport {
		s.n.log.Debug("no adoption", "exchanges", s.exchanges, "failed", s.failed, "havekt", s.havePeerKT)
		return
	}
	for d, set := range s.wanted {
		c := wire.CIDFromDigest(d)
		f, err := s.n.store.Fate(s.mb, c)
		if err != nil || f == store.FateUnknown || (set == store.SetTombstones && f == store.FateStored) {
			return
		}
	}
	if err := s.n.store.AdoptKnownThrough(ctx, s.mb, s.peer, s.peerKT); err != nil {
		s.n.log.Warn("adopt known_through", "mailbox", s.mb.String(), "err", err)
	}
}

func replyReconcile(st pb.Status, detail string, _ uint32) proto.Message {
	return &pb.ReconcileMessage{Status: st, Detail: detail}
}

// serveReconcile is the responder's side.
func (n *Node) serveReconcile(in *inbound) {
	if !n.admitRequest(in, replyReconcile) {
		return
	}
	f := rpc.NewFramedBuffer(in.s, rpc.MaxEntryFrame, rpc.LargeWriteBuffer)
	stop := context.AfterFunc(n.drainCtx, func() { _ = in.s.SetReadDeadline(time.Now()) })
	defer stop()
	ctx := n.workCtx
	sessions := make(map[wire.Mailbox]*session)
	seen := make(map[[2]string]bool)
	var x *exchange
	reset := func(err error) {
		in.log.Debug("reconcile stream reset", "err", err)
		n.m.reject("reconcile", pb.Status_STATUS_MALFORMED)
		_ = in.s.Reset()
	}
	for {
		var m pb.ReconcileMessage
		err := f.Read(&m, n.cfg.StreamIdleTimeout)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if x != nil && !x.ended {
				_ = in.s.Reset()
				return
			}
			closeStream(in.s)
			return
		case errors.Is(err, wire.ErrMalformed), errors.Is(err, rpc.ErrFrameTooLarge):
			reset(err)
			return
		default:
			_ = in.s.Reset()
			return
		}
		if (x == nil || x.ended) && m.Set == pb.ReconcileSet_RECONCILE_SET_MAILBOXES {
			// A new summary exchange.
			key := [2]string{"", m.Set.String()}
			if len(m.Mailbox) != 0 || seen[key] || m.Status != pb.Status_STATUS_OK || reconcile.Complete(m.Ranges) {
				reset(fmt.Errorf("bad start of a summary exchange"))
				return
			}
			seen[key] = true
			if !n.summaries.allow(in.peer, time.Now()) {
				n.m.reject("reconcile", pb.Status_STATUS_BUSY)
				if err := f.Write(&pb.ReconcileMessage{Status: pb.Status_STATUS_BUSY, Set: m.Set,
					Detail: "summary exchanges: one a second per peer, SummaryRate a second in all"}, n.cfg.WriteTimeout); err != nil {
					_ = in.s.Reset()
					return
				}
				closeStream(in.s)
				return
			}
			s, err := n.summarySession(in.peer, nil)
			if err != nil {
				in.log.Debug("summary", "err", err)
				_ = in.s.Reset()
				return
			}
			x = s.exchange(m.Set)
		} else if x == nil || x.ended {
			// A new exchange.
			mb, err := wire.ParseMailbox(m.Mailbox)
			_, okSet := setOf(m.Set)
			key := [2]string{string(m.Mailbox), m.Set.String()}
			if err != nil || !okSet || seen[key] || m.Status != pb.Status_STATUS_OK || reconcile.Complete(m.Ranges) {
				reset(fmt.Errorf("bad start of an exchange"))
				return
			}
			seen[key] = true
			s := sessions[mb]
			if s == nil {
				st, v := n.placer.standingOf(ctx, mb, in.peer)
				self, _ := n.placer.standingOf(ctx, mb, n.id)
				s = &session{n: n, peer: in.peer, mb: mb, view: v, peerCurrent: st == currentReplica, wanted: map[[32]byte]store.Set{}}
				sessions[mb] = s
				if st == stranger || self == stranger {
					s.failed = true
					s.exchanges = -1
				}
			}
			x = s.exchange(m.Set)
			if s.exchanges < 0 {
				x.ended = true
				n.m.reject("reconcile", pb.Status_STATUS_NOT_REPLICA)
				if err := f.Write(&pb.ReconcileMessage{Status: pb.Status_STATUS_NOT_REPLICA, Mailbox: mb[:], Set: m.Set,
					Detail: "not a replica of this mailbox in this relay's view"}, n.cfg.WriteTimeout); err != nil {
					_ = in.s.Reset()
					return
				}
				continue
			}
		}
		if err := x.receive(ctx, &m, framedEmitter{f: f, timeout: n.cfg.WriteTimeout}); err != nil {
			switch {
			case errors.Is(err, errReconcileProtocol):
				reset(err)
			case errors.Is(err, store.ErrClosed), n.draining():
				_ = in.s.Reset()
			default:
				in.log.Debug("reconcile failed", "err", err)
				_ = in.s.Reset()
			}
			return
		}
		if x.ended {
			n.exchangeEnded(ctx, x, false)
		}
	}
}

// framedEmitter writes the responder's frames, each within timeout.
type framedEmitter struct {
	f       *rpc.Framed
	timeout time.Duration
}

func (e framedEmitter) emit(m *pb.ReconcileMessage) error {
	e.f.SetWriteTimeout(e.timeout)
	return e.f.Buffer(m)
}

func (e framedEmitter) flush() error { return e.f.Flush(e.timeout) }

// streamEmitter writes the initiator's frames.
type streamEmitter struct{ rs *rpc.ReconcileStream }

func (e streamEmitter) emit(m *pb.ReconcileMessage) error { return e.rs.Buffer(m) }
func (e streamEmitter) flush() error                      { return e.rs.Flush() }

// exchangeEnded does the bookkeeping of an exchange that ended.
func (n *Node) exchangeEnded(ctx context.Context, x *exchange, initiator bool) {
	s := x.s
	if x.refused != nil {
		s.failed = true
		return
	}
	s.exchanges++
	if s.sum != nil {
		n.m.reconcileSessions.WithLabelValues(map[bool]string{true: "summary_initiated", false: "summary_answered"}[initiator]).Inc()
		return
	}
	if x.set == store.SetTombstones {
		s.finish(ctx)
		n.ae.reconciled(s.mb, s.peer)
		n.m.reconcileSessions.WithLabelValues(map[bool]string{true: "initiated", false: "answered"}[initiator]).Inc()
	}
}

// reconcileResult is the outcome of one mailbox's session as initiator.
type reconcileResult struct {
	done     bool  // both exchanges ended
	refused  error // the peer refused the mailbox
	received int   // items received
	sent     int   // items sent
	frames   int   // turn frames of both exchanges, both directions
}

// reconcileWith reconciles mailboxes with peer over one stream, as the
// initiator: if shared is not nil, first a summary exchange over those
// mailboxes (see sharedWith), whose differing mailboxes (those this relay
// replicates) join mbs, and whose equal ones count as reconciled; then mbs
// one by one. It returns the mailboxes and one result for each; err is set
// if the stream failed (the mailboxes after the failure are not done). The
// stream is returned for its byte counters.
func (n *Node) reconcileWith(ctx context.Context, p peer.ID, mbs, shared []wire.Mailbox) ([]wire.Mailbox, []reconcileResult, *rpc.ReconcileStream, error) {
	rs, err := n.rpc.OpenReconcile(ctx, p)
	if err != nil {
		return mbs, make([]reconcileResult, len(mbs)), nil, err
	}
	if shared != nil {
		s, err := n.summarySession(p, shared)
		if err == nil {
			x := s.exchange(pb.ReconcileSet_RECONCILE_SET_MAILBOXES)
			err = n.runExchange(ctx, rs, x)
			if err == nil {
				n.exchangeEnded(ctx, x, true)
			}
		}
		if err != nil {
			rs.Reset()
			return mbs, make([]reconcileResult, len(mbs)), rs, err
		}
		mbs = n.afterSummary(p, s.sum, mbs)
	}
	out := make([]reconcileResult, len(mbs))
	for i, mb := range mbs {
		st, v := n.placer.standingOf(ctx, mb, p)
		s := &session{n: n, peer: p, mb: mb, view: v, peerCurrent: st == currentReplica, wanted: map[[32]byte]store.Set{}}
		for _, set := range []pb.ReconcileSet{pb.ReconcileSet_RECONCILE_SET_ENTRIES, pb.ReconcileSet_RECONCILE_SET_TOMBSTONES} {
			x := s.exchange(set)
			if err := n.runExchange(ctx, rs, x); err != nil {
				rs.Reset()
				return mbs, out, rs, err
			}
			out[i].frames += x.rounds
			if x.refused != nil {
				out[i].refused = x.refused
				s.failed = true
				break
			}
			n.exchangeEnded(ctx, x, true)
		}
		out[i].done = s.exchanges == 2
		out[i].received, out[i].sent = s.received, s.sent
	}
	if err := rs.Close(); err != nil {
		return mbs, out, rs, err
	}
	return mbs, out, rs, nil
}

// afterSummary takes the outcome of a summary exchange with p: the
// mailboxes this side summarised that do not differ are reconciled with p;
// those that differ and that this relay replicates are appended to mbs
// (once).
func (n *Node) afterSummary(p peer.ID, sum *summary, mbs []wire.Mailbox) []wire.Mailbox {
	for _, mb := range sum.mailboxOf {
		if !sum.diff[mb] {
			n.ae.reconciled(mb, p)
		}
	}
	queued := make(map[wire.Mailbox]bool, len(mbs))
	for _, mb := range mbs {
		queued[mb] = true
	}
	for mb := range sum.diff {
		if queued[mb] || !n.replicates(mb) {
			continue
		}
		queued[mb] = true
		mbs = append(mbs, mb)
	}
	return mbs
}

// runExchange drives one exchange as the initiator.
func (n *Node) runExchange(ctx context.Context, rs *rpc.ReconcileStream, x *exchange) error {
	first, err := x.initiate()
	if err != nil {
		return err
	}
	if err := rs.Send(first); err != nil {
		return err
	}
	for !x.ended {
		m, err := rs.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: stream ended inside an exchange", errReconcileProtocol)
			}
			return err
		}
		if m.Status != pb.Status_STATUS_OK && (m.Status != pb.Status_STATUS_NOT_REPLICA || string(m.Mailbox) != string(x.s.mb[:])) {
			// Only NOT_REPLICA refuses an exchange; any other status
			// (a refusal of the stream, a shutdown) ends the stream.
			return rs.Refusal(m)
		}
		if err := x.receive(ctx, m, streamEmitter{rs}); err != nil {
			return err
		}
	}
	return nil
}
