package client

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/ratchet"
	"github.com/cairn-net/cairn/wire"
)

const (
	// maxUploadBytes keeps one prekey upload under wire.MaxControlFrame
	// (ML-KEM-768 prekeys are about 1.3 KB each).
	maxUploadBytes = wire.MaxControlFrame - 4096
	// maxHeldPrekeys bounds the private one-time prekeys kept per kind:
	// beyond it the oldest are forgotten (most likely served by a relay to
	// an initiator who never wrote, or stranded on a relay that left the
	// replica set).
	maxHeldPrekeys = 2000
)

// replenishPrekeys tops up the one-time prekeys at each relay of this
// client's replica set when they run below Config.PrekeyLowWater (SPEC.md
// §10.8). Each relay gets freshly generated prekeys, so the sets are
// disjoint and no prekey can be handed out twice. The private halves are
// committed before the public halves are uploaded.
func (c *Client) replenishPrekeys(ctx context.Context, replicas []peer.ID) {
	c.prekeyMu.Lock()
	defer c.prekeyMu.Unlock()
	n := c.net
	for _, relay := range replicas {
		// An empty upload reports what the relay holds.
		counts, err := n.rpc.UploadPrekeys(ctx, relay, c.mboxKey, nil)
		if err != nil {
			c.log.Debug("prekey count", "relay", relay.String(), "err", err)
			continue
		}
		var upload [][]byte
		for _, k := range []struct {
			kind ratchet.PrekeyKind
			have int
		}{{ratchet.KindX25519, counts.X25519}, {ratchet.KindMLKEM768, counts.MLKEM}} {
			if k.have >= c.cfg.PrekeyLowWater {
				continue
			}
			pks, err := c.generatePrekeys(k.kind, c.cfg.PrekeyBatch)
			if err != nil {
				c.log.Error("generate prekeys", "err", err)
				return
			}
			upload = append(upload, pks...)
		}
		for len(upload) > 0 {
			size, k := 0, 0
			for k < len(upload) && k < wire.MaxPrekeyUpload && size+len(upload[k]) <= maxUploadBytes {
				size += len(upload[k])
				k++
			}
			if _, err := n.rpc.UploadPrekeys(ctx, relay, c.mboxKey, upload[:k]); err != nil {
				c.log.Debug("prekey upload", "relay", relay.String(), "err", err)
				break
			}
			upload = upload[k:]
		}
	}
}

// generatePrekeys makes and persists n one-time prekeys of a kind and
// returns their public encodings.
func (c *Client) generatePrekeys(kind ratchet.PrekeyKind, n int) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	pks, err := c.keys.GenerateOneTimePrekeys(c.cfg.Rand, kind, n, c.mboxKey)
	if err != nil {
		c.reloadLocked()
		return nil, err
	}
	if ids := c.keys.OneTimePrekeyIDs(kind); len(ids) > maxHeldPrekeys {
		for _, id := range ids[:len(ids)-maxHeldPrekeys] {
			c.keys.ConsumeOneTimePrekey(kind, id)
		}
	}
	if err := c.db.Update(c.putIdentityLocked); err != nil {
		c.reloadLocked()
		return nil, err
	}
	out := make([][]byte, len(pks))
	for i, p := range pks {
		out[i] = p.Marshal()
	}
	return out, nil
}
