package client

import "context"

// WaitReady waits until the client is online: connected to a relay, with
// at least one relay in its DHT routing table, so that replica sets come
// from DHT lookups (SPEC.md §17.1) rather than from the bootstrap relays
// alone. It returns nil then.
//
// It returns ErrNoRelay when every bootstrap relay was tried and none
// could be reached, in a round of dials that began after the call:
// WaitReady begins one when the client has no relay connection (after the
// round under way, if any, which may have dialed before a relay came
// back). The client keeps trying in the background (each deposit and sync
// dials again), so WaitReady may be called again later. It returns
// ErrNotStarted before Start, ErrClosed once Close is called, and ctx's
// error when ctx ends first.
//
// An app does not need WaitReady to send or receive: Send queues offline,
// and the background work and Sync wait by themselves (at most
// Config.Timeout) for the client to be online before they pick relays. It
// is for an app that wants to show "online", and for short-lived
// processes: a command-line tool calls WaitReady, then Sync or Send, then
// Flush, then Close.
func (c *Client) WaitReady(ctx context.Context) error {
	n, err := c.network()
	if err != nil {
		return err
	}
	return n.waitOnline(ctx)
}

// network returns the started client's network side, or ErrNotStarted
// or ErrClosed.
func (c *Client) network() (*netState, error) {
	c.startMu.Lock()
	n := c.net
	c.startMu.Unlock()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case n == nil:
		return nil, ErrNotStarted
	}
	return n, nil
}
