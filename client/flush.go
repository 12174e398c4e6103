package client

import (
	"context"
	"fmt"
)

// Flush sends what is waiting and returns once it has left. It takes every
// entry queued in the outbox when it is called — sent messages not yet
// stored, and delivery receipts, including those still being gathered
// (SPEC.md §17.6: they are sealed at once instead of after the gathering
// delay) — makes the ones waiting for a retry due at once, and waits until
// each is stored at a relay (a verified receipt; a delivery receipt then
// leaves the outbox) or has ended for good (StatusFailed,
// StatusExpiredUndelivered, or a message a delivery receipt confirmed
// first). It also waits for the acks of the entries received before the
// call (SPEC.md §17.4: pushed or synced entries are acked at their relay
// after they are stored; each ack is bounded by Config.Timeout and, if
// lost, sent again at a later sync), so that relays can delete them. It
// returns nil then, whatever the outcomes: Message and StatusChanged
// events tell them.
//
// Flush does not wait for entries queued after the call, nor for delivery
// (StatusDelivered). A failed attempt is retried with the usual backoff
// (Config.RetryMin, RetryMax) while Flush waits. If ctx ends first, Flush
// returns an error that wraps ctx's error and says how many entries are
// still queued; they stay in the durable outbox and go out later (after
// the next Start if the client is closed). It returns ErrNotStarted before
// Start and ErrClosed once Close is called.
//
// A short-lived process (a command-line tool) calls Flush before Close,
// so that what it queued and the delivery receipts of what it received
// leave with it. Pending tells, without waiting, how much is left.
func (c *Client) Flush(ctx context.Context) error {
	if _, err := c.network(); err != nil {
		return err
	}
	c.startMu.Lock()
	runCtx := c.runCtx
	c.startMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.pendingAcksLocked() > 0 {
		c.sealDeliveriesLocked()
	}
	jobs := make([]uint64, 0, len(c.acking))
	for id := range c.acking {
		jobs = append(jobs, id)
	}
	want := make([]outKey, 0, len(c.queued))
	nowMs := c.nowMs()
	for k, r := range c.queued {
		want = append(want, k)
		if r.NextAttemptMs > nowMs {
			r.NextAttemptMs = nowMs
		}
	}
	c.mu.Unlock()
	c.kick(c.kickSend)
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		left, acking := 0, 0
		for _, k := range want {
			if c.queued[k] != nil {
				left++
			}
		}
		for _, id := range jobs {
			if _, ok := c.acking[id]; ok {
				acking++
			}
		}
		wake := c.outWake
		c.mu.Unlock()
		if left == 0 && acking == 0 {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return fmt.Errorf("client: flush: %d of %d entries still queued, %d acks in flight: %w", left, len(want), acking, ctx.Err())
		case <-runCtx.Done():
			return ErrClosed
		}
	}
}

// Pending returns how many outbox entries have not left yet: sent messages
// not yet stored at a relay, and delivery receipts (those still being
// gathered count one per contact, the entry they will become). Zero means
// that everything this client has to send has left. Pending does not
// count messages stored but not yet delivered. It works offline too, and
// after Close it tells what Close left in the outbox.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.queued)
	for _, r := range c.recv {
		if len(r.Acks) > 0 {
			n++
		}
	}
	return n
}

// outChangedLocked wakes the Flush calls waiting for the outbox to change.
func (c *Client) outChangedLocked() {
	close(c.outWake)
	c.outWake = make(chan struct{})
}
