package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/cairn-net/cairn/relay"
)

// FuzzParseRelayConfig feeds the relay's config file parser any text. It
// never panics; an error names the file and line ("f:N: …"); and a file
// that parses changes only the fields of the keys it sets.
func FuzzParseRelayConfig(f *testing.F) {
	var example bytes.Buffer
	if err := writeConfigExample(&example); err != nil {
		f.Fatal(err)
	}
	f.Add(example.String())
	f.Add("max_envelope_bytes = 64KiB\nttl_default = 36h # a comment\nlisten = /ip4/127.0.0.1/tcp/0\n")
	f.Add("data_dir = \"/var/lib/cairn relay\"\nstore_memory_bytes = 48MiB\n")
	f.Add("peer_deposit_rate = 100/s, burst 200\n")
	f.Add("unknown = 1\n")
	f.Add("=\n\"\n#\n")
	f.Fuzz(func(t *testing.T, text string) {
		cfg := relay.DefaultConfig()
		file, err := parseRelayConfig("f", strings.NewReader(text), &cfg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error without the file's name: %v", err)
			}
			return
		}
		def := relay.DefaultConfig()
		set := map[string]bool{}
		for _, s := range confSections {
			for _, k := range s.keys {
				if k.field != "" && file.set[k.key] {
					set[k.field] = true
				}
			}
		}
		cv, dv := reflect.ValueOf(cfg), reflect.ValueOf(def)
		for i := range cv.NumField() {
			name := cv.Type().Field(i).Name
			if !cv.Type().Field(i).IsExported() || set[name] {
				continue
			}
			if !reflect.DeepEqual(cv.Field(i).Interface(), dv.Field(i).Interface()) {
				t.Fatalf("field %s changed, but no key of it was set", name)
			}
		}
	})
}
