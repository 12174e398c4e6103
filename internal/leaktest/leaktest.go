// Package leaktest holds the goleak options shared by the module's tests:
// the goroutines that libraries (go-log, opencensus, glog, ristretto,
// quic-go, go-flow-metrics) start once per process and never stop. Only
// tests import it, so goleak stays out of the cairn binary.
package leaktest

import "go.uber.org/goleak"

// Options returns the goleak options for tests that run libp2p hosts,
// badger stores, relays or clients.
func Options() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		goleak.IgnoreTopFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/libp2p/go-libp2p/p2p/transport/quicreuse.(*reuse).gc"),
		goleak.IgnoreAnyFunction("github.com/quic-go/quic-go.(*Transport).listen"),
		// A bandwidth counter (libp2p's metrics) runs a global sweeper.
		goleak.IgnoreAnyFunction("github.com/libp2p/go-flow-metrics.(*sweeper).run"),
	}
}
