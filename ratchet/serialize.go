package ratchet

import "fmt"

// Session encoding (SPEC.md §15.12): every integer is
// big-endian, every optional key is present as 32 bytes, all zero when its
// flag is clear, so the encoding is canonical.
const (
	sflagInitiator byte = 1 << 0
	sflagPending   byte = 1 << 1
	sflagCoreShift      = 2 // core flags occupy bits 2..6
	sessionFixed        = 1 + 1 + adSize + 2*keySize + 64 + 64 + 10*keySize + 12
	pendingSize         = keySize + sealedSize
)

// MarshalBinary encodes the session. The encoding holds the session's
// secrets (including the message keys of skipped messages not yet received,
// but never a key that was used); store it as such.
func (s *Session) MarshalBinary() ([]byte, error) {
	n := sessionFixed + len(s.pending) + 4 + len(s.chains)*(keySize+4) + s.nkeys*(4+keySize)
	b := make([]byte, 0, n)
	b = append(b, versionSession)
	flags := s.core.flags << sflagCoreShift
	if s.initiator {
		flags |= sflagInitiator
	}
	if s.pending != nil {
		flags |= sflagPending
	}
	b = append(b, flags)
	b = append(b, s.ad[:]...)
	b = append(b, s.id[:]...)
	b = append(b, s.replaces[:]...)
	b = append(b, s.local.Ed25519[:]...)
	b = append(b, s.local.X25519[:]...)
	b = append(b, s.peer.Ed25519[:]...)
	b = append(b, s.peer.X25519[:]...)
	c := &s.core
	for _, k := range []*[keySize]byte{&c.dhsPriv, &c.dhsPub, &c.dhr, &c.rk, &c.cks, &c.ckr, &c.hks, &c.nhks, &c.hkr, &c.nhkr} {
		b = append(b, k[:]...)
	}
	b = appendU32(b, c.ns)
	b = appendU32(b, c.nr)
	b = appendU32(b, c.pn)
	b = append(b, s.pending...)
	b = appendU32(b, uint32(len(s.chains)))
	for i := range s.chains {
		ch := &s.chains[i]
		b = append(b, ch.hk[:]...)
		b = appendU32(b, uint32(len(ch.keys)))
		for j := range ch.keys {
			b = appendU32(b, ch.keys[j].n)
			b = append(b, ch.keys[j].mk[:]...)
		}
	}
	return b, nil
}

// UnmarshalBinary replaces the session with a decoded one. It keeps
// s.Config. On error s is unchanged.
func (s *Session) UnmarshalBinary(data []byte) error {
	t, err := unmarshalSession(data)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	t.Config = s.Config
	*s = *t
	return nil
}

// ParseSession decodes the output of Session.MarshalBinary into a new
// session with the given config.
func ParseSession(data []byte, cfg Config) (*Session, error) {
	s, err := unmarshalSession(data)
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	s.Config = cfg
	return s, nil
}

func isZero(k *[keySize]byte) bool {
	var acc byte
	for _, v := range k {
		acc |= v
	}
	return acc == 0
}

func unmarshalSession(data []byte) (*Session, error) {
	if len(data) == 0 {
		return nil, ErrMalformed
	}
	if data[0] != versionSession {
		return nil, ErrUnsupportedVersion
	}
	r := &reader{b: data[1:]}
	s := &Session{}
	flags := r.u8()
	copy(s.ad[:], r.take(adSize))
	copy(s.id[:], r.take(keySize))
	copy(s.replaces[:], r.take(keySize))
	copy(s.local.Ed25519[:], r.take(32))
	copy(s.local.X25519[:], r.take(32))
	copy(s.peer.Ed25519[:], r.take(32))
	copy(s.peer.X25519[:], r.take(32))
	c := &s.core
	for _, k := range []*[keySize]byte{&c.dhsPriv, &c.dhsPub, &c.dhr, &c.rk, &c.cks, &c.ckr, &c.hks, &c.nhks, &c.hkr, &c.nhkr} {
		copy(k[:], r.take(keySize))
	}
	c.ns, c.nr, c.pn = r.u32(), r.u32(), r.u32()
	if r.bad || flags>>(sflagCoreShift+5) != 0 {
		return nil, ErrMalformed
	}
	s.initiator = flags&sflagInitiator != 0
	c.flags = flags >> sflagCoreShift
	// Every stored session can send; CKr and HKr come and go together.
	if c.flags&(fCKs|fHKs|fDHr) != fCKs|fHKs|fDHr || (c.flags&fCKr == 0) != (c.flags&fHKr == 0) {
		return nil, ErrMalformed
	}
	if c.flags&fCKr == 0 && (!isZero(&c.ckr) || !isZero(&c.hkr) || c.nr != 0) {
		return nil, ErrMalformed
	}
	if flags&sflagPending != 0 {
		if !s.initiator {
			return nil, ErrMalformed
		}
		s.pending = append([]byte(nil), r.take(pendingSize)...)
	}
	nchains := r.count(keySize + 4)
	if nchains > 0 {
		s.chains = make([]rchain, nchains)
	}
	for i := range s.chains {
		ch := &s.chains[i]
		copy(ch.hk[:], r.take(keySize))
		nk := r.count(4 + keySize)
		if nk > 0 {
			ch.keys = make([]skippedKey, nk)
		}
		for j := range ch.keys {
			ch.keys[j].n = r.u32()
			copy(ch.keys[j].mk[:], r.take(keySize))
			if j > 0 && ch.keys[j].n <= ch.keys[j-1].n {
				return nil, ErrMalformed
			}
		}
		s.nkeys += nk
	}
	if r.bad || len(r.b) != 0 {
		return nil, ErrMalformed
	}
	if c.flags&fHKr != 0 {
		if len(s.chains) == 0 || s.chains[len(s.chains)-1].hk != c.hkr {
			return nil, ErrMalformed
		}
		if cur := s.chains[len(s.chains)-1].keys; len(cur) > 0 && cur[len(cur)-1].n >= c.nr {
			return nil, ErrMalformed
		}
	} else if len(s.chains) != 0 {
		return nil, ErrMalformed
	}
	return s, nil
}
