package rpc

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// Defaults of Client's zero-valued fields.
const (
	// DefaultTimeout bounds a one-shot call, and each wait for an answer
	// on a long-lived stream.
	DefaultTimeout = 30 * time.Second
	// DefaultSubscribeIdle is how long a subscription may go without any
	// event before it fails: three relay keepalive intervals (SPEC.md §12).
	DefaultSubscribeIdle = 45 * time.Second
	// DefaultVerifierRoots is how many verified receipt roots the default
	// verifier remembers.
	DefaultVerifierRoots = 1 << 14
)

// Client calls cairn protocols on relays through a libp2p host. Its zero
// value with Host set is ready to use; it is safe for concurrent use and
// must not be copied after first use.
type Client struct {
	// Host opens the streams. Required.
	Host host.Host
	// Timeout bounds each one-shot call and each wait for an answer on a
	// long-lived stream. Zero means DefaultTimeout.
	Timeout time.Duration
	// SubscribeIdle is how long a subscription may receive nothing (not
	// even a keepalive) before it fails. Zero means DefaultSubscribeIdle.
	SubscribeIdle time.Duration
	// Now is the clock of auth proofs. Nil means time.Now.
	Now func() time.Time
	// Rand is the source of auth proof nonces. Nil means crypto/rand.
	Rand io.Reader
	// Verifier checks origin stamps and caches verified batch roots. Nil
	// means one made on first use with DefaultVerifierRoots roots.
	Verifier *wire.ReceiptVerifier

	once     sync.Once
	verifier *wire.ReceiptVerifier
}

// New returns a Client with default settings on h.
func New(h host.Host) *Client { return &Client{Host: h} }

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) subscribeIdle() time.Duration {
	if c.SubscribeIdle > 0 {
		return c.SubscribeIdle
	}
	return DefaultSubscribeIdle
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) rand() io.Reader {
	if c.Rand != nil {
		return c.Rand
	}
	return rand.Reader
}

func (c *Client) receiptVerifier() *wire.ReceiptVerifier {
	c.once.Do(func() {
		c.verifier = c.Verifier
		if c.verifier == nil {
			c.verifier = wire.NewReceiptVerifier(DefaultVerifierRoots)
		}
	})
	return c.verifier
}

// Authenticate builds the Authenticated wrapper of SPEC.md §8 for a request
// body: it serialises body once and signs a proof over those exact bytes,
// addressed to relay, with the mailbox key.
func Authenticate(key ed25519.PrivateKey, op wire.AuthOp, relay peer.ID, body proto.Message, now time.Time, random io.Reader) (*pb.Authenticated, error) {
	b, err := proto.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	p, err := wire.NewAuthProof(key, op, relay, b, now, random)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	pb2, err := p.Marshal()
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	return &pb.Authenticated{Proof: pb2, Body: b}, nil
}

func (c *Client) authenticate(key ed25519.PrivateKey, op wire.AuthOp, relay peer.ID, body proto.Message) (*pb.Authenticated, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("mailbox key: %w", wire.ErrMalformed)
	}
	return Authenticate(key, op, relay, body, c.now(), c.rand())
}

// open opens a stream to relay for proto and ties its life to ctx: the
// stream is reset when ctx ends (its deadline included) before release is
// called, so a call's error is then ctx's.
func (c *Client) open(ctx context.Context, relay peer.ID, proto protocol.ID) (s network.Stream, release func() bool, err error) {
	s, err = c.Host.NewStream(ctx, relay, proto)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	return s, stop, nil
}

// call runs a one-request, one-response exchange on a new stream.
func (c *Client) call(ctx context.Context, op string, relay peer.ID, pid protocol.ID, req, resp proto.Message) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	s, release, err := c.open(ctx, relay, pid)
	if err != nil {
		return fmt.Errorf("%s: open stream: %w", op, err)
	}
	defer func() {
		if release() {
			_ = s.Close()
		}
	}()
	f := NewFramed(s, MaxControlFrame)
	werr := f.Write(req, 0)
	if werr == nil {
		werr = s.CloseWrite()
	}
	// A relay may answer (a rate limit, a shutdown) without reading the
	// request, so read the answer even if writing failed.
	if rerr := f.Read(resp, 0); rerr != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if werr != nil {
			return fmt.Errorf("%s: write: %w", op, werr)
		}
		if errors.Is(rerr, wire.ErrMalformed) {
			return protocolErr(op, "answer: %v", rerr)
		}
		return fmt.Errorf("%s: read: %w", op, rerr)
	}
	return nil
}

// Info is a relay's self-description (SPEC.md §10.2).
type Info struct {
	Version           string
	MaxEnvelopeBytes  int
	DefaultTTL        time.Duration
	MaxTTL            time.Duration
	PostageDifficulty int
	ReplicationFactor int
	MaxPageEntries    int
	ReceiptQuorum     int
}

// Info asks relay for its limits and policy.
func (c *Client) Info(ctx context.Context, relay peer.ID) (*Info, error) {
	var resp pb.InfoResponse
	if err := c.call(ctx, "info", relay, wire.ProtocolInfo, &pb.InfoRequest{}, &resp); err != nil {
		return nil, err
	}
	if err := statusErr("info", relay, resp.Status, "", 0); err != nil {
		return nil, err
	}
	return &Info{
		Version:           resp.Version,
		MaxEnvelopeBytes:  int(resp.MaxEnvelopeBytes),
		DefaultTTL:        time.Duration(resp.DefaultTtlSeconds) * time.Second,
		MaxTTL:            time.Duration(resp.MaxTtlSeconds) * time.Second,
		PostageDifficulty: int(resp.PostageDifficulty),
		ReplicationFactor: int(resp.ReplicationFactor),
		MaxPageEntries:    int(resp.MaxPageEntries),
		ReceiptQuorum:     int(resp.ReceiptQuorum),
	}, nil
}

// Status asks relay what it knows of each CID of mailbox (SPEC.md §10.7):
// one state per CID, in order. At most wire.MaxStatusCIDs CIDs.
func (c *Client) Status(ctx context.Context, relay peer.ID, mailbox wire.Mailbox, cids []wire.CID) ([]pb.EntryState, error) {
	if len(cids) > wire.MaxStatusCIDs {
		return nil, fmt.Errorf("status: %d cids: %w", len(cids), wire.ErrMalformed)
	}
	req := &pb.StatusRequest{Mailbox: mailbox[:], Cids: make([][]byte, len(cids))}
	for i := range cids {
		req.Cids[i] = cids[i][:]
	}
	var resp pb.StatusResponse
	if err := c.call(ctx, "status", relay, wire.ProtocolStatus, req, &resp); err != nil {
		return nil, err
	}
	if err := statusErr("status", relay, resp.Status, resp.Detail, resp.RetryAfterMs); err != nil {
		return nil, err
	}
	if len(resp.States) != len(cids) {
		return nil, protocolErr("status", "%d states for %d cids", len(resp.States), len(cids))
	}
	return resp.States, nil
}

// Ack asks relay to delete entries of the key's mailbox (SPEC.md §10.6):
// the listed CIDs, at most wire.MaxAckCIDs of them. The request carries the
// owner's signed ack of the CIDs (§6.3), which the relay keeps with each
// tombstone so that the other replicas delete them too. It returns how
// many entries the relay deleted.
func (c *Client) Ack(ctx context.Context, relay peer.ID, key ed25519.PrivateKey, cids []wire.CID) (int, error) {
	if len(cids) > wire.MaxAckCIDs {
		return 0, fmt.Errorf("ack: %d cids: %w", len(cids), wire.ErrMalformed)
	}
	if len(key) != ed25519.PrivateKeySize {
		return 0, fmt.Errorf("ack: mailbox key: %w", wire.ErrMalformed)
	}
	mb := wire.MailboxOf(key.Public().(ed25519.PublicKey))
	body := &pb.AckRequest{Mailbox: mb[:], Cids: make([][]byte, len(cids))}
	for i := range cids {
		body.Cids[i] = cids[i][:]
	}
	if len(cids) > 0 {
		sig, err := wire.SignOwnerAck(key, cids)
		if err != nil {
			return 0, fmt.Errorf("ack: %w", err)
		}
		body.Signature = sig[:]
	}
	req, err := c.authenticate(key, wire.AuthAck, relay, body)
	if err != nil {
		return 0, fmt.Errorf("ack: %w", err)
	}
	var resp pb.AckResponse
	if err := c.call(ctx, "ack", relay, wire.ProtocolAck, req, &resp); err != nil {
		return 0, err
	}
	if err := statusErr("ack", relay, resp.Status, resp.Detail, resp.RetryAfterMs); err != nil {
		return 0, err
	}
	return int(resp.Acked), nil
}

// PrekeyCounts says how many one-time prekeys of each kind a relay holds for
// a mailbox.
type PrekeyCounts struct {
	X25519 int
	MLKEM  int
}

// UploadPrekeys stores one-time prekeys (their §15.2 encodings, signed by
// the mailbox key) on relay for the key's mailbox (SPEC.md §10.8). At most
// wire.MaxPrekeyUpload. It returns how many the relay now holds.
func (c *Client) UploadPrekeys(ctx context.Context, relay peer.ID, key ed25519.PrivateKey, prekeys [][]byte) (PrekeyCounts, error) {
	if len(prekeys) > wire.MaxPrekeyUpload {
		return PrekeyCounts{}, fmt.Errorf("prekeys: %d in one upload: %w", len(prekeys), wire.ErrMalformed)
	}
	if len(key) != ed25519.PrivateKeySize {
		return PrekeyCounts{}, fmt.Errorf("prekeys: mailbox key: %w", wire.ErrMalformed)
	}
	mb := wire.MailboxOf(key.Public().(ed25519.PublicKey))
	auth, err := c.authenticate(key, wire.AuthPrekeys, relay, &pb.PrekeyUpload{Mailbox: mb[:], Prekeys: prekeys})
	if err != nil {
		return PrekeyCounts{}, fmt.Errorf("prekeys: %w", err)
	}
	req := &pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Upload{Upload: auth}}
	var resp pb.PrekeyResponse
	if err := c.call(ctx, "prekeys", relay, wire.ProtocolPrekeys, req, &resp); err != nil {
		return PrekeyCounts{}, err
	}
	if err := statusErr("prekeys", relay, resp.Status, resp.Detail, resp.RetryAfterMs); err != nil {
		return PrekeyCounts{}, err
	}
	return PrekeyCounts{X25519: int(resp.RemainingX25519), MLKEM: int(resp.RemainingMlkem)}, nil
}

// FetchedPrekeys is the answer to a prekey fetch: at most one one-time
// prekey of each kind (nil when the relay has none left; the initiator then
// uses the bundle's last-resort KEM prekey) and what remains.
type FetchedPrekeys struct {
	X25519    []byte
	MLKEM     []byte
	Remaining PrekeyCounts
}

// FetchPrekeys takes one X25519 and one ML-KEM one-time prekey of mailbox
// from relay (SPEC.md §10.8). The caller verifies them against the bundle's
// mailbox key before use.
func (c *Client) FetchPrekeys(ctx context.Context, relay peer.ID, mailbox wire.Mailbox) (*FetchedPrekeys, error) {
	req := &pb.PrekeyRequest{Kind: &pb.PrekeyRequest_Fetch{Fetch: &pb.PrekeyFetch{Mailbox: mailbox[:]}}}
	var resp pb.PrekeyResponse
	if err := c.call(ctx, "prekeys", relay, wire.ProtocolPrekeys, req, &resp); err != nil {
		return nil, err
	}
	if err := statusErr("prekeys", relay, resp.Status, resp.Detail, resp.RetryAfterMs); err != nil {
		return nil, err
	}
	return &FetchedPrekeys{
		X25519:    nilIfEmpty(resp.X25519),
		MLKEM:     nilIfEmpty(resp.Mlkem),
		Remaining: PrekeyCounts{X25519: int(resp.RemainingX25519), MLKEM: int(resp.RemainingMlkem)},
	}, nil
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}
