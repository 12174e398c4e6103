package store

import (
	"errors"

	"github.com/dgraph-io/badger/v4"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
)

// This file is the relay-side API of the store: the mailbox log. Its
// exported names are a contract with package relay; keep them stable.

// Sentinel errors of the store. Quota and validation failures wrap the
// sentinels of package wire instead (wire.ErrMailboxQuota,
// wire.ErrStorageFull, wire.ErrExpiryInvalid, wire.ErrMalformed), so a relay
// maps them to wire status codes with wire.StatusOf.
var (
	// ErrNotFound is returned by lookups (Get, GetBySeq, client getters)
	// for a key that is absent, acked or expired.
	ErrNotFound = errors.New("store: not found")
	// ErrCorrupt is returned (wrapped in a *CorruptError) for a stored
	// record whose checksum, version or layout does not verify. It concerns
	// one record only; the rest of the store stays usable.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("store: closed")
)

// CorruptError reports one stored record that failed verification.
type CorruptError struct {
	// Key is the badger key of the record (for logs and repair tools).
	Key []byte
	// Reason says which check failed.
	Reason string
}

func (e *CorruptError) Error() string {
	return "store: corrupt record " + keyString(e.Key) + ": " + e.Reason
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Defaults of LogOptions (SPEC.md §12 for the relay policy values).
const (
	DefaultTTL                 = 7 * 24 * time.Hour
	DefaultMaxTTL              = 30 * 24 * time.Hour
	DefaultMailboxQuotaBytes   = 64 << 20
	DefaultMailboxQuotaEntries = 10_000
	DefaultStorageCapBytes     = 10 << 30
	DefaultFateRetention       = 7 * 24 * time.Hour
	DefaultGCInterval          = time.Minute
	DefaultMaxCommitBatch      = 256
	// DefaultMemoryBudget is LogOptions.MemoryBudget's default: two 32 MiB
	// memtables, a 32 MiB table-index cache and 32 MiB of reconciliation
	// indexes.
	DefaultMemoryBudget = 128 << 20
	// MinMemoryBudget is the least LogOptions.MemoryBudget.
	MinMemoryBudget = 16 << 20
	// MaxCommitBatch bounds LogOptions.MaxCommitBatch: one receipt
	// signature covers at most wire.MaxReceiptBatch receipts.
	MaxCommitBatch = wire.MaxReceiptBatch
)

// LogOptions configures OpenLog. The zero value of every field but Origin
// and Signer selects its default.
type LogOptions struct {
	// Dir is the badger directory. Empty means an in-memory database
	// (nothing survives Close; for tests and simulations).
	Dir string
	// Now is the clock. Every expiry, fate retention and stored_at uses
	// it; nil means time.Now.
	Now func() time.Time
	// Logger receives the log's own messages (GC, sweeps, corrupt
	// records). Nil discards them.
	Logger *slog.Logger

	// Origin is this relay's peer ID: the origin of every appended entry.
	Origin peer.ID
	// Signer signs receipt batches with the key of Origin (a libp2p
	// Ed25519 crypto.PrivKey satisfies it).
	Signer wire.Signer

	// DefaultTTL applies to a deposit whose expiry is 0.
	DefaultTTL time.Duration
	// MaxTTL bounds an expiry: it must be in (now, now+MaxTTL].
	MaxTTL time.Duration
	// MailboxQuotaBytes and MailboxQuotaEntries bound one mailbox's live
	// entries (envelope bytes, count). Negative means unlimited.
	MailboxQuotaBytes   int64
	MailboxQuotaEntries int64
	// StorageCapBytes bounds the envelope bytes of all live entries;
	// above it the log evicts (SPEC.md §13). Negative means unlimited.
	StorageCapBytes int64
	// FateRetention is how long after an entry's expiry its fate (acked,
	// expired) is remembered for status queries.
	FateRetention time.Duration
	// PrekeyCapBytes bounds the bytes of all one-time prekeys held
	// (PutPrekeys); negative means unlimited.
	PrekeyCapBytes int64

	// GCInterval is the period of the expiry sweep and value-log GC,
	// measured on the wall clock (a ticker). Negative disables the
	// background loop; then call Sweep and GC yourself.
	GCInterval time.Duration
	// MaxCommitBatch bounds how many operations one group commit (one
	// badger transaction, one fsync, one receipt signature) gathers;
	// 1…MaxCommitBatch.
	MaxCommitBatch int

	// OnStored, if set, is called once for every entry that became
	// durable (appended or imported), after its commit, in commit order,
	// from the log's commit goroutine. It must not block and must not call
	// back into the Log's writing methods; copy what it needs (the
	// envelope slice is not reused by the log, so retaining it is fine).
	OnStored func(StoredEntry)

	// MemoryBudget sizes the memory the log holds for itself (SPEC.md §12
	// StoreMemoryBytes): badger's two memtables (MemoryBudget/4 each,
	// 4–64 MiB), its table-index cache (MemoryBudget/4) and the
	// reconciliation indexes (IndexBudget, a quarter by default). Badger's
	// block cache is off (envelopes are stored uncompressed and
	// unencrypted, so the cache only duplicates the page cache), 2
	// compactors run (each holds table-builder buffers while it works: they
	// come on top of the budget), and value-log files are 64 MiB. Badger's
	// tables and write-ahead logs are memory-mapped: their pages are the
	// kernel's page cache, not counted here, and an on-disk log with a
	// budget unmaps them from the process every second and when its
	// file-backed RSS grows by a quarter of the budget (they stay in the
	// page cache; Linux only), and releases badger's pooled table-builder
	// buffers (resident.go). 0 means DefaultMemoryBudget; negative
	// means badger's own defaults (five 64 MiB memtables, a 256 MiB block
	// cache, 4 compactors), unbounded indexes and no unmapping. The minimum is
	// MinMemoryBudget. An in-memory log (Dir "") keeps its small fixed
	// badger options.
	MemoryBudget int64
	// IndexBudget bounds the bytes of the reconciliation indexes held in
	// memory (about 43 bytes per item, SPEC.md §10.10); above it the least
	// recently used indexes are dropped and reloaded (one scan of the
	// mailbox's fate records) when next needed. The index in use is never
	// dropped, so one mailbox larger than the budget still reconciles.
	// 0 means a quarter of MemoryBudget; negative means no bound.
	IndexBudget int64

	// tweak adjusts badger's options (tests only).
	tweak func(*badger.Options)
}

// Deposit is one envelope to append with this relay as its origin. The
// relay has parsed and checked the envelope before (SPEC.md §10.3).
type Deposit struct {
	// Envelope is the exact envelope bytes (SPEC.md §3). The log keeps
	// a reference; do not modify it afterwards.
	Envelope []byte
	// Mailbox is the envelope's mailbox; zero means read it from the
	// envelope.
	Mailbox wire.Mailbox
	// CID is wire.CIDOf(Envelope); zero means compute it.
	CID wire.CID
	// Expiry is the effective expiry in Unix seconds; 0 means the
	// envelope's own expiry field, or now+DefaultTTL if that is 0 too.
	// It must be in (now, now+MaxTTL] or the append fails with
	// wire.ErrExpiryInvalid.
	Expiry uint64
}

// AppendResult is the outcome of one successful append.
type AppendResult struct {
	// Receipt is the signed receipt (origin stamp) of the stored entry. For
	// a duplicate it is the original entry's stamp, which may come from
	// another origin if the entry was replicated here.
	Receipt wire.SignedReceipt
	// Duplicate is true if the CID was already known: nothing was stored.
	// A CID that was acked or expired here is also a duplicate; then
	// Receipt is zero and Fate says what happened to it.
	Duplicate bool
	// Fate is FateStored, or for a duplicate the CID's fate.
	Fate Fate
}

// StoredEntry is an entry as stored: the envelope and its origin stamp.
type StoredEntry struct {
	Envelope []byte
	Stamp    wire.SignedReceipt
}

// CID returns the entry's content ID (from its stamp).
func (e *StoredEntry) CID() wire.CID { return e.Stamp.CID }

// Import is one entry replicated from another relay: its envelope and the
// origin stamp, which the caller has verified (SPEC.md §10.9).
type Import struct {
	Envelope []byte
	Stamp    wire.SignedReceipt
}

// ImportResult is the outcome of one import.
type ImportResult struct {
	// Duplicate is true if the CID was known (stored, acked or expired
	// here): nothing changed.
	Duplicate bool
	// Err wraps wire.ErrMalformed (stamp does not match the envelope),
	// wire.ErrExpiryInvalid (already expired), wire.ErrMailboxQuota or
	// wire.ErrStorageFull; nothing was stored.
	Err error
}

// AppendManyResult is one result of AppendMany.
type AppendManyResult struct {
	AppendResult
	Err error
}

// Page is one page of a sync read (SPEC.md §10.4).
type Page struct {
	// Entries are in (origin bytes, seq) order.
	Entries []StoredEntry
	// Watermarks are W(o) for every origin this page finished
	// (known_through) and for the origin it ended inside (min(known_through,
	// last seq sent)); on the last page (More false), for every origin the
	// log knows for the mailbox. Sorted by origin bytes.
	Watermarks []wire.Position
	// More is true if entries remain after this page; resume with the
	// position of its last entry.
	More bool
	// Corrupt lists entries that were skipped because their record did not
	// verify. The watermark of their origin stays below them, so a client
	// fetches them from another replica.
	Corrupt []*CorruptError
}

// Tombstone records an acked entry (SPEC.md §10.6). It replicates and is
// dropped at Expiry.
type Tombstone struct {
	Mailbox wire.Mailbox
	CID     wire.CID
	Origin  peer.ID
	Seq     uint64
	Expiry  uint64
	// OwnerAck is the mailbox owner's ack of CID (a wire.OwnerAck
	// encoding, SPEC.md §6.3), which lets other replicas check that the
	// owner asked for the deletion. The store keeps it and does not verify
	// it: its callers do.
	OwnerAck []byte
	// Stamp is the acked entry's origin stamp (a wire.SignedReceipt
	// encoding, SPEC.md §6.2): its origin, seq and expiry are the
	// tombstone's, so that a replica that never held the entry can check
	// where the tombstone goes. Imported tombstones are checked by the
	// caller too.
	Stamp []byte
}

// AckResult is the outcome of an ack.
type AckResult struct {
	// Acked is the number of entries deleted.
	Acked int
	// Tombstones are the tombstones left, one per deleted entry, for
	// replication.
	Tombstones []Tombstone
}

// Fate is what became of a CID in a mailbox (SPEC.md §10.7).
type Fate uint8

// Fates. The values match the wire's EntryState enum.
const (
	FateUnknown Fate = iota // never seen, or forgotten after FateRetention
	FateStored              // held and not expired
	FateAcked               // deleted by the mailbox owner
	FateExpired             // reached its expiry (or was evicted) without an ack
)

func (f Fate) String() string {
	switch f {
	case FateStored:
		return "stored"
	case FateAcked:
		return "acked"
	case FateExpired:
		return "expired"
	}
	return "unknown"
}

// Set names one of a mailbox's two reconciliation sets (SPEC.md §10.10).
type Set uint8

// Reconciliation sets.
const (
	SetEntries    Set = 1 // live entries
	SetTombstones Set = 2 // tombstones not yet expired
)

// Subrange is one part of a split range: items in [previous upper, Upper),
// the first starting at the split range's lower bound. The last Upper is
// the split range's own upper bound.
type Subrange struct {
	// Upper is the exclusive upper bound; empty means "to the end".
	Upper []byte
	// Acc holds the subrange's fingerprint and count.
	Acc wire.FingerprintAcc
}

// MailboxInfo summarises one mailbox.
type MailboxInfo struct {
	Mailbox wire.Mailbox
	// Entries and Bytes count live entries and their envelope bytes.
	Entries int64
	Bytes   int64
	// Tombstones counts unexpired tombstones.
	Tombstones int64
}

// SweepResult reports one expiry sweep.
type SweepResult struct {
	// Expired is the number of entries deleted at their expiry.
	Expired int
	// Tombstones is the number of tombstones and markers dropped.
	Tombstones int
}

// Stats are cheap counters for metrics. Gauges describe the current state;
// counters count since OpenLog.
type Stats struct {
	// Gauges.
	Entries    int64 // live entries
	Bytes      int64 // envelope bytes of live entries
	Mailboxes  int64 // mailboxes with any state
	Tombstones int64 // unexpired tombstones
	IndexBytes int64 // memory of loaded reconciliation indexes and the dedup filter

	// Counters.
	Appends       uint64 // entries appended (this relay as origin)
	Imports       uint64 // entries imported from other origins
	Duplicates    uint64 // appends and imports of a known CID
	Acked         uint64 // entries deleted by acks
	Expired       uint64 // entries deleted at expiry
	Evicted       uint64 // entries evicted at the global cap
	Corrupt       uint64 // corrupt records met on reads
	RejectedQuota uint64 // appends/imports refused with ErrMailboxQuota
	RejectedFull  uint64 // appends/imports refused with ErrStorageFull
	RejectedOther uint64 // appends/imports refused for bad input
	Commits       uint64 // group commits (transactions, fsyncs)
	CommitOps     uint64 // operations in those commits
	GCRuns        uint64 // compactions GC requested and value-log files it rewrote
	// IndexEvictions counts reconciliation indexes dropped to stay within
	// LogOptions.IndexBudget.
	IndexEvictions uint64
}

func keyString(k []byte) string {
	const hexdigits = "0123456789abcdef"
	b := make([]byte, 0, 2*len(k))
	for _, c := range k {
		b = append(b, hexdigits[c>>4], hexdigits[c&15])
	}
	return string(b)
}
