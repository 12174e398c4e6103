//go:build unix

package testnet

import (
	"net"
	"syscall"
	"time"
)

// dialUpstream connects a link to its relay from a socket whose local port
// is registered before the connection is made, so that the relay's gater,
// which may run before Dial returns here, recognises the connection as one
// that came through a link.
func dialUpstream(addr string, pc *pconn) (net.Conn, error) {
	d := net.Dialer{
		Timeout: 5 * time.Second,
		Control: func(_, _ string, rc syscall.RawConn) error {
			var err error
			cerr := rc.Control(func(fd uintptr) {
				if err = syscall.Bind(int(fd), &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
					return
				}
				var sa syscall.Sockaddr
				if sa, err = syscall.Getsockname(int(fd)); err != nil {
					return
				}
				if in4, ok := sa.(*syscall.SockaddrInet4); ok {
					pc.port = in4.Port
					pc.p.net.register(in4.Port, pc)
				}
			})
			if cerr != nil {
				return cerr
			}
			return err
		},
	}
	return d.Dial("tcp4", addr)
}
