package wire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ReceiptVersion is the version byte of a Receipt.
const ReceiptVersion = 0x01

// Receipt is the origin relay's statement that it durably stored an entry
// (SPEC.md §6.1). Signed, it is the entry's origin stamp.
type Receipt struct {
	Origin  peer.ID
	Mailbox Mailbox
	CID     CID
	// Seq is the origin's sequence number for this mailbox, from 1.
	Seq uint64
	// StoredAtMs is the origin's clock when the entry became durable, in
	// Unix milliseconds.
	StoredAtMs uint64
	// Expiry is the effective expiry in Unix seconds.
	Expiry uint64
}

// AppendMarshal appends the canonical encoding of r to b. It fails, as
// ParseReceipt would, for a malformed origin, mailbox or CID or a zero seq.
func (r *Receipt) AppendMarshal(b []byte) ([]byte, error) {
	b = append(b, ReceiptVersion)
	b, err := appendPeerID(b, r.Origin)
	if err != nil {
		return nil, fmt.Errorf("receipt origin: %w", err)
	}
	if r.Seq == 0 {
		return nil, fmt.Errorf("receipt: seq 0: %w", ErrMalformed)
	}
	if r.Mailbox[0] != 0x12 || r.Mailbox[1] != 0x20 {
		return nil, fmt.Errorf("receipt: mailbox address: %w", ErrMalformed)
	}
	if [4]byte(r.CID[:4]) != cidPrefix {
		return nil, fmt.Errorf("receipt: cid: %w", ErrMalformed)
	}
	b = append(b, r.Mailbox[:]...)
	b = append(b, r.CID[:]...)
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, r.StoredAtMs)
	return binary.BigEndian.AppendUint64(b, r.Expiry), nil
}

// Marshal returns the canonical encoding of r.
func (r *Receipt) Marshal() ([]byte, error) {
	return r.AppendMarshal(make([]byte, 0, 2+len(r.Origin)+MailboxLen+CIDLen+24))
}

// maxReceiptLen is the size of the longest receipt encoding.
const maxReceiptLen = 2 + MaxPeerIDLen + MailboxLen + CIDLen + 24

// leaf returns the receipt's Merkle leaf hash, SHA-256(0x00 ‖ receipt)
// (RFC 9162 §2.1.1), without allocating.
func (r *Receipt) leaf() ([32]byte, error) {
	var buf [1 + maxReceiptLen]byte // buf[0] is the leaf prefix 0x00
	enc, err := r.AppendMarshal(buf[:1])
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(enc), nil
}

// parseReceipt parses a receipt at the start of b and returns the rest.
func parseReceipt(b []byte) (Receipt, []byte, error) {
	var r Receipt
	if len(b) < 1 {
		return r, nil, fmt.Errorf("receipt: empty: %w", ErrMalformed)
	}
	if b[0] != ReceiptVersion {
		return r, nil, fmt.Errorf("receipt: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	origin, rest, err := readPeerID(b[1:])
	if err != nil {
		return r, nil, fmt.Errorf("receipt origin: %w", err)
	}
	if len(rest) < MailboxLen+CIDLen+24 {
		return r, nil, fmt.Errorf("receipt: short: %w", ErrMalformed)
	}
	if r.Mailbox, err = ParseMailbox(rest[:MailboxLen]); err != nil {
		return r, nil, fmt.Errorf("receipt: %w", err)
	}
	rest = rest[MailboxLen:]
	if r.CID, err = ParseCID(rest[:CIDLen]); err != nil {
		return r, nil, fmt.Errorf("receipt: %w", err)
	}
	rest = rest[CIDLen:]
	r.Origin = origin
	r.Seq = binary.BigEndian.Uint64(rest[0:8])
	r.StoredAtMs = binary.BigEndian.Uint64(rest[8:16])
	r.Expiry = binary.BigEndian.Uint64(rest[16:24])
	if r.Seq == 0 {
		return r, nil, fmt.Errorf("receipt: seq 0: %w", ErrMalformed)
	}
	return r, rest[24:], nil
}

// ParseReceipt parses an unsigned receipt.
func ParseReceipt(b []byte) (*Receipt, error) {
	r, rest, err := parseReceipt(b)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("receipt: %d trailing bytes: %w", len(rest), ErrMalformed)
	}
	return &r, nil
}

// SignedReceipt is a receipt with the proof that its origin signed it: a
// Merkle inclusion path to a signed batch root (SPEC.md §6.2).
type SignedReceipt struct {
	Receipt
	// BatchSize is the number of receipts the signature covers (1…1024).
	BatchSize uint16
	// Index is this receipt's leaf index in the batch.
	Index uint16
	// Path is the RFC 9162 inclusion path.
	Path      [][32]byte
	Signature [64]byte
}

// Marshal returns the canonical encoding.
func (s *SignedReceipt) Marshal() ([]byte, error) {
	b := make([]byte, 0, 2+len(s.Origin)+MailboxLen+CIDLen+24+5+32*len(s.Path)+64)
	b, err := s.Receipt.AppendMarshal(b)
	if err != nil {
		return nil, err
	}
	if s.BatchSize == 0 || s.BatchSize > MaxReceiptBatch || s.Index >= s.BatchSize ||
		len(s.Path) != merklePathLen(int(s.Index), int(s.BatchSize)) {
		return nil, fmt.Errorf("signed receipt: batch %d index %d path %d: %w", s.BatchSize, s.Index, len(s.Path), ErrMalformed)
	}
	b = binary.BigEndian.AppendUint16(b, s.BatchSize)
	b = binary.BigEndian.AppendUint16(b, s.Index)
	b = append(b, byte(len(s.Path)))
	for _, p := range s.Path {
		b = append(b, p[:]...)
	}
	return append(b, s.Signature[:]...), nil
}

// ParseSignedReceipt parses a signed receipt. It checks the encoding only;
// call Verify to check the signature.
func ParseSignedReceipt(b []byte) (*SignedReceipt, error) {
	r, rest, err := parseReceipt(b)
	if err != nil {
		return nil, fmt.Errorf("signed %w", err)
	}
	s := &SignedReceipt{Receipt: r}
	if len(rest) < 5 {
		return nil, fmt.Errorf("signed receipt: short: %w", ErrMalformed)
	}
	s.BatchSize = binary.BigEndian.Uint16(rest[0:2])
	s.Index = binary.BigEndian.Uint16(rest[2:4])
	pathLen := int(rest[4])
	rest = rest[5:]
	if s.BatchSize == 0 || s.BatchSize > MaxReceiptBatch || s.Index >= s.BatchSize ||
		pathLen != merklePathLen(int(s.Index), int(s.BatchSize)) {
		return nil, fmt.Errorf("signed receipt: batch %d index %d path %d: %w", s.BatchSize, s.Index, pathLen, ErrMalformed)
	}
	if len(rest) != 32*pathLen+64 {
		return nil, fmt.Errorf("signed receipt: %d bytes after path header: %w", len(rest), ErrMalformed)
	}
	if pathLen > 0 {
		s.Path = make([][32]byte, pathLen)
		for i := range s.Path {
			s.Path[i] = [32]byte(rest[32*i:])
		}
	}
	s.Signature = [64]byte(rest[32*pathLen:])
	return s, nil
}

// ReceiptSigningInput returns what a relay signs for a batch of n receipts
// with Merkle root root: label ‖ 0x00 ‖ u16(n) ‖ root (SPEC.md §6.2).
func ReceiptSigningInput(n int, root [32]byte) []byte {
	b := labelled(LabelReceipt)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	return append(b, root[:]...)
}

// ReceiptLeaf returns the Merkle leaf hash of a receipt: SHA-256(0x00 ‖
// receipt).
func ReceiptLeaf(r *Receipt) ([32]byte, error) { return r.leaf() }

// Signer signs with a relay's key. A libp2p crypto.PrivKey of type Ed25519
// satisfies it.
type Signer interface {
	Sign(data []byte) ([]byte, error)
}

// SignReceipts signs a batch of 1…MaxReceiptBatch receipts with one
// signature and returns one independently verifiable SignedReceipt per input,
// in order. Every receipt must name the signer as its origin.
func SignReceipts(signer Signer, receipts []Receipt) ([]SignedReceipt, error) {
	n := len(receipts)
	if n == 0 || n > MaxReceiptBatch {
		return nil, fmt.Errorf("sign receipts: batch of %d: %w", n, ErrMalformed)
	}
	leaves := make([][32]byte, n)
	for i := range receipts {
		var err error
		if leaves[i], err = receipts[i].leaf(); err != nil {
			return nil, fmt.Errorf("sign receipts: %w", err)
		}
	}
	tree, err := NewReceiptTree(leaves)
	if err != nil {
		return nil, fmt.Errorf("sign receipts: %w", err)
	}
	sig, err := signer.Sign(ReceiptSigningInput(n, tree.Root()))
	if err != nil {
		return nil, fmt.Errorf("sign receipts: %w", err)
	}
	if len(sig) != 64 {
		return nil, fmt.Errorf("sign receipts: signature of %d bytes: not Ed25519", len(sig))
	}
	out := make([]SignedReceipt, n)
	for i := range receipts {
		out[i] = SignedReceipt{
			Receipt:   receipts[i],
			BatchSize: uint16(n),
			Index:     uint16(i),
			Path:      tree.Path(i),
			Signature: [64]byte(sig),
		}
	}
	return out, nil
}

// ed25519PeerIDPrefix starts the peer ID of every Ed25519 libp2p key: the
// identity multihash (00, length 36) of the protobuf PublicKey
// {Type: Ed25519 (08 01), Data: 32 bytes (12 20)} (SPEC.md §1).
const ed25519PeerIDPrefix = "\x00\x24\x08\x01\x12\x20"

// OriginKey returns the Ed25519 public key embedded in an origin's peer ID.
// Relays must use Ed25519 keys, whose peer ID is exactly the 38 bytes
// 00 24 08 01 12 20 ‖ key (SPEC.md §1); any other peer ID, including another
// protobuf encoding of the same key, is refused with ErrBadSignature.
func OriginKey(origin peer.ID) (ed25519.PublicKey, error) {
	if len(origin) != len(ed25519PeerIDPrefix)+ed25519.PublicKeySize || origin[:len(ed25519PeerIDPrefix)] != ed25519PeerIDPrefix {
		return nil, fmt.Errorf("origin %s: not an Ed25519 peer ID: %w", origin, ErrBadSignature)
	}
	return ed25519.PublicKey(origin[len(ed25519PeerIDPrefix):]), nil
}

// root recomputes the batch root this receipt claims.
func (s *SignedReceipt) root() ([32]byte, error) {
	if s.BatchSize == 0 || s.BatchSize > MaxReceiptBatch {
		return [32]byte{}, fmt.Errorf("signed receipt: batch size %d: %w", s.BatchSize, ErrMalformed)
	}
	leaf, err := s.Receipt.leaf()
	if err != nil {
		return [32]byte{}, err
	}
	root, ok := merkleRootFromPath(int(s.Index), int(s.BatchSize), leaf, s.Path)
	if !ok {
		return root, fmt.Errorf("signed receipt: inclusion path: %w", ErrBadSignature)
	}
	return root, nil
}

// Verify checks the receipt's signature against its origin's key. It returns
// an error wrapping ErrBadSignature if it does not verify.
func (s *SignedReceipt) Verify() error {
	root, err := s.root()
	if err != nil {
		return err
	}
	key, err := OriginKey(s.Origin)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, ReceiptSigningInput(int(s.BatchSize), root), s.Signature[:]) {
		return fmt.Errorf("signed receipt from %s: %w", s.Origin, ErrBadSignature)
	}
	return nil
}

// VerifyFor checks the receipt's signature and that it is the stamp of this
// envelope: same CID and same mailbox (SPEC.md §6.2).
func (s *SignedReceipt) VerifyFor(envelope []byte) error {
	if CIDOf(envelope) != s.CID {
		return fmt.Errorf("stamp: cid does not match the envelope: %w", ErrBadSignature)
	}
	mb, err := EnvelopeMailbox(envelope)
	if err != nil {
		return fmt.Errorf("stamp: %w", err)
	}
	if mb != s.Mailbox {
		return fmt.Errorf("stamp: mailbox does not match the envelope: %w", ErrBadSignature)
	}
	return s.Verify()
}

// ReceiptVerifier verifies signed receipts and remembers the batch roots it
// has verified, so a batch of N receipts costs one signature check. It is
// safe for concurrent use; its memory is bounded by the size given to
// NewReceiptVerifier.
type ReceiptVerifier struct{ roots *rootCache }

// NewReceiptVerifier returns a verifier that remembers up to max roots
// (when full it forgets them all and starts again).
func NewReceiptVerifier(max int) *ReceiptVerifier {
	return &ReceiptVerifier{roots: newRootCache(max)}
}

// Verify is SignedReceipt.Verify with a cache of verified roots.
func (v *ReceiptVerifier) Verify(s *SignedReceipt) error {
	root, err := s.root()
	if err != nil {
		return err
	}
	k := verifiedRoot{signer: string(s.Origin), n: s.BatchSize, root: root, sig: s.Signature}
	if v.roots.has(k) {
		return nil
	}
	key, err := OriginKey(s.Origin)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, ReceiptSigningInput(int(s.BatchSize), root), s.Signature[:]) {
		return fmt.Errorf("signed receipt from %s: %w", s.Origin, ErrBadSignature)
	}
	v.roots.add(k)
	return nil
}

// rootCache remembers signed batch roots that verified, up to max (when
// full it forgets them all and starts again). Safe for concurrent use.
type rootCache struct {
	mu   sync.Mutex
	max  int
	seen map[verifiedRoot]struct{}
}

// verifiedRoot is one verified signature: signer (an origin's peer ID or a
// mailbox key), batch size, root and signature.
type verifiedRoot struct {
	signer string
	n      uint16
	root   [32]byte
	sig    [64]byte
}

func newRootCache(limit int) *rootCache {
	return &rootCache{max: max(limit, 1), seen: make(map[verifiedRoot]struct{})}
}

func (c *rootCache) has(k verifiedRoot) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.seen[k]
	return ok
}

func (c *rootCache) add(k verifiedRoot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) >= c.max {
		clear(c.seen)
	}
	c.seen[k] = struct{}{}
}

// VerifyFor is SignedReceipt.VerifyFor with a cache of verified roots.
func (v *ReceiptVerifier) VerifyFor(s *SignedReceipt, envelope []byte) error {
	if CIDOf(envelope) != s.CID {
		return fmt.Errorf("stamp: cid does not match the envelope: %w", ErrBadSignature)
	}
	mb, err := EnvelopeMailbox(envelope)
	if err != nil {
		return fmt.Errorf("stamp: %w", err)
	}
	if mb != s.Mailbox {
		return fmt.Errorf("stamp: mailbox does not match the envelope: %w", ErrBadSignature)
	}
	return v.Verify(s)
}
