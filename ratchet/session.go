package ratchet

import (
	"crypto/ecdh"
	"crypto/subtle"
	"fmt"
	"io"
	"math"
	"sort"
)

// core is the fixed-size part of a session's ratchet state, named as in the
// Double Ratchet specification, header-encryption variant (§4).
type core struct {
	dhsPriv, dhsPub [keySize]byte // DHs
	dhr             [keySize]byte // DHr
	rk              [keySize]byte // RK
	cks, ckr        [keySize]byte // CKs, CKr
	hks, nhks       [keySize]byte // HKs, NHKs
	hkr, nhkr       [keySize]byte // HKr, NHKr
	ns, nr, pn      uint32        // Ns, Nr, PN
	flags           byte          // which optional values are set
}

// Flags of core: a value whose flag is clear is absent ("None" in the
// specification) and is all zeros.
const (
	fDHr byte = 1 << iota
	fCKs
	fCKr
	fHKs
	fHKr
	fAll = fDHr | fCKs | fCKr | fHKs | fHKr
)

// skippedKey is the message key of a message not yet received.
type skippedKey struct {
	n  uint32
	mk [keySize]byte
}

// rchain is a receiving chain that the session still recognises: its header
// key and the keys of its skipped messages, in increasing n.
type rchain struct {
	hk   [keySize]byte
	keys []skippedKey
}

// Session is one Double Ratchet session with header encryption, between
// this party and one peer device. A Session is not safe for concurrent use,
// and one session must have one writer: persist it (MarshalBinary) after
// every successful Encrypt or Decrypt, and never restore an older copy
// (a rollback): if state is lost, make a new handshake instead.
type Session struct {
	// Config bounds decryption. It is not serialised: set it again after
	// UnmarshalBinary. The zero value means the defaults.
	Config Config

	core core
	// chains are the receiving chains kept, oldest first. When the session
	// has a current receiving chain (fHKr), it is the last one.
	chains []rchain
	nkeys  int // total skipped keys in chains

	ad        [adSize]byte
	id        [keySize]byte // handshake ID
	initiator bool
	replaces  [32]byte // the handshake ID this session replaces (Converge)
	local     IdentityKey
	peer      IdentityKey
	// pending is the handshake prefix (ephemeral key ‖ sealed handshake)
	// that an initiator puts before every message until it has decrypted
	// one from the responder; nil otherwise.
	pending []byte

	dhs    *ecdh.PrivateKey // cache of core.dhsPriv, built on first use
	adBuf  [bodyADSize]byte // scratch for associated data
	hdrBuf [headerSize]byte // scratch for a decrypted header
}

// IsInitiator reports whether this party started the session.
func (s *Session) IsInitiator() bool { return s.initiator }

// SendingHandshake reports whether this is an initiator's session that has
// not yet decrypted any message from the responder, so that every message
// it encrypts is a handshake message.
func (s *Session) SendingHandshake() bool { return s.pending != nil }

// PeerIdentity returns the peer's identity key.
func (s *Session) PeerIdentity() IdentityKey { return s.peer }

// LocalIdentity returns this party's identity key.
func (s *Session) LocalIdentity() IdentityKey { return s.local }

// InitiatorIdentity returns the identity key of the party that started the
// session (see Converge).
func (s *Session) InitiatorIdentity() IdentityKey {
	if s.initiator {
		return s.local
	}
	return s.peer
}

// Replaces returns the handshake ID of the session this one was made to
// replace (Replacing), 32 bytes of 0xFF (AfterStateLoss), or all zeros.
func (s *Session) Replaces() [32]byte { return s.replaces }

// HandshakeID returns the ID of the handshake that made the session, as
// HandshakeID(msg) returns it for each of the handshake messages.
func (s *Session) HandshakeID() [32]byte { return s.id }

// AssociatedData returns the session's associated data (a hash binding both
// identity keys, the prekeys used and the ephemeral key).
func (s *Session) AssociatedData() [32]byte { return s.ad }

// fillAD writes u16(len AD) ‖ AD ‖ nonce ‖ sealed header into the scratch
// buffer and returns it; its first headerADSize bytes are the header AD.
func (s *Session) fillAD(nonce, encHeader []byte) []byte {
	b := s.adBuf[:]
	b[0], b[1] = 0, adSize
	copy(b[2:], s.ad[:])
	copy(b[headerADSize:], nonce)
	copy(b[headerADSize+nonceSize:], encHeader)
	return b
}

func (s *Session) dhsKey() (*ecdh.PrivateKey, error) {
	if s.dhs == nil {
		k, err := ecdh.X25519().NewPrivateKey(s.core.dhsPriv[:])
		if err != nil {
			return nil, err
		}
		s.dhs = k
	}
	return s.dhs, nil
}

// Encrypt seals plaintext as the next message of the sending chain. It reads
// 24 bytes (the nonce) from rand. While SendingHandshake, the result is a
// handshake message, otherwise a ratchet message. On error the session is
// unchanged.
func (s *Session) Encrypt(rand io.Reader, plaintext []byte) ([]byte, error) {
	if s.core.flags&(fCKs|fHKs) != fCKs|fHKs {
		return nil, fmt.Errorf("encrypt: no sending chain: %w", ErrMalformed)
	}
	if s.core.ns == math.MaxUint32 {
		return nil, fmt.Errorf("encrypt: %w", ErrCounterExhausted)
	}
	pre := 1 + len(s.pending)
	out := make([]byte, pre+nonceSize, pre+ratchetPartMin+len(plaintext))
	if s.pending != nil {
		out[0] = TypeHandshake
		copy(out[1:], s.pending)
	} else {
		out[0] = TypeRatchet
	}
	nonce := out[pre : pre+nonceSize]
	if err := readRand(rand, nonce); err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	var hdr [headerSize]byte
	copy(hdr[:keySize], s.core.dhsPub[:])
	putU32(hdr[keySize:], s.core.pn)
	putU32(hdr[keySize+4:], s.core.ns)
	ad := s.adBuf[:headerADSize]
	ad[0], ad[1] = 0, adSize
	copy(ad[2:], s.ad[:])
	out = seal(&s.core.hks, out, nonce, hdr[:], ad)
	ad = s.fillAD(nonce, out[pre+nonceSize:])
	mk, next := chainStep(&s.core.cks)
	out = seal(&mk, out, nonce, plaintext, ad)
	clear(mk[:])
	s.core.cks = next
	s.core.ns++
	return out, nil
}

// header is a decrypted message header.
type header struct {
	dh    [keySize]byte
	pn, n uint32
}

// openHeader opens a sealed header with hk. buf is scratch space for the
// plaintext (at least headerSize bytes, so that nothing is allocated).
func openHeader(hk *[keySize]byte, buf, nonce, encHeader, ad []byte) (header, bool) {
	var h header
	buf, ok := open(hk, buf[:0], nonce, encHeader, ad)
	if !ok || len(buf) != headerSize {
		return h, false
	}
	copy(h.dh[:], buf[:keySize])
	h.pn = getU32(buf[keySize:])
	h.n = getU32(buf[keySize+4:])
	return h, true
}

// Decrypt opens a message of this session: a ratchet message, or (on a
// responder's session) a further handshake message of the same handshake.
// It reads 32 bytes from rand when the message starts a new DH ratchet step.
//
// Decrypt is atomic: on any error the session is unchanged, byte for byte.
// It returns ErrNotForSession if the header opens with none of the
// session's header keys (try the next session); ErrAuth if the header opened
// but the body did not; ErrDuplicate for a message already decrypted (or
// whose key was evicted); ErrTooManySkipped; ErrMalformed or
// ErrUnsupportedVersion for input that is not a message.
func (s *Session) Decrypt(rand io.Reader, msg []byte) ([]byte, error) {
	part, err := s.ratchetPart(msg)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	pt, err := s.decrypt(rand, part)
	if err == ErrNotForSession {
		// The hot path of trial decryption across sessions: no wrapping.
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return pt, nil
}

func (s *Session) ratchetPart(msg []byte) ([]byte, error) {
	if len(msg) == 0 {
		return nil, ErrMalformed
	}
	var part []byte
	switch msg[0] {
	case TypeRatchet:
		part = msg[1:]
	case TypeHandshake:
		if len(msg) < handshakePrefixSize+ratchetPartMin {
			return nil, ErrMalformed
		}
		if s.initiator {
			return nil, ErrNotForSession
		}
		id := handshakeID(msg[1:handshakePrefixSize])
		if subtle.ConstantTimeCompare(id[:], s.id[:]) != 1 {
			return nil, ErrNotForSession
		}
		part = msg[handshakePrefixSize:]
	default:
		return nil, ErrUnsupportedVersion
	}
	if len(part) < ratchetPartMin {
		return nil, ErrMalformed
	}
	return part, nil
}

// plan is a staged change to a session, applied by commit only after the
// message authenticated.
type plan struct {
	core     core
	dhs      *ecdh.PrivateKey // new DHs key after a DH ratchet step
	step     bool             // a DH ratchet step: start a new receiving chain
	delChain int              // chain and key index of a used skipped key, or -1
	delKey   int
	addCur   []skippedKey // skipped keys of the current receiving chain
	addNew   []skippedKey // skipped keys of the new receiving chain
}

func wipeKeys(ks []skippedKey) {
	for i := range ks {
		clear(ks[i].mk[:])
	}
}

func (s *Session) decrypt(rand io.Reader, part []byte) ([]byte, error) {
	nonce := part[:nonceSize]
	eh := part[nonceSize : nonceSize+encHeaderSize]
	body := part[nonceSize+encHeaderSize:]
	ad := s.fillAD(nonce, eh)
	had := ad[:headerADSize]

	if s.core.flags&fHKr != 0 {
		if h, ok := openHeader(&s.core.hkr, s.hdrBuf[:], nonce, eh, had); ok {
			return s.decryptCurrent(h, nonce, body, ad)
		}
	}
	if h, ok := openHeader(&s.core.nhkr, s.hdrBuf[:], nonce, eh, had); ok {
		return s.decryptStep(rand, h, nonce, body, ad)
	}
	last := len(s.chains) - 1
	if s.core.flags&fHKr != 0 {
		last-- // the current chain was tried first
	}
	for i := last; i >= 0; i-- {
		if h, ok := openHeader(&s.chains[i].hk, s.hdrBuf[:], nonce, eh, had); ok {
			return s.decryptSkipped(i, h, nonce, body, ad)
		}
	}
	return nil, ErrNotForSession
}

// decryptCurrent handles a message of the current receiving chain.
func (s *Session) decryptCurrent(h header, nonce, body, ad []byte) ([]byte, error) {
	if s.core.flags&fCKr == 0 || len(s.chains) == 0 {
		return nil, ErrMalformed // unreachable: HKr implies CKr and a chain
	}
	if h.n == math.MaxUint32 {
		return nil, ErrMalformed
	}
	if subtle.ConstantTimeCompare(h.dh[:], s.core.dhr[:]) != 1 {
		return nil, ErrAuth
	}
	if h.n < s.core.nr {
		return s.decryptSkipped(len(s.chains)-1, h, nonce, body, ad)
	}
	if uint64(h.n)-uint64(s.core.nr) > uint64(s.Config.maxSkip()) {
		return nil, ErrTooManySkipped
	}
	p := plan{core: s.core, delChain: -1}
	ck := p.core.ckr
	p.addCur = skipKeys(&ck, s.core.nr, h.n)
	mk, next := chainStep(&ck)
	clear(ck[:])
	pt, ok := open(&mk, nil, nonce, body, ad)
	clear(mk[:])
	if !ok {
		clear(next[:])
		wipeKeys(p.addCur)
		return nil, ErrAuth
	}
	p.core.ckr = next
	p.core.nr = h.n + 1
	s.commit(&p)
	return pt, nil
}

// decryptStep handles the first message of the peer's new sending chain
// (its header opened with NHKr): a DH ratchet step.
func (s *Session) decryptStep(rand io.Reader, h header, nonce, body, ad []byte) ([]byte, error) {
	if h.n == math.MaxUint32 {
		return nil, ErrMalformed
	}
	maxSkip := uint64(s.Config.maxSkip())
	hasCKr := s.core.flags&fCKr != 0
	// Cheap bounds first: no DH work for a message that will be refused.
	if uint64(h.n) > maxSkip {
		return nil, ErrTooManySkipped
	}
	dhs, err := s.dhsKey()
	if err != nil {
		return nil, ErrMalformed
	}
	p := plan{core: s.core, delChain: -1, step: true}
	c := &p.core
	if hasCKr && h.pn > c.nr {
		// Keep the keys of the old chain's missing messages, at most
		// MaxSkip of them: the step itself is never refused for a long
		// old chain, or one lost burst would wedge the session.
		until := h.pn
		if uint64(until)-uint64(c.nr) > maxSkip {
			until = c.nr + uint32(maxSkip)
		}
		ck := c.ckr
		p.addCur = skipKeys(&ck, c.nr, until)
		clear(ck[:])
	}
	fail := func(err error) ([]byte, error) {
		wipeKeys(p.addCur)
		wipeKeys(p.addNew)
		p.core = core{}
		return nil, err
	}
	c.pn, c.ns, c.nr = c.ns, 0, 0
	c.hks, c.hkr, c.dhr = c.nhks, c.nhkr, h.dh
	var dh [keySize]byte
	defer clear(dh[:])
	if err := x25519(&dh, dhs, h.dh[:]); err != nil {
		return fail(ErrAuth)
	}
	c.rk, c.ckr, c.nhkr = rootStep(&c.rk, &dh)
	p.dhs, err = newX25519(rand)
	if err != nil {
		return fail(err)
	}
	if err := x25519(&dh, p.dhs, h.dh[:]); err != nil {
		return fail(ErrAuth)
	}
	c.rk, c.cks, c.nhks = rootStep(&c.rk, &dh)
	copy(c.dhsPriv[:], p.dhs.Bytes())
	copy(c.dhsPub[:], p.dhs.PublicKey().Bytes())
	c.flags |= fDHr | fCKs | fCKr | fHKs | fHKr

	ck := c.ckr
	p.addNew = skipKeys(&ck, 0, h.n)
	mk, next := chainStep(&ck)
	clear(ck[:])
	pt, ok := open(&mk, nil, nonce, body, ad)
	clear(mk[:])
	if !ok {
		return fail(ErrAuth)
	}
	c.ckr = next
	c.nr = h.n + 1
	s.commit(&p)
	return pt, nil
}

// decryptSkipped handles a message whose key was stored when it was
// skipped, in chain ci.
func (s *Session) decryptSkipped(ci int, h header, nonce, body, ad []byte) ([]byte, error) {
	keys := s.chains[ci].keys
	ki := sort.Search(len(keys), func(i int) bool { return keys[i].n >= h.n })
	if ki == len(keys) || keys[ki].n != h.n {
		return nil, ErrDuplicate
	}
	pt, ok := open(&keys[ki].mk, nil, nonce, body, ad)
	if !ok {
		return nil, ErrAuth
	}
	p := plan{core: s.core, delChain: ci, delKey: ki}
	s.commit(&p)
	return pt, nil
}

// dropOldChains bounds the receiving chains after a DH step: besides the
// current one, the newest MaxOldChains are kept, and of the older ones
// those that still hold skipped keys (messages the peer sent that have not
// arrived: a message delayed across many steps, at a relay cut from the
// others) up to MaxSkippedChains more, newest first. Older chains are dropped
// with their keys.
func (s *Session) dropOldChains() {
	maxOld := s.Config.maxOldChains()
	older := len(s.chains) - 1 - maxOld // chains beyond the newest maxOld old ones
	if older <= 0 {
		return
	}
	// Keep the newest key-holding chains among the older ones.
	keep := make([]bool, older)
	for i, held := older-1, 0; i >= 0 && held < s.Config.maxSkippedChains(); i-- {
		if len(s.chains[i].keys) > 0 {
			keep[i] = true
			held++
		}
	}
	n := len(s.chains)
	kept := s.chains[:0]
	for i := range s.chains {
		if i < older && !keep[i] {
			s.nkeys -= len(s.chains[i].keys)
			wipeKeys(s.chains[i].keys)
			clear(s.chains[i].hk[:])
			continue
		}
		kept = append(kept, s.chains[i])
	}
	s.chains = kept
	clear(s.chains[len(s.chains):n]) // stale copies of live chains
}

// skipKeys derives the message keys of messages from..to-1 of the chain
// whose key is ck, advancing ck to message to.
func skipKeys(ck *[keySize]byte, from, to uint32) []skippedKey {
	if to <= from {
		return nil
	}
	keys := make([]skippedKey, 0, to-from)
	for n := from; n < to; n++ {
		mk, next := chainStep(ck)
		keys = append(keys, skippedKey{n: n, mk: mk})
		*ck = next
	}
	return keys
}

// commit applies a plan that authenticated.
func (s *Session) commit(p *plan) {
	if p.delChain >= 0 {
		c := &s.chains[p.delChain]
		n := len(c.keys)
		c.keys = append(c.keys[:p.delKey], c.keys[p.delKey+1:]...)
		// The used key was overwritten by the shift; wipe the vacated slot,
		// which holds a stale copy, so no key lingers in memory.
		clear(c.keys[:n][n-1].mk[:])
		s.nkeys--
	}
	if len(p.addCur) > 0 {
		c := &s.chains[len(s.chains)-1]
		c.keys = append(c.keys, p.addCur...)
		s.nkeys += len(p.addCur)
	}
	if p.step {
		s.chains = append(s.chains, rchain{hk: p.core.hkr, keys: p.addNew})
		s.nkeys += len(p.addNew)
		s.dropOldChains()
		s.dhs = p.dhs
	}
	// Evict the oldest skipped keys beyond the cap.
	for i := 0; s.nkeys > s.Config.maxSkippedKeys() && i < len(s.chains); i++ {
		c := &s.chains[i]
		n := min(len(c.keys), s.nkeys-s.Config.maxSkippedKeys())
		old := len(c.keys)
		wipeKeys(c.keys[:n])
		c.keys = append(c.keys[:0], c.keys[n:]...)
		wipeKeys(c.keys[len(c.keys):old]) // stale copies after the shift
		s.nkeys -= n
	}
	s.core = p.core
	s.pending = nil
}
