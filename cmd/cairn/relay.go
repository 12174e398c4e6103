package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/relay"
	"github.com/cairn-net/cairn/testnet"
)

type relayFlags struct {
	dataDir     string
	listen      []string
	announce    []string
	bootstrap   []string
	config      string
	metricsAddr string
	memoryLimit string
	// denyFile is the hidden --testnet-deny-file (testnet.DenyFile).
	denyFile string
}

func (a *app) relayCmd() *cobra.Command {
	var f relayFlags
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run a relay",
		Long: `Run a cairn relay: a libp2p host (TCP and QUIC) in the cairn DHT that keeps
TTL-bounded, end-to-end encrypted mailboxes for clients.

Its state lives in --data-dir: identity.key (its Ed25519 key, mode 0600; the peer
ID comes from it, so a restart on the same directory is the same relay) and
store/ (the mailbox log). Stored entries survive restarts and crashes: a
receipt is only given once an entry is fsync'd.

When it is serving, it prints on stdout, one per line:

  peer <peer ID>
  addr <multiaddr>/p2p/<peer ID>      (one line per listen address, or per
                                      --announce address if given)
  metrics http://<host:port>/metrics  (with --metrics-addr)
  ready

and on SIGTERM or SIGINT it stops accepting requests, lets in-flight ones finish
(drain_timeout, 10 s by default), closes the store and prints "stopped".
Logs go to stderr (--log-level, --log-format).

Every limit can be set in a config file (--config); 'cairn relay config-example'
prints one with every key, its default and what it does. Flags override the
file. With --metrics-addr the relay serves Prometheus metrics on /metrics and a
health check on /healthz (200 when serving; 503 otherwise, and while a relay that
restarted with mailboxes is still catching up with the other replicas).`,
		Example: `  # A relay on the default ports (TCP and QUIC 4001), with metrics.
  cairn relay --data-dir /var/lib/cairn --metrics-addr 127.0.0.1:9100

  # Join an existing network.
  cairn relay --data-dir ./r2 --bootstrap /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...

  # Behind a port forward: listen locally, advertise the public address.
  cairn relay --data-dir ./r3 --listen /ip4/0.0.0.0/tcp/4001 --announce /ip4/203.0.113.8/tcp/4001

  # A local relay on a port the OS picks, limits from a file.
  cairn relay config-example > relay.conf
  cairn relay --config relay.conf --data-dir ./r1 --listen /ip4/127.0.0.1/tcp/0`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runRelay(cmd, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "directory of the relay's identity and store (required, here or in the config file)")
	fl.StringArrayVar(&f.listen, "listen", nil, "multiaddr to listen on, repeatable (default /ip4/0.0.0.0/tcp/4001 and /ip4/0.0.0.0/udp/4001/quic-v1)")
	fl.StringArrayVar(&f.announce, "announce", nil, "multiaddr to advertise instead of the listen addresses (identify, DHT), repeatable; e.g. the public side of a port forward")
	fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "relay to join the DHT through, a multiaddr with /p2p/<peer ID>; repeatable")
	fl.StringVar(&f.config, "config", "", "config file (see 'cairn relay config-example')")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "host:port to serve /metrics (Prometheus) and /healthz on; empty: none")
	fl.StringVar(&f.memoryLimit, "memory-limit", "", "soft limit of the Go heap, e.g. 384MiB; 0: none (default 384MiB; GOMEMLIMIT, if set, wins)")
	fl.StringVar(&f.denyFile, "testnet-deny-file", "", "test networks only: a file of cuts, lines '<name> <name>' (peer IDs, or client-N), re-read every 150 ms; the relay refuses, and disconnects, every peer it is cut from (see package testnet, DenyFile; 'cairn testnet chaos' partitions relays with it)")
	_ = fl.MarkHidden("testnet-deny-file")
	cmd.AddCommand(&cobra.Command{
		Use:   "config-example",
		Short: "Print a config file with every key, its default and what it does",
		Long: `Print an example relay config file on stdout: every limit of the relay
(SPEC.md §12) with its default value and a comment saying what it bounds. Use it
as a starting point: keys you leave out keep their defaults.`,
		Example: `  cairn relay config-example > /etc/cairn/relay.conf
  cairn relay --config /etc/cairn/relay.conf`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeConfigExample(a.stdout)
		},
	})
	return cmd
}

// relaySetup is a relay.Config with the command's own settings.
type relaySetup struct {
	cfg         relay.Config
	metricsAddr string
	// memoryLimit is the Go heap's soft limit (0: none).
	memoryLimit int64
}

// defaultMemoryLimit is memory_limit's default: with the store's 128 MiB
// budget it held a relay's anonymous memory to about 300 MiB under
// deposit load and with 1,000,000 entries (BENCHMARKS.md).
const defaultMemoryLimit = 384 << 20

// buildRelayConfig merges defaults, the config file and the flags.
func (a *app) buildRelayConfig(cmd *cobra.Command, f *relayFlags) (*relaySetup, error) {
	cfg := relay.DefaultConfig()
	s := &relaySetup{memoryLimit: defaultMemoryLimit}
	listen, announce, bootstrap := []string(nil), []string(nil), []string(nil)
	if f.config != "" {
		fh, err := os.Open(f.config)
		if err != nil {
			return nil, inputErrorf("config: %v", err)
		}
		file, err := parseRelayConfig(f.config, fh, &cfg)
		fh.Close()
		if err != nil {
			return nil, withCode(exitBadInput, err)
		}
		cfg.DataDir = file.DataDir
		listen, announce, bootstrap = file.Listen, file.Announce, file.Bootstrap
		s.metricsAddr = file.MetricsAddr
		if file.MemoryLimit >= 0 {
			s.memoryLimit = file.MemoryLimit
		}
		if !cmd.Flags().Changed("log-level") && file.LogLevel != "" {
			a.logLevel = file.LogLevel
		}
		if !cmd.Flags().Changed("log-format") && file.LogFormat != "" {
			a.logFormat = file.LogFormat
		}
	}
	fl := cmd.Flags()
	if fl.Changed("data-dir") {
		cfg.DataDir = f.dataDir
	}
	if fl.Changed("listen") {
		listen = f.listen
	}
	if fl.Changed("announce") {
		announce = f.announce
	}
	if fl.Changed("bootstrap") {
		bootstrap = f.bootstrap
	}
	if fl.Changed("metrics-addr") {
		s.metricsAddr = f.metricsAddr
	}
	if fl.Changed("memory-limit") {
		n, err := parseBytes(f.memoryLimit)
		if err != nil {
			return nil, usageErrorf("relay: --memory-limit: %v", err)
		}
		s.memoryLimit = n
	}
	if cfg.DataDir == "" {
		return nil, usageErrorf("relay: --data-dir is required (or data_dir in the config file)")
	}
	if len(listen) > 0 {
		addrs, err := relay.ListenAddrs(listen...)
		if err != nil {
			return nil, usageErrorf("relay: --listen: %v", err)
		}
		cfg.ListenAddrs = addrs
	}
	for _, a := range announce {
		m, err := ma.NewMultiaddr(a)
		if err != nil {
			return nil, usageErrorf("relay: --announce: %q is not a multiaddr: %v", a, err)
		}
		cfg.AnnounceAddrs = append(cfg.AnnounceAddrs, m)
	}
	for _, b := range bootstrap {
		ai, err := parseRelayAddr(b)
		if err != nil {
			return nil, usageErrorf("relay: --bootstrap: %v", err)
		}
		cfg.BootstrapPeers = append(cfg.BootstrapPeers, *ai)
	}
	s.cfg = cfg
	return s, nil
}

// parseRelayAddr parses a multiaddr with a /p2p/ component.
func parseRelayAddr(s string) (*peer.AddrInfo, error) {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a multiaddr: %v", s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return nil, fmt.Errorf("%q needs a /p2p/<peer ID> component", s)
	}
	return ai, nil
}

func (a *app) runRelay(cmd *cobra.Command, f *relayFlags) error {
	ctx := cmd.Context()
	s, err := a.buildRelayConfig(cmd, f)
	if err != nil {
		return err
	}
	log, err := a.logger(slog.LevelInfo)
	if err != nil {
		return err
	}
	s.cfg.Logger = log
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		log.Debug("memory limit from GOMEMLIMIT", "limit", os.Getenv("GOMEMLIMIT"))
	case s.memoryLimit > 0:
		debug.SetMemoryLimit(s.memoryLimit)
		log.Debug("memory limit", "bytes", s.memoryLimit)
	}
	var deny *testnet.DenyFile
	if f.denyFile != "" {
		deny = testnet.NewDenyFile(f.denyFile)
		s.cfg.ConnectionGater = deny
	}

	// The metrics listener first: a busy port fails before anything opens.
	var ml net.Listener
	if s.metricsAddr != "" {
		if ml, err = net.Listen("tcp", s.metricsAddr); err != nil {
			return fmt.Errorf("relay: metrics: %w", err)
		}
		defer ml.Close()
	}
	n, err := relay.New(s.cfg)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("relay: %w", err)
		}
		return withCode(exitBadInput, err)
	}
	if deny != nil {
		deny.AddName(n.ID().String())
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = n.Start(startCtx)
	cancel()
	if err != nil {
		return interrupted(ctx, explainStoreErr(err))
	}
	defer n.Close()
	if deny != nil {
		go deny.Watch(ctx, func(p peer.ID) { _ = n.Host().Network().ClosePeer(p) })
	}

	var srv *http.Server
	if ml != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(n.Registry(), promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			hctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if err := n.Health(hctx); err != nil {
				http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", "err", err)
			}
		}()
	}

	ai := n.AddrInfo()
	fmt.Fprintf(a.stdout, "peer %s\n", ai.ID)
	for _, m := range ai.Addrs {
		fmt.Fprintf(a.stdout, "addr %s/p2p/%s\n", m, ai.ID)
	}
	if ml != nil {
		fmt.Fprintf(a.stdout, "metrics http://%s/metrics\n", ml.Addr())
	}
	fmt.Fprintln(a.stdout, "ready")
	log.Info("relay ready", "peer", ai.ID.String(), "data_dir", s.cfg.DataDir)

	<-ctx.Done()
	log.Info("relay stopping: draining in-flight requests", "drain_timeout", s.cfg.DrainTimeout.String())
	closeErr := n.Close()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	if closeErr != nil {
		return fmt.Errorf("relay: close: %w", closeErr)
	}
	fmt.Fprintln(a.stdout, "stopped")
	return nil
}

// explainStoreErr turns badger's directory lock error into a sentence.
func explainStoreErr(err error) error {
	if err != nil && containsAny(err.Error(), "Cannot acquire directory lock", "resource temporarily unavailable") {
		return fmt.Errorf("the data directory is in use by another process (%v)", oneLine(err.Error()))
	}
	return err
}
