// Package client is the embeddable cairn client: identity, invites,
// sessions, a durable outbox, incremental sync from any replica, and events.
// It is what a privacy-focused app links to get end-to-end encrypted,
// store-and-forward messaging over cairn relays.
//
// # Life of a client
//
//	c, err := client.New(client.Config{
//		DataDir:       dir,         // the client's database (badger)
//		EncryptionKey: key,         // 32 bytes from the platform keystore
//		Bootstrap:     relayAddrs,  // "/ip4/…/tcp/…/p2p/12D3KooW…"
//	})
//	err = c.Start(ctx)              // go online (background loops)
//	err = c.WaitReady(ctx)          // optional: wait until a relay answers
//	invite, err := c.Invite()       // hand it to a friend out of band
//	friend, err := c.AcceptInvite(theirInvite)
//	id, err := c.Send(ctx, friend.ID, []byte("hello"))
//	for ev := range c.Events() { … } // MessageReceived, StatusChanged, …
//	msgs, err := c.History(friend.ID)
//	err = c.Flush(ctx)              // a short-lived process: let the outbox leave
//	err = c.Close()
//
// New creates the identity on first use (an identity key, a mailbox key,
// signed prekeys) and stores it; it does not touch the network, so invites
// can be made offline. Start runs, until Close, two libp2p hosts that only
// dial out, each with a fresh libp2p key each run (so relays cannot link
// the user's deposits across runs): one (PeerID) for the user's own
// mailbox and the DHT in client mode, the other (SenderPeerID) for
// deposits into other mailboxes, prekey fetches and status queries (so a
// relay cannot link the user's mailbox to the mailboxes it writes to);
// and the sender loop and the receiver loop.
//
// # Online
//
// Start returns at once; the client is online when it is connected to a
// relay and its DHT routing table holds one (WaitReady waits for that, or
// says ErrNoRelay when no bootstrap relay answers). Replica sets come from
// DHT lookups: whatever needs one (a deposit, a sync, the live
// subscription) first waits, at most Config.Timeout, for the client to be
// online, so that a client that just started does not take its bootstrap
// relays for the replicas of a mailbox. The client looks its own replica
// set up again every Config.ReplicaCacheTTL and, when it changed, syncs
// the new members and moves its live subscription if its relay left the
// set.
//
// A process that runs for one command (send, sync) calls Flush before
// Close: it returns once every entry queued in the outbox — messages and
// the delivery receipts of what was received — is stored at a relay.
// Pending tells how many have not left.
//
// # Guarantees
//
//   - Send returns once the message is encrypted and in the durable outbox,
//     together with the ratchet state that encrypted it (one transaction);
//     nothing touches the network before. The outbox survives restarts and
//     crashes; a message is deposited until a relay's signed receipt for it
//     verifies (StatusStored) — a receipt whose origin is a replica of the
//     recipient's mailbox: a relay's "duplicate" without one is not taken
//     on its word alone (SPEC.md §17.3) — retried with exponential backoff
//     and jitter across the replicas of the recipient's mailbox, newest
//     messages first.
//   - A delivery receipt from the recipient (an encrypted DELIVERY payload,
//     SPEC.md §16) makes it StatusDelivered. A message whose expiry passes
//     without one becomes StatusExpiredUndelivered, confirmed with the
//     relays' status protocol where they answer.
//   - Receiving: the client subscribes on one replica of its mailbox and
//     syncs all replicas, each from its own durable cursor: a relay's
//     watermarks only ever change what is asked of that relay, so a relay
//     that lies about them cannot make the others skip an entry (SPEC.md
//     §7). Each page of entries is stored in one transaction — the
//     messages, the sessions they advanced, their CIDs as seen, the advance
//     of that relay's cursor — and only then acked at the relay. A crash at
//     any point loses nothing and shows nothing twice.
//   - A conversation is ordered by the sender's counter inside the
//     ciphertext, never by clocks. MessageReceived events come in that
//     order: a message after a missing one is held until the missing one
//     arrives, or until the gap is reported (GapDetected, once
//     Config.GapGrace passed and every reachable replica was then synced
//     from the empty cursor); a missing
//     message that turns up later is still delivered, marked Late.
//   - Forged, corrupted and replayed entries are rejected without changing
//     any session (ratchet operations are atomic) and are never shown.
//   - With R−1 of a mailbox's R replicas down, sending and syncing work;
//     with all down, messages stay queued and go out when relays return.
//
// # Events
//
// Events returns a buffered channel (Config.EventBuffer). The client never
// blocks on it: if the app does not read, events beyond the buffer are
// dropped and counted, and an EventsDropped event says how many as soon as
// there is room. Nothing is lost but the notification: History, Message and
// Contacts always have the truth. The channel is closed by Close.
//
// # Concurrency
//
// A Client is safe for concurrent use. One mutex serialises every change
// of ratchet state and every database write, so each session has exactly
// one writer and is persisted with what it encrypted or decrypted. The
// database directory is locked: two processes cannot open it.
//
// # Storage
//
// The client's state lives in one badger database in Config.DataDir,
// encrypted at rest with Config.EncryptionKey, written with synchronous
// commits: a store.ClientDB (package store holds the record types, their
// versioned and checksummed encodings and the key layout). Every step of
// the client is one store transaction — a Send (the outbox entry, its
// history message, the session that encrypted it and the contact's next
// counter), a sync page (everything listed under Guarantees, plus the
// receive states and the prekey state a handshake consumed), a deposit
// outcome, a gap report — so a crash never leaves half a step. The client
// keeps its contacts, sessions, receive states and outbox in memory
// (loaded by New) and rebuilds them from the database when a transaction
// fails.
package client
