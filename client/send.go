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
	"github.com/cairn-net/cairn/store"
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
	bundle, hints, mailbox := ct.Bundle, ct.Hints, ct.Mailbox
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
	var rec *store.OutboxEntry
	err := c.db.Update(func(tx *store.ClientTx) error {
		var err error
		rec, err = c.sealLocked(tx, ct, &wire.Payload{Kind: wire.PayloadText, Body: body}, dh, kem)
		if err != nil {
			return err
		}
		m := &store.Message{Direction: store.Outgoing, Counter: rec.Counter, Body: body, SentAtMs: c.nowMs(), AtMs: c.nowMs(),
			Seq: rec.Seq, Status: store.StatusQueued}
		return tx.PutMessage(string(to), m)
	})
	if err != nil {
		c.reloadLocked()
		return "", fmt.Errorf("client: send: %w", err)
	}
	c.putOutLocked(rec)
	c.kick(c.kickSend)
	return messageID(to, Outgoing, rec.Counter), nil
}

// activeSessionLocked returns the session to encrypt with for a contact:
// the non-retired one (SPEC.md §15, simultaneous initiation).
func (c *Client) activeSessionLocked(id ContactID) *sessionRec {
	var best *sessionRec
	for _, s := range c.order {
		if s.Contact == string(id) && !s.Retired {
			if best == nil || s.Active > best.Active {
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
func (c *Client) sealLocked(tx *store.ClientTx, ct *store.Contact, p *wire.Payload, dh, kem *ratchet.OneTimePrekey) (*store.OutboxEntry, error) {
	s := c.activeSessionLocked(contactOf(ct))
	if s == nil {
		if ct.Bundle == nil {
			return nil, fmt.Errorf("no session with %s and no bundle to start one", ct.ID)
		}
		b, err := ratchet.ParseBundle(ct.Bundle)
		if err != nil {
			return nil, fmt.Errorf("bundle: %w", err)
		}
		sess, err := ratchet.Initiate(c.cfg.Rand, c.keys.Identity(), b, dh, kem)
		if err != nil && (dh != nil || kem != nil) {
			// A relay served a bad one-time prekey: use the bundle alone.
			c.log.Warn("one-time prekey refused; using the last-resort prekey", "contact", ct.ID, "err", err)
			sess, err = ratchet.Initiate(c.cfg.Rand, c.keys.Identity(), b, nil, nil)
		}
		if err != nil {
			return nil, fmt.Errorf("start session: %w", err)
		}
		s = &sessionRec{Session: store.Session{HandshakeID: sess.HandshakeID(), Contact: ct.ID}, sess: sess}
		c.addSessionLocked(s)
	}
	now := c.now()
	p.Counter = ct.NextCounter
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
	ct.NextCounter++
	seq := c.nextSeqLocked()
	c.touchSessionLocked(s, seq)
	env := wire.Envelope{Mailbox: ct.Mailbox, Expiry: uint64(now.Add(c.cfg.TTL).Unix()), Ciphertext: ctext}
	eb, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	rec := &store.OutboxEntry{
		Contact:       ct.ID,
		Counter:       p.Counter,
		Kind:          p.Kind,
		Mailbox:       ct.Mailbox,
		Envelope:      eb,
		CID:           wire.CIDOf(eb),
		Status:        store.StatusQueued,
		NextAttemptMs: uint64(now.UnixMilli()),
		Seq:           seq,
		Expiry:        env.Expiry,
	}
	sr, err := s.record()
	if err != nil {
		return nil, err
	}
	if err := tx.PutSession(sr); err != nil {
		return nil, err
	}
	if err := tx.PutContact(ct); err != nil {
		return nil, err
	}
	if err := tx.PutOutbox(rec); err != nil {
		return nil, err
	}
	return rec, tx.PutLocalSeq(c.seq)
}

// addSessionLocked registers a new session as the most recently active.
func (c *Client) addSessionLocked(s *sessionRec) {
	c.sessions[s.HandshakeID] = s
	c.order = append([]*sessionRec{s}, c.order...)
}

// touchSessionLocked marks a session as just used: it moves to the front of
// the trial-decryption order.
func (c *Client) touchSessionLocked(s *sessionRec, seq uint64) {
	s.Active = seq
	if len(c.order) > 0 && c.order[0] == s {
		return
	}
	if i := slices.Index(c.order, s); i > 0 {
		copy(c.order[1:i+1], c.order[:i])
		c.order[0] = s
	}
}

func (c *Client) removeSessionLocked(s *sessionRec) {
	delete(c.sessions, s.HandshakeID)
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
	replicas, _ := n.replicaSet(ctx, mb, n.addHints(hints))
	for _, relay := range n.order(replicas) {
		got, err := n.senderRPC(relay).FetchPrekeys(ctx, relay, mb)
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
	due := map[wire.Mailbox][]*store.OutboxEntry{}
	checks := map[wire.Mailbox][]*store.OutboxEntry{}
	var expired []*store.OutboxEntry
	for k, r := range c.queued {
		if c.inflight[k] {
			continue
		}
		if r.Expiry <= nowS {
			expired = append(expired, r)
		} else if r.NextAttemptMs <= nowMs {
			if !c.sending[r.Mailbox] {
				due[r.Mailbox] = append(due[r.Mailbox], r)
			}
		} else {
			next = min(next, r.NextAttemptMs)
		}
	}
	if c.nextCheckMs <= nowMs {
		// Scan the stored entries for fate checks due.
		c.nextCheckMs = ^uint64(0)
		for k, r := range c.outbox {
			if r.Status != store.StatusStored || c.inflight[k] {
				continue
			}
			at := max(r.NextAttemptMs, r.Expiry*1000)
			if at <= nowMs {
				checks[r.Mailbox] = append(checks[r.Mailbox], r)
			} else {
				c.nextCheckMs = min(c.nextCheckMs, at)
			}
		}
	}
	next = min(next, c.nextCheckMs)
	if len(expired) > 0 {
		c.finalizeLocked(expired, store.StatusExpiredUndelivered)
	}
	for mb, items := range due {
		// Priority: first attempts before retries, user messages before
		// delivery receipts, then oldest first.
		slices.SortFunc(items, func(a, b *store.OutboxEntry) int {
			if (a.Retries == 0) != (b.Retries == 0) {
				if a.Retries == 0 {
					return -1
				}
				return 1
			}
			if a.Kind != b.Kind {
				return int(a.Kind) - int(b.Kind)
			}
			return cmpU64(a.Seq, b.Seq)
		})
		if len(items) > wire.MaxDepositInflight {
			items = items[:wire.MaxDepositInflight]
			next = nowMs // more are due right away
		}
		for _, r := range items {
			c.inflight[outKeyOf(r)] = true
		}
		c.sending[mb] = true
		hints := c.hintIDsOf(ContactID(items[0].Contact))
		c.wg.Go(func() { c.attempt(ctx, mb, hints, items) })
	}
	for mb, items := range checks {
		if len(items) > wire.MaxStatusCIDs {
			items = items[:wire.MaxStatusCIDs]
		}
		for _, r := range items {
			c.inflight[outKeyOf(r)] = true
		}
		hints := c.hintIDsOf(ContactID(items[0].Contact))
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
		return c.hintIDs(ct.Hints)
	}
	return nil
}

// depositOutcome is what one attempt learned about one entry.
type depositOutcome struct {
	stored  bool
	receipt []byte
	final   store.Status // StatusFailed or StatusExpiredUndelivered: give up
	retry   time.Duration
}

// attempt deposits a batch of entries to one mailbox: to the closest
// reachable replica, pipelined on its deposit stream; what a replica does
// not take is tried on the next.
//
// An entry is stored when a replica answers with a receipt that verifies
// and whose origin is that replica or another replica of the mailbox
// (SPEC.md §17.3). A duplicate answered without a receipt ("acked or
// expired here"), or with a receipt of an origin that is no replica,
// proves nothing: the entry is tried on the next replica. It counts as
// stored without a receipt only if two replicas (one, if the set has one)
// gave such an answer and none took it.
func (c *Client) attempt(ctx context.Context, mb wire.Mailbox, hints []peer.ID, items []*store.OutboxEntry) {
	n := c.net
	out := make([]depositOutcome, len(items))
	left := make([]int, len(items))
	for i := range left {
		left[i] = i
	}
	// gone[i] lists the replicas that answered entry i with an unconfirmed
	// duplicate.
	gone := make([][]peer.ID, len(items))
	var replicas []peer.ID
	defer func() {
		for _, i := range left {
			if out[i].final == 0 && len(gone[i]) > 0 && len(gone[i]) >= min(2, len(replicas)) {
				c.log.Info("duplicate confirmed by several replicas: the entry was delivered or expired", "cid", items[i].CID.String(), "replicas", len(gone[i]))
				out[i].stored = true
			}
		}
		c.finishAttempt(mb, items, out)
	}()
	replicas, _ = n.replicaSet(ctx, mb, hints)
	// known holds the replica set and the replicas relays name (NOT_REPLICA).
	known := slices.Clone(replicas)
	for _, relay := range n.order(replicas) {
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
			calls[j], sendErr = ds.Send(ctx, items[i].Envelope)
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
				switch {
				case res.Receipt == nil:
					// "Delivered or expired here": the relay's word alone.
					c.log.Info("duplicate without a receipt; trying another replica", "relay", relay.String(), "cid", items[i].CID.String())
					gone[i] = append(gone[i], relay)
					still = append(still, i)
					continue
				case res.Receipt.CID != items[i].CID || res.Receipt.Mailbox != mb:
					c.log.Warn("receipt for another envelope", "relay", relay.String())
					still = append(still, i)
					continue
				case res.Receipt.Origin != relay && !slices.Contains(known, res.Receipt.Origin):
					c.log.Warn("duplicate with a receipt whose origin is no replica of the mailbox; trying another replica",
						"relay", relay.String(), "origin", res.Receipt.Origin.String())
					gone[i] = append(gone[i], relay)
					still = append(still, i)
					continue
				}
				rb, merr := res.Receipt.Marshal()
				if merr == nil {
					out[i].receipt = rb
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
					known = append(known, re.ReplicaPeers...)
					for _, p := range re.ReplicaPeers {
						n.ensureAddrs(ctx, p)
					}
				case pb.Status_STATUS_POSTAGE_REQUIRED:
					n.setDifficulty(relay, re.PostageDifficulty)
				case pb.Status_STATUS_TOO_LARGE, pb.Status_STATUS_MALFORMED, pb.Status_STATUS_UNSUPPORTED_VERSION:
					c.log.Warn("relay refused an envelope for good", "relay", relay.String(), "err", err)
					out[i].final = store.StatusFailed
					continue
				case pb.Status_STATUS_EXPIRY_INVALID:
					if items[i].Expiry <= uint64(c.now().Unix()) {
						out[i].final = store.StatusExpiredUndelivered
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
func (c *Client) solvePostage(ctx context.Context, items []*store.OutboxEntry, idx []int, d int) {
	for _, i := range idx {
		r := items[i]
		env, err := wire.ParseEnvelope(r.Envelope)
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
		cur := c.outbox[outKeyOf(r)]
		if cur == r && !c.closed {
			upd := *r
			upd.Envelope, upd.CID = eb, wire.CIDOf(eb)
			if err := c.db.Update(func(tx *store.ClientTx) error { return tx.PutOutbox(&upd) }); err == nil {
				*r = upd
			}
		}
		c.mu.Unlock()
	}
}

// finishAttempt records an attempt's outcomes in one transaction.
func (c *Client) finishAttempt(mb wire.Mailbox, items []*store.OutboxEntry, out []depositOutcome) {
	c.mu.Lock()
	defer c.kick(c.kickSend)
	defer c.mu.Unlock()
	delete(c.sending, mb)
	for _, r := range items {
		delete(c.inflight, outKeyOf(r))
	}
	if c.closed {
		return
	}
	now := c.now()
	var evs []Event
	anyStored := false
	retried := 0
	type change struct {
		r   *store.OutboxEntry
		upd store.OutboxEntry
		del bool
	}
	var changes []change
	for i, r := range items {
		if c.outbox[outKeyOf(r)] != r {
			continue // finished meanwhile (a delivery receipt came first)
		}
		upd := *r
		o := out[i]
		switch {
		case o.stored:
			anyStored = true
			upd.Status = store.StatusStored
			upd.Receipt = o.receipt
			upd.NextAttemptMs = upd.Expiry * 1000
			changes = append(changes, change{r, upd, r.Kind != wire.PayloadText})
		case o.final != 0:
			upd.Status = o.final
			changes = append(changes, change{r, upd, true})
		default:
			retried++
			upd.Retries++
			d := jitter(c.cfg.Rand, backoff(c.cfg.RetryMin, c.cfg.RetryMax, int(upd.Retries)))
			upd.NextAttemptMs = uint64(now.Add(max(d, o.retry)).UnixMilli())
			changes = append(changes, change{r, upd, false})
		}
	}
	err := c.db.Update(func(tx *store.ClientTx) error {
		for _, ch := range changes {
			if ch.del {
				if err := tx.DeleteOutbox(ch.r.Contact, ch.r.Counter); err != nil {
					return err
				}
			} else if err := tx.PutOutbox(&ch.upd); err != nil {
				return err
			}
			if ch.r.Kind == wire.PayloadText && ch.upd.Status != ch.r.Status {
				if _, err := setMsgStatus(tx, ContactID(ch.r.Contact), ch.r.Counter, ch.upd.Status); err != nil {
					return err
				}
				evs = append(evs, statusChanged(ch.r, ch.upd.Status))
			}
		}
		return nil
	})
	if err != nil {
		c.log.Error("record deposit outcome", "err", err)
		c.reloadLocked()
		return
	}
	if retried > 0 {
		c.log.Debug("deposit attempt: entries stay queued for a retry", "mailbox", mb.String(), "entries", retried)
	}
	for _, ch := range changes {
		k := outKeyOf(ch.r)
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
			if r.Mailbox == mb && !c.inflight[k] && r.NextAttemptMs > nowMs {
				r.NextAttemptMs = nowMs
			}
		}
	}
	c.emit(evs...)
}

// setMsgStatus updates the status of an outgoing message in the history
// and reports whether it changed. Delivered is final.
func setMsgStatus(tx *store.ClientTx, contact ContactID, counter uint64, st store.Status) (bool, error) {
	m, err := tx.Message(string(contact), store.Outgoing, counter)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if m.Status == st || m.Status == store.StatusDelivered {
		return false, nil
	}
	m.Status = st
	return true, tx.PutMessage(string(contact), m)
}

// statusChanged is the event of an outbox entry's message taking status st.
func statusChanged(r *store.OutboxEntry, st store.Status) Event {
	id := ContactID(r.Contact)
	return StatusChanged{ID: messageID(id, Outgoing, r.Counter), Contact: id, Status: Status(st)}
}

// finalizeLocked gives entries a final status and removes them from the
// outbox.
func (c *Client) finalizeLocked(items []*store.OutboxEntry, st store.Status) {
	var evs []Event
	err := c.db.Update(func(tx *store.ClientTx) error {
		for _, r := range items {
			if err := tx.DeleteOutbox(r.Contact, r.Counter); err != nil {
				return err
			}
			if r.Kind == wire.PayloadText {
				if _, err := setMsgStatus(tx, ContactID(r.Contact), r.Counter, st); err != nil {
					return err
				}
				evs = append(evs, statusChanged(r, st))
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
		c.delOutLocked(outKeyOf(r))
	}
	c.emit(evs...)
}

// checkFate asks the replicas what became of stored messages whose expiry
// passed without a delivery receipt (SPEC.md §10.7). Expired (or forgotten)
// everywhere that answered: expired-undelivered. Acked by the recipient:
// it got the message; the status stays stored until its delivery receipt.
func (c *Client) checkFate(ctx context.Context, mb wire.Mailbox, hints []peer.ID, items []*store.OutboxEntry) {
	n := c.net
	cids := make([]wire.CID, len(items))
	for i, r := range items {
		cids[i] = r.CID
	}
	answered := 0
	acked := make([]bool, len(items))
	live := make([]bool, len(items))
	replicas, _ := n.replicaSet(ctx, mb, hints)
	for _, relay := range n.order(replicas) {
		states, err := n.senderRPC(relay).Status(ctx, relay, mb, cids)
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
		delete(c.inflight, outKeyOf(r))
	}
	if c.closed {
		return
	}
	now := c.now()
	var gone []*store.OutboxEntry
	for i, r := range items {
		if c.outbox[outKeyOf(r)] != r {
			continue
		}
		switch {
		case acked[i]:
			r.NextAttemptMs = ^uint64(0) // wait for the delivery receipt
		case answered > 0 && !live[i]:
			gone = append(gone, r)
		case now.After(time.Unix(int64(r.Expiry), 0).Add(maxStatusRecheck)):
			gone = append(gone, r)
		default:
			r.NextAttemptMs = uint64(now.Add(jitter(c.cfg.Rand, c.cfg.RetryMax)).UnixMilli())
		}
		if c.nextCheckMs != 0 {
			c.nextCheckMs = min(c.nextCheckMs, r.NextAttemptMs)
		}
	}
	if len(gone) > 0 {
		c.finalizeLocked(gone, store.StatusExpiredUndelivered)
	}
}

// flushDeliveries sends the pending delivery receipts: one DELIVERY payload
// per contact with stored TEXT messages not yet confirmed (SPEC.md §16).
func (c *Client) flushDeliveries() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sealDeliveriesLocked()
}

// sealDeliveriesLocked puts the pending delivery receipts in the outbox
// (one transaction) and kicks the sender.
func (c *Client) sealDeliveriesLocked() {
	c.deliveryAt = time.Time{}
	if c.closed {
		return
	}
	var recs []*store.OutboxEntry
	err := c.db.Update(func(tx *store.ClientTx) error {
		for id, r := range c.recv {
			if len(r.Acks) == 0 {
				continue
			}
			ct := c.contacts[id]
			if ct == nil || c.activeSessionLocked(id) == nil {
				continue
			}
			for len(r.Acks) > 0 {
				k := min(len(r.Acks), wire.MaxPayloadAcks)
				rec, err := c.sealLocked(tx, ct, &wire.Payload{Kind: wire.PayloadDelivery, Acks: r.Acks[:k]}, nil, nil)
				if err != nil {
					return err
				}
				recs = append(recs, rec)
				r.Acks = r.Acks[k:]
			}
			r.Acks = nil
			if err := tx.PutRecvState(string(id), r); err != nil {
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
