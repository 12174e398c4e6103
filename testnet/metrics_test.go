package testnet

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader("# HELP x y\nx 3\ny{a=\"1\"} 2\ny{a=\"2\"} 5\nz 1e3\nbad NaNx\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m["x"] != 3 || m["y"] != 7 || m["z"] != 1000 || len(m) != 3 {
		t.Errorf("%v", m)
	}
}
