// Package reconcile implements range-based set reconciliation (SPEC.md
// §10.10), the anti-entropy engine between replicas: two parties holding
// sets of 32-byte item digests exchange range fingerprints, recursing into
// ranges that differ, until each knows exactly which items the other lacks.
// The bytes exchanged grow with the size of the difference times the log of
// the set size, not with the set size.
//
// The engine is pure: it reads one side's items through a Source (Set, an
// in-memory sorted snapshot, or the relay store's reconciliation indexes)
// and turns one incoming message into one outgoing message (Initiate,
// Respond); the caller moves messages and the entries themselves. Answers
// stay within the message limits of Config, so a peer never has to refuse
// them.
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

// Source is one side's items: 32-byte digests in ascending bytewise order,
// with the range queries the engine needs. A bound is an exclusive upper
// bound of 1 … 32 bytes that stands for itself padded with zero bytes to 32
// (SPEC.md §10.10); a nil lower bound is the start of the space and a nil
// upper bound its end. Set is the in-memory Source; package relay adapts
// its store's reconciliation indexes.
type Source interface {
	// Fingerprint returns the accumulator (fingerprint and count) of the
	// items x with lower ≤ x < upper.
	Fingerprint(lower, upper []byte) (wire.FingerprintAcc, error)
	// Items returns the items in [lower, upper), ascending.
	Items(lower, upper []byte) ([]Item, error)
	// Split divides the n > 0 items of [lower, upper) into min(k, n)
	// consecutive, non-empty subranges of nearly equal count, in order.
	// Each Sub.Upper but the last is the shortest bound that separates
	// the subrange's last item from the next one's first (the common
	// prefix of the two plus one byte of the larger); the last is upper.
	Split(lower, upper []byte, k int) ([]Sub, error)
}

// Sub is one subrange of a Split: its exclusive upper bound and the
// accumulator of its items.
type Sub struct {
	Upper []byte
	Acc   wire.FingerprintAcc
}

// Set is one side's items in memory, sorted, with prefix sums so that any
// range's fingerprint costs two binary searches and a hash.
type Set struct {
	cfg    Config
	items  []Item
	prefix []wire.FingerprintAcc // prefix[i] covers items[:i]
}

// NewSet takes ownership of items, which must be sorted strictly ascending.
func NewSet(items []Item, cfg Config) (*Set, error) {
	if err := cfg.check(); err != nil {
		return nil, err
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

func (c Config) check() error {
	if c.IDThreshold < 1 || c.Branching < 2 {
		return fmt.Errorf("reconcile: config %+v: threshold ≥ 1 and branching ≥ 2 required", c)
	}
	return nil
}

// Len returns the number of items.
func (s *Set) Len() int { return len(s.items) }

// index returns the index of the first item not below bound; a nil bound
// is the start when lower, the end otherwise.
func (s *Set) index(bound []byte, lower bool) int {
	if bound == nil {
		if lower {
			return 0
		}
		return len(s.items)
	}
	var padded Item
	copy(padded[:], bound)
	i, _ := slices.BinarySearchFunc(s.items, padded, func(a, b Item) int { return bytes.Compare(a[:], b[:]) })
	return i
}

func (s *Set) span(lower, upper []byte) (a, b int) {
	a, b = s.index(lower, true), s.index(upper, false)
	return a, max(a, b)
}

func (s *Set) acc(a, b int) wire.FingerprintAcc {
	acc := s.prefix[b]
	acc.Sub(&s.prefix[a])
	return acc
}

// Fingerprint implements Source.
func (s *Set) Fingerprint(lower, upper []byte) (wire.FingerprintAcc, error) {
	a, b := s.span(lower, upper)
	return s.acc(a, b), nil
}

// Items implements Source.
func (s *Set) Items(lower, upper []byte) ([]Item, error) {
	a, b := s.span(lower, upper)
	return slices.Clone(s.items[a:b]), nil
}

// Split implements Source.
func (s *Set) Split(lower, upper []byte, k int) ([]Sub, error) {
	a, b := s.span(lower, upper)
	n := b - a
	out := make([]Sub, 0, min(k, n))
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
		out = append(out, Sub{Upper: bound, Acc: s.acc(lo, hi)})
		lo = hi
	}
	return out, nil
}

// boundBetween returns the shortest prefix of items[i] that is above
// items[i-1]: an exclusive upper bound that separates them.
func (s *Set) boundBetween(i int) []byte { return ShortestBound(s.items[i-1], s.items[i]) }

// ShortestBound returns the shortest exclusive upper bound that separates
// prev from next (prev < next): the common prefix of the two plus one byte
// of next.
func ShortestBound(prev, next Item) []byte {
	k := 0
	for k < len(next) && prev[k] == next[k] {
		k++
	}
	return slices.Clone(next[:min(k+1, len(next))])
}

// Initiate returns the first message: the whole space as one range.
func (s *Set) Initiate() []*pb.Range {
	r, _ := Initiate(s, s.cfg)
	return r
}

// Respond processes one incoming message against the set (see Respond).
func (s *Set) Respond(in []*pb.Range) (Result, error) { return Respond(s, s.cfg, in) }

// Initiate returns the first message of an exchange over src: the whole
// space as one range, IDS if src holds at most cfg.IDThreshold items, else
// FINGERPRINT.
func Initiate(src Source, cfg Config) ([]*pb.Range, error) {
	acc, err := src.Fingerprint(nil, nil)
	if err != nil {
		return nil, err
	}
	if acc.Count() <= uint64(cfg.IDThreshold) {
		r, err := idsRange(src, nil, nil, nil)
		if err != nil {
			return nil, err
		}
		return []*pb.Range{r}, nil
	}
	return []*pb.Range{fpRange(nil, acc)}, nil
}

func idsRange(src Source, lower, upper, bound []byte) (*pb.Range, error) {
	items, err := src.Items(lower, upper)
	if err != nil {
		return nil, err
	}
	ids := make([][]byte, len(items))
	for i := range items {
		ids[i] = items[i][:]
	}
	return &pb.Range{Upper: bound, Mode: pb.RangeMode_RANGE_MODE_IDS, Ids: ids}, nil
}

func fpRange(upper []byte, acc wire.FingerprintAcc) *pb.Range {
	fp := acc.Fingerprint()
	return &pb.Range{Upper: upper, Mode: pb.RangeMode_RANGE_MODE_FINGERPRINT, Fingerprint: fp[:], Count: acc.Count()}
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

// Respond processes one incoming message against src. It returns an error
// wrapping wire.ErrMalformed for a message that does not tile the space
// with increasing bounds or breaks a limit (Validate), or src's error.
func Respond(src Source, cfg Config, in []*pb.Range) (Result, error) {
	if err := Validate(cfg, in); err != nil {
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
	// The answer must itself be a valid message for the peer: at most
	// MaxRanges ranges and MaxIDs ids. When a differing range would exceed
	// either, the answer ends with one FINGERPRINT range of this side's
	// items from that range's lower bound to the end of the space: the
	// ranges before it progress (the leftmost differences are resolved
	// first), the peer splits the rest in a later round.
	ids := 0
	rest := func(lower []byte) (Result, error) {
		acc, err := src.Fingerprint(lower, nil)
		if err != nil {
			return Result{}, err
		}
		out = append(out, fpRange(nil, acc))
		res.Ranges = out
		return res, nil
	}
	var lower []byte
	for _, r := range in {
		upper := r.Upper
		if len(out)+2 > cfg.MaxRanges {
			return rest(lower)
		}
		switch r.Mode {
		case pb.RangeMode_RANGE_MODE_SKIP:
			skip(upper)
		case pb.RangeMode_RANGE_MODE_FINGERPRINT:
			acc, err := src.Fingerprint(lower, upper)
			if err != nil {
				return Result{}, err
			}
			fp := acc.Fingerprint()
			if acc.Count() == r.Count && bytes.Equal(fp[:], r.Fingerprint) {
				skip(upper)
				break
			}
			if n := acc.Count(); n <= uint64(cfg.IDThreshold) {
				if ids+int(n) > cfg.MaxIDs {
					return rest(lower)
				}
				idr, err := idsRange(src, lower, upper, upper)
				if err != nil {
					return Result{}, err
				}
				ids += len(idr.Ids)
				out = append(out, idr)
				break
			}
			// Room for the subranges and, after them, a last range.
			if len(out)+cfg.Branching+1 > cfg.MaxRanges {
				return rest(lower)
			}
			subs, err := src.Split(lower, upper, cfg.Branching)
			if err != nil {
				return Result{}, err
			}
			for _, sub := range subs {
				out = append(out, fpRange(sub.Upper, sub.Acc))
			}
		case pb.RangeMode_RANGE_MODE_IDS:
			mine, err := src.Items(lower, upper)
			if err != nil {
				return Result{}, err
			}
			have, need := diff(mine, r.Ids)
			res.Have = append(res.Have, have...)
			res.Need = append(res.Need, need...)
			skip(upper)
		}
		lower = upper
	}
	res.Ranges = out
	return res, nil
}

// diff compares this side's items of a range with the peer's complete list
// of it (both sorted).
func diff(mine []Item, peer [][]byte) (have, need []Item) {
	i, j := 0, 0
	for i < len(mine) || j < len(peer) {
		switch {
		case j == len(peer):
			have = append(have, mine[i])
			i++
		case i == len(mine):
			need = append(need, Item(peer[j]))
			j++
		default:
			switch c := bytes.Compare(mine[i][:], peer[j]); {
			case c < 0:
				have = append(have, mine[i])
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

// Validate checks a message against SPEC.md §10.10: its ranges tile the
// whole space with strictly increasing bounds of 1 … 32 bytes, only the last
// is unbounded, fingerprints are 16 bytes, ids are 32 bytes, ascending and
// inside their range, and it has at most cfg.MaxRanges ranges and
// cfg.MaxIDs ids. Errors wrap wire.ErrMalformed.
func Validate(cfg Config, in []*pb.Range) error {
	if len(in) == 0 || len(in) > cfg.MaxRanges {
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
			if ids > cfg.MaxIDs {
				return fmt.Errorf("reconcile: more than %d ids: %w", cfg.MaxIDs, wire.ErrMalformed)
			}
			for k, id := range r.Ids {
				if len(id) != 32 {
					return fmt.Errorf("reconcile: range %d id %d: %d bytes: %w", i, k, len(id), wire.ErrMalformed)
				}
				if k > 0 && bytes.Compare(r.Ids[k-1], id) >= 0 {
					return fmt.Errorf("reconcile: range %d: ids not ascending: %w", i, wire.ErrMalformed)
				}
			}
			if err := idsInRange(r.Ids, in, i); err != nil {
				return err
			}
		default:
			return fmt.Errorf("reconcile: range %d: mode %d: %w", i, r.Mode, wire.ErrMalformed)
		}
	}
	return nil
}

// idsInRange checks that the ids of range i lie inside its bounds.
func idsInRange(ids [][]byte, in []*pb.Range, i int) error {
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
