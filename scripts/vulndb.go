//go:build ignore

// vulndb builds a Go vulnerability database (the v1 layout govulncheck reads
// with -db file:///…) from the OSV files of a pinned golang.org/x/vulndb
// module, so CI can run govulncheck without reaching vuln.go.dev and gets the
// same answer for the same pin. Usage:
//
//	go run scripts/vulndb.go -osv $(go mod download -json golang.org/x/vulndb@V | jq .Dir)/data/osv -out DIR
package main

import (
	"encoding/json"
	"flag"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

type osvEntry struct {
	ID       string `json:"id"`
	Modified string `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type moduleVuln struct {
	ID       string `json:"id"`
	Modified string `json:"modified"`
	Fixed    string `json:"fixed,omitempty"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

func main() {
	osvDir := flag.String("osv", "", "directory of OSV JSON files (golang.org/x/vulndb data/osv)")
	out := flag.String("out", "", "output database directory")
	flag.Parse()
	if *osvDir == "" || *out == "" {
		log.Fatal("usage: vulndb -osv DIR -out DIR")
	}
	files, err := filepath.Glob(filepath.Join(*osvDir, "*.json"))
	if err != nil || len(files) == 0 {
		log.Fatalf("no OSV files in %s: %v", *osvDir, err)
	}
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(*out, d), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	modules := map[string]*module{}
	latest := ""
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			log.Fatal(err)
		}
		var e osvEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			log.Fatalf("%s: %v", f, err)
		}
		if e.Modified > latest {
			latest = e.Modified
		}
		if err := os.WriteFile(filepath.Join(*out, "ID", e.ID+".json"), raw, 0o644); err != nil {
			log.Fatal(err)
		}
		for _, a := range e.Affected {
			m := modules[a.Package.Name]
			if m == nil {
				m = &module{Path: a.Package.Name}
				modules[a.Package.Name] = m
			}
			fixed := ""
			for _, r := range a.Ranges {
				for _, ev := range r.Events {
					if v, ok := ev["fixed"]; ok && v > fixed {
						fixed = v
					}
				}
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: fixed})
		}
	}
	list := make([]*module, 0, len(modules))
	for _, m := range modules {
		list = append(list, m)
	}
	slices.SortFunc(list, func(a, b *module) int { return strings.Compare(a.Path, b.Path) })
	write := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			log.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(*out, "index", name), b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	if latest == "" || strings.HasPrefix(latest, "0001") {
		latest = time.Now().UTC().Format(time.RFC3339)
	}
	write("modules.json", list)
	write("db.json", map[string]string{"modified": latest})
	log.Printf("vulndb: %d entries, %d modules", len(files), len(list))
}
