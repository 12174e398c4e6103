package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

const (
	// deliveryDelay gathers delivery receipts: TEXT messages stored within
	// it are confirmed by one DELIVERY payload (sooner when a payload's
	// worth, wire.MaxPayloadAcks, is pending).
	deliveryDelay = 200 * time.Millisecond
	// defaultMaxEnvelope is the relays' default envelope limit (SPEC.md
	// §12), used until a relay's info says otherwise.
	defaultMaxEnvelope = 65536
	// ratchetOverhead bounds what the ratchet adds to a payload (handshake
	// messages carry the sealed handshake, with an ML-KEM ciphertext).
	ratchetOverhead = 2048
	// maxStatusRecheck is how long past expiry a sender keeps asking
	// relays about a message before it reports it expired-undelivered
	// without their confirmation (the relays' FateRetention).
	maxStatusRecheck = 7 * 24 * time.Hour
)

// MaxBody is the largest body Send accepts: what fits, with the payload
// header, padding and the ratchet's overhead, in an envelope of the relays'
// default size limit (65,536 bytes).
const MaxBody = defaultMaxEnvelope - wire.EnvelopeOverhead - ratchetOverhead - 128

// Send queues body for a contact and returns its message ID at once. The
// message is encrypted (the first message to a contact starts the session,
// with a one-time prekey fetched from the contact's relays when it can be)
// and written to the durable outbox together with the session state that
// encrypted it, before anything touches the network; the sender loop then
// deposits it. Its status goes queued → stored → delivered, or
// expired-undelivered (StatusChanged events; Message gives it).
func (c *Client) Send(ctx context.Context, to ContactID, body []byte) (MessageID, error) {
	if len(body) > MaxBody {
		return "", fmt.Errorf("client: send %d bytes (max %d): %w", len(body), MaxBody, ErrTooLarge)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return "", ErrClosed
	}
	ct, ok := c.contacts[to]
	if !ok {
		c.mu.Unlock()
		return "", ErrUnknownContact
	}
	needSession := c.activeSessionLocked(to) == nil
	bundle, hints, mailbox := ct.bundle, ct.hints, ct.mailbox
	n := c.net
	c.mu.Unlock()

	var dh, kem *ratchet.OneTimePrekey
	if needSession && n != nil && bundle != nil {
		dh, kem = c.fetchPrekeys(ctx, n, mailbox, bundle, hints)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", ErrClosed
	}
	ct = c.contacts[to]
	var rec *outboxRec
	err := c.db.update(func(tx kvTx) error {
		var err error
		rec, err = c.sealLocked(tx, ct, &wire.Payload{Kind: wire.PayloadText, Body: body}, dh, kem)
		if err != nil {
			return err
		}
		m := &msgRec{dir: Outgoing, counter: rec.counter, body: body, sentAtMs: c.nowMs(), atMs: c.nowMs(), seq: rec.seq, status: StatusQueued}
		return tx.set(keyHistory(to, Outgoing, rec.counter), m.marshal())
	})
	if err != nil {
		c.reloadLocked()
		return "", fmt.Errorf("client: send: %w", err)
	}
	c.putOutLocked(rec)
	c.kick(c.kickSend)
	return messageID(to, Outgoing, rec.counter), nil
}

// activeSessionLocked returns the session to encrypt with for a contact:
// the non-retired one (SPEC.md §15, simultaneous initiation).
func (c *Client) activeSessionLocked(id ContactID) *sessionRec {
	var best *sessionRec
	for _, s := range c.order {
		if s.contact == id && !s.retired {
			if best == nil || s.active > best.active {
				best = s
			}
		}
	}
	return best
}

// sealLocked encrypts a payload for a contact with its active session (or a
// new one), and writes the session, the contact (its next counter) and the
// outbox entry into tx. The caller commits, then adds the entry to
// c.outbox, or reloads on failure.
func (c *Client) sealLocked(tx kvTx, ct *contactRec, p *wire.Payload, dh, kem *ratchet.OneTimePrekey) (*outboxRec, error) {
	s := c.activeSessionLocked(ct.id)
	if s == nil {
		if ct.bundle == nil {
			return nil, fmt.Errorf("no session with %s and no bundle to start one", ct.id)
		}
		b, err := ratchet.ParseBundle(ct.bundle)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		sess, err := ratchet.Initiate(c.cfg.Rand, c.keys.Identity(), b, dh, kem)
		if err != nil && (dh != nil || kem != nil) {
			// A relay served a bad one-time prekey: use the bundle alone.
			c.log.Warn("one-time prekey refused; using the last-resort prekey", "contact", string(ct.id), "err", err)
			sess, err = ratchet.Initiate(c.cfg.Rand, c.keys.Identity(), b, nil, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("start session: %w", err)
		}
		s = &sessionRec{contact: ct.id, hid: sess.HandshakeID(), sess: sess}
		c.addSessionLocked(s)
	}
	now := c.now()
	p.Counter = ct.next
	p.ReplyTo = c.mailbox
	p.SentAtMs = uint64(now.UnixMilli())
	pt, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	ctext, err := s.sess.Encrypt(c.cfg.Rand, pt)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	ct.next++
	seq := c.nextSeqLocked()
	c.touchSessionLocked(s, seq)
	env := wire.Envelope{Mailbox: ct.mailbox, Expiry: uint64(now.Add(c.cfg.TTL).Unix()), Ciphertext: ctext}
	eb, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	rec := &outboxRec{
		contact:  ct.id,
		counter:  p.Counter,
		kind:     p.Kind,
		mailbox:  ct.mailbox,
		envelope: eb,
		cid:      wire.CIDOf(eb),
		status:   StatusQueued,
		nextMs:   uint64(now.UnixMilli()),
		seq:      seq,
		expiry:   env.Expiry,
	}
	sb, err := s.marshal()
	if err != nil {
		return nil, err
	}
	if err := tx.set(keySession(s.hid), sb); err != nil {
		return nil, err
	}
	if err := tx.set(keyContact(ct.id), ct.marshal()); err != nil {
		return nil, err
	}
	if err := tx.set(keyOutbox(ct.id, rec.counter), rec.marshal()); err != nil {
		return nil, err
	}
	return rec, c.putSeq(tx)
}

// addSessionLocked registers a new session as the most recently active.
func (c *Client) addSessionLocked(s *sessionRec) {
	c.sessions[s.hid] = s
	c.order = append([]*sessionRec{s}, c.order...)
}

// touchSessionLocked marks a session as just used: it moves to the front of
// the trial-decryption order.
func (c *Client) touchSessionLocked(s *sessionRec, seq uint64) {
	s.active = seq
	if len(c.order) > 0 && c.order[0] == s {
		return
	}
	if i := slices.Index(c.order, s); i > 0 {
		copy(c.order[1:i+1], c.order[:i])
		c.order[0] = s
	}
}

func (c *Client) removeSessionLocked(s *sessionRec) {
	delete(c.sessions, s.hid)
	if i := slices.Index(c.order, s); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
}

// fetchPrekeys takes one-time prekeys of a contact from the first of its
// relays that has them (SPEC.md §10.8). It returns nil, nil when none
// could be had: the session then uses the bundle's last-resort prekey.
func (c *Client) fetchPrekeys(ctx context.Context, n *netState, mb wire.Mailbox, bundle []byte, hints [][]byte) (dh, kem *ratchet.OneTimePrekey) {
	b, err := ratchet.ParseBundle(bundle)
	if err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(dialCtx(ctx), c.cfg.Timeout)
	defer cancel()
	for _, relay := range n.order(n.replicaSet(ctx, mb, n.addHints(hints))) {
		got, err := n.rpc.FetchPrekeys(ctx, relay, mb)
		if err != nil {
			c.log.Debug("prekey fetch", "relay", relay.String(), "err", err)
			continue
		}
		if got.X25519 != nil {
			if p, err := ratchet.ParseOneTimePrekey(got.X25519); err == nil && p.Verify(b.PrekeySigner) == nil && p.Kind == ratchet.KindX25519 {
				dh = p
			}
		}
		if got.MLKEM != nil {
			if p, err := ratchet.ParseOneTimePrekey(got.MLKEM); err == nil && p.Verify(b.PrekeySigner) == nil && p.Kind == ratchet.KindMLKEM768 {
				kem = p
			}
		}
		if dh != nil || kem != nil {
			return dh, kem
		}
	}
	return nil, nil
}

// sendLoop runs the outbox: it starts deposit attempts for due entries
// (newest messages first, so a backlog of retries does not hold them
// back), checks the fate of expired ones, and sends pending delivery
// receipts.
func (c *Client) sendLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := c.dispatch(ctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.kickSend:
		case <-timer.C:
		}
	}
}

// dispatch starts what is due and returns how long until something else
// is.
func (c *Client) dispatch(ctx context.Context) time.Duration {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return time.Hour
	}
	now := c.now()
	nowMs := uint64(now.UnixMilli())
	nowS := uint64(now.Unix())
	next := nowMs + uint64(time.Hour/time.Millisecond)
	due := map[wire.Mailbox][]*outboxRec{}
	checks := map[wire.Mailbox][]*outboxRec{}
	var expired []*outboxRec
	for k, r := range c.queued {
		if c.inflight[k] {
			continue
		}
		if r.expiry <= nowS {
			expired = append(expired, r)
		} else if r.nextMs <= nowMs {
			if !c.sending[r.mailbox] {
				due[r.mailbox] = append(due[r.mailbox], r)
			}
		} else {
			next = min(next, r.nextMs)
		}
	}
	if c.nextCheckMs <= nowMs {
		// Scan the stored entries for fate checks due.
		c.nextCheckMs = ^uint64(0)
		for k, r := range c.outbox {
			if r.status != StatusStored || c.inflight[k] {
				continue
			}
			at := max(r.nextMs, r.expiry*1000)
			if at <= nowMs {
				checks[r.mailbox] = append(checks[r.mailbox], r)
			} else {
				c.nextCheckMs = min(c.nextCheckMs, at)
			}
		}
	}
	next = min(next, c.nextCheckMs)
	if len(expired) > 0 {
		c.finalizeLocked(expired, StatusExpiredUndelivered)
	}
	for mb, items := range due {
		// Priority: first attempts before retries, user messages before
		// delivery receipts, then oldest first.
		slices.SortFunc(items, func(a, b *outboxRec) int {
			if (a.attempts == 0) != (b.attempts == 0) {
				if a.attempts == 0 {
					return -1
				}
				return 1
			}
			if a.kind != b.kind {
				return int(a.kind) - int(b.kind)
			}
			return cmpU64(a.seq, b.seq)
		})
		if len(items) > wire.MaxDepositInflight {
			items = items[:wire.MaxDepositInflight]
			next = nowMs // more are due right away
		}
		for _, r := range items {
			c.inflight[outKey{r.contact, r.counter}] = true
		}
		c.sending[mb] = true
		hints := c.hintIDsOf(items[0].contact)
		c.wg.Go(func() { c.attempt(ctx, mb, hints, items) })
	}
	for mb, items := range checks {
		if len(items) > wire.MaxStatusCIDs {
			items = items[:wire.MaxStatusCIDs]
		}
		for _, r := range items {
			c.inflight[outKey{r.contact, r.counter}] = true
		}
		hints := c.hintIDsOf(items[0].contact)
		c.wg.Go(func() { c.checkFate(ctx, mb, hints, items) })
	}
	deliveries := !c.deliveryAt.IsZero()
	deliverIn := c.deliveryAt.Sub(now)
	c.mu.Unlock()
	if deliveries && deliverIn <= 0 {
		c.flushDeliveries()
		return 0
	}
	wait := time.Duration(next-min(next, nowMs)) * time.Millisecond
	if deliveries && deliverIn < wait {
		wait = deliverIn
	}
	return max(wait, time.Millisecond)
}

func (c *Client) hintIDsOf(id ContactID) []peer.ID {
	if ct := c.contacts[id]; ct != nil {
		return c.hintIDs(ct.hints)
	}
	return nil
}

// depositOutcome is what one attempt learned about one entry.
type depositOutcome struct {
	stored  bool
	receipt []byte
	final   Status // StatusFailed or StatusExpiredUndelivered: give up
	retry   time.Duration
}

// attempt deposits a batch of entries to one mailbox: to the closest
// reachable replica, pipelined on its deposit stream; what a replica does
// not take is tried on the next.
func (c *Client) attempt(ctx context.Context, mb wire.Mailbox, hints []peer.ID, items []*outboxRec) {
	n := c.net
	out := make([]depositOutcome, len(items))
	left := make([]int, len(items))
	for i := range left {
		left[i] = i
	}
	defer func() { c.finishAttempt(mb, items, out) }()
	for _, relay := range n.order(n.replicaSet(ctx, mb, hints)) {
		if len(left) == 0 || ctx.Err() != nil {
			return
		}
		info, err := n.relayInfo(ctx, relay)
		if err != nil {
			c.log.Debug("relay unreachable", "relay", relay.String(), "err", err)
			n.markDown(relay, 0)
			continue
		}
		if info.PostageDifficulty > 0 {
			c.solvePostage(ctx, items, left, info.PostageDifficulty)
		}
		ds, err := n.depositStream(ctx, relay)
		if err != nil {
			c.log.Debug("deposit stream", "relay", relay.String(), "err", err)
			n.markDown(relay, 0)
			continue
		}
		calls := make([]*rpc.DepositCall, len(left))
		var sendErr error
		for j, i := range left {
			calls[j], sendErr = ds.Send(ctx, items[i].envelope)
			if sendErr != nil {
				break
			}
		}
		var still []int
		streamBad := sendErr != nil
		anyStored := false
		for j, i := range left {
			if calls[j] == nil {
				still = append(still, i)
				continue
			}
			res, err := calls[j].Wait(ctx)
			if err == nil {
				if res.Receipt != nil {
					if res.Receipt.CID != items[i].cid || res.Receipt.Mailbox != mb {
						c.log.Warn("receipt for another envelope", "relay", relay.String())
						still = append(still, i)
						continue
					}
					rb, merr := res.Receipt.Marshal()
					if merr == nil {
						out[i].receipt = rb
					}
				}
				out[i].stored = true
				anyStored = true
				continue
			}
			c.log.Debug("deposit refused", "relay", relay.String(), "err", err)
			var re *rpc.Error
			switch {
			case errors.As(err, &re):
				switch re.Status {
				case pb.Status_STATUS_NOT_REPLICA:
					n.notReplica(mb, re.ReplicaPeers)
					for _, p := range re.ReplicaPeers {
						n.ensureAddrs(ctx, p)
					}
				case pb.Status_STATUS_POSTAGE_REQUIRED:
					n.setDifficulty(relay, re.PostageDifficulty)
				case pb.Status_STATUS_TOO_LARGE, pb.Status_STATUS_MALFORMED, pb.Status_STATUS_UNSUPPORTED_VERSION:
					c.log.Warn("relay refused an envelope for good", "relay", relay.String(), "err", err)
					out[i].final = StatusFailed
					continue
				case pb.Status_STATUS_EXPIRY_INVALID:
					if items[i].expiry <= uint64(c.now().Unix()) {
						out[i].final = StatusExpiredUndelivered
						continue
					}
				case pb.Status_STATUS_RATE_LIMITED, pb.Status_STATUS_BUSY:
					out[i].retry = max(out[i].retry, re.RetryAfter)
					n.markDown(relay, re.RetryAfter)
				default:
					n.markDown(relay, re.RetryAfter)
				}
			default:
				streamBad = true
			}
			still = append(still, i)
		}
		if streamBad {
			n.dropStream(relay, ds)
			n.markDown(relay, 0)
		} else if anyStored {
			n.markUp(relay)
		}
		left = still
	}
}

// solvePostage gives the entries postage of difficulty d where they lack
// it. The envelope (and so its CID) changes; the new bytes are persisted
// before they are deposited.
func (c *Client) solvePostage(ctx context.Context, items []*outboxRec, idx []int, d int) {
	for _, i := range idx {
		r := items[i]
		env, err := wire.ParseEnvelope(r.envelope)
		if err != nil || wire.PostageBits(env) >= d {
			continue
		}
		e := *env
		e.Ciphertext = append([]byte(nil), env.Ciphertext...)
		if err := wire.SolvePostage(ctx, &e, d); err != nil {
			return
		}
		eb, err := e.Marshal()
		if err != nil {
			continue
		}
		c.mu.Lock()
		cur := c.outbox[outKey{r.contact, r.counter}]
		if cur == r && !c.closed {
			upd := *r
			upd.envelope, upd.cid = eb, wire.CIDOf(eb)
			if err := c.db.update(func(tx kvTx) error { return tx.set(keyOutbox(r.contact, r.counter), upd.marshal()) }); err == nil {
				*r = upd
			}
		}
		c.mu.Unlock()
	}
}

// finishAttempt records an attempt's outcomes in one transaction.
func (c *Client) finishAttempt(mb wire.Mailbox, items []*outboxRec, out []depositOutcome) {
	c.mu.Lock()
	defer c.kick(c.kickSend)
	defer c.mu.Unlock()
	delete(c.sending, mb)
	for _, r := range items {
		delete(c.inflight, outKey{r.contact, r.counter})
	}
	if c.closed {
		return
	}
	now := c.now()
	var evs []Event
	anyStored := false
	type change struct {
		r   *outboxRec
		upd outboxRec
		del bool
	}
	var changes []change
	for i, r := range items {
		if c.outbox[outKey{r.contact, r.counter}] != r {
			continue // finished meanwhile (a delivery receipt came first)
		}
		upd := *r
		o := out[i]
		switch {
		case o.stored:
			anyStored = true
			upd.status = StatusStored
			upd.receipt = o.receipt
			upd.nextMs = upd.expiry * 1000
			changes = append(changes, change{r, upd, r.kind != wire.PayloadText})
		case o.final != 0:
			upd.status = o.final
			changes = append(changes, change{r, upd, true})
		default:
			upd.attempts++
			d := jitter(c.cfg.Rand, backoff(c.cfg.RetryMin, c.cfg.RetryMax, int(upd.attempts)))
			upd.nextMs = uint64(now.Add(max(d, o.retry)).UnixMilli())
			changes = append(changes, change{r, upd, false})
		}
	}
	err := c.db.update(func(tx kvTx) error {
		for _, ch := range changes {
			k := keyOutbox(ch.r.contact, ch.r.counter)
			if ch.del {
				if err := tx.del(k); err != nil {
					return err
				}
			} else if err := tx.set(k, ch.upd.marshal()); err != nil {
				return err
			}
			if ch.r.kind == wire.PayloadText && ch.upd.status != ch.r.status {
				if _, err := setMsgStatus(tx, ch.r.contact, ch.r.counter, ch.upd.status); err != nil {
					return err
				}
				evs = append(evs, StatusChanged{ID: messageID(ch.r.contact, Outgoing, ch.r.counter), Contact: ch.r.contact, Status: ch.upd.status})
			}
		}
		return nil
	})
	if err != nil {
		c.log.Error("record deposit outcome", "err", err)
		c.reloadLocked()
		return
	}
	for _, ch := range changes {
		k := outKey{ch.r.contact, ch.r.counter}
		if ch.del {
			c.delOutLocked(k)
		} else {
			*ch.r = ch.upd
			c.putOutLocked(ch.r)
		}
	}
	if anyStored {
		// The mailbox is reachable again: retry its backlog now.
		nowMs := uint64(now.UnixMilli())
		for k, r := range c.queued {
			if r.mailbox == mb && !c.inflight[k] && r.nextMs > nowMs {
				r.nextMs = nowMs
			}
		}
	}
	c.emit(evs...)
}

// setMsgStatus updates the status of an outgoing message in the history
// and reports whether it changed. Delivered is final.
func setMsgStatus(tx kvTx, contact ContactID, counter uint64, st Status) (bool, error) {
	k := keyHistory(contact, Outgoing, counter)
	b, err := tx.get(k)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	m, err := parseMsgRec(b)
	if err != nil {
		return false, err
	}
	if m.status == st || m.status == StatusDelivered {
		return false, nil
	}
	m.status = st
	return true, tx.set(k, m.marshal())
}

// finalizeLocked gives entries a final status and removes them from the
// outbox.
func (c *Client) finalizeLocked(items []*outboxRec, st Status) {
	var evs []Event
	err := c.db.update(func(tx kvTx) error {
		for _, r := range items {
			if err := tx.del(keyOutbox(r.contact, r.counter)); err != nil {
				return err
			}
			if r.kind == wire.PayloadText {
				if _, err := setMsgStatus(tx, r.contact, r.counter, st); err != nil {
					return err
				}
				evs = append(evs, StatusChanged{ID: messageID(r.contact, Outgoing, r.counter), Contact: r.contact, Status: st})
			}
		}
		return nil
	})
	if err != nil {
		c.log.Error("finalize outbox entries", "err", err)
		c.reloadLocked()
		return
	}
	for _, r := range items {
		c.delOutLocked(outKey{r.contact, r.counter})
	}
	c.emit(evs...)
}

// checkFate asks the replicas what became of stored messages whose expiry
// passed without a delivery receipt (SPEC.md §10.7). Expired (or forgotten)
// everywhere that answered: expired-undelivered. Acked by the recipient:
// it got the message; the status stays stored until its delivery receipt.
func (c *Client) checkFate(ctx context.Context, mb wire.Mailbox, hints []peer.ID, items []*outboxRec) {
	n := c.net
	cids := make([]wire.CID, len(items))
	for i, r := range items {
		cids[i] = r.cid
	}
	answered := 0
	acked := make([]bool, len(items))
	live := make([]bool, len(items))
	for _, relay := range n.order(n.replicaSet(ctx, mb, hints)) {
		states, err := n.rpc.Status(ctx, relay, mb, cids)
		if err != nil {
			c.log.Debug("status", "relay", relay.String(), "err", err)
			continue
		}
		answered++
		for i, s := range states {
			switch s {
			case pb.EntryState_ENTRY_STATE_ACKED:
				acked[i] = true
			case pb.EntryState_ENTRY_STATE_STORED:
				live[i] = true
			}
		}
	}
	c.mu.Lock()
	defer c.kick(c.kickSend)
	defer c.mu.Unlock()
	for _, r := range items {
		delete(c.inflight, outKey{r.contact, r.counter})
	}
	if c.closed {
		return
	}
	now := c.now()
	var gone []*outboxRec
	for i, r := range items {
		if c.outbox[outKey{r.contact, r.counter}] != r {
			continue
		}
		switch {
		case acked[i]:
			r.nextMs = ^uint64(0) // wait for the delivery receipt
		case answered > 0 && !live[i]:
			gone = append(gone, r)
		case now.After(time.Unix(int64(r.expiry), 0).Add(maxStatusRecheck)):
			gone = append(gone, r)
		default:
			r.nextMs = uint64(now.Add(jitter(c.cfg.Rand, c.cfg.RetryMax)).UnixMilli())
		}
		if c.nextCheckMs != 0 {
			c.nextCheckMs = min(c.nextCheckMs, r.nextMs)
		}
	}
	if len(gone) > 0 {
		c.finalizeLocked(gone, StatusExpiredUndelivered)
	}
}

// flushDeliveries sends the pending delivery receipts: one DELIVERY payload
// per contact with stored TEXT messages not yet confirmed (SPEC.md §16).
func (c *Client) flushDeliveries() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deliveryAt = time.Time{}
	if c.closed {
		return
	}
	var recs []*outboxRec
	err := c.db.update(func(tx kvTx) error {
		for id, r := range c.recv {
			if len(r.acks) == 0 {
				continue
			}
			ct := c.contacts[id]
			if ct == nil || c.activeSessionLocked(id) == nil {
				continue
			}
			for len(r.acks) > 0 {
				k := min(len(r.acks), wire.MaxPayloadAcks)
				rec, err := c.sealLocked(tx, ct, &wire.Payload{Kind: wire.PayloadDelivery, Acks: r.acks[:k]}, nil, nil)
				if err != nil {
					return err
				}
				recs = append(recs, rec)
				r.acks = r.acks[k:]
			}
			r.acks = nil
			if err := tx.set(keyRecv(id), r.marshal()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.log.Error("send delivery receipts", "err", err)
		c.reloadLocked()
		return
	}
	for _, r := range recs {
		c.putOutLocked(r)
	}
	if len(recs) > 0 {
		c.kick(c.kickSend)
	}
}
