package adversary

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Hostile is an abusive client of one relay: a bare libp2p host (a fresh
// peer ID, dialing out only) that writes whatever it likes on cairn's
// protocols. RPC is an honest rpc.Client on the same host, for the parts
// of an attack that are well-formed.
type Hostile struct {
	Host  host.Host
	RPC   *rpc.Client
	Relay peer.ID
}

// NewHostile starts a host and connects it to the relay ai.
func NewHostile(ctx context.Context, ai peer.AddrInfo) (*Hostile, error) {
	h, err := libp2p.New(
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		return nil, fmt.Errorf("hostile: host: %w", err)
	}
	if err := h.Connect(ctx, ai); err != nil {
		_ = h.Close()
		return nil, fmt.Errorf("hostile: connect: %w", err)
	}
	return &Hostile{Host: h, RPC: &rpc.Client{Host: h, Timeout: 20 * time.Second}, Relay: ai.ID}, nil
}

// Close closes the host.
func (h *Hostile) Close() error { return h.Host.Close() }

// Open opens a raw stream of proto to the relay, framed for reading
// answers of at most maxRead bytes.
func (h *Hostile) Open(ctx context.Context, proto protocol.ID, maxRead int) (network.Stream, *rpc.Framed, error) {
	s, err := h.Host.NewStream(ctx, h.Relay, proto)
	if err != nil {
		return nil, nil, err
	}
	return s, rpc.NewFramed(s, maxRead), nil
}

// Exchange writes raw bytes on a new stream of proto, closes its write
// side, and reads one answer into resp. It returns the read's error: nil
// for an answer, an error for a reset or a stream closed without one.
func (h *Hostile) Exchange(ctx context.Context, proto protocol.ID, raw []byte, resp proto.Message) error {
	s, f, err := h.Open(ctx, proto, rpc.MaxEntryFrame)
	if err != nil {
		return err
	}
	defer s.Reset()
	_, _ = s.Write(raw)
	_ = s.CloseWrite()
	return f.Read(resp, 10*time.Second)
}

// Frame returns the delimited encoding of m (varint length ‖ message).
func Frame(m proto.Message) []byte {
	b, err := rpc.AppendFrame(nil, m)
	if err != nil {
		panic(err)
	}
	return b
}

// LengthPrefix returns a frame header announcing n bytes, followed by a
// few bytes of body: what a peer sends to make a reader allocate n.
func LengthPrefix(n int) []byte {
	b := binary.AppendUvarint(nil, uint64(n))
	return append(b, 0x0a, 0x01, 0x00)
}

// ProofAt builds an Authenticated request for body signed by key for relay
// and op, at time at, with the given nonce. Tests use it to make stale,
// replayed and misaddressed proofs.
func ProofAt(key ed25519.PrivateKey, op wire.AuthOp, relay peer.ID, body proto.Message, at time.Time, nonce [16]byte) (*pb.Authenticated, error) {
	raw, err := proto.Marshal(body)
	if err != nil {
		return nil, err
	}
	p, err := wire.NewAuthProof(key, op, relay, raw, at, bytes.NewReader(nonce[:]))
	if err != nil {
		return nil, err
	}
	enc, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	return &pb.Authenticated{Proof: enc, Body: raw}, nil
}

// NewMailboxKey returns a fresh mailbox key and its address.
func NewMailboxKey() (ed25519.PrivateKey, wire.Mailbox) {
	_, k, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		panic(err)
	}
	return k, wire.MailboxOf(k.Public().(ed25519.PublicKey))
}

// Envelope returns an encoded envelope for mb with size bytes of random
// ciphertext, expiring in an hour.
func Envelope(mb wire.Mailbox, size int, postage uint64) []byte {
	ct := make([]byte, size)
	_, _ = crand.Read(ct)
	e := wire.Envelope{Mailbox: mb, Expiry: uint64(time.Now().Add(time.Hour).Unix()), Postage: postage, Ciphertext: ct}
	b, err := e.Marshal()
	if err != nil {
		panic(err)
	}
	return b
}
