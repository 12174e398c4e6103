package adversary

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// LoadResult counts what a relay answered to offered deposits.
type LoadResult struct {
	// Sent is how many deposits were sent; the others count their
	// outcomes (they sum to Sent).
	Sent        int
	OK          int
	RateLimited int
	Busy        int
	OtherStatus int
	// NoAnswer counts deposits without an answer: the client's timeout
	// passed, or the stream failed.
	NoAnswer int
	// NoRetryAfter counts RATE_LIMITED and BUSY answers without a
	// retry_after.
	NoRetryAfter int
	// Elapsed is the time from the first send to the last answer.
	Elapsed time.Duration
	// Lateness is, at the end, how far the senders were behind their
	// schedule (open loop only): deposits they could not even send
	// because the relay did not read (flow control).
	Lateness time.Duration
	// Latencies are the times from each deposit's scheduled send to its
	// answer (sorted).
	Latencies []time.Duration
}

// Rate returns the OK answers per second.
func (r *LoadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// Quantile returns the q-quantile of the latencies.
func (r *LoadResult) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)-1))
	return r.Latencies[i]
}

func (r *LoadResult) merge(o *LoadResult) {
	r.Sent += o.Sent
	r.OK += o.OK
	r.RateLimited += o.RateLimited
	r.Busy += o.Busy
	r.OtherStatus += o.OtherStatus
	r.NoAnswer += o.NoAnswer
	r.NoRetryAfter += o.NoRetryAfter
	r.Lateness = max(r.Lateness, o.Lateness)
	r.Latencies = append(r.Latencies, o.Latencies...)
}

// Load drives deposits of Size-byte envelopes at a relay from several
// peers, each on one pipelined deposit stream into its own mailboxes.
type Load struct {
	// Clients are the senders, one peer each.
	Clients []*rpc.Client
	Relay   peer.ID
	// Size is the ciphertext size of each envelope.
	Size int
	// Mailboxes is how many mailboxes each sender rotates over (so that
	// no mailbox reaches its quota).
	Mailboxes int
}

// envelopes makes unique envelopes cheaply: a random prefix per sender
// and a counter.
type envelopes struct {
	mbs    []wire.Mailbox
	prefix [8]byte
	n      uint64
	size   int
	expiry uint64
}

func (l *Load) newEnvelopes() *envelopes {
	e := &envelopes{size: l.Size, expiry: uint64(time.Now().Add(time.Hour).Unix())}
	_, _ = crand.Read(e.prefix[:])
	for range max(1, l.Mailboxes) {
		_, mb := NewMailboxKey()
		e.mbs = append(e.mbs, mb)
	}
	return e
}

func (e *envelopes) next() []byte {
	e.n++
	ct := make([]byte, max(16, e.size))
	copy(ct, e.prefix[:])
	binary.BigEndian.PutUint64(ct[8:], e.n)
	env := wire.Envelope{Mailbox: e.mbs[int(e.n)%len(e.mbs)], Expiry: e.expiry, Ciphertext: ct}
	b, err := env.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}

// count records one answer.
func (r *LoadResult) count(err error, lat time.Duration) {
	r.Latencies = append(r.Latencies, lat)
	if err == nil {
		r.OK++
		return
	}
	var re *rpc.Error
	if !errors.As(err, &re) {
		r.NoAnswer++
		return
	}
	switch re.Status {
	case pb.Status_STATUS_RATE_LIMITED:
		r.RateLimited++
	case pb.Status_STATUS_BUSY:
		r.Busy++
	default:
		r.OtherStatus++
		return
	}
	if re.RetryAfter <= 0 {
		r.NoRetryAfter++
	}
}

// Closed sends n deposits from each client as fast as the relay answers
// (wire.MaxDepositInflight in flight per stream): its OK rate is the
// relay's capacity for this load.
func (l *Load) Closed(ctx context.Context, n int) (*LoadResult, error) {
	return l.run(ctx, func(int) (int, float64) { return n, 0 })
}

// Open offers rate deposits per second in all, spread evenly over the
// clients, for d: each client sends on its own schedule whatever the
// relay answers (open loop), blocking only when the stream's window is
// full. Latencies are measured from the scheduled time.
func (l *Load) Open(ctx context.Context, rate float64, d time.Duration) (*LoadResult, error) {
	per := rate / float64(len(l.Clients))
	n := int(per * d.Seconds())
	return l.run(ctx, func(int) (int, float64) { return n, per })
}

func (l *Load) run(ctx context.Context, plan func(i int) (n int, rate float64)) (*LoadResult, error) {
	var (
		mu    sync.Mutex
		total LoadResult
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	for i, c := range l.Clients {
		n, rate := plan(i)
		gen := l.newEnvelopes()
		ds, err := c.OpenDeposit(ctx, l.Relay)
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			defer ds.Reset()
			var res LoadResult
			type pending struct {
				call *rpc.DepositCall
				at   time.Time
			}
			calls := make(chan pending, wire.MaxDepositInflight)
			var rg sync.WaitGroup
			rg.Go(func() {
				for p := range calls {
					_, err := p.call.Wait(ctx)
					res.count(err, time.Since(p.at))
				}
			})
			// The sender's own counts, merged once the reader is done.
			var sent, unsent int
			var late time.Duration
			t0 := time.Now()
			for k := range n {
				at := time.Now()
				if rate > 0 {
					at = t0.Add(time.Duration(float64(k) / rate * float64(time.Second)))
					if d := time.Until(at); d > 0 {
						time.Sleep(d)
					}
				}
				call, err := ds.Send(ctx, gen.next())
				if err != nil {
					unsent = n - k
					break
				}
				sent++
				calls <- pending{call, at}
				if rate > 0 && k == n-1 {
					late = max(0, time.Since(at))
				}
			}
			close(calls)
			rg.Wait()
			res.Sent += sent + unsent
			res.NoAnswer += unsent
			res.Lateness = late
			mu.Lock()
			total.merge(&res)
			if first == nil && ctx.Err() != nil {
				first = ctx.Err()
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	slices.Sort(total.Latencies)
	return &total, first
}
