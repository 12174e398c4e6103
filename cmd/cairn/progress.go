package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress shows a count and a rate on one self-overwriting line of a
// terminal; on anything else it shows nothing.
type progress struct {
	w     io.Writer
	on    bool
	what  string
	total int
	start time.Time

	mu    sync.Mutex
	last  time.Time
	width int
}

func newProgress(w io.Writer, what string, total int) *progress {
	return &progress{w: w, on: isTerminal(w), what: what, total: total, start: time.Now()}
}

// set shows n done (at most every 100 ms, and always the last).
func (p *progress) set(n int) {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.last) < 100*time.Millisecond && (p.total <= 0 || n < p.total) {
		return
	}
	p.last = now
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(n) / el
	}
	line := fmt.Sprintf("  %s %d/%d (%.0f/s)", p.what, n, p.total, rate)
	if p.total <= 0 {
		line = fmt.Sprintf("  %s %d (%.0f/s)", p.what, n, rate)
	}
	pad := max(0, p.width-len(line))
	p.width = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

// done clears the line.
func (p *progress) done() {
	if p == nil || !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.width > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.width))
		p.width = 0
	}
}
