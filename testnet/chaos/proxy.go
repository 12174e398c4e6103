package chaos

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// proxy is a relay's link: a TCP proxy on 127.0.0.1 in front of the
// relay's own port. Every chunk of bytes may be held for a delay (order
// kept) or, with a probability, cut the connection: TCP cannot lose bytes
// without breaking the stream, so a lossy link is connections that die.
type proxy struct {
	ln       net.Listener
	upstream string

	mu    sync.Mutex
	delay time.Duration
	drop  float64
	rng   *rand.Rand
	conns map[net.Conn]struct{}
	done  bool
}

func newProxy(upstreamPort int, seed uint64) (*proxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{
		ln:       ln,
		upstream: net.JoinHostPort("127.0.0.1", strconv.Itoa(upstreamPort)),
		rng:      rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		conns:    map[net.Conn]struct{}{},
	}
	go p.accept()
	return p, nil
}

func (p *proxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// set sets the link's fault; zero values clear it.
func (p *proxy) set(delay time.Duration, drop float64) {
	p.mu.Lock()
	p.delay, p.drop = delay, drop
	p.mu.Unlock()
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
		c.Close()
	}
	p.mu.Unlock()
}

func (p *proxy) serve(down net.Conn) {
	up, err := net.DialTimeout("tcp4", p.upstream, 5*time.Second)
	if err != nil {
		down.Close()
		return
	}
	if !p.track(down, up) {
		down.Close()
		up.Close()
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(up, down) })
	wg.Go(func() { p.pipe(down, up) })
	wg.Wait()
	p.untrack(down, up)
}

// fault draws the fate of one chunk.
func (p *proxy) fault() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drop > 0 && p.rng.Float64() < p.drop {
		return 0, true
	}
	return p.delay, false
}

type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, chunk by chunk, each held until its due time
// (a delay is latency, not bandwidth: chunks queue, order kept).
func (p *proxy) pipe(dst, src net.Conn) {
	q := make(chan chunk, 256)
	go func() {
		defer dst.Close()
		for c := range q {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.b); err != nil {
				src.Close()
				for range q {
				}
				return
			}
		}
	}()
	defer close(q)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			delay, cut := p.fault()
			if cut {
				src.Close()
				dst.Close()
				return
			}
			q <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
		}
		if err != nil {
			return
		}
	}
}

// close stops accepting and cuts every connection.
func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}
