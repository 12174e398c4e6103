package store

import (
	"context"
	"errors"
	"iter"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

var errNotImplemented = errors.New("store: not implemented yet")

// Log is a relay's mailbox log (SPEC.md §6, §7, §10.4–§10.10, §13): every
// mailbox's entries in (origin, seq) order, their fates, tombstones,
// watermarks, quotas and reconciliation indexes, on one badger database.
// All writes go through one commit goroutine that gathers concurrent
// operations into one fsync'd transaction (group commit). A Log is safe
// for concurrent use.
type Log struct{}

// OpenLog opens (or creates) a log.
func OpenLog(opts LogOptions) (*Log, error) { return nil, errNotImplemented }

// Append stores one envelope with this relay as origin and returns its
// signed receipt once the group commit holding it is fsync'd. A known CID
// returns Duplicate and stores nothing. Errors wrap wire.ErrMailboxQuota,
// wire.ErrStorageFull, wire.ErrExpiryInvalid, wire.ErrMalformed, ErrClosed
// or the context's error; on error nothing was stored, except that if ctx
// ends while the append is in flight it may still be stored (a retry
// deduplicates).
func (l *Log) Append(ctx context.Context, d Deposit) (AppendResult, error) {
	return AppendResult{}, errNotImplemented
}

// AppendMany appends deposits of a pipelined stream; each gets its own
// result, in order. They share group commits with each other and with
// concurrent callers.
func (l *Log) AppendMany(ctx context.Context, ds []Deposit) []AppendManyResult {
	return nil
}

// Import stores an entry replicated from another origin with its stamp
// unchanged (SPEC.md §10.9). The caller has verified the stamp's signature;
// Import checks that it matches the envelope. It advances known_through for
// the stamp's origin over hole-free sequences.
func (l *Log) Import(ctx context.Context, envelope []byte, stamp *wire.SignedReceipt) (duplicate bool, err error) {
	return false, errNotImplemented
}

// ImportMany imports a batch of replicated entries; one result per entry,
// in order.
func (l *Log) ImportMany(ctx context.Context, entries []Import) []ImportResult { return nil }

// Read returns one page of the entries of mailbox that cursor (nil: the
// empty cursor) does not cover and that come after the resume position
// after (nil: from the start), in (origin bytes, seq) order, with the
// watermarks of SPEC.md §10.4. maxEntries and maxBytes bound the page
// (≤ 0: no bound); a page holds at least one entry if any remains. A page
// costs one seek per origin plus a scan of what it returns.
func (l *Log) Read(mailbox wire.Mailbox, cursor *wire.Cursor, after *wire.Position, maxEntries, maxBytes int) (Page, error) {
	return Page{}, errNotImplemented
}

// Get returns the live entry with this CID in mailbox, or ErrNotFound.
func (l *Log) Get(mailbox wire.Mailbox, c wire.CID) (StoredEntry, error) {
	return StoredEntry{}, errNotImplemented
}

// GetBySeq returns the live entry (origin, seq) of mailbox, or ErrNotFound.
func (l *Log) GetBySeq(mailbox wire.Mailbox, origin peer.ID, seq uint64) (StoredEntry, error) {
	return StoredEntry{}, errNotImplemented
}

// Ack deletes the listed entries of mailbox and every entry upTo covers
// (nil: none), leaving a tombstone for each (SPEC.md §10.6). Unknown or
// already acked CIDs are ignored.
func (l *Log) Ack(ctx context.Context, mailbox wire.Mailbox, cids []wire.CID, upTo *wire.Cursor) (AckResult, error) {
	return AckResult{}, errNotImplemented
}

// ImportTombstones applies tombstones replicated from another replica
// (SPEC.md §10.9): a held entry is deleted, an unknown one is recorded as
// acked so it is never stored later. It returns how many changed state.
func (l *Log) ImportTombstones(ctx context.Context, ts []Tombstone) (int, error) {
	return 0, errNotImplemented
}

// Tombstone returns the unexpired tombstone of c in mailbox, or ErrNotFound.
func (l *Log) Tombstone(mailbox wire.Mailbox, c wire.CID) (Tombstone, error) {
	return Tombstone{}, errNotImplemented
}

// Fate returns what became of c in mailbox (SPEC.md §10.7).
func (l *Log) Fate(mailbox wire.Mailbox, c wire.CID) (Fate, error) {
	return FateUnknown, errNotImplemented
}

// KnownThrough returns known_through of every origin the log knows for
// mailbox (SPEC.md §7), sorted by origin bytes.
func (l *Log) KnownThrough(mailbox wire.Mailbox) []wire.Position { return nil }

// AdoptKnownThrough raises known_through of (mailbox, origin) to seq, as
// SPEC.md §10.10 allows after a complete reconciliation with the origin.
func (l *Log) AdoptKnownThrough(ctx context.Context, mailbox wire.Mailbox, origin peer.ID, seq uint64) error {
	return errNotImplemented
}

// Mailboxes iterates over a snapshot of the mailboxes the log holds state
// for, in no particular order.
func (l *Log) Mailboxes() iter.Seq[MailboxInfo] { return func(func(MailboxInfo) bool) {} }

// Mailbox returns the summary of one mailbox; ok is false if the log holds
// nothing for it.
func (l *Log) Mailbox(mailbox wire.Mailbox) (info MailboxInfo, ok bool) { return MailboxInfo{}, false }

// RangeFingerprint returns the accumulator (fingerprint and count) of the
// items of set in mailbox with lower ≤ digest < upper, bytewise (SPEC.md
// §10.10). An empty lower means from the start, an empty upper to the end.
func (l *Log) RangeFingerprint(mailbox wire.Mailbox, set Set, lower, upper []byte) (wire.FingerprintAcc, error) {
	return wire.FingerprintAcc{}, errNotImplemented
}

// RangeItems lists the digests of the items of set in [lower, upper), in
// order, at most limit of them (≤ 0: all).
func (l *Log) RangeItems(mailbox wire.Mailbox, set Set, lower, upper []byte, limit int) ([][32]byte, error) {
	return nil, errNotImplemented
}

// SplitRange splits [lower, upper) into at most k subranges of equal item
// count (the last may differ by the remainder), each with its fingerprint.
// A range with fewer than k items gives one subrange per item (or one empty
// subrange).
func (l *Log) SplitRange(mailbox wire.Mailbox, set Set, lower, upper []byte, k int) ([]Subrange, error) {
	return nil, errNotImplemented
}

// Sweep deletes entries whose expiry has passed on the log's clock (writing
// EXPIRED fates and fixing the quota counters) and drops expired tombstones.
// The background loop calls it every GCInterval.
func (l *Log) Sweep(ctx context.Context) (SweepResult, error) {
	return SweepResult{}, errNotImplemented
}

// GC runs badger's value-log garbage collection until it finds nothing to
// rewrite. The background loop calls it every GCInterval.
func (l *Log) GC() error { return errNotImplemented }

// Stats returns the current counters.
func (l *Log) Stats() Stats { return Stats{} }

// Close stops the background loop, waits for in-flight commits and closes
// the database. Calls after Close fail with ErrClosed.
func (l *Log) Close() error { return errNotImplemented }
