package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
)

// Client is an embeddable cairn client: one user's identity, contacts,
// sessions, outbox and received messages, and the network loops that send
// and receive. Create it with New, call Start to go online, and Close when
// done. Its methods are safe for concurrent use.
//
// Concurrency: one mutex guards every piece of ratchet state and every write
// to the database, so a session has exactly one writer and is persisted in
// the same transaction as what it encrypted or decrypted. The database
// directory is locked by badger: a second process cannot open it.
type Client struct {
	cfg       Config
	bootstrap []ma.Multiaddr
	log       *slog.Logger
	db        *store.ClientDB

	evMu     sync.Mutex
	events   chan Event
	dropped  int
	evClosed bool

	// mu guards everything below and serialises every database write.
	mu       sync.Mutex
	closed   bool
	keys     *ratchet.PrivateKeys
	mboxKey  ed25519.PrivateKey
	mailbox  wire.Mailbox
	contacts map[ContactID]*store.Contact
	sessions map[[32]byte]*sessionRec
	order    []*sessionRec // trial-decryption order, most recently active first
	recv     map[ContactID]*store.RecvState
	outbox   map[outKey]*store.OutboxEntry // every entry
	queued   map[outKey]*store.OutboxEntry // the entries with StatusQueued
	// nextCheckMs is when the earliest stored entry is due for a fate
	// check (0: unknown, scan).
	nextCheckMs uint64
	inflight    map[outKey]bool
	sending     map[wire.Mailbox]bool // a deposit attempt is running
	// cursors are the durable sync cursors of this client's mailbox, one
	// per relay, loaded when a relay is first synced (SPEC.md §7: a relay's
	// watermarks only ever change what is asked of that relay).
	cursors map[peer.ID]*wire.Cursor
	seq     uint64
	pending int // stored pending entries
	// deliveryAt is when the pending delivery receipts go out (zero: none
	// pending).
	deliveryAt time.Time

	// outWake is closed (and replaced) whenever the outbox changes or an
	// ack job ends: Flush waits on it.
	outWake chan struct{}
	// acking holds the running jobs that store received entries and then
	// ack them (a pushed batch, a sync of one relay), by ID.
	acking map[uint64]struct{}
	ackJob uint64

	// peerKey is the libp2p key of this run (made by New, used by Start);
	// senderKey the one it writes to other mailboxes with (SenderPeerID).
	// Neither is ever stored.
	peerKey   crypto.PrivKey
	peerID    peer.ID
	senderKey crypto.PrivKey
	senderID  peer.ID

	startMu  sync.Mutex
	started  bool
	net      *netState
	runCtx   context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	kickSend chan struct{}
	kickSync chan struct{}
	syncMu   sync.Mutex // one sync round at a time
	// bw, if set before Start (tests), counts the hosts' stream bytes.
	bw       metrics.Reporter
	prekeyMu sync.Mutex // one prekey replenishment at a time
}

type outKey struct {
	contact ContactID
	counter uint64
}

func outKeyOf(r *store.OutboxEntry) outKey { return outKey{ContactID(r.Contact), r.Counter} }

// New opens (or creates) the client's database in cfg.DataDir and loads its
// identity, creating one on first use. It does not touch the network: call
// Start for that.
func New(cfg Config) (*Client, error) {
	cfg, addrs, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := store.OpenClientDB(store.ClientOptions{Dir: cfg.DataDir, EncryptionKey: cfg.EncryptionKey, Now: cfg.Now, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{
		cfg:       cfg,
		bootstrap: addrs,
		log:       cfg.Logger,
		db:        db,
		events:    make(chan Event, cfg.EventBuffer),
		kickSend:  make(chan struct{}, 1),
		kickSync:  make(chan struct{}, 1),
		outWake:   make(chan struct{}),
		acking:    map[uint64]struct{}{},
	}
	c.mu.Lock()
	err = c.loadLocked(true)
	c.mu.Unlock()
	if err == nil {
		// After the identity, so a deterministic Rand gives the same
		// identity as before.
		c.peerKey, c.peerID, err = newPeerKey(cfg.Rand)
	}
	if err == nil {
		c.senderKey, c.senderID, err = newPeerKey(cfg.Rand)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("client: load: %w", err)
	}
	return c, nil
}

// loadLocked reads the whole client state from the database; create makes
// an identity if there is none. It is also how the in-memory state is
// rebuilt after a failed transaction.
func (c *Client) loadLocked(create bool) error {
	var id *store.Identity
	err := c.db.View(func(tx *store.ClientTx) error {
		var err error
		id, err = tx.Identity()
		if errors.Is(err, store.ErrNotFound) {
			id, err = nil, nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if id == nil {
		if !create {
			return errors.New("identity missing")
		}
		if err := c.createIdentityLocked(); err != nil {
			return err
		}
	} else {
		keys, err := ratchet.ParsePrivateKeys(id.Keys)
		if err != nil {
			return fmt.Errorf("identity: %w", err)
		}
		if len(id.MailboxSeed) != ed25519.SeedSize {
			return fmt.Errorf("mailbox key: seed of %d bytes", len(id.MailboxSeed))
		}
		c.keys = keys
		c.mboxKey = ed25519.NewKeyFromSeed(id.MailboxSeed)
	}
	c.mailbox = mailboxOfKey(c.mboxKey)
	c.contacts = map[ContactID]*store.Contact{}
	c.sessions = map[[32]byte]*sessionRec{}
	c.order = nil
	c.recv = map[ContactID]*store.RecvState{}
	c.outbox = map[outKey]*store.OutboxEntry{}
	c.queued = map[outKey]*store.OutboxEntry{}
	c.outChangedLocked()
	c.nextCheckMs = 0
	if c.inflight == nil {
		c.inflight = map[outKey]bool{}
	}
	if c.sending == nil {
		c.sending = map[wire.Mailbox]bool{}
	}
	c.pending = 0
	c.cursors = map[peer.ID]*wire.Cursor{}
	return c.db.View(func(tx *store.ClientTx) error {
		var err error
		if c.seq, err = tx.LocalSeq(); err != nil {
			return err
		}
		if err := tx.ForEachContact(func(r *store.Contact) error {
			c.contacts[contactOf(r)] = r
			return nil
		}); err != nil {
			return err
		}
		if err := tx.ForEachSession(func(s *store.Session) error {
			r, err := parseSession(s)
			if err != nil {
				return fmt.Errorf("session %x: %w", s.HandshakeID[:8], err)
			}
			c.sessions[r.HandshakeID] = r
			c.order = append(c.order, r)
			return nil
		}); err != nil {
			return err
		}
		slices.SortFunc(c.order, func(a, b *sessionRec) int { return -cmpU64(a.Active, b.Active) })
		if err := tx.ForEachRecvState(func(id string, r *store.RecvState) error {
			c.recv[ContactID(id)] = r
			return nil
		}); err != nil {
			return err
		}
		if err := tx.ForEachOutbox(func(r *store.OutboxEntry) error {
			c.putOutLocked(r)
			return nil
		}); err != nil {
			return err
		}
		return tx.ForEachPending(func(uint64, *store.PendingEntry, error) error { c.pending++; return nil })
	})
}

// putOutLocked adds or updates an outbox entry in the in-memory indexes.
func (c *Client) putOutLocked(r *store.OutboxEntry) {
	c.outChangedLocked()
	k := outKeyOf(r)
	c.outbox[k] = r
	if r.Status == store.StatusQueued {
		c.queued[k] = r
	} else {
		delete(c.queued, k)
		if c.nextCheckMs != 0 {
			c.nextCheckMs = min(c.nextCheckMs, max(r.NextAttemptMs, r.Expiry*1000))
		}
	}
}

// delOutLocked removes an outbox entry from the in-memory indexes.
func (c *Client) delOutLocked(k outKey) {
	c.outChangedLocked()
	delete(c.outbox, k)
	delete(c.queued, k)
}

func (c *Client) createIdentityLocked() error {
	id, err := ratchet.GenerateIdentity(c.cfg.Rand)
	if err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(c.cfg.Rand)
	if err != nil {
		return err
	}
	keys, err := ratchet.NewPrivateKeys(c.cfg.Rand, id, pub)
	if err != nil {
		return err
	}
	blob, err := keys.MarshalBinary()
	if err != nil {
		return err
	}
	if err := c.db.Update(func(tx *store.ClientTx) error {
		return tx.PutIdentity(&store.Identity{Keys: blob, MailboxSeed: priv.Seed()})
	}); err != nil {
		return err
	}
	c.keys, c.mboxKey = keys, priv
	c.log.Info("created identity", "mailbox", mailboxOfKey(priv).String())
	return nil
}

// putIdentityLocked writes the identity: the prekey state changes when a
// handshake consumes a one-time prekey and when new ones are generated.
func (c *Client) putIdentityLocked(tx *store.ClientTx) error {
	kb, err := c.keys.MarshalBinary()
	if err != nil {
		return err
	}
	return tx.PutIdentity(&store.Identity{Keys: kb, MailboxSeed: c.mboxKey.Seed()})
}

// reloadLocked rebuilds the in-memory state after a failed transaction,
// so that nothing that was not committed (a ratchet step, a counter) is
// kept.
func (c *Client) reloadLocked() {
	if err := c.loadLocked(false); err != nil {
		c.log.Error("reload after failed transaction", "err", err)
	}
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

// nextSeqLocked returns a fresh local sequence number (persisted by
// PutLocalSeq in the transaction that uses it).
func (c *Client) nextSeqLocked() uint64 {
	c.seq++
	return c.seq
}

func (c *Client) now() time.Time { return c.cfg.Now() }
func (c *Client) nowMs() uint64  { return uint64(c.cfg.Now().UnixMilli()) }

// Identity returns this client's identity key.
func (c *Client) Identity() ratchet.IdentityKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keys.Identity().Public()
}

// Mailbox returns the address of this client's mailbox.
func (c *Client) Mailbox() wire.Mailbox {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mailbox
}

// Invite returns this client's invite in its compact string form
// ("cairn1…"), to hand to a contact out of band. It carries the public
// bundle, Config.Name and up to 8 of the bootstrap relays as hints.
func (c *Client) Invite() (string, error) {
	inv, err := c.invite()
	if err != nil {
		return "", err
	}
	return inv.String()
}

// InviteQR returns the invite in its QR-friendly form (uppercase, in the QR
// alphanumeric set).
func (c *Client) InviteQR() (string, error) {
	inv, err := c.invite()
	if err != nil {
		return "", err
	}
	return inv.QR()
}

func (c *Client) invite() (*wire.Invite, error) {
	c.mu.Lock()
	bundle := c.keys.Bundle().Marshal()
	c.mu.Unlock()
	hints := c.bootstrap
	if len(hints) > wire.MaxInviteHints {
		hints = hints[:wire.MaxInviteHints]
	}
	name := c.cfg.Name
	if len(name) > wire.MaxInviteName {
		name = name[:wire.MaxInviteName]
	}
	return &wire.Invite{Bundle: bundle, Name: name, Hints: hints}, nil
}

// AcceptInvite adds the inviter as a contact (or refreshes a known
// contact's bundle, name and hints) and returns it. It does not touch the
// network: the session starts with the first Send.
func (c *Client) AcceptInvite(invite string) (Contact, error) {
	inv, err := wire.ParseInvite(invite)
	if err != nil {
		return Contact{}, fmt.Errorf("client: invite: %w", err)
	}
	b, err := ratchet.ParseBundle(inv.Bundle)
	if err != nil {
		return Contact{}, fmt.Errorf("client: invite bundle: %w", err)
	}
	var hints [][]byte
	for _, h := range inv.Hints {
		hints = append(hints, h.Bytes())
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Contact{}, ErrClosed
	}
	if b.Identity == c.keys.Identity().Public() {
		c.mu.Unlock()
		return Contact{}, ErrSelf
	}
	id := contactIDOf(b.Identity)
	r, known := c.contacts[id]
	upd := &store.Contact{ID: string(id), IdentityEd25519: b.Identity.Ed25519, IdentityX25519: b.Identity.X25519,
		NextCounter: 1, AddedMs: c.nowMs()}
	if known {
		cp := *r
		upd = &cp
	}
	upd.Bundle = inv.Bundle
	upd.Hints = hints
	if inv.Name != "" {
		upd.Name = inv.Name
	}
	upd.Mailbox = wire.MailboxOf(ed25519.PublicKey(b.PrekeySigner[:]))
	err = c.db.Update(func(tx *store.ClientTx) error { return tx.PutContact(upd) })
	if err != nil {
		c.mu.Unlock()
		return Contact{}, fmt.Errorf("client: store contact: %w", err)
	}
	c.contacts[id] = upd
	pub := publicContact(upd)
	n := c.net
	c.mu.Unlock()
	if n != nil {
		n.addHints(hints)
	}
	if !known {
		c.emit(ContactAdded{Contact: pub})
	}
	return pub, nil
}

// Contacts returns every contact, oldest first.
func (c *Client) Contacts() []Contact {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Contact, 0, len(c.contacts))
	for _, r := range c.contacts {
		out = append(out, publicContact(r))
	}
	slices.SortFunc(out, func(a, b Contact) int {
		if d := a.AddedAt.Compare(b.AddedAt); d != 0 {
			return d
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	return out
}

// Contact returns one contact.
func (c *Client) Contact(id ContactID) (Contact, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.contacts[id]
	if !ok {
		return Contact{}, ErrUnknownContact
	}
	return publicContact(r), nil
}

func messageID(contact ContactID, dir Direction, counter uint64) MessageID {
	d := "i"
	if dir == Outgoing {
		d = "o"
	}
	return MessageID(string(contact) + "/" + d + strconv.FormatUint(counter, 10))
}

func parseMessageID(id MessageID) (ContactID, Direction, uint64, bool) {
	ct, rest, ok := strings.Cut(string(id), "/")
	if !ok || len(rest) < 2 {
		return "", 0, 0, false
	}
	var dir Direction
	switch rest[0] {
	case 'i':
		dir = Incoming
	case 'o':
		dir = Outgoing
	default:
		return "", 0, 0, false
	}
	n, err := strconv.ParseUint(rest[1:], 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	return ContactID(ct), dir, n, true
}

func publicMessage(contact ContactID, r *store.Message) Message {
	return Message{
		ID:        messageID(contact, Direction(r.Direction), r.Counter),
		Contact:   contact,
		Direction: Direction(r.Direction),
		Counter:   r.Counter,
		Body:      r.Body,
		SentAt:    msTime(r.SentAtMs),
		At:        msTime(r.AtMs),
		Seq:       r.Seq,
		Status:    Status(r.Status),
		Late:      r.Late,
	}
}

// History returns the conversation with a contact: each direction in its
// sender's counter order, the two merged in the order this client stored
// the messages.
func (c *Client) History(contact ContactID) ([]Message, error) {
	c.mu.Lock()
	_, ok := c.contacts[contact]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok {
		return nil, ErrUnknownContact
	}
	var in, out []*store.Message
	err := c.db.View(func(tx *store.ClientTx) error {
		return tx.ForEachMessage(string(contact), func(r *store.Message) error {
			if r.Direction == store.Incoming {
				in = append(in, r)
			} else {
				out = append(out, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("client: history: %w", err)
	}
	msgs := make([]Message, 0, len(in)+len(out))
	for len(in) > 0 || len(out) > 0 {
		if len(out) == 0 || (len(in) > 0 && in[0].Seq < out[0].Seq) {
			msgs = append(msgs, publicMessage(contact, in[0]))
			in = in[1:]
		} else {
			msgs = append(msgs, publicMessage(contact, out[0]))
			out = out[1:]
		}
	}
	return msgs, nil
}

// Message returns one message by ID (for example, to read the status of a
// sent one).
func (c *Client) Message(id MessageID) (Message, error) {
	ct, dir, n, ok := parseMessageID(id)
	if !ok {
		return Message{}, fmt.Errorf("client: message id %q: %w", id, ErrUnknownMessage)
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return Message{}, ErrClosed
	}
	var m Message
	err := c.db.View(func(tx *store.ClientTx) error {
		r, err := tx.Message(string(ct), store.Direction(dir), n)
		if err != nil {
			return err
		}
		m = publicMessage(ct, r)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return Message{}, fmt.Errorf("client: message %s: %w", id, ErrUnknownMessage)
	}
	if err != nil {
		return Message{}, fmt.Errorf("client: message %s: %w", id, err)
	}
	return m, nil
}

// Events returns the channel of events. It has Config.EventBuffer room; an
// app that does not keep up loses events, never data: when the channel is
// full new events are dropped and counted, and an EventsDropped with the
// count is delivered as soon as there is room again. History and Message
// always have everything. The channel is closed by Close.
func (c *Client) Events() <-chan Event { return c.events }

func (c *Client) emit(evs ...Event) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	if c.evClosed {
		return
	}
	for _, ev := range evs {
		if c.dropped > 0 {
			select {
			case c.events <- EventsDropped{Count: c.dropped}:
				c.dropped = 0
			default:
				c.dropped++
				continue
			}
		}
		select {
		case c.events <- ev:
		default:
			c.dropped++
		}
	}
}

// PeerID returns the libp2p peer ID this client uses on the network for
// its own mailbox (sync, subscribe, ack, prekey upload) and the DHT: the
// ID relays see those connections come from. It is fresh for every Client
// (New makes the key; Start uses it; it is never stored), so relays cannot
// link a user's runs; it is known before Start, so a test network or an
// operator's tooling can recognise the client's connections from the
// first one.
func (c *Client) PeerID() peer.ID { return c.peerID }

// SenderPeerID returns the libp2p peer ID this client writes to other
// mailboxes with: deposits, one-time prekey fetches and status queries of
// sent messages go out from a second host with this ID, so a relay cannot
// link the mailbox a user owns to the mailboxes it writes to (SPEC.md
// §17.1, §19). Like PeerID it is fresh for every Client, never stored,
// known before Start and different from PeerID.
func (c *Client) SenderPeerID() peer.ID { return c.senderID }

// Start goes online: it starts a libp2p host (dialing out only, with the
// key of PeerID) with the DHT in client mode, a second one for what it
// sends (with the key of SenderPeerID), dials the bootstrap relays,
// and runs the sender (outbox), the receiver (live subscription and sync)
// and prekey replenishment in the background until Close. Start does not
// wait for any relay (a client starts offline as well as online): call
// WaitReady for that. Work that needs a replica set (a deposit, a sync)
// waits by itself until the client is online, at most Config.Timeout,
// before it falls back to the bootstrap relays. ctx is not retained.
func (c *Client) Start(ctx context.Context) error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if c.started {
		return nil
	}
	n, err := newNet(&c.cfg, c.log, c.bootstrap, c.peerKey, c.senderKey, c.bw)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.net = n
	for _, r := range c.contacts {
		n.addHints(r.Hints)
	}
	c.mu.Unlock()
	c.runCtx, c.cancel = context.WithCancel(dialCtx(context.Background()))
	c.started = true
	_, _ = n.dialBootstrap()
	c.kick(c.kickSync)
	c.wg.Go(func() { c.sendLoop(c.runCtx) })
	c.wg.Go(func() { c.recvLoop(c.runCtx) })
	_ = ctx
	return nil
}

func (c *Client) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Close stops the background work, closes the network and the database,
// and closes the Events channel. Messages not yet sent stay in the outbox
// and go out after the next Start.
func (c *Client) Close() error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	if c.started {
		c.cancel()
		c.wg.Wait()
		c.net.close()
	}
	err := c.db.Close()
	c.evMu.Lock()
	c.evClosed = true
	close(c.events)
	c.evMu.Unlock()
	return err
}

// hintIDs returns the relay IDs of a contact's invite hints.
func (c *Client) hintIDs(hints [][]byte) []peer.ID {
	var ids []peer.ID
	for _, ai := range parseHints(hints) {
		ids = append(ids, ai.ID)
	}
	return ids
}
