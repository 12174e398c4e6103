package store

import "encoding/binary"

// Key layout of the mailbox log. Every key starts with a one-byte prefix;
// integers are big-endian so byte order is numeric order. mbid and oid are
// small integers the log assigns to mailbox addresses (S records) and
// origin peer IDs (P records), so the hot keys stay short.
//
//	0x00 'v'                           schema version (u64 record)
//	'P' oid(4)                         origin peer ID
//	'S' mbid(4)                        mailbox address and counters
//	'K' mbid(4) oid(4)                 known_through of (mailbox, origin)
//	'E' mbid(4) oid(4) seq(8)          entry, tombstone mark or expired mark
//	'C' mbid(4) digest(32)             fate of a CID (the dedup index)
//	'X' due(8) mbid(4) uniq(8)         sweep wake-up: the digests of one
//	                                   commit's entries of one mailbox due
//	                                   then (one record for many entries)
//	'B' batch(8)                       signed receipt batch
//
// Mailbox ids are spread over their 32-bit space (newMailboxID).
//
// A sync page is one seek per origin to E‖mbid‖oid‖cursor+1 and a forward
// scan; a CID lookup is one point read of C; the sweep is a scan of X up
// to now; reconciliation indexes load from C‖mbid, already in digest order.
const (
	pMeta    = 0x00
	pOrigin  = 'P'
	pMailbox = 'S'
	pKnown   = 'K'
	pEntry   = 'E'
	pFate    = 'C'
	pDue     = 'X'
	pBatch   = 'B'
)

var keySchema = []byte{pMeta, 'v'}

// mbidSpread is 2^32 divided by the golden ratio, rounded to an odd number:
// multiplying by it modulo 2^32 is a bijection, and it spreads consecutive
// integers evenly over the 32-bit space (Fibonacci hashing).
const mbidSpread = 0x9E3779B1

// newMailboxID returns an id no mailbox has: the n-th id tried is n ×
// mbidSpread modulo 2^32, skipping 0 and ids in use. The committer calls it
// with the log's lock held.
//
// Why spread them: the records of the fate, entry and known spaces sort by
// mailbox id first. Were ids handed out in creation order, the mailboxes
// written recently would sit at one end of each space, and a table of recent
// writes that runs from the end of one space into the next (C‖new…E‖new)
// would overlap every older mailbox's records in the level below it; badger
// then rewrites all of those in one compaction (one measured 75 tables,
// 600 MB, all resident while it ran: BENCHMARKS.md, relay RSS). With spread
// ids, any set of mailboxes written together lies all across each space.
// A store written before keeps its ids; only new mailboxes get spread ones.
func (l *Log) newMailboxID() uint32 {
	for {
		l.mbidSeq++
		if id := l.mbidSeq * mbidSpread; id != 0 && l.byID[id] == nil {
			return id
		}
	}
}

const schemaVersion = 1

func originKey(oid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{pOrigin}, oid)
}

func mailboxKey(mbid uint32) []byte {
	return binary.BigEndian.AppendUint32([]byte{pMailbox}, mbid)
}

func knownKey(mbid, oid uint32) []byte {
	b := make([]byte, 0, 9)
	b = append(b, pKnown)
	b = binary.BigEndian.AppendUint32(b, mbid)
	return binary.BigEndian.AppendUint32(b, oid)
}

const entryKeyLen = 17

func entryPrefix(mbid, oid uint32) []byte {
	b := make([]byte, 0, entryKeyLen)
	b = append(b, pEntry)
	b = binary.BigEndian.AppendUint32(b, mbid)
	return binary.BigEndian.AppendUint32(b, oid)
}

func entryKey(mbid, oid uint32, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(entryPrefix(mbid, oid), seq)
}

func parseEntryKey(k []byte) (mbid, oid uint32, seq uint64, ok bool) {
	if len(k) != entryKeyLen || k[0] != pEntry {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(k[1:]), binary.BigEndian.Uint32(k[5:]), binary.BigEndian.Uint64(k[9:]), true
}

func fatePrefix(mbid uint32) []byte {
	return binary.BigEndian.AppendUint32(append(make([]byte, 0, 37), pFate), mbid)
}

func fateKey(mbid uint32, d [32]byte) []byte {
	return append(fatePrefix(mbid), d[:]...)
}

const dueKeyLen = 21

func dueKey(due uint64, mbid uint32, uniq uint64) []byte {
	b := make([]byte, 0, dueKeyLen)
	b = append(b, pDue)
	b = binary.BigEndian.AppendUint64(b, due)
	b = binary.BigEndian.AppendUint32(b, mbid)
	return binary.BigEndian.AppendUint64(b, uniq)
}

func parseDueKey(k []byte) (due uint64, mbid uint32, ok bool) {
	if len(k) != dueKeyLen || k[0] != pDue {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint32(k[9:]), true
}

func batchKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pBatch}, id)
}
