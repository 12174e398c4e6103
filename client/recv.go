package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// errNoSession means an entry fits no session yet: it is kept pending.
var errNoSession = errors.New("no session opens the message")

// pushBatch bounds the live entries stored in one transaction.
const pushBatch = 256

// seenMargin is how long past an entry's expiry its CID is remembered as
// seen (relays never serve an entry after its expiry).
const seenMargin = time.Hour

// Sync syncs every reachable replica of this client's mailbox now, stores
// what arrived, checks for gaps, and makes the outbox retry at once. A
// client that just started is not online yet: Sync first waits, like
// WaitReady (at most Config.Timeout), so that it syncs the replica set the
// DHT gives rather than the bootstrap relays. It returns ErrNoRelay if no
// replica answered.
func (c *Client) Sync(ctx context.Context) error {
	c.startMu.Lock()
	started := c.started
	c.startMu.Unlock()
	if !started {
		return ErrNotStarted
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	nowMs := c.nowMs()
	for _, r := range c.queued {
		if r.NextAttemptMs > nowMs {
			r.NextAttemptMs = nowMs
		}
	}
	c.mu.Unlock()
	c.kick(c.kickSend)
	ctx = dialCtx(ctx)
	replicas, _ := c.net.replicaSet(ctx, c.mailbox, nil)
	return c.syncRound(ctx, replicas)
}

// recvLoop keeps a live subscription on one replica and syncs all replicas
// (SPEC.md §17.4): at start, whenever the subscription ends (pushes may
// have been missed), every SyncInterval, when a gap's grace period ends,
// and when the replica set changes. The replica set is looked up again
// every ReplicaCacheTTL; when the subscribed relay is no longer in it (it
// no longer receives this mailbox's entries), the client subscribes on a
// replica again.
func (c *Client) recvLoop(ctx context.Context) {
	n := c.net
	var (
		sub      *rpc.Subscription
		subRelay peer.ID
		pumpDone chan struct{}
		subEnded = make(chan struct{}, 1)
		failures int
		synced   []peer.ID // the replica set of the last good sync round
		nextSync time.Time // when the next sync round is due (zero: now)
	)
	stopSub := func() {
		if sub != nil {
			_ = sub.Close()
			<-pumpDone
			sub, subRelay = nil, ""
		}
	}
	defer stopSub()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kickSync:
			nextSync = time.Time{}
		case <-timer.C:
		case <-subEnded:
			stopSub()
		}
		replicas, fromDHT := n.replicaSet(ctx, c.mailbox, nil)
		if ctx.Err() != nil {
			return
		}
		if fromDHT && !sameSet(replicas, synced) {
			// A new replica may hold entries the others lack.
			nextSync = time.Time{}
		}
		if sub != nil && fromDHT && !slices.Contains(replicas, subRelay) {
			c.log.Info("subscribed relay left the replica set; subscribing again", "relay", subRelay.String())
			stopSub()
		}
		if sub == nil {
			// Subscribe before syncing, so nothing falls between the two.
			nextSync = time.Time{}
			for _, relay := range n.order(replicas) {
				s, err := n.rpc.Subscribe(ctx, relay, c.mboxKey)
				if err != nil {
					c.log.Debug("subscribe", "relay", relay.String(), "err", err)
					continue
				}
				sub, subRelay, pumpDone = s, relay, make(chan struct{})
				c.wg.Go(func() { c.pump(ctx, s, relay, subEnded, pumpDone) })
				break
			}
		}
		if now := time.Now(); !now.Before(nextSync) {
			err := c.syncRound(ctx, replicas)
			if ctx.Err() != nil {
				return
			}
			wait := c.cfg.SyncInterval
			if sub == nil || err != nil {
				failures++
				wait = min(wait, jitter(c.cfg.Rand, backoff(c.cfg.RetryMin, c.cfg.RetryMax, failures)))
				synced = nil
			} else {
				failures = 0
				synced = replicas
				c.replenishPrekeys(ctx, replicas)
			}
			nextSync = now.Add(wait)
		}
		wait := time.Until(nextSync)
		if at, ok := c.nextGapCheck(); ok {
			if d := max(at.Sub(c.now()), time.Millisecond); d < wait {
				wait = d
				nextSync = time.Now().Add(d)
			}
		}
		if failures == 0 {
			// Look the replica set up again when its cache expires.
			wait = min(wait, c.cfg.ReplicaCacheTTL)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(wait, time.Millisecond))
	}
}

// sameSet reports whether a and b hold the same relays.
func sameSet(a, b []peer.ID) bool {
	if len(a) != len(b) {
		return false
	}
	for _, p := range a {
		if !slices.Contains(b, p) {
			return false
		}
	}
	return true
}

// pump stores the live entries of a subscription and acks them.
func (c *Client) pump(ctx context.Context, sub *rpc.Subscription, relay peer.ID, ended chan<- struct{}, done chan<- struct{}) {
	defer close(done)
	for e := range sub.Entries() {
		batch := []rpc.Entry{e}
	more:
		for len(batch) < pushBatch {
			select {
			case e2, ok := <-sub.Entries():
				if !ok {
					break more
				}
				batch = append(batch, e2)
			default:
				break more
			}
		}
		done := c.startAckJob()
		acks, err := c.ingest(batch, nil, "")
		if err != nil {
			done()
			c.log.Error("store pushed entries", "err", err)
			break
		}
		c.ack(ctx, relay, acks)
		done()
	}
	if err := sub.Err(); err != nil && ctx.Err() == nil {
		c.log.Debug("subscription ended", "relay", relay.String(), "err", err)
	}
	select {
	case ended <- struct{}{}:
	default:
	}
}

// startAckJob registers a job that stores received entries and then acks
// them, before it stores any; the function it returns ends the job. Flush
// waits for the jobs running when it is called.
func (c *Client) startAckJob() (done func()) {
	c.mu.Lock()
	c.ackJob++
	id := c.ackJob
	c.acking[id] = struct{}{}
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.acking, id)
		c.outChangedLocked()
		c.mu.Unlock()
	}
}

func (c *Client) ack(ctx context.Context, relay peer.ID, cids []wire.CID) {
	for len(cids) > 0 {
		k := min(len(cids), wire.MaxAckCIDs)
		if _, err := c.net.rpc.Ack(ctx, relay, c.mboxKey, cids[:k]); err != nil {
			c.log.Debug("ack", "relay", relay.String(), "err", err)
			return
		}
		cids = cids[k:]
	}
}

// syncRound syncs each replica in turn from its durable cursor, then
// checks the conversations for gaps. A round that will report a gap (one
// whose grace period had ended when the round started) syncs every replica
// from the empty cursor instead, so that no relay's past watermarks hide
// the missing entries from it (SPEC.md §7, §17.5).
func (c *Client) syncRound(ctx context.Context, replicas []peer.ID) error {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	start := c.now()
	full := c.gapDue(start)
	ok := 0
	for _, relay := range replicas {
		if err := c.syncRelay(ctx, relay, full); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.log.Debug("sync", "relay", relay.String(), "err", err)
			c.net.markDown(relay, 0)
			continue
		}
		ok++
	}
	if ok == 0 {
		return ErrNoRelay
	}
	c.retryPending()
	c.checkGaps(start)
	return nil
}

// notedHolesLocked updates when the holes of the conversations a batch
// touched were noticed, and reports whether a new one appeared.
func (c *Client) notedHolesLocked(b *batch) bool {
	newHole := false
	for id := range b.recvs {
		r := c.recv[id]
		switch {
		case len(r.Above) == 0:
			r.HoleSinceMs = 0
		case r.HoleSinceMs == 0 || r.Next != b.nexts[id]:
			r.HoleSinceMs = uint64(b.now.UnixMilli())
			newHole = true
		}
	}
	return newHole
}

// retryPending tries the pending entries again (after a sync round: the
// sessions may have moved on since they arrived).
func (c *Client) retryPending() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.pending == 0 {
		return
	}
	b := newBatch(c.now())
	err := c.db.Update(func(tx *store.ClientTx) error {
		if err := c.retryPendingLocked(tx, b); err != nil {
			return err
		}
		c.notedHolesLocked(b)
		return c.flushBatchLocked(tx, b)
	})
	if err != nil {
		c.log.Error("retry pending entries", "err", err)
		c.reloadLocked()
		return
	}
	for _, k := range b.done {
		c.delOutLocked(k)
	}
	c.emit(b.evs...)
}

// syncRelay reads everything relay has that its cursor does not cover
// (everything it has, if full), storing page by page: each page's entries,
// the sessions they advanced, their CIDs as seen and the advance of the
// relay's cursor are one transaction, and only then are the entries acked
// (SPEC.md §7, §10.4).
func (c *Client) syncRelay(ctx context.Context, relay peer.ID, full bool) error {
	defer c.startAckJob()()
	var cur wire.Cursor
	if !full {
		c.mu.Lock()
		var err error
		cur, err = c.relayCursorLocked(nil, relay)
		c.mu.Unlock()
		if err != nil {
			// The empty cursor is always safe: it covers nothing.
			c.log.Warn("sync cursor unreadable; syncing from the start", "relay", relay.String(), "err", err)
			cur = wire.Cursor{}
		}
	}
	st, err := c.net.rpc.Sync(ctx, relay, c.mboxKey, rpc.SyncRequest{Cursor: cur})
	if err != nil {
		return err
	}
	defer st.Close()
	// Acks go out from another goroutine, so the next page is stored
	// while the relay deletes the previous one.
	acks := make(chan []wire.CID, 4)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for cids := range acks {
			c.ack(ctx, relay, cids)
		}
	}()
	defer func() { close(acks); <-acked }()
	for {
		page, err := st.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		cids, err := c.ingest(page.Entries, page.Watermarks, relay)
		if err != nil {
			return err
		}
		if len(cids) > 0 {
			acks <- cids
		}
		if page.Done {
			return nil
		}
	}
}

// batch is the work of one ingest: what to write at its end and the events
// to emit after the commit.
type batch struct {
	now      time.Time
	seen     map[wire.CID]bool
	sessions map[*sessionRec]bool
	dropped  []*sessionRec
	contacts map[ContactID]bool
	recvs    map[ContactID]bool
	nexts    map[ContactID]uint64      // next counter before the batch
	msgs     map[msgKey]*store.Message // incoming messages to write
	done     []outKey                  // outbox entries finished by delivery receipts
	newSess  bool
	keys     bool
	evs      []Event
}

func newBatch(now time.Time) *batch {
	return &batch{
		now:      now,
		seen:     map[wire.CID]bool{},
		sessions: map[*sessionRec]bool{},
		contacts: map[ContactID]bool{},
		recvs:    map[ContactID]bool{},
		nexts:    map[ContactID]uint64{},
		msgs:     map[msgKey]*store.Message{},
	}
}

// relayCursorLocked returns a copy of the durable sync cursor of relay,
// read with tx (or a read transaction of its own if tx is nil) the first
// time it is asked for.
func (c *Client) relayCursorLocked(tx *store.ClientTx, relay peer.ID) (wire.Cursor, error) {
	if cur, ok := c.cursors[relay]; ok {
		return cur.Clone(), nil
	}
	var cur wire.Cursor
	load := func(tx *store.ClientTx) (err error) {
		cur, err = tx.RelayCursor(c.mailbox, relay)
		return err
	}
	var err error
	if tx != nil {
		err = load(tx)
	} else {
		err = c.db.View(load)
	}
	if err != nil {
		return wire.Cursor{}, err
	}
	kept := cur.Clone()
	c.cursors[relay] = &kept
	return cur, nil
}

// ingest stores a batch of verified entries in one transaction: for each
// new CID, the decrypted message (or the entry, pending, if no session
// opens it yet), the sessions it advanced, the CID as seen; with
// watermarks (a page of a sync of relay), the advance of relay's cursor.
// It returns the CIDs to ack. A rejected entry (forged, corrupted,
// replayed) changes no session and is never shown; its CID is acked so
// that relays drop it.
func (c *Client) ingest(entries []rpc.Entry, watermarks []wire.Position, relay peer.ID) ([]wire.CID, error) {
	t0 := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { c.log.Debug("ingest", "n", len(entries), "took", time.Since(t0)) }()
	if c.closed {
		return nil, ErrClosed
	}
	b := newBatch(c.now())
	var acks []wire.CID
	var advanced *wire.Cursor
	newHole := false
	err := c.db.Update(func(tx *store.ClientTx) error {
		for i := range entries {
			e := &entries[i]
			cid := e.CID()
			if b.seen[cid] {
				continue
			}
			b.seen[cid] = true
			acks = append(acks, cid)
			if seen, err := tx.Seen(cid); err != nil {
				return err
			} else if seen {
				continue
			}
			until := time.Unix(int64(e.Stamp.Expiry), 0).Add(seenMargin)
			if err := tx.MarkSeen(cid, maxTime(until, b.now.Add(seenMargin))); err != nil {
				return err
			}
			env, err := wire.ParseEnvelope(e.Envelope)
			if err != nil || env.Mailbox != c.mailbox {
				c.log.Warn("rejected entry: not an envelope of this mailbox", "cid", cid.String())
				continue
			}
			if err := c.openEntryLocked(tx, b, cid, e.Envelope, env.Ciphertext, false); err != nil {
				return err
			}
		}
		if b.newSess && c.pending > 0 {
			if err := c.retryPendingLocked(tx, b); err != nil {
				return err
			}
		}
		newHole = c.notedHolesLocked(b)
		if watermarks != nil && relay != "" {
			// A relay's watermarks are its own claim: they advance only
			// the cursor this client sends to that relay (SPEC.md §7).
			cur, err := c.relayCursorLocked(tx, relay)
			if err != nil {
				return err
			}
			for _, w := range watermarks {
				if err := cur.Advance(w.Origin, w.Seq); err != nil {
					c.log.Warn("cursor advance", "relay", relay.String(), "origin", w.Origin.String(), "err", err)
				}
			}
			if err := tx.PutRelayCursor(c.mailbox, relay, &cur); err != nil {
				return err
			}
			advanced = &cur
		}
		return c.flushBatchLocked(tx, b)
	})
	if err != nil {
		c.reloadLocked()
		return nil, fmt.Errorf("client: store entries: %w", err)
	}
	if advanced != nil {
		c.cursors[relay] = advanced
	}
	for _, k := range b.done {
		c.delOutLocked(k)
	}
	c.emit(b.evs...)
	if n := c.pendingAcksLocked(); n >= wire.MaxPayloadAcks {
		c.deliveryAt = b.now
		c.kick(c.kickSend)
	} else if n > 0 && c.deliveryAt.IsZero() {
		c.deliveryAt = b.now.Add(deliveryDelay)
		c.kick(c.kickSend)
	}
	if newHole {
		// Look for the missing entries on every replica now.
		c.kick(c.kickSync)
	}
	return acks, nil
}

func (c *Client) pendingAcksLocked() int {
	n := 0
	for _, r := range c.recv {
		n += len(r.Acks)
	}
	return n
}

// flushBatchLocked writes what a batch touched.
func (c *Client) flushBatchLocked(tx *store.ClientTx, b *batch) error {
	for s := range b.sessions {
		if _, ok := c.sessions[s.HandshakeID]; !ok {
			continue
		}
		sr, err := s.record()
		if err != nil {
			return err
		}
		if err := tx.PutSession(sr); err != nil {
			return err
		}
	}
	for _, s := range b.dropped {
		if err := tx.DeleteSession(s.HandshakeID); err != nil {
			return err
		}
	}
	for id := range b.contacts {
		if err := tx.PutContact(c.contacts[id]); err != nil {
			return err
		}
	}
	for id := range b.recvs {
		if err := tx.PutRecvState(string(id), c.recv[id]); err != nil {
			return err
		}
	}
	if err := putMessages(tx, b.msgs); err != nil {
		return err
	}
	if b.keys {
		if err := c.putIdentityLocked(tx); err != nil {
			return err
		}
	}
	return tx.PutLocalSeq(c.seq)
}

// msgKey names a message of the history.
type msgKey struct {
	contact ContactID
	dir     store.Direction
	counter uint64
}

// putMessages writes the messages of a batch.
func putMessages(tx *store.ClientTx, msgs map[msgKey]*store.Message) error {
	for k, m := range msgs {
		if err := tx.PutMessage(string(k.contact), m); err != nil {
			return err
		}
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// openLocked decrypts a ciphertext: a handshake message goes to the
// session of its handshake or starts a new one (Respond); a ratchet message
// is tried on every session, most recently active first. Nothing changes on
// error (ratchet operations are atomic).
func (c *Client) openLocked(ct []byte) (s *sessionRec, pt []byte, fresh bool, err error) {
	if len(ct) == 0 {
		return nil, nil, false, ratchet.ErrMalformed
	}
	if ct[0] == ratchet.TypeHandshake {
		hid, ok := ratchet.HandshakeID(ct)
		if !ok {
			return nil, nil, false, ratchet.ErrMalformed
		}
		if s := c.sessions[hid]; s != nil {
			pt, err := s.sess.Decrypt(c.cfg.Rand, ct)
			return s, pt, false, err
		}
		sess, pt, err := c.keys.Respond(c.cfg.Rand, ct)
		if err != nil {
			return nil, nil, false, err
		}
		return &sessionRec{Session: store.Session{HandshakeID: sess.HandshakeID()}, sess: sess}, pt, true, nil
	}
	for _, s := range c.order {
		pt, err := s.sess.Decrypt(c.cfg.Rand, ct)
		if errors.Is(err, ratchet.ErrNotForSession) {
			continue
		}
		return s, pt, false, err
	}
	return nil, nil, false, errNoSession
}

// openEntryLocked decrypts one entry and applies its payload. An entry no
// session opens yet is kept pending (unless it comes from the pending
// table): one that fits no session, or that a session refuses as too far
// ahead of its chain (the messages before it may still arrive).
func (c *Client) openEntryLocked(tx *store.ClientTx, b *batch, cid wire.CID, envelope, ct []byte, fromPending bool) error {
	s, pt, fresh, err := c.openLocked(ct)
	if errors.Is(err, ratchet.ErrTooManySkipped) {
		c.log.Info("entry too far ahead of its session; kept pending", "cid", cid.String())
		err = errNoSession
	}
	if errors.Is(err, errNoSession) {
		if fromPending {
			return errNoSession
		}
		return c.keepPendingLocked(tx, cid, envelope)
	}
	if err != nil {
		c.log.Info("rejected entry", "cid", cid.String(), "err", err)
		return nil
	}
	seq := c.nextSeqLocked()
	p, perr := wire.ParsePayload(pt)
	if fresh {
		// Respond changed the prekey state (a one-time prekey consumed,
		// or a replay record): persist it whatever happens next.
		b.keys = true
		if perr != nil {
			// A handshake that opens but carries no valid payload: do
			// not keep a session nobody can name.
			c.log.Info("rejected handshake: bad payload", "cid", cid.String(), "err", perr)
			return nil
		}
		if err := c.adoptSessionLocked(b, s, p); err != nil {
			c.log.Info("rejected handshake", "cid", cid.String(), "err", err)
			return nil
		}
		b.newSess = true
	}
	c.touchSessionLocked(s, seq)
	b.sessions[s] = true
	if perr != nil {
		c.log.Info("rejected payload", "cid", cid.String(), "err", perr)
		return nil
	}
	ct2 := c.contacts[ContactID(s.Contact)]
	if ct2 == nil {
		return nil
	}
	if !s.Retired && ct[0] == ratchet.TypeRatchet {
		// The active session spoke: sessions retired by simultaneous
		// initiation are no longer needed.
		for _, o := range slices.Clone(c.order) {
			if o.Contact == s.Contact && o.Retired {
				c.removeSessionLocked(o)
				b.dropped = append(b.dropped, o)
			}
		}
	}
	if !p.ReplyTo.IsZero() && p.ReplyTo != ct2.Mailbox && !s.Retired {
		ct2.Mailbox = p.ReplyTo
		b.contacts[contactOf(ct2)] = true
	}
	return c.applyPayloadLocked(tx, b, ct2, p, seq)
}

// adoptSessionLocked attaches a session made by Respond to its contact
// (creating the contact if the initiator is unknown: its reply_to is where
// to answer) and applies the simultaneous-initiation rule.
func (c *Client) adoptSessionLocked(b *batch, s *sessionRec, p *wire.Payload) error {
	peerKey := s.sess.PeerIdentity()
	if peerKey == c.keys.Identity().Public() {
		return errors.New("handshake from this client's own identity")
	}
	id := contactIDOf(peerKey)
	ct := c.contacts[id]
	if ct == nil {
		if p.ReplyTo.IsZero() {
			return errors.New("unknown initiator without reply_to")
		}
		ct = &store.Contact{ID: string(id), IdentityEd25519: peerKey.Ed25519, IdentityX25519: peerKey.X25519, Mailbox: p.ReplyTo,
			NextCounter: 1, AddedMs: uint64(b.now.UnixMilli())}
		c.contacts[id] = ct
		b.contacts[id] = true
		b.evs = append(b.evs, ContactAdded{Contact: publicContact(ct)})
	}
	s.Contact = string(id)
	for _, o := range c.order {
		if o.Contact != string(id) || o.Retired {
			continue
		}
		_, retired := ratchet.Converge(o.sess, s.sess)
		if retired == s.sess {
			s.Retired = true
		} else {
			o.Retired = true
			b.sessions[o] = true
		}
	}
	c.addSessionLocked(s)
	return nil
}

// applyPayloadLocked records a decrypted payload: its counter, a TEXT
// message in the history, a DELIVERY's confirmations.
func (c *Client) applyPayloadLocked(tx *store.ClientTx, b *batch, ct *store.Contact, p *wire.Payload, seq uint64) error {
	id := contactOf(ct)
	r := c.recv[id]
	if r == nil {
		r = newRecvState()
		c.recv[id] = r
	}
	if _, ok := b.nexts[id]; !ok {
		b.nexts[id] = r.Next
	}
	state := arrive(r, p.Counter)
	if state == counterReplay {
		c.log.Info("dropped replayed payload", "contact", ct.ID, "counter", p.Counter)
		return nil
	}
	b.recvs[id] = true
	switch p.Kind {
	case wire.PayloadText:
		m := &store.Message{
			Direction: store.Incoming,
			Counter:   p.Counter,
			Body:      bytes.Clone(p.Body),
			SentAtMs:  p.SentAtMs,
			AtMs:      uint64(b.now.UnixMilli()),
			Seq:       seq,
			Late:      state == counterLate,
			Released:  state == counterLate,
		}
		b.msgs[msgKey{id, store.Incoming, p.Counter}] = m
		r.Acks = append(r.Acks, p.Counter)
		if m.Late {
			b.evs = append(b.evs, MessageReceived{Message: publicMessage(id, m)})
		}
	case wire.PayloadDelivery:
		for _, k := range p.Acks {
			if k == 0 || k >= ct.NextCounter {
				continue // never sent
			}
			changed, err := setMsgStatus(tx, id, k, store.StatusDelivered)
			if err != nil {
				return err
			}
			if o := c.outbox[outKey{id, k}]; o != nil && o.Kind == wire.PayloadText {
				if err := tx.DeleteOutbox(ct.ID, k); err != nil {
					return err
				}
				b.done = append(b.done, outKey{id, k})
			}
			if changed {
				b.evs = append(b.evs, StatusChanged{ID: messageID(id, Outgoing, k), Contact: id, Status: StatusDelivered})
			}
		}
	}
	return c.releaseLocked(tx, b, id, release(r))
}

// releaseLocked emits MessageReceived for counters that are now in order.
func (c *Client) releaseLocked(tx *store.ClientTx, b *batch, id ContactID, counters []uint64) error {
	for _, k := range counters {
		key := msgKey{id, store.Incoming, k}
		m := b.msgs[key]
		if m == nil {
			var err error
			m, err = tx.Message(string(id), store.Incoming, k)
			if errors.Is(err, store.ErrNotFound) {
				continue // not a TEXT payload
			}
			if err != nil {
				return err
			}
			b.msgs[key] = m
		}
		if !m.Released {
			m.Released = true
			b.evs = append(b.evs, MessageReceived{Message: publicMessage(id, m)})
		}
	}
	return nil
}

// keepPendingLocked stores an entry that fits no session yet, evicting the
// oldest beyond Config.MaxPending.
func (c *Client) keepPendingLocked(tx *store.ClientTx, cid wire.CID, envelope []byte) error {
	seq := c.nextSeqLocked()
	if err := tx.PutPending(seq, &store.PendingEntry{CID: cid, Envelope: envelope}); err != nil {
		return err
	}
	c.pending++
	for c.pending > c.cfg.MaxPending {
		var first uint64
		found := false
		errStop := errors.New("stop")
		if err := tx.ForEachPending(func(seq uint64, _ *store.PendingEntry, _ error) error {
			first, found = seq, true
			return errStop
		}); err != nil && !errors.Is(err, errStop) {
			return err
		}
		if !found {
			break
		}
		if err := tx.DeletePending(first); err != nil {
			return err
		}
		c.pending--
		c.log.Warn("pending entry evicted", "limit", c.cfg.MaxPending)
	}
	return nil
}

// retryPendingLocked tries the pending entries again after a new session
// appeared, until no more open.
func (c *Client) retryPendingLocked(tx *store.ClientTx, b *batch) error {
	for progress := true; progress; {
		progress = false
		type item struct {
			seq uint64
			rec *store.PendingEntry // nil: corrupt, dropped
		}
		var items []item
		if err := tx.ForEachPending(func(seq uint64, r *store.PendingEntry, err error) error {
			if err != nil {
				c.log.Warn("corrupt pending entry dropped", "err", err)
			}
			items = append(items, item{seq, r})
			return nil
		}); err != nil {
			return err
		}
		for _, it := range items {
			if it.rec != nil {
				env, err := wire.ParseEnvelope(it.rec.Envelope)
				if err == nil {
					err = c.openEntryLocked(tx, b, it.rec.CID, it.rec.Envelope, env.Ciphertext, true)
					if errors.Is(err, errNoSession) {
						continue
					}
					if err != nil {
						return err
					}
					// An entry opened: it may have moved a session on
					// (a new chain, a new session), so try the rest again.
					progress = true
				}
			}
			if err := tx.DeletePending(it.seq); err != nil {
				return err
			}
			c.pending--
		}
	}
	return nil
}

// nextGapCheck returns when the earliest open hole's grace period ends.
func (c *Client) nextGapCheck() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var at time.Time
	for _, r := range c.recv {
		if len(r.Above) == 0 || r.HoleSinceMs == 0 {
			continue
		}
		t := msTime(r.HoleSinceMs).Add(c.cfg.GapGrace)
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at, !at.IsZero()
}

// gapDue reports whether a hole had been open for GapGrace at t: a sync
// round that starts at t will report it.
func (c *Client) gapDue(t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range c.recv {
		if len(r.Above) > 0 && r.HoleSinceMs != 0 && t.Sub(msTime(r.HoleSinceMs)) >= c.cfg.GapGrace {
			return true
		}
	}
	return false
}

// checkGaps reports the holes that had been open for GapGrace when a sync
// round started (it then synced every reachable replica from the empty
// cursor: the missing entries are on none of them), and releases the
// messages held behind them. A hole whose grace period ended during the
// round is reported by the next one, which recvLoop starts at once.
func (c *Client) checkGaps(roundStart time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := c.now()
	b := newBatch(now)
	err := c.db.Update(func(tx *store.ClientTx) error {
		for id, r := range c.recv {
			if len(r.Above) == 0 || r.HoleSinceMs == 0 {
				continue
			}
			if roundStart.Sub(msTime(r.HoleSinceMs)) < c.cfg.GapGrace {
				continue
			}
			for len(r.Above) > 0 {
				from, to := r.Next, r.Above[0]-1
				for k := max(from, to-min(to-from, maxMissing-1)); k <= to; k++ {
					r.Missing = append(r.Missing, k)
				}
				if len(r.Missing) > maxMissing {
					r.Missing = r.Missing[len(r.Missing)-maxMissing:]
				}
				b.evs = append(b.evs, GapDetected{Contact: id, From: from, To: to})
				r.Next = r.Above[0]
				if err := c.releaseLocked(tx, b, id, release(r)); err != nil {
					return err
				}
			}
			r.HoleSinceMs = 0
			b.recvs[id] = true
			if err := tx.PutRecvState(string(id), r); err != nil {
				return err
			}
		}
		return putMessages(tx, b.msgs)
	})
	if err != nil {
		c.log.Error("record gaps", "err", err)
		c.reloadLocked()
		return
	}
	c.emit(b.evs...)
}
