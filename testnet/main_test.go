package testnet_test

import (
	"log/slog"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/cairn-net/cairn/internal/leaktest"
	"github.com/cairn-net/cairn/testnet"
)

func TestMain(m *testing.M) {
	if testnet.IsRelayChild() {
		os.Exit(testnet.RelayChildMain())
	}
	goleak.VerifyTestMain(m, leaktest.Options()...)
}

// testLogger logs to stderr at debug level when CAIRN_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("CAIRN_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
