package rpc

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// SubscriptionBuffer is how many verified entries a Subscription holds for
// its reader before it stops reading from the relay (and the relay, once its
// own queue is full, drops the subscription with SLOW_CONSUMER).
const SubscriptionBuffer = 64

// Subscription is a live feed of a mailbox's new entries from one relay
// (SPEC.md §10.5). Entries delivers verified entries; when it is closed, Err
// says why. Keepalives are consumed internally: a relay silent for the
// client's SubscribeIdle ends the subscription.
type Subscription struct {
	relay   peer.ID
	mailbox wire.Mailbox
	s       network.Stream
	f       *Framed
	ch      chan Entry
	quit    chan struct{}
	done    chan struct{}

	mu        sync.Mutex
	err       error
	closeOnce sync.Once
}

// Subscribe subscribes to the key's mailbox on relay. It returns once the
// relay has accepted the subscription (or refused it: *Error with BUSY,
// RATE_LIMITED, AUTH_…). ctx bounds the handshake; the subscription lasts
// until Close (which must be called) or the relay ends it. Subscribe before
// syncing, so nothing falls between.
func (c *Client) Subscribe(ctx context.Context, relay peer.ID, key ed25519.PrivateKey) (*Subscription, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("subscribe: mailbox key: %w", wire.ErrMalformed)
	}
	mb := wire.MailboxOf(key.Public().(ed25519.PublicKey))
	auth, err := c.authenticate(key, wire.AuthSubscribe, relay, &pb.SubscribeRequest{Mailbox: mb[:]})
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	octx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, err := c.Host.NewStream(octx, relay, wire.ProtocolSubscribe)
	if err != nil {
		return nil, fmt.Errorf("subscribe: open stream: %w", err)
	}
	stop := context.AfterFunc(octx, func() { _ = s.Reset() })
	f := NewFramed(s, MaxEntryFrame)
	werr := f.Write(auth, 0)
	var first pb.SubscribeEvent
	rerr := f.Read(&first, c.timeout())
	if !stop() {
		return nil, fmt.Errorf("subscribe: %w", octx.Err())
	}
	if rerr != nil {
		_ = s.Reset()
		if werr != nil {
			return nil, fmt.Errorf("subscribe: write: %w", werr)
		}
		if errors.Is(rerr, wire.ErrMalformed) || errors.Is(rerr, ErrFrameTooLarge) {
			return nil, protocolErr("subscribe", "first event: %v", rerr)
		}
		return nil, fmt.Errorf("subscribe: read: %w", rerr)
	}
	if err := statusErr("subscribe", relay, first.Status, first.Detail, first.RetryAfterMs); err != nil {
		_ = s.Close()
		return nil, err
	}
	sub := &Subscription{
		relay:   relay,
		mailbox: mb,
		s:       s,
		f:       f,
		ch:      make(chan Entry, SubscriptionBuffer),
		quit:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go sub.run(c.receiptVerifier(), c.subscribeIdle())
	return sub, nil
}

// Entries delivers verified entries; it is closed when the subscription
// ends.
func (sub *Subscription) Entries() <-chan Entry { return sub.ch }

// Err returns why the subscription ended (after Entries is closed): nil
// after Close, an *Error for SLOW_CONSUMER or SHUTTING_DOWN, a stream error
// otherwise.
func (sub *Subscription) Err() error {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.err
}

func (sub *Subscription) setErr(err error) {
	sub.mu.Lock()
	if sub.err == nil {
		sub.err = err
	}
	sub.mu.Unlock()
}

func (sub *Subscription) run(v *wire.ReceiptVerifier, timeout time.Duration) {
	defer close(sub.done)
	defer close(sub.ch)
	for {
		var ev pb.SubscribeEvent
		if err := sub.f.Read(&ev, timeout); err != nil {
			select {
			case <-sub.quit:
				return
			default:
			}
			switch {
			case errors.Is(err, wire.ErrMalformed), errors.Is(err, ErrFrameTooLarge):
				err = protocolErr("subscribe", "event: %v", err)
			case errors.Is(err, io.EOF):
				err = fmt.Errorf("subscribe: relay closed the stream: %w", ErrClosed)
			default:
				err = fmt.Errorf("subscribe: read: %w", err)
			}
			sub.setErr(err)
			_ = sub.s.Reset()
			return
		}
		if ev.Status != pb.Status_STATUS_OK && ev.Status != pb.Status_STATUS_UNSPECIFIED {
			sub.setErr(newError("subscribe", sub.relay, ev.Status, ev.Detail, ev.RetryAfterMs))
			_ = sub.s.Close()
			return
		}
		if ev.Entry == nil {
			continue // a keepalive
		}
		e, err := VerifyEntry(v, ev.Entry, sub.mailbox)
		if err != nil {
			sub.setErr(fmt.Errorf("subscribe: %w", err))
			_ = sub.s.Reset()
			return
		}
		select {
		case sub.ch <- e:
		case <-sub.quit:
			return
		}
	}
}

// Close ends the subscription cleanly (the relay sees the stream close)
// and waits for its reader to stop.
func (sub *Subscription) Close() error {
	sub.closeOnce.Do(func() {
		close(sub.quit)
		_ = sub.s.Close()
	})
	<-sub.done
	return nil
}
