//go:build !unix

package testnet

import (
	"net"
	"time"
)

// dialUpstream connects a link to its relay and registers the local port
// afterwards (on these systems the relay's gater may look it up before it
// is registered and refuse the connection; the dialer then retries).
func dialUpstream(addr string, pc *pconn) (net.Conn, error) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	pc.port = c.LocalAddr().(*net.TCPAddr).Port
	pc.p.net.register(pc.port, pc)
	return c, nil
}
