package wire

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
)

// Owner acks (SPEC.md §6.3): the mailbox owner's signed statement that
// entries of its mailbox are acked. The owner signs the Merkle root of the
// CIDs of one ack request with its mailbox key; each tombstone then carries
// an OwnerAck (the key, the inclusion path of its CID and the signature), so
// any replica can check, on its own, that the owner asked for the deletion.

// OwnerAckVersion is the version byte of an OwnerAck.
const OwnerAckVersion = 0x01

// OwnerAck proves that the owner of a mailbox acked one CID.
type OwnerAck struct {
	// MailboxKey is the mailbox's Ed25519 public key: MailboxOf(MailboxKey)
	// is the mailbox.
	MailboxKey ed25519.PublicKey
	// BatchSize is the number of CIDs the signature covers (1…MaxAckCIDs).
	BatchSize uint16
	// Index is this CID's leaf index in the batch.
	Index uint16
	// Path is the RFC 9162 inclusion path.
	Path      [][32]byte
	Signature [64]byte
}

// ownerAckLeaf is the Merkle leaf of an acked CID: SHA-256(0x00 ‖ cid).
func ownerAckLeaf(c CID) [32]byte { return merkleLeaf(c[:]) }

// OwnerAckSigningInput returns what the owner signs for an ack of n CIDs
// with Merkle root root: label ‖ 0x00 ‖ u16(n) ‖ root (SPEC.md §6.3).
func OwnerAckSigningInput(n int, root [32]byte) []byte {
	b := labelled(LabelAck)
	b = binary.BigEndian.AppendUint16(b, uint16(n))
	return append(b, root[:]...)
}

func ownerAckTree(cids []CID) (*ReceiptTree, error) {
	if len(cids) == 0 || len(cids) > MaxAckCIDs {
		return nil, fmt.Errorf("owner ack: %d cids: %w", len(cids), ErrMalformed)
	}
	leaves := make([][32]byte, len(cids))
	for i := range cids {
		leaves[i] = ownerAckLeaf(cids[i])
	}
	return NewReceiptTree(leaves)
}

// SignOwnerAck signs the ack of 1…MaxAckCIDs CIDs, in the order given,
// with the mailbox key; the signature goes in AckRequest.signature.
func SignOwnerAck(key ed25519.PrivateKey, cids []CID) ([64]byte, error) {
	var sig [64]byte
	if len(key) != ed25519.PrivateKeySize {
		return sig, fmt.Errorf("owner ack: mailbox key: %w", ErrMalformed)
	}
	t, err := ownerAckTree(cids)
	if err != nil {
		return sig, err
	}
	copy(sig[:], ed25519.Sign(key, OwnerAckSigningInput(len(cids), t.Root())))
	return sig, nil
}

// OwnerAcks checks the owner's signature over cids (as SignOwnerAck made
// it) and returns one OwnerAck per CID, in order. The error wraps
// ErrBadSignature if the signature does not verify.
func OwnerAcks(key ed25519.PublicKey, cids []CID, sig [64]byte) ([]OwnerAck, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("owner ack: mailbox key: %w", ErrMalformed)
	}
	t, err := ownerAckTree(cids)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(key, OwnerAckSigningInput(len(cids), t.Root()), sig[:]) {
		return nil, fmt.Errorf("owner ack: %w", ErrBadSignature)
	}
	out := make([]OwnerAck, len(cids))
	for i := range cids {
		out[i] = OwnerAck{MailboxKey: key, BatchSize: uint16(len(cids)), Index: uint16(i), Path: t.Path(i), Signature: sig}
	}
	return out, nil
}

// Marshal returns the canonical encoding (SPEC.md §6.3).
func (a *OwnerAck) Marshal() ([]byte, error) {
	if len(a.MailboxKey) != ed25519.PublicKeySize || a.BatchSize == 0 || a.BatchSize > MaxAckCIDs ||
		a.Index >= a.BatchSize || len(a.Path) != merklePathLen(int(a.Index), int(a.BatchSize)) {
		return nil, fmt.Errorf("owner ack: batch %d index %d path %d: %w", a.BatchSize, a.Index, len(a.Path), ErrMalformed)
	}
	b := make([]byte, 0, 38+32*len(a.Path)+64)
	b = append(b, OwnerAckVersion)
	b = append(b, a.MailboxKey...)
	b = binary.BigEndian.AppendUint16(b, a.BatchSize)
	b = binary.BigEndian.AppendUint16(b, a.Index)
	b = append(b, byte(len(a.Path)))
	for _, p := range a.Path {
		b = append(b, p[:]...)
	}
	return append(b, a.Signature[:]...), nil
}

// ParseOwnerAck parses an owner ack. It checks the encoding only; call
// VerifyFor (or OwnerAckVerifier.VerifyFor) to check the signature.
func ParseOwnerAck(b []byte) (*OwnerAck, error) {
	if len(b) < 38+64 {
		return nil, fmt.Errorf("owner ack: %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != OwnerAckVersion {
		return nil, fmt.Errorf("owner ack: version %d: %w", b[0], ErrUnsupportedVersion)
	}
	a := &OwnerAck{
		MailboxKey: ed25519.PublicKey(append([]byte(nil), b[1:33]...)),
		BatchSize:  binary.BigEndian.Uint16(b[33:]),
		Index:      binary.BigEndian.Uint16(b[35:]),
	}
	pathLen := int(b[37])
	if a.BatchSize == 0 || a.BatchSize > MaxAckCIDs || a.Index >= a.BatchSize ||
		pathLen != merklePathLen(int(a.Index), int(a.BatchSize)) {
		return nil, fmt.Errorf("owner ack: batch %d index %d path %d: %w", a.BatchSize, a.Index, pathLen, ErrMalformed)
	}
	rest := b[38:]
	if len(rest) != 32*pathLen+64 {
		return nil, fmt.Errorf("owner ack: %d bytes after the path header: %w", len(rest), ErrMalformed)
	}
	if pathLen > 0 {
		a.Path = make([][32]byte, pathLen)
		for i := range a.Path {
			a.Path[i] = [32]byte(rest[32*i:])
		}
	}
	a.Signature = [64]byte(rest[32*pathLen:])
	return a, nil
}

// root checks that the ack is for mailbox and recomputes the batch root
// from cid's leaf.
func (a *OwnerAck) root(mailbox Mailbox, c CID) ([32]byte, error) {
	if len(a.MailboxKey) != ed25519.PublicKeySize || MailboxOf(a.MailboxKey) != mailbox {
		return [32]byte{}, fmt.Errorf("owner ack: key of another mailbox: %w", ErrBadSignature)
	}
	root, ok := merkleRootFromPath(int(a.Index), int(a.BatchSize), ownerAckLeaf(c), a.Path)
	if !ok {
		return root, fmt.Errorf("owner ack: inclusion path: %w", ErrBadSignature)
	}
	return root, nil
}

// VerifyFor checks that the owner of mailbox acked c. It returns an error
// wrapping ErrBadSignature if the ack is not the owner's or is not for c.
func (a *OwnerAck) VerifyFor(mailbox Mailbox, c CID) error {
	root, err := a.root(mailbox, c)
	if err != nil {
		return err
	}
	if !ed25519.Verify(a.MailboxKey, OwnerAckSigningInput(int(a.BatchSize), root), a.Signature[:]) {
		return fmt.Errorf("owner ack: %w", ErrBadSignature)
	}
	return nil
}

// OwnerAckVerifier verifies owner acks and remembers the batch roots it has
// verified, so the tombstones of one ack cost one signature check. It is
// safe for concurrent use; its memory is bounded by the size given to
// NewOwnerAckVerifier.
type OwnerAckVerifier struct{ roots *rootCache }

// NewOwnerAckVerifier returns a verifier that remembers up to max roots.
func NewOwnerAckVerifier(max int) *OwnerAckVerifier {
	return &OwnerAckVerifier{roots: newRootCache(max)}
}

// VerifyFor is OwnerAck.VerifyFor with a cache of verified roots.
func (v *OwnerAckVerifier) VerifyFor(a *OwnerAck, mailbox Mailbox, c CID) error {
	root, err := a.root(mailbox, c)
	if err != nil {
		return err
	}
	k := verifiedRoot{signer: string(a.MailboxKey), n: a.BatchSize, root: root, sig: a.Signature}
	if v.roots.has(k) {
		return nil
	}
	if !ed25519.Verify(a.MailboxKey, OwnerAckSigningInput(int(a.BatchSize), root), a.Signature[:]) {
		return fmt.Errorf("owner ack: %w", ErrBadSignature)
	}
	v.roots.add(k)
	return nil
}

// VerifyOwnerAck parses proof and checks that the owner of mailbox acked c
// with it (SPEC.md §6.3), with v's cache if v is not nil.
func VerifyOwnerAck(v *OwnerAckVerifier, proof []byte, mailbox Mailbox, c CID) error {
	a, err := ParseOwnerAck(proof)
	if err != nil {
		return err
	}
	if v == nil {
		return a.VerifyFor(mailbox, c)
	}
	return v.VerifyFor(a, mailbox, c)
}
