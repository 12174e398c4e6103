package relay

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/store"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// deposit — /cairn/deposit/1.0.0 (SPEC.md §10.3): a long-lived, pipelined
// stream. Two goroutines serve it: the reader reads DepositRequest frames
// and runs the cheap checks in SPEC order (frame size, envelope parse, size,
// expiry, the peer's deposit rate, placement, postage); the processor
// gathers everything the reader has passed, appends it with one AppendMany
// (the store's group commit shares one fsync and one receipt signature with
// concurrent streams too), and writes the answers in request order with one
// flush. The reader stops reading when DepositStreamBytes of envelopes wait
// for answers, and never holds more than wire.MaxDepositInflight requests.

// depositItem is one request on its way to its answer.
type depositItem struct {
	id    uint64
	start time.Time
	// resp is the answer of a request refused by a cheap check; nil for
	// one to append.
	resp *pb.DepositResponse
	dep  store.Deposit
	// reserved is what the item holds of the stream budget and of the
	// resource manager's memory.
	reserved int
	// queued: the item counts in Node.depositQueue (admitted, not yet
	// handed to the store).
	queued bool
}

// byteBudget bounds the envelope bytes a stream has read but not answered.
type byteBudget struct {
	mu    sync.Mutex
	used  int
	limit int
	freed chan struct{} // signalled when bytes are released
}

func (b *byteBudget) take(n int, quit <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			return true
		}
		b.mu.Unlock()
		select {
		case <-b.freed:
		case <-quit:
			return false
		}
	}
}

func (b *byteBudget) release(n int) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

func (n *Node) serveDeposit(in *inbound) {
	f := rpc.NewFramedBuffer(in.s, rpc.MaxDepositFrame, rpc.LargeWriteBuffer)
	items := make(chan depositItem, wire.MaxDepositInflight)
	budget := &byteBudget{limit: n.cfg.DepositStreamBytes, freed: make(chan struct{}, 1)}
	quit := make(chan struct{}) // the processor failed: stop reading
	stop := context.AfterFunc(n.drainCtx, func() { _ = in.s.SetReadDeadline(time.Now()) })
	defer stop()
	readerDone := make(chan bool, 1)
	go func() { readerDone <- n.depositReader(in, f, items, budget, quit) }()

	ok := n.depositProcessor(in, f, items, budget)
	if !ok {
		close(quit)
		_ = in.s.Reset()
		for it := range items { // let the reader finish
			n.releaseItem(in, budget, it)
		}
	}
	if clean := <-readerDone; clean && ok {
		closeStream(in.s)
	} else {
		_ = in.s.Reset()
	}
}

// depositReader reads and checks requests until the stream ends, an
// unparseable or oversized frame arrives, or the node drains. It reports
// whether the stream ended cleanly (the sender's close-half, or a drain).
func (n *Node) depositReader(in *inbound, f *rpc.Framed, items chan<- depositItem, budget *byteBudget, quit <-chan struct{}) (clean bool) {
	defer close(items)
	for {
		var req pb.DepositRequest
		err := f.Read(&req, n.cfg.DepositIdleTimeout)
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				return true
			case errors.Is(err, wire.ErrMalformed):
				// Answer in order, then end the stream: the frame's id is
				// unknown, so the answer carries id 0.
				n.m.reject("deposit", pb.Status_STATUS_MALFORMED)
				select {
				case items <- depositItem{start: time.Now(), resp: &pb.DepositResponse{Status: pb.Status_STATUS_MALFORMED, Detail: "request does not parse"}}:
				case <-quit:
				}
				return true
			case n.draining():
				return true
			default:
				if errors.Is(err, rpc.ErrFrameTooLarge) {
					n.m.reject("deposit", pb.Status_STATUS_MALFORMED)
				}
				return false // oversized, idle or broken: reset
			}
		}
		n.m.requests.WithLabelValues("deposit_envelope").Inc()
		it := n.checkDeposit(in, &req)
		if it.resp == nil {
			size := len(it.dep.Envelope)
			if !budget.take(size, quit) {
				n.unqueue(&it)
				return false
			}
			it.reserved = size
			if err := in.s.Scope().ReserveMemory(size, network.ReservationPriorityMedium); err != nil {
				budget.release(size)
				it.reserved = 0
				n.unqueue(&it)
				it.resp = &pb.DepositResponse{Id: it.id, Status: pb.Status_STATUS_BUSY, Detail: "memory", RetryAfterMs: 1000}
				n.m.reject("deposit", pb.Status_STATUS_BUSY)
			}
		}
		select {
		case items <- it:
		case <-quit:
			n.releaseItem(in, budget, it)
			return false
		}
	}
}

// checkDeposit runs the checks of SPEC.md §10.3 that come before the store,
// in order, cheapest first. A refused request changes no state.
func (n *Node) checkDeposit(in *inbound, req *pb.DepositRequest) depositItem {
	it := depositItem{id: req.Id, start: time.Now()}
	refuse := func(st pb.Status, detail string) depositItem {
		n.m.reject("deposit", st)
		it.resp = &pb.DepositResponse{Id: req.Id, Status: st, Detail: detail}
		return it
	}
	var env wire.Envelope
	if err := env.Unmarshal(req.Envelope); err != nil {
		return refuse(statusOf(err), err.Error())
	}
	if len(req.Envelope) > n.cfg.MaxEnvelopeBytes {
		return refuse(pb.Status_STATUS_TOO_LARGE, "envelope above max_envelope_bytes")
	}
	now := n.now()
	if env.Expiry != 0 {
		nowSec := uint64(now.Unix())
		if env.Expiry <= nowSec || env.Expiry > nowSec+uint64(n.cfg.MaxTTL/time.Second) {
			return refuse(pb.Status_STATUS_EXPIRY_INVALID, "expiry outside (now, now+max_ttl]")
		}
	}
	if ok, retry := take(in.ps.deposit, now); !ok {
		r := refuse(pb.Status_STATUS_RATE_LIMITED, "deposit rate")
		r.resp.RetryAfterMs = retryMs(retry)
		return r
	}
	if retry, busy := n.admitDeposit(); busy {
		r := refuse(pb.Status_STATUS_BUSY, "store backlog")
		r.resp.RetryAfterMs = retryMs(retry)
		return r
	}
	it.queued = true
	if ok, replicas := n.placement.Accepts(env.Mailbox); !ok {
		n.unqueue(&it)
		r := refuse(pb.Status_STATUS_NOT_REPLICA, "not a replica of this mailbox")
		for _, p := range replicas {
			r.resp.ReplicaPeers = append(r.resp.ReplicaPeers, []byte(p))
		}
		return r
	}
	if d := n.cfg.PostageDifficulty; d > 0 {
		if err := wire.CheckPostage(&env, d); err != nil {
			n.unqueue(&it)
			r := refuse(pb.Status_STATUS_POSTAGE_REQUIRED, "postage below difficulty")
			r.resp.PostageDifficulty = uint32(d)
			return r
		}
	}
	it.dep = store.Deposit{Envelope: req.Envelope, Mailbox: env.Mailbox}
	return it
}

// admitDeposit is the relay-wide admission check of SPEC.md §10.3 (after
// the peer's rate): it counts one more deposit in the work queued ahead of
// the store, or, when that work is above MaxStoreBacklog operations,
// counts nothing and returns how long the queued work should take to
// commit (the BUSY answer's retry_after).
//
// The work is the deposits admitted on every stream and not yet handed to
// the store, plus the store's own queue (every operation submitted and not
// yet committed: appends, replicated entries, acks, sweeps). Without this
// check a relay driven above its capacity by senders within their
// per-peer rates only stops reading (flow control): nothing tells them to
// back off or try another replica, and their waits grow with the
// overload.
func (n *Node) admitDeposit() (retryAfter time.Duration, busy bool) {
	b := n.store.Backlog()
	queued := n.depositQueue.Add(1)
	work := int(queued) + b.Ops
	if work <= n.cfg.MaxStoreBacklog {
		return 0, false
	}
	n.depositQueue.Add(-1)
	b.Ops = work
	d := b.Drain()
	if b.Commit == 0 && b.LastCommit == 0 {
		// No commit measured yet: assume 10 ms per commit.
		d = time.Duration((work+b.Batch-1)/max(1, b.Batch)) * 10 * time.Millisecond
	}
	return min(d, maxBusyRetry), true
}

// maxBusyRetry caps the retry_after of a deposit refused for the store's
// backlog (a stalled disk makes the estimate large; the client tries the
// other replicas meanwhile).
const maxBusyRetry = 10 * time.Second

// unqueue takes an admitted item out of Node.depositQueue.
func (n *Node) unqueue(it *depositItem) {
	if it.queued {
		it.queued = false
		n.depositQueue.Add(-1)
	}
}

func (n *Node) releaseItem(in *inbound, budget *byteBudget, it depositItem) {
	n.unqueue(&it)
	if it.reserved > 0 {
		in.s.Scope().ReleaseMemory(it.reserved)
		budget.release(it.reserved)
	}
}

// depositProcessor appends and answers batches until the reader is done.
// It returns false if writing failed. It hands each batch to the store and
// goes on gathering the next while an answerer goroutine waits for the
// batch's commit (and, with ReceiptQuorum above 1, for the other replicas)
// and writes its answers, in order: a stream's next batch joins the next
// group commit instead of waiting for the previous one's fsync.
func (n *Node) depositProcessor(in *inbound, f *rpc.Framed, items <-chan depositItem, budget *byteBudget) bool {
	maxBatch := n.cfg.MaxCommitBatch
	quorum := n.cfg.ReceiptQuorum > 1
	// Up to 4 batches wait for their answers (as before for the quorum,
	// whose waits last longer than a commit); the window and the stream's
	// byte budget bound them too.
	jobs := make(chan depositJob, 4)
	var answerer sync.WaitGroup
	var failed atomic.Bool
	answerer.Add(1)
	go func() {
		defer answerer.Done()
		for j := range jobs {
			var results []store.AppendManyResult
			if j.wait != nil {
				results = j.wait()
			}
			if failed.Load() {
				for i := range j.batch {
					n.releaseItem(in, budget, j.batch[i])
				}
				continue
			}
			var replicas []int
			if quorum {
				replicas = n.waitQuorum(results)
			}
			if err := n.answerDeposits(in, f, budget, j.batch, results, replicas); err != nil {
				in.log.Debug("deposit stream write failed", "err", err)
				failed.Store(true)
			}
		}
	}()
	deps := make([]store.Deposit, 0, maxBatch)
	for first := range items {
		if failed.Load() {
			n.releaseItem(in, budget, first)
			break
		}
		batch := make([]depositItem, 0, maxBatch)
		batch = append(batch, first)
	gather:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-items:
				if !ok {
					break gather
				}
				batch = append(batch, it)
			default:
				break gather
			}
		}
		deps = deps[:0]
		for i := range batch {
			if batch[i].resp == nil {
				deps = append(deps, batch[i].dep)
			}
		}
		var wait func() []store.AppendManyResult
		if len(deps) > 0 {
			n.m.appendBatch.Observe(float64(len(deps)))
			if n.beforeAppend != nil {
				n.beforeAppend()
			}
			// From here the store's backlog counts them.
			for i := range batch {
				n.unqueue(&batch[i])
			}
			wait = n.store.AppendManyAsync(n.workCtx, deps)
		}
		jobs <- depositJob{batch: batch, wait: wait}
	}
	close(jobs)
	answerer.Wait()
	return !failed.Load()
}

// depositJob is a batch handed to the store and waiting for its answers.
type depositJob struct {
	batch []depositItem
	wait  func() []store.AppendManyResult // nil: nothing appended
}

// waitQuorum waits for the new entries of a batch to reach ReceiptQuorum
// (at most QuorumTimeout) and returns how many replicas held each result
// (nil entries for results that are not new entries).
func (n *Node) waitQuorum(results []store.AppendManyResult) []int {
	var cids []wire.CID
	var idx []int
	for i, r := range results {
		if r.Err == nil && !r.Duplicate && r.Receipt.Seq != 0 {
			cids = append(cids, r.Receipt.CID)
			idx = append(idx, i)
		}
	}
	out := make([]int, len(results))
	if len(cids) == 0 {
		return out
	}
	held := n.repl.quorum.wait(n.workCtx, cids, time.Now().Add(n.cfg.QuorumTimeout))
	for k, i := range idx {
		out[i] = held[k]
	}
	return out
}

// answerDeposits writes the answers of one batch in order and releases its
// items; replicas, if not nil, says how many replicas held each result.
func (n *Node) answerDeposits(in *inbound, f *rpc.Framed, budget *byteBudget, batch []depositItem, results []store.AppendManyResult, replicas []int) error {
	j := 0
	var werr error
	for i := range batch {
		it := &batch[i]
		resp := it.resp
		if resp == nil {
			var r store.AppendManyResult
			if j < len(results) {
				r = results[j]
			} else {
				r.Err = errors.New("store returned too few results")
			}
			resp = n.depositAnswer(in, it.id, r)
			if replicas != nil && j < len(replicas) && replicas[j] > 0 {
				resp.Replicas = uint32(replicas[j])
			}
			j++
		}
		if werr == nil {
			werr = f.Buffer(resp)
		}
		n.releaseItem(in, budget, *it)
	}
	if werr == nil {
		werr = f.Flush(n.cfg.WriteTimeout)
	}
	if werr != nil {
		return werr
	}
	now := time.Now()
	for i := range batch {
		n.m.depositLat.Observe(now.Sub(batch[i].start).Seconds())
	}
	return nil
}

// depositAnswer turns a store result into the wire answer.
func (n *Node) depositAnswer(in *inbound, id uint64, r store.AppendManyResult) *pb.DepositResponse {
	if r.Err != nil {
		st := statusOf(r.Err)
		detail := r.Err.Error()
		if st == pb.Status_STATUS_INTERNAL {
			in.log.Error("append failed", "err", r.Err)
			detail = "internal error"
		}
		n.m.reject("deposit", st)
		return &pb.DepositResponse{Id: id, Status: st, Detail: detail}
	}
	resp := &pb.DepositResponse{Id: id, Status: pb.Status_STATUS_OK, Duplicate: r.Duplicate, Replicas: 1}
	if r.Duplicate {
		n.m.deposits.WithLabelValues("duplicate").Inc()
	} else {
		n.m.deposits.WithLabelValues("stored").Inc()
	}
	if r.Receipt.Seq != 0 {
		b, err := r.Receipt.Marshal()
		if err != nil {
			in.log.Error("receipt does not encode", "err", err)
			n.m.reject("deposit", pb.Status_STATUS_INTERNAL)
			return &pb.DepositResponse{Id: id, Status: pb.Status_STATUS_INTERNAL, Detail: "internal error"}
		}
		resp.Receipt = b
	}
	return resp
}
