package client

import "github.com/libp2p/go-libp2p/core/metrics"

// SetBandwidthReporter makes the client's libp2p host count its stream
// bytes in r. Call it before Start. For benchmarks only.
func SetBandwidthReporter(c *Client, r metrics.Reporter) { c.bw = r }
