package cairn_test

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cairn-net/cairn"

// layers lists, for each package of the module (by path relative to the
// module root; a subpackage belongs to its top directory's layer), the other
// layers its non-test code may import. A package missing from this table
// fails the test, so every new package gets a rule.
var layers = map[string][]string{
	"":         nil, // the root holds only documentation and this test
	"ratchet":  nil,
	"internal": nil, // test support (internal/leaktest): imports nothing of ours
	"wire":     nil,
	"rpc":      {"wire"},
	"store":    {"wire"},
	"relay":    {"rpc", "store", "wire", "ratchet"},
	"client":   {"rpc", "store", "wire", "ratchet"},
	"testnet":  {"relay", "client", "rpc", "store", "wire", "ratchet"},
	"cmd":      {"testnet", "relay", "client", "rpc", "store", "wire", "ratchet"},
	// Nested tooling modules (benchmarks/peers) are separate modules and
	// are not listed by go list ./... here.
}

// layerOf maps an import path of this module to its layer name.
func layerOf(path string) (string, bool) {
	if path == module {
		return "", true
	}
	rel, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return "", false
	}
	top, _, _ := strings.Cut(rel, "/")
	return top, true
}

func TestLayoutImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		seen++
		from, _ := layerOf(p.ImportPath)
		allowed, known := layers[from]
		if !known {
			t.Errorf("package %s is in layer %q, which has no import rule in layout_test.go", p.ImportPath, from)
			continue
		}
		for _, imp := range p.Imports {
			to, ours := layerOf(imp)
			if !ours || to == from {
				continue
			}
			if !slices.Contains(allowed, to) {
				t.Errorf("%s imports %s: layer %q may import only %v", p.ImportPath, imp, from, allowed)
			}
		}
	}
	if seen < 7 {
		t.Fatalf("go list found %d packages; expected the whole module", seen)
	}
}

// TestLayoutRuleShape checks the table itself against DESIGN.md's rules, so
// the table cannot quietly drift: relay and client never import each other,
// ratchet and wire import nothing of ours, and nothing imports cmd.
func TestLayoutRuleShape(t *testing.T) {
	if slices.Contains(layers["relay"], "client") || slices.Contains(layers["client"], "relay") {
		t.Error("relay and client must never import each other")
	}
	if len(layers["ratchet"]) != 0 || len(layers["wire"]) != 0 {
		t.Error("ratchet and wire must import nothing of ours")
	}
	for from, to := range layers {
		if slices.Contains(to, "cmd") {
			t.Errorf("layer %q may import cmd", from)
		}
		if from != "cmd" && from != "testnet" && slices.Contains(to, "testnet") {
			t.Errorf("layer %q may import testnet", from)
		}
	}
}
