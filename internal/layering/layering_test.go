// Package layering checks the import graph: subsystems never import the
// daemon, the store package imports no subsystem, and nsctl links no
// kernel code. It reads the graph from `go list -deps`, the compiler's own
// view, so an indirect import through a helper counts as well.
package layering

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nfhost/nfhost"

type pkg struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

// deps lists every package of the module with its transitive imports.
func deps(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	all := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		all[p.ImportPath] = p.Deps
	}
	return all
}

func rel(p string) string { return strings.TrimPrefix(strings.TrimPrefix(p, module), "/") }

func under(p, dir string) bool { p = rel(p); return p == dir || strings.HasPrefix(p, dir+"/") }

func TestLayering(t *testing.T) {
	all := deps(t)
	if len(all) == 0 {
		t.Fatal("go list found no packages")
	}
	subsystems := []string{"routing", "firewall", "tunnels", "dos"}
	kernel := []string{"github.com/vishvananda/netlink", "github.com/vishvananda/netns", "github.com/google/nftables", "github.com/cilium/ebpf"}
	seen := map[string]bool{}
	for p, ds := range all {
		for _, d := range ds {
			for _, s := range subsystems {
				if under(p, s) && strings.HasPrefix(d, module+"/") && under(d, "nsd") {
					t.Errorf("subsystem package %s depends on the daemon's %s", rel(p), rel(d))
				}
				if under(p, "nsd/source") && strings.HasPrefix(d, module+"/") && under(d, s) {
					t.Errorf("the store package %s depends on the subsystem package %s", rel(p), rel(d))
				}
			}
			if under(p, "cmd/nsctl") {
				for _, k := range kernel {
					if (d == k || strings.HasPrefix(d, k+"/")) && !seen[p+" "+k] {
						seen[p+" "+k] = true
						t.Errorf("nsctl (%s) links kernel code: %s", rel(p), d)
					}
				}
			}
		}
	}
}
