package relay

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cairn-net/cairn/rpc"
	"github.com/cairn-net/cairn/wire"
	"github.com/cairn-net/cairn/wire/pb"
)

// TestRelayDepositRSS is a manual measurement of a relay's memory under
// sustained deposit load: a relay in a child process (DefaultConfig, so
// the default StoreMemoryBytes; per-peer rates lifted) takes deposits of
// 1 KiB envelopes from 8 senders (8 client hosts, one pipelined stream
// each, wire.MaxDepositInflight in flight, 64 mailboxes each) for
// CAIRN_RSS_SECONDS (default 60); the test samples the child's
// /proc/<pid>/status every second and prints the peak VmRSS (VmHWM), the
// peak RssAnon, the end figures and the store's size on disk. Run it with
//
//	CAIRN_RSS_DEPOSIT=1 go test -run TestRelayDepositRSS -timeout 30m -v ./relay
//
// CAIRN_RSS_HEAPPROFILE=path writes the child's heap profile at the end
// (and to path.peak when its heap was largest, of 1 s samples).
// Without CAIRN_RSS_DEPOSIT it does nothing (it is not part of the suite).
func TestRelayDepositRSS(t *testing.T) {
	if os.Getenv("CAIRN_RSS_CHILD") == "1" {
		rssChild(t)
		return
	}
	if os.Getenv("CAIRN_RSS_DEPOSIT") != "1" {
		t.Log("manual measurement: set CAIRN_RSS_DEPOSIT=1 to run it")
		return
	}
	const senders, mailboxes = 8, 64
	dur := 60 * time.Second
	if v, err := strconv.Atoi(os.Getenv("CAIRN_RSS_SECONDS")); err == nil {
		dur = time.Duration(v) * time.Second
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelayDepositRSS$", "-test.timeout=60m")
	cmd.Env = append(os.Environ(), "CAIRN_RSS_CHILD=1", "CAIRN_RSS_DIR="+dir)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	ai, err := peer.AddrInfoFromString(strings.TrimSpace(strings.TrimPrefix(line, "RELAY ")))
	if err != nil {
		t.Fatalf("child said %q: %v", line, err)
	}
	pid := cmd.Process.Pid

	// Sample the child's memory every second.
	var peakAnon, peakFile int64
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			st := procStatus(pid)
			peakAnon = max(peakAnon, st["RssAnon:"])
			peakFile = max(peakFile, st["RssFile:"])
		}
	}()

	var ok, busy, other atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for s := range senders {
		h := clientHost(t)
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := h.Connect(cctx, *ai); err != nil {
			t.Fatal(err)
		}
		ccancel()
		c := rpc.New(h)
		ds, err := c.OpenDeposit(context.Background(), ai.ID)
		if err != nil {
			t.Fatal(err)
		}
		mbs := make([]wire.Mailbox, mailboxes)
		for i := range mbs {
			_, mbs[i] = mailboxKey(t)
		}
		calls := make(chan *rpc.DepositCall, wire.MaxDepositInflight)
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(calls)
			ct := make([]byte, 1024-wire.EnvelopeOverhead)
			ct[0] = byte(s)
			for i := uint64(0); ctx.Err() == nil; i++ {
				for k := range 8 {
					ct[1+k] = byte(i >> (8 * k))
				}
				env, _ := (&wire.Envelope{Mailbox: mbs[i%mailboxes], Ciphertext: ct}).Marshal()
				call, err := ds.Send(ctx, env)
				if err != nil {
					return
				}
				calls <- call
			}
		}()
		go func() {
			defer wg.Done()
			for call := range calls {
				_, err := call.Wait(context.Background())
				var re *rpc.Error
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &re) && re.Status == pb.Status_STATUS_BUSY:
					busy.Add(1)
				default:
					other.Add(1)
				}
			}
			ds.Close()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(2 * time.Second)
	close(stopSampling)
	<-sampleDone
	st := procStatus(pid)
	var size int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	t.Logf("%d senders for %v: %d OK (%.0f/s), %d BUSY, %d other", senders, elapsed.Round(time.Second), ok.Load(), float64(ok.Load())/elapsed.Seconds(), busy.Load(), other.Load())
	t.Logf("relay peak VmRSS (VmHWM) %d MiB; peak RssAnon %d MiB, peak RssFile %d MiB (1 s samples); at the end VmRSS %d MiB = RssAnon %d + RssFile %d MiB",
		st["VmHWM:"]>>20, peakAnon>>20, peakFile>>20, st["VmRSS:"]>>20, st["RssAnon:"]>>20, st["RssFile:"]>>20)
	t.Logf("at the end, resident by mapping: %s", smapsRss(pid))
	t.Logf("store on disk %d MiB for %d MiB of envelopes", size>>20, ok.Load()>>10)
	if other.Load() > 0 {
		t.Errorf("%d deposits failed other than BUSY", other.Load())
	}
}

// procStatus returns the kB fields of /proc/pid/status in bytes.
func procStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			out[f[0]] = v << 10
		}
	}
	return out
}
