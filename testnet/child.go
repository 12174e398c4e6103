package testnet

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairn-net/cairn/relay"
)

// RelayChildEnv is set in the environment of the relay processes a
// ProcCluster starts. A test binary whose TestMain calls RelayChildMain
// when IsRelayChild is true can stand in for the cairn binary:
//
//	func TestMain(m *testing.M) {
//		if testnet.IsRelayChild() {
//			os.Exit(testnet.RelayChildMain())
//		}
//		os.Exit(m.Run())
//	}
const RelayChildEnv = "CAIRN_TESTNET_RELAY_CHILD"

// IsRelayChild reports whether this process was started as a relay child.
func IsRelayChild() bool { return os.Getenv(RelayChildEnv) != "" }

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// RelayChildMain runs a relay the way "cairn relay" does, for the flags a
// ProcCluster passes (os.Args: "relay --data-dir D --listen A
// [--bootstrap B]..."): it prints "peer <id>", one "addr <multiaddr>" line
// per listen address and "ready" on stdout, logs to stderr, and on SIGTERM
// or SIGINT drains, closes and prints "stopped". It returns the exit code.
func RelayChildMain() int {
	return relayChild(os.Args[1:], os.Stdout, os.Stderr)
}

func relayChild(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "relay" {
		fmt.Fprintf(stderr, "relay child: want \"relay\" and flags, got %q\n", args)
		return 2
	}
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "data directory")
	var listen, bootstrap stringList
	fs.Var(&listen, "listen", "listen multiaddr (repeatable)")
	fs.Var(&bootstrap, "bootstrap", "bootstrap relay multiaddr with /p2p/ (repeatable)")
	metricsAddr := fs.String("metrics-addr", "", "host:port to serve /metrics on")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg := relay.DefaultConfig()
	cfg.DataDir = *dataDir
	cfg.Logger = log
	cfg.DrainTimeout = 2 * time.Second
	if len(listen) > 0 {
		addrs, err := relay.ListenAddrs(listen...)
		if err != nil {
			fmt.Fprintln(stderr, "relay child:", err)
			return 2
		}
		cfg.ListenAddrs = addrs
	}
	for _, b := range bootstrap {
		ai, err := peer.AddrInfoFromP2pAddr(ma.StringCast(b))
		if err != nil {
			fmt.Fprintln(stderr, "relay child: bootstrap:", err)
			return 2
		}
		cfg.BootstrapPeers = append(cfg.BootstrapPeers, *ai)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := relay.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "relay child:", err)
		return 1
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = n.Start(sctx)
	cancel()
	if err != nil {
		fmt.Fprintln(stderr, "relay child:", err)
		return 1
	}
	var srv *http.Server
	if *metricsAddr != "" {
		l, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			_ = n.Close()
			fmt.Fprintln(stderr, "relay child: metrics:", err)
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(n.Registry(), promhttp.HandlerOpts{}))
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
		*metricsAddr = l.Addr().String()
	}
	ai := n.AddrInfo()
	fmt.Fprintf(stdout, "peer %s\n", ai.ID)
	for _, a := range ai.Addrs {
		fmt.Fprintf(stdout, "addr %s/p2p/%s\n", a, ai.ID)
	}
	if srv != nil {
		fmt.Fprintf(stdout, "metrics http://%s/metrics\n", *metricsAddr)
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	if err := n.Close(); err != nil {
		fmt.Fprintln(stderr, "relay child: close:", err)
		return 1
	}
	fmt.Fprintln(stdout, "stopped")
	return 0
}
