package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-net/cairn/client"
	"github.com/cairn-net/cairn/relay"
)

// Every field of relay.Config is either a key of the config file or
// listed as supplied otherwise: a limit added to relay.Config fails this
// test until the file documents it.
func TestRelayConfigCoversConfig(t *testing.T) {
	keys := map[string]string{}
	for _, s := range confSections {
		for _, k := range s.keys {
			if k.field != "" {
				keys[k.field] = k.key
			}
			if k.doc == "" {
				t.Errorf("key %s has no comment", k.key)
			}
		}
	}
	ct := reflect.TypeFor[relay.Config]()
	for i := range ct.NumField() {
		f := ct.Field(i)
		if !f.IsExported() {
			continue
		}
		_, inFile := keys[f.Name]
		_, other := confNonLimits[f.Name]
		switch {
		case inFile && other:
			t.Errorf("relay.Config.%s is both a file key and supplied otherwise", f.Name)
		case !inFile && !other:
			t.Errorf("relay.Config.%s is not in the config file (add it to confSections)", f.Name)
		}
		delete(keys, f.Name)
	}
	for field, key := range keys {
		// The relay package may be older than the table (it is written in
		// parallel): such keys are left out of the file format.
		t.Logf("config key %s names relay.Config.%s, which this relay does not have (left out)", key, field)
	}
}

// The example parses back to exactly relay.DefaultConfig.
func TestRelayConfigExampleRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := writeConfigExample(&buf); err != nil {
		t.Fatal(err)
	}
	got := relay.DefaultConfig()
	// Start from a config with every limit changed, so that a key the
	// example leaves out or misprints shows.
	v := reflect.ValueOf(&got).Elem()
	for _, s := range confSections {
		for _, k := range s.keys {
			if k.field == "" || !cfgHas(k.field) {
				continue
			}
			fv := v.FieldByName(k.field)
			switch fv.Kind() {
			case reflect.Int, reflect.Int64:
				fv.SetInt(fv.Int() + 1)
			case reflect.Float64:
				fv.SetFloat(fv.Float() + 1)
			}
		}
	}
	f, err := parseRelayConfig("example", &buf, &got)
	if err != nil {
		t.Fatal(err)
	}
	want := relay.DefaultConfig()
	for _, s := range confSections {
		for _, k := range s.keys {
			if k.field == "" || !cfgHas(k.field) {
				continue
			}
			if g, w := v.FieldByName(k.field).Interface(), reflect.ValueOf(want).FieldByName(k.field).Interface(); g != w {
				t.Errorf("%s: parsed %v, default %v", k.key, g, w)
			}
		}
	}
	if len(f.Listen) != len(want.ListenAddrs) || f.LogLevel != "info" || f.LogFormat != "text" || f.DataDir != "" {
		t.Errorf("node keys: %+v", f)
	}
}

func TestRelayConfigValues(t *testing.T) {
	cfg := relay.DefaultConfig()
	in := `# comment
max_envelope_bytes = 70_000   # trailing comment
default_ttl = 36h
max_ttl = 2d
storage_cap_bytes = 1GiB
mailbox_quota_bytes = 512KiB
peer_request_rate = 12.5
gc_interval = -1s
data_dir = "/var/lib/cairn #1"
listen = /ip4/127.0.0.1/tcp/0
listen = /ip4/127.0.0.1/udp/0/quic-v1
`
	f, err := parseRelayConfig("t", strings.NewReader(in), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxEnvelopeBytes != 70000 || cfg.DefaultTTL != 36*time.Hour || cfg.MaxTTL != 48*time.Hour ||
		cfg.StorageCapBytes != 1<<30 || cfg.MailboxQuotaBytes != 512<<10 || cfg.PeerRequestRate != 12.5 || cfg.GCInterval != -time.Second {
		t.Errorf("parsed %+v", cfg)
	}
	if f.DataDir != "/var/lib/cairn #1" || len(f.Listen) != 2 {
		t.Errorf("node keys %+v", f)
	}
}

func TestRelayConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nonsense", "t:1: want `key = value`"},
		{"\nmax_ttl = 5", "t:2: max_ttl: want a duration"},
		{"bogus = 1", `t:1: unknown key "bogus"`},
		{"max_ttl = 1d\nmax_ttl = 2d", "t:2: max_ttl is set twice"},
		{"max_page_entries = many", "t:1: max_page_entries: want an integer"},
		{"storage_cap_bytes = 10TB", "t:1: storage_cap_bytes: want a size"},
		{"max_connections = 99999999999999999999", "t:1: max_connections: want an integer"},
		{"peer_deposit_rate = -1", "t:1: peer_deposit_rate: want a rate"},
		{"listen =", "t:1: listen has no value"},
	} {
		cfg := relay.DefaultConfig()
		_, err := parseRelayConfig("t", strings.NewReader(tc.in), &cfg)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q…", tc.in, err, tc.want)
		}
	}
}

// Every command has a short and a long description and examples.
func TestCommandsHaveHelp(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		n++
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%s: Short, Long and Example must all be set", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCmd())
	if n < 15 {
		t.Errorf("only %d commands", n)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\n\nb \r\n c\n"); got != "a; b; c" {
		t.Errorf("oneLine: %q", got)
	}
}

// The inbox merges conversations in the order messages arrived, and never
// reorders a conversation: a message stored before the one it waited for
// (a gap filled late) still comes after it.
func TestInboxMergeConversations(t *testing.T) {
	m := func(body string, seq uint64) client.Message { return client.Message{Body: []byte(body), Seq: seq} }
	alice := []client.Message{m("a1", 5), m("a2", 2), m("a3", 7)} // a2 arrived first and waited for a1
	carol := []client.Message{m("c1", 1), m("c2", 6)}
	var got []string
	for _, x := range mergeConversations([][]client.Message{alice, carol, nil}) {
		got = append(got, string(x.Body))
	}
	if want := "c1 a1 a2 c2 a3"; strings.Join(got, " ") != want {
		t.Fatalf("merged %q, want %q", got, want)
	}
}
