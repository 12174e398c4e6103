package testnet

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// DenyFilePoll is how often a DenyFile re-reads its file.
const DenyFilePoll = 150 * time.Millisecond

// DenyFile is a connection gater for partitions across processes: a
// file, shared by every process of a test network, lists cuts, one per
// line, as two names:
//
//	<name> <name>
//
// A name is a peer ID or any other token a process answers to (package
// testnet/chaos calls its client processes "client-N", since a client's
// peer ID is new at every start). A process whose names include one side
// of a cut refuses the other side, when it is a peer ID: dials to it and
// connections from it. Blank lines and lines starting with # are ignored.
//
// The file is re-read every DenyFilePoll (write it atomically: a rename);
// Watch calls a function for each peer newly refused, so the process
// can close the connections it already has ('cairn relay
// --testnet-deny-file' closes them with its host's ClosePeer). A missing
// file refuses nothing.
type DenyFile struct {
	path string

	mu     sync.Mutex
	names  []string
	denied map[peer.ID]bool
	raw    []byte
}

// NewDenyFile returns the gater of a process known by names (its peer
// ID, its test name), reading path.
func NewDenyFile(path string, names ...string) *DenyFile {
	d := &DenyFile{path: path, names: names}
	d.reload()
	return d
}

// AddName adds a name the process answers to (a relay's peer ID once it
// is known).
func (d *DenyFile) AddName(name string) {
	d.mu.Lock()
	d.names = append(d.names, name)
	d.raw = nil // re-evaluate at the next reload
	d.mu.Unlock()
	d.reload()
}

// reload reads the file and returns the peers newly refused.
func (d *DenyFile) reload() []peer.ID {
	b, err := os.ReadFile(d.path)
	if err != nil {
		b = nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.raw != nil && bytes.Equal(b, d.raw) {
		return nil
	}
	d.raw = b
	if d.raw == nil {
		d.raw = []byte{}
	}
	self := map[string]bool{}
	for _, n := range d.names {
		self[n] = true
	}
	denied := map[peer.ID]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		for i, other := range []string{f[1], f[0]} {
			if !self[f[i]] {
				continue
			}
			if p, err := peer.Decode(other); err == nil {
				denied[p] = true
			}
		}
	}
	var fresh []peer.ID
	for p := range denied {
		if !d.denied[p] {
			fresh = append(fresh, p)
		}
	}
	d.denied = denied
	return fresh
}

// Watch re-reads the file every DenyFilePoll until ctx ends and calls
// onDeny (if not nil) for every peer newly refused.
func (d *DenyFile) Watch(ctx context.Context, onDeny func(peer.ID)) {
	t := time.NewTicker(DenyFilePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, p := range d.reload() {
			if onDeny != nil {
				onDeny(p)
			}
		}
	}
}

// Denied reports whether p is refused now.
func (d *DenyFile) Denied(p peer.ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.denied[p]
}

func (d *DenyFile) InterceptPeerDial(p peer.ID) bool { return !d.Denied(p) }

func (d *DenyFile) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !d.Denied(p) }

func (d *DenyFile) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (d *DenyFile) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !d.Denied(p)
}

func (d *DenyFile) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return !d.Denied(c.RemotePeer()), 0
}

// SetProcGroup puts a child process in its own process group and, on
// Linux, has the kernel SIGKILL it when this process dies: what
// ProcCluster does for its relays, for other children of a test network
// (package testnet/chaos runs its clients so).
func SetProcGroup(cmd *exec.Cmd) { setProcAttrs(cmd) }

// KillProcGroup sends SIGKILL (hard) or SIGTERM to the process group of a
// child started with SetProcGroup.
func KillProcGroup(cmd *exec.Cmd, hard bool) { killGroup(cmd, hard) }
