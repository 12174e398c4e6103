package testnet

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

// LinkFault is what a link does to the bytes it carries. The zero value is
// a perfect link.
//
// Links are TCP proxies (see the package doc): a relay is reached through
// its link, and the relays' connection gaters tell the link, once a
// connection is authenticated, which member is on the other side, so a
// fault can be set for one pair of members or for every link of one member.
type LinkFault struct {
	// Delay holds every chunk of bytes, in each direction, for this long
	// before it is passed on (one-way latency; a request and its answer
	// pay it twice). Order is preserved.
	Delay time.Duration
	// Jitter adds to each chunk's delay a duration drawn uniformly from
	// [0, Jitter) with the cluster's seeded RNG. Order is still preserved
	// (a chunk never overtakes the one before it).
	Jitter time.Duration
	// DropRate is the probability, for each chunk forwarded, that the link
	// cuts the connection (both sides closed at once). TCP cannot lose
	// bytes without breaking the stream, so a lossy link shows up as
	// connections that die mid-flight, drawn with the seeded RNG.
	DropRate float64
}

func (f LinkFault) zero() bool { return f == LinkFault{} }

// combine is the fault of a path through two faulty ends: delays add, drop
// probabilities compound.
func combine(a, b LinkFault) LinkFault {
	return LinkFault{
		Delay:    a.Delay + b.Delay,
		Jitter:   a.Jitter + b.Jitter,
		DropRate: 1 - (1-a.DropRate)*(1-b.DropRate),
	}
}

// LinkStats counts what the links did, for tests that assert on counts
// rather than on wall-clock time. Cluster.LinkStats gives every field for
// all links; Cluster.PairStats gives Chunks, Delayed and Dropped between
// two members.
type LinkStats struct {
	// Conns is the number of connections the links accepted.
	Conns int64
	// Chunks is the number of chunks forwarded; Delayed of them were held
	// for a delay (or jitter) above zero.
	Chunks, Delayed int64
	// Dropped is the number of connections cut by DropRate.
	Dropped int64
	// Refused is the number of connections refused because the relay
	// behind the link was down.
	Refused int64
}

// linkNet holds every link of a cluster, the faults, the seeded RNG and
// the table of upstream sockets that lets a relay's gater recognise a
// connection that came through one of its links.
type linkNet struct {
	mu     sync.Mutex
	rng    *rand.Rand
	byPort map[int]*pconn
	pair   map[[2]memberKey]LinkFault
	node   map[memberKey]LinkFault
	per    map[[2]memberKey]*LinkStats // chunks, delayed and dropped per pair

	conns, chunks, delayed, dropped, refused atomic.Int64
}

func newLinkNet(seed uint64) *linkNet {
	return &linkNet{
		rng:    rand.New(rand.NewPCG(seed, 0x636169726e)),
		byPort: map[int]*pconn{},
		pair:   map[[2]memberKey]LinkFault{},
		node:   map[memberKey]LinkFault{},
		per:    map[[2]memberKey]*LinkStats{},
	}
}

// account counts one chunk between a and b.
func (ln *linkNet) account(a, b memberKey, delayed, dropped bool) {
	ln.chunks.Add(1)
	if delayed {
		ln.delayed.Add(1)
	}
	if dropped {
		ln.dropped.Add(1)
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	k := pairOf(a, b)
	s := ln.per[k]
	if s == nil {
		s = &LinkStats{}
		ln.per[k] = s
	}
	s.Chunks++
	if delayed {
		s.Delayed++
	}
	if dropped {
		s.Dropped++
	}
}

func (ln *linkNet) pairStats(a, b memberKey) LinkStats {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if s := ln.per[pairOf(a, b)]; s != nil {
		return *s
	}
	return LinkStats{}
}

func (ln *linkNet) stats() LinkStats {
	return LinkStats{
		Conns: ln.conns.Load(), Chunks: ln.chunks.Load(), Delayed: ln.delayed.Load(),
		Dropped: ln.dropped.Load(), Refused: ln.refused.Load(),
	}
}

// fault returns the fault of the path between a and b.
func (ln *linkNet) fault(a, b memberKey) LinkFault {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if f, ok := ln.pair[pairOf(a, b)]; ok {
		return f
	}
	fa, fb := ln.node[a], ln.node[b]
	if a.zero() {
		fa = LinkFault{}
	}
	return combine(fa, fb)
}

// draw returns a chunk's extra jitter and whether the connection is cut.
func (ln *linkNet) draw(f LinkFault) (time.Duration, bool) {
	if f.Jitter <= 0 && f.DropRate <= 0 {
		return 0, false
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	var j time.Duration
	if f.Jitter > 0 {
		j = time.Duration(ln.rng.Int64N(int64(f.Jitter)))
	}
	return j, f.DropRate > 0 && ln.rng.Float64() < f.DropRate
}

func (ln *linkNet) register(port int, pc *pconn) {
	ln.mu.Lock()
	ln.byPort[port] = pc
	ln.mu.Unlock()
}

func (ln *linkNet) unregister(port int, pc *pconn) {
	ln.mu.Lock()
	if ln.byPort[port] == pc {
		delete(ln.byPort, port)
	}
	ln.mu.Unlock()
}

// lookup returns the proxied connection whose upstream socket is the
// remote end of a relay's inbound connection.
func (ln *linkNet) lookup(remote ma.Multiaddr) *pconn {
	if remote == nil {
		return nil
	}
	s, err := remote.ValueForProtocol(ma.P_TCP)
	if err != nil {
		return nil
	}
	port, err := strconv.Atoi(s)
	if err != nil {
		return nil
	}
	ln.mu.Lock()
	defer ln.mu.Unlock()
	return ln.byPort[port]
}

// proxy is one link: a listener on 127.0.0.1 that forwards each connection
// to a relay's real listen address. A relay's shared link is the address
// the cluster gives out for it; each client also has its own link to each
// relay (its bootstrap addresses), which tells the relays who it is.
type proxy struct {
	net    *linkNet
	target memberKey // the relay behind the link
	via    memberKey // the client that owns the link, or zero
	ln     net.Listener
	addr   ma.Multiaddr // the link's address, without /p2p/

	mu       sync.Mutex
	upstream string // the relay's real host:port; "" while it is down
	conns    map[*pconn]struct{}
	closed   bool
	wg       sync.WaitGroup
}

func newProxy(ln *linkNet, target, via memberKey) (*proxy, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("link listen: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	p := &proxy{
		net:    ln,
		target: target,
		via:    via,
		ln:     l,
		addr:   ma.StringCast("/ip4/127.0.0.1/tcp/" + strconv.Itoa(port)),
		conns:  map[*pconn]struct{}{},
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// setUpstream points the link at the relay's real address ("" while the
// relay is down: new connections are refused).
func (p *proxy) setUpstream(hostport string) {
	p.mu.Lock()
	p.upstream = hostport
	p.mu.Unlock()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		up, closed := p.upstream, p.closed
		p.mu.Unlock()
		if closed || up == "" {
			p.net.refused.Add(1)
			_ = c.Close()
			continue
		}
		pc := &pconn{p: p, down: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go pc.run(up)
	}
}

// cutAll closes every connection through the link at once.
func (p *proxy) cutAll() {
	p.mu.Lock()
	cs := make([]*pconn, 0, len(p.conns))
	for pc := range p.conns {
		cs = append(cs, pc)
	}
	p.mu.Unlock()
	for _, pc := range cs {
		pc.cut()
	}
}

// cutIf closes the connections whose source matches.
func (p *proxy) cutIf(match func(src memberKey) bool) {
	p.mu.Lock()
	var cs []*pconn
	for pc := range p.conns {
		if match(pc.source()) {
			cs = append(cs, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range cs {
		pc.cut()
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.cutAll()
	p.wg.Wait()
}

// pconn is one proxied connection: down is the dialer's side, up the
// relay's.
type pconn struct {
	p    *proxy
	down net.Conn
	up   net.Conn
	port int // the upstream socket's local port

	src     atomic.Value // memberKey, once a gater said who dialed
	cutOnce sync.Once
	done    chan struct{}
}

// source returns who is on the dialing side: set by the relay's gater
// after the security handshake, or the link's owning client before.
func (pc *pconn) source() memberKey {
	if v := pc.src.Load(); v != nil {
		return v.(memberKey)
	}
	return pc.p.via
}

func (pc *pconn) setSource(m memberKey) {
	if !m.zero() {
		pc.src.Store(m)
	}
}

func (pc *pconn) cut() {
	pc.cutOnce.Do(func() {
		close(pc.done)
		_ = pc.down.Close()
		if pc.up != nil {
			_ = pc.up.Close()
		}
	})
}

func (pc *pconn) run(upstream string) {
	p := pc.p
	defer func() {
		pc.cut()
		if pc.port != 0 {
			p.net.unregister(pc.port, pc)
		}
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		p.wg.Done()
	}()
	up, err := dialUpstream(upstream, pc)
	if err != nil {
		p.net.refused.Add(1)
		return
	}
	p.mu.Lock()
	pc.up = up
	p.mu.Unlock()
	select {
	case <-pc.done: // cut while dialing
		_ = up.Close()
		return
	default:
	}
	p.net.conns.Add(1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pc.pipe(up, pc.down) }()
	go func() { defer wg.Done(); pc.pipe(pc.down, up) }()
	wg.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst through the link's fault: each chunk read is held
// until its due time by a writer goroutine (so reading goes on meanwhile,
// like bytes in flight on a long wire), or the connection is cut.
func (pc *pconn) pipe(dst, src net.Conn) {
	q := make(chan chunk, 64)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		var timer *time.Timer
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
				} else {
					timer.Reset(d)
				}
				select {
				case <-timer.C:
				case <-pc.done:
					drain(q)
					return
				}
			}
			_, err := dst.Write(c.b)
			if err != nil {
				pc.cut()
				drain(q)
				return
			}
		}
		// src ended cleanly: pass the half-close on.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			src := pc.source()
			f := pc.p.net.fault(src, pc.p.target)
			jit, drop := pc.p.net.draw(f)
			d := f.Delay + jit
			pc.p.net.account(src, pc.p.target, d > 0 && !drop, drop)
			if drop {
				pc.cut()
				break
			}
			c := chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(d)}
			select {
			case q <- c:
			case <-pc.done:
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				pc.cut() // a reset or a cut: both sides go at once
			}
			break // EOF: the writer passes the half-close on
		}
		select {
		case <-pc.done:
		default:
			continue
		}
		break
	}
	close(q)
	<-wdone
}

func drain(q chan chunk) {
	for range q {
	}
}

// upstreamAddr returns the relay's real host:port ("" while down).
func (p *proxy) upstreamAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upstream
}
