package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-net/cairn/relay"
)

// TestRelayConfigStoreMemory: store_memory_bytes sets the store's memory
// budget, and its default is relay.DefaultConfig's.
func TestRelayConfigStoreMemory(t *testing.T) {
	cfg := relay.DefaultConfig()
	if _, err := parseRelayConfig("f", strings.NewReader("store_memory_bytes = 48MiB\n"), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.StoreMemoryBytes != 48<<20 {
		t.Fatalf("StoreMemoryBytes %d", cfg.StoreMemoryBytes)
	}
	var b strings.Builder
	if err := writeConfigExample(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "\nstore_memory_bytes = 128MiB\n") {
		t.Fatal("the example does not give store_memory_bytes its default")
	}
}

// TestRelayAnnounce: the announce key (repeatable) and the --announce flag
// set relay.Config.AnnounceAddrs; the flag replaces the file's list, and a
// value that is not a multiaddr is a usage error.
func TestRelayAnnounce(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "relay.conf")
	if err := os.WriteFile(conf, []byte("data_dir = /tmp/r\nannounce = /ip4/203.0.113.8/tcp/4001\nannounce = /dns4/relay.example/udp/4001/quic-v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	build := func(args ...string) (*relaySetup, error) {
		a := &app{}
		cmd := a.relayCmd()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		var f relayFlags
		f.config, _ = cmd.Flags().GetString("config")
		f.dataDir, _ = cmd.Flags().GetString("data-dir")
		f.announce, _ = cmd.Flags().GetStringArray("announce")
		return a.buildRelayConfig(cmd, &f)
	}
	s, err := build("--config", conf)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.cfg.AnnounceAddrs); got != "[/ip4/203.0.113.8/tcp/4001 /dns4/relay.example/udp/4001/quic-v1]" {
		t.Fatalf("from the file: %s", got)
	}
	s, err = build("--config", conf, "--announce", "/ip4/198.51.100.2/tcp/4002")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.cfg.AnnounceAddrs); got != "[/ip4/198.51.100.2/tcp/4002]" {
		t.Fatalf("flag over the file: %s", got)
	}
	if _, err := build("--config", conf, "--announce", "203.0.113.8:4001"); err == nil || !strings.Contains(err.Error(), "--announce") {
		t.Fatalf("a bad address: %v", err)
	}
	if s, err := build("--config", "/dev/null", "--data-dir", "/tmp/r"); err != nil || len(s.cfg.AnnounceAddrs) != 0 {
		t.Fatalf("no announce: %v %v", s, err)
	}
}

// TestRelayMemoryLimit: memory_limit defaults to 384 MiB; the config key
// sets it (0: none), --memory-limit overrides the file, and a bad value is
// an error.
func TestRelayMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		conf := filepath.Join(dir, fmt.Sprintf("relay%d.conf", len(body)))
		if err := os.WriteFile(conf, []byte("data_dir = /tmp/r\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		return conf
	}
	build := func(args ...string) (*relaySetup, error) {
		a := &app{}
		cmd := a.relayCmd()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		var f relayFlags
		f.config, _ = cmd.Flags().GetString("config")
		f.memoryLimit, _ = cmd.Flags().GetString("memory-limit")
		return a.buildRelayConfig(cmd, &f)
	}
	for _, tc := range []struct {
		args []string
		want int64
	}{
		{[]string{"--config", write("")}, 384 << 20},
		{[]string{"--config", write("memory_limit = 1GiB\n")}, 1 << 30},
		{[]string{"--config", write("memory_limit = 0\n")}, 0},
		{[]string{"--config", write("memory_limit = 1GiB\n"), "--memory-limit", "256MiB"}, 256 << 20},
	} {
		s, err := build(tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if s.memoryLimit != tc.want {
			t.Errorf("%v: memory limit %d, want %d", tc.args, s.memoryLimit, tc.want)
		}
	}
	if _, err := build("--config", write("memory_limit = lots\n")); err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Errorf("bad memory_limit: %v", err)
	}
	if _, err := build("--config", write(""), "--memory-limit", "-1"); err == nil || !strings.Contains(err.Error(), "--memory-limit") {
		t.Errorf("bad --memory-limit: %v", err)
	}
}
