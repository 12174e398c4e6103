package adversary

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Memory is a measurement of this process's memory.
type Memory struct {
	// HeapInuse is runtime.MemStats.HeapInuse after a garbage collection.
	HeapInuse uint64
	// RSS is VmRSS from /proc/self/status (0 where unavailable).
	RSS uint64
	// Attributed is the live heap allocated by code of the packages
	// Measure was given (from the heap profile: sampled, up to one GC
	// old), whoever else runs in the process (attackers, badger).
	Attributed uint64
}

// Attribution selects heap profile records by their stacks: a record
// counts when a frame's function name starts with one of Include and none
// starts with one of Exclude.
type Attribution struct {
	Include, Exclude []string
}

// RelayHeap attributes to the relay what package relay allocated, except
// what badger allocated under it (its memtables and caches, sized by
// badger's options, not by the relay's config).
var RelayHeap = Attribution{
	Include: []string{"github.com/cairn-net/cairn/relay."},
	Exclude: []string{"github.com/dgraph-io/"},
}

// Measure collects garbage twice (so the heap profile is current) and
// measures; a is the attribution of Memory.Attributed (the zero value
// attributes nothing). The profile samples one allocation per
// runtime.MemProfileRate bytes; set the rate low (TestMain) for a precise
// figure.
func Measure(a Attribution) Memory {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := Memory{HeapInuse: ms.HeapInuse, RSS: rss()}
	if len(a.Include) == 0 {
		return m
	}
	var recs []runtime.MemProfileRecord
	n, _ := runtime.MemProfile(nil, false)
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		n, ok = runtime.MemProfile(recs, false)
		if ok {
			recs = recs[:n]
			break
		}
	}
	for i := range recs {
		r := &recs[i]
		if r.InUseBytes() <= 0 {
			continue
		}
		if a.matches(r.Stack()) {
			m.Attributed += uint64(r.InUseBytes())
		}
	}
	return m
}

func (a Attribution) matches(pcs []uintptr) bool {
	in := false
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		for _, p := range a.Exclude {
			if strings.HasPrefix(f.Function, p) {
				return false
			}
		}
		for _, p := range a.Include {
			if strings.HasPrefix(f.Function, p) {
				in = true
			}
		}
		if !more {
			return in
		}
	}
}

// rss returns VmRSS in bytes, or 0.
func rss() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				kb, err := strconv.ParseUint(fields[0], 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	return 0
}
