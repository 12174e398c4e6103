//go:build ignore

// vulnfilter reads govulncheck's JSON output (-format json) on stdin and
// fails if the code calls a vulnerable symbol, unless the vulnerability is
// in the reviewed exception list (scripts/vuln-allow.txt: one OSV ID per
// line, then its reason; # starts a comment). It prints every called
// vulnerability, allowed or not, and every exception that no longer
// matches, so the list is re-read whenever it changes. Usage:
//
//	go tool govulncheck -format json ./... | go run scripts/vulnfilter.go -allow scripts/vuln-allow.txt
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
	Receiver string `json:"receiver"`
}

type finding struct {
	OSV          string  `json:"osv"`
	FixedVersion string  `json:"fixed_version"`
	Trace        []frame `json:"trace"`
}

func main() {
	allowFile := flag.String("allow", "scripts/vuln-allow.txt", "reviewed exceptions: OSV ID and reason per line")
	flag.Parse()
	allow, err := readAllow(*allowFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulnfilter:", err)
		os.Exit(2)
	}
	called := map[string]finding{}
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	for {
		var msg struct {
			Finding *finding `json:"finding"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "vulnfilter: reading govulncheck output:", err)
			os.Exit(2)
		}
		f := msg.Finding
		// A finding whose innermost frame names a function is a call of a
		// vulnerable symbol; others are imports or requirements only.
		if f == nil || len(f.Trace) == 0 || f.Trace[0].Function == "" {
			continue
		}
		if _, ok := called[f.OSV]; !ok {
			called[f.OSV] = *f
		}
	}
	ids := make([]string, 0, len(called))
	for id := range called {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bad := 0
	for _, id := range ids {
		f := called[id]
		at := f.Trace[0]
		fixed := f.FixedVersion
		if fixed == "" {
			fixed = "no fixed version"
		}
		where := fmt.Sprintf("%s@%s (%s.%s; fixed: %s)", at.Module, at.Version, at.Package, at.Function, fixed)
		if reason, ok := allow[id]; ok {
			fmt.Printf("allowed     %s %s: %s\n", id, where, reason)
			continue
		}
		fmt.Printf("VULNERABLE  %s %s\n", id, where)
		bad++
	}
	for id := range allow {
		if _, ok := called[id]; !ok {
			fmt.Printf("stale exception %s: no longer called; remove it from %s\n", id, *allowFile)
		}
	}
	if bad > 0 {
		fmt.Printf("vulnfilter: %d called vulnerabilities without a reviewed exception\n", bad)
		os.Exit(3)
	}
	fmt.Printf("vulnfilter: %d called vulnerabilities, all with reviewed exceptions\n", len(ids))
}

// readAllow reads "ID reason…" lines.
func readAllow(name string) (map[string]string, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	allow := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, reason, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(id, "GO-") || strings.TrimSpace(reason) == "" {
			return nil, fmt.Errorf("%s:%d: want `GO-YYYY-NNNN reason`", name, i+1)
		}
		allow[id] = strings.TrimSpace(reason)
	}
	return allow, nil
}
