package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/cairn-net/cairn/testnet"
)

// Local clusters are testnet.ProcCluster: `cairn relay` processes of this
// binary on 127.0.0.1, each in its own process group, killed with the
// cluster (and, on Linux, by the kernel if this process dies first).

// startCluster starts n relays of this binary with metrics endpoints and
// returns once the DHT finds the true replica sets. dir "" means a
// temporary directory removed by stopCluster.
func startCluster(ctx context.Context, dir string, n int, onExit func(p *testnet.Proc, err error)) (*testnet.ProcCluster, error) {
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return testnet.StartProcs(ctx, testnet.ProcOptions{
		Binary:  bin,
		Relays:  n,
		Dir:     dir,
		Metrics: true,
		OnExit:  onExit,
	})
}

// stopCluster stops every relay with SIGTERM (they drain), in parallel,
// then closes the cluster (SIGKILL for any that did not stop, removal of a
// temporary directory).
func stopCluster(pc *testnet.ProcCluster) error {
	var wg sync.WaitGroup
	errs := make([]error, len(pc.Relays))
	for i, p := range pc.Relays {
		wg.Go(func() {
			if err := p.Stop(); err != nil && !errors.Is(err, testnet.ErrDown) {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	errs = append(errs, pc.Close())
	return errors.Join(errs...)
}

// allAddrs returns every relay's address, running or not.
func allAddrs(pc *testnet.ProcCluster) []string {
	var out []string
	for _, p := range pc.Relays {
		out = append(out, p.Addr)
	}
	return out
}

// relayStats are a few of a relay's metrics.
type relayStats struct {
	Entries     float64 `json:"entries"`
	Bytes       float64 `json:"bytes"`
	Deposits    float64 `json:"deposits"`
	Subscribers float64 `json:"subscribers"`
	Pushes      float64 `json:"pushes"`
}

var statsClient = &http.Client{Timeout: 2 * time.Second}

// relayStatsOf reads a relay's metrics endpoint.
func relayStatsOf(ctx context.Context, p *testnet.Proc) (relayStats, error) {
	var s relayStats
	url := p.MetricsURL()
	if url == "" || !p.Running() {
		return s, errors.New("not running")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := statsClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	vals, err := testnet.ParseMetrics(resp.Body)
	if err != nil {
		return s, err
	}
	s.Entries = vals["cairn_relay_stored_entries"]
	s.Bytes = vals["cairn_relay_stored_bytes"]
	s.Subscribers = vals["cairn_relay_subscribers"]
	s.Pushes = vals["cairn_relay_pushes_total"]
	s.Deposits = vals["cairn_relay_deposits_total"]
	return s, nil
}
