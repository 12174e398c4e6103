// Package reconcile implements range-based set reconciliation (SPEC.md
// §10.10), the anti-entropy engine between replicas: two parties holding
// sets of 32-byte item digests exchange range fingerprints, recursing into
// ranges that differ, until each knows exactly which items the other lacks.
// The bytes exchanged grow with the size of the difference times the log of
// the set size, not with the set size.
//
// The engine is pure: it works on an in-memory sorted snapshot of one side's
// items and turns one incoming message into one outgoing message; the caller
// moves messages and the entries themselves.
package reconcile

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Item is an item ID: the sha2-256 digest of an entry's CID.
type Item = [32]byte

// Config holds the tuning of SPEC.md §12.
type Config struct {
	// IDThreshold: a differing range with at most this many items on the
	// answering side is answered with its item list.
	IDThreshold int
	// Branching is how many subranges a larger differing range splits into.
	Branching int
	// MaxRanges bounds the ranges of one incoming message.
	MaxRanges int
	// MaxIDs bounds the item IDs of one incoming message.
	MaxIDs int
}

// DefaultConfig returns SPEC.md's defaults.
func DefaultConfig() Config {
	return Config{IDThreshold: 32, Branching: 16, MaxRanges: 8192, MaxIDs: 65536}
}

// Set is one side's items, sorted, with prefix sums so that any range's
// fingerprint costs two binary searches and a hash.
type Set struct {
	cfg    Config
	items  []Item
	prefix []wire.FingerprintAcc // prefix[i] covers items[:i]
}

// NewSet takes ownership of items, which must be sorted strictly ascending.
func NewSet(items []Item, cfg Config) (*Set, error) {
	if cfg.IDThreshold < 1 || cfg.Branching < 2 {
		return nil, fmt.Errorf("reconcile: config %+v: threshold ≥ 1 and branching ≥ 2 required", cfg)
	}
	for i := 1; i < len(items); i++ {
		if bytes.Compare(items[i-1][:], items[i][:]) >= 0 {
			return nil, fmt.Errorf("reconcile: items not strictly ascending at %d", i)
		}
	}
	prefix := make([]wire.FingerprintAcc, len(items)+1)
	for i := range items {
		prefix[i+1] = prefix[i]
		prefix[i+1].Add(items[i])
	}
	return &Set{cfg: cfg, items: items, prefix: prefix}, nil
}

// Len returns the number of items.
func (s *Set) Len() int { return len(s.items) }

// lowerIndex returns the index of the first item not below bound (an
// exclusive upper bound of the previous range); nil means the end.
func (s *Set) lowerIndex(bound []byte) int {
	if bound == nil {
		return len(s.items)
	}
	var padded Item
	copy(padded[:], bound)
	i, _ := slices.BinarySearchFunc(s.items, padded, func(a, b Item) int { return bytes.Compare(a[:], b[:]) })
	return i
}

func (s *Set) fingerprint(a, b int) (wire.Fingerprint, uint64) {
	acc := s.prefix[b]
	acc.Sub(&s.prefix[a])
	return acc.Fingerprint(), acc.Count()
}

// boundBetween returns the shortest prefix of items[i] that is above
// items[i-1]: an exclusive upper bound that separates them.
func (s *Set) boundBetween(i int) []byte {
	prev, cur := s.items[i-1], s.items[i]
	k := 0
	for k < len(cur) && prev[k] == cur[k] {
		k++
	}
	return slices.Clone(cur[:k+1])
}

func (s *Set) idsRange(upper []byte, a, b int) *pb.Range {
	ids := make([][]byte, 0, b-a)
	for i := a; i < b; i++ {
		ids = append(ids, slices.Clone(s.items[i][:]))
	}
	return &pb.Range{Upper: upper, Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: ids}
}

// fpRange describes [a, b) by its fingerprint, or by its (short) item list
// when that is no longer than a fingerprint: an empty range, or the whole
// space of a set below the ID threshold.
func (s *Set) fpRange(upper []byte, a, b int) *pb.Range {
	if b == a {
		return s.idsRange(upper, a, b)
	}
	fp, n := s.fingerprint(a, b)
	return &pb.Range{Upper: upper, Mode: pb.RangeMode_RANGE_MODE_FINGERPRINT, Fingerprint: fp[:], Count: n}
}

// Initiate returns the first message: the whole space as one range.
func (s *Set) Initiate() []*pb.Range {
	if len(s.items) <= s.cfg.IDThreshold {
		return []*pb.Range{s.idsRange(nil, 0, len(s.items))}
	}
	return []*pb.Range{s.fpRange(nil, 0, len(s.items))}
}

// Result is what one step learned.
type Result struct {
	// Ranges is the message to send back. It is nil when the incoming
	// message was already complete (every range SKIP): nothing more to say.
	Ranges []*pb.Range
	// Have lists items this side holds that the peer lacks (send them).
	Have []Item
	// Need lists items the peer holds that this side lacks (ask for them).
	Need []Item
}

// Complete reports whether a message resolves every range (all SKIP).
func Complete(ranges []*pb.Range) bool {
	for _, r := range ranges {
		if r.GetMode() != pb.RangeMode_RANGE_MODE_SKIP {
			return false
		}
	}
	return true
}

// Respond processes one incoming message. It returns an error wrapping
// wire.ErrMalformed for a message that does not tile the space with
// increasing bounds or breaks a limit; the set is never changed.
func (s *Set) Respond(in []*pb.Range) (Result, error) {
	if err := s.validate(in); err != nil {
		return Result{}, err
	}
	if Complete(in) {
		return Result{}, nil
	}
	var res Result
	out := make([]*pb.Range, 0, len(in))
	skip := func(upper []byte) {
		if n := len(out); n > 0 && out[n-1].Mode == pb.RangeMode_RANGE_MODE_SKIP {
			out[n-1].Upper = upper
			return
		}
		out = append(out, &pb.Range{Upper: upper, Mode: pb.RangeMode_RANGE_MODE_SKIP})
	}
	a := 0
	for _, r := range in {
		b := s.lowerIndex(r.Upper)
		switch r.Mode {
		case pb.RangeMode_RANGE_MODE_SKIP:
			skip(r.Upper)
		case pb.RangeMode_RANGE_MODE_FINGERPRINT:
			fp, n := s.fingerprint(a, b)
			if n == r.Count && bytes.Equal(fp[:], r.Fingerprint) {
				skip(r.Upper)
				break
			}
			out = append(out, s.split(r.Upper, a, b)...)
		case pb.RangeMode_RANGE_MODE_IDS:
			have, need := s.diff(r.Ids, a, b)
			res.Have = append(res.Have, have...)
			res.Need = append(res.Need, need...)
			skip(r.Upper)
		}
		a = b
	}
	res.Ranges = out
	return res, nil
}

// split answers a differing range [a, b) with its items, or with
// Branching subranges of equal count.
func (s *Set) split(upper []byte, a, b int) []*pb.Range {
	n := b - a
	if n <= s.cfg.IDThreshold {
		return []*pb.Range{s.idsRange(upper, a, b)}
	}
	k := s.cfg.Branching
	out := make([]*pb.Range, 0, k)
	lo := a
	for j := 1; j <= k; j++ {
		hi := a + n*j/k
		if hi == lo {
			continue
		}
		bound := upper
		if j < k {
			bound = s.boundBetween(hi)
		}
		out = append(out, s.fpRange(bound, lo, hi))
		lo = hi
	}
	return out
}

// diff compares the peer's complete list of a range with this side's items
// [a, b) (both sorted).
func (s *Set) diff(peer [][]byte, a, b int) (have, need []Item) {
	i, j := a, 0
	for i < b || j < len(peer) {
		switch {
		case j == len(peer):
			have = append(have, s.items[i])
			i++
		case i == b:
			need = append(need, Item(peer[j]))
			j++
		default:
			switch c := bytes.Compare(s.items[i][:], peer[j]); {
			case c < 0:
				have = append(have, s.items[i])
				i++
			case c > 0:
				need = append(need, Item(peer[j]))
				j++
			default:
				i++
				j++
			}
		}
	}
	return have, need
}

// validate checks that ranges tile the whole space with strictly increasing
// bounds, that the last is unbounded, and every field's size.
func (s *Set) validate(in []*pb.Range) error {
	if len(in) == 0 || len(in) > s.cfg.MaxRanges {
		return fmt.Errorf("reconcile: %d ranges: %w", len(in), wire.ErrMalformed)
	}
	ids := 0
	var prev Item
	havePrev := false
	for i, r := range in {
		last := i == len(in)-1
		if last != (r.Upper == nil) {
			return fmt.Errorf("reconcile: range %d: only the last range is unbounded: %w", i, wire.ErrMalformed)
		}
		if r.Upper != nil {
			if len(r.Upper) == 0 || len(r.Upper) > 32 {
				return fmt.Errorf("reconcile: range %d: bound of %d bytes: %w", i, len(r.Upper), wire.ErrMalformed)
			}
			var padded Item
			copy(padded[:], r.Upper)
			if havePrev && bytes.Compare(padded[:], prev[:]) <= 0 {
				return fmt.Errorf("reconcile: range %d: bounds not increasing: %w", i, wire.ErrMalformed)
			}
			prev, havePrev = padded, true
		}
		switch r.Mode {
		case pb.RangeMode_RANGE_MODE_SKIP:
		case pb.RangeMode_RANGE_MODE_FINGERPRINT:
			if len(r.Fingerprint) != wire.FingerprintLen {
				return fmt.Errorf("reconcile: range %d: fingerprint of %d bytes: %w", i, len(r.Fingerprint), wire.ErrMalformed)
			}
		case pb.RangeMode_RANGE_MODE_IDS:
			ids += len(r.Ids)
			if ids > s.cfg.MaxIDs {
				return fmt.Errorf("reconcile: more than %d ids: %w", s.cfg.MaxIDs, wire.ErrMalformed)
			}
			for k, id := range r.Ids {
				if len(id) != 32 {
					return fmt.Errorf("reconcile: range %d id %d: %d bytes: %w", i, k, len(id), wire.ErrMalformed)
				}
				if k > 0 && bytes.Compare(r.Ids[k-1], id) >= 0 {
					return fmt.Errorf("reconcile: range %d: ids not ascending: %w", i, wire.ErrMalformed)
				}
			}
			if err := s.idsInRange(r.Ids, in, i); err != nil {
				return err
			}
		default:
			return fmt.Errorf("reconcile: range %d: mode %d: %w", i, r.Mode, wire.ErrMalformed)
		}
	}
	return nil
}

// idsInRange checks that the ids of range i lie inside its bounds.
func (s *Set) idsInRange(ids [][]byte, in []*pb.Range, i int) error {
	if len(ids) == 0 {
		return nil
	}
	below := func(id []byte, bound []byte) bool {
		var padded Item
		copy(padded[:], bound)
		return bytes.Compare(id, padded[:]) < 0
	}
	if i > 0 && below(ids[0], in[i-1].Upper) {
		return fmt.Errorf("reconcile: range %d: id below its range: %w", i, wire.ErrMalformed)
	}
	if in[i].Upper != nil && !below(ids[len(ids)-1], in[i].Upper) {
		return fmt.Errorf("reconcile: range %d: id above its range: %w", i, wire.ErrMalformed)
	}
	return nil
}
