package e2e

// The Vagrant lab's parts that run without VMs (make test-vagrant boots
// them; it takes too long for make test): the Vagrantfile validates, and
// scripts/lab/provision.sh, which configures each VM, configures the same
// topology as namespaces (the way make lab uses it), twice over.

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
)

// repoRoot is the module's root (the e2e tests run in e2e/).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// runCmd runs a command with a timeout, failing the test with its output.
func runCmd(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestVagrantfile(t *testing.T) {
	requireTool(t, "vagrant")
	for _, box := range []string{"nfhost/bookworm", "debian/bookworm64"} {
		t.Run(box, func(t *testing.T) {
			// Its own .vagrant: a lab that is up is neither locked nor touched.
			out := runCmd(t, []string{"NFHOST_BOX=" + box, "VAGRANT_DOTFILE_PATH=" + t.TempDir()}, "vagrant", "validate", "--ignore-provider")
			if !strings.Contains(out, "validated successfully") {
				t.Fatalf("vagrant validate: %s", out)
			}
		})
	}
}

// topoLine is one line of scripts/lab/topology, split into fields.
type topoLine []string

func readTopology(t testing.TB) []topoLine {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "scripts/lab/topology"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []topoLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l, _, _ := strings.Cut(sc.Text(), "#")
		if fs := strings.Fields(l); len(fs) > 0 {
			lines = append(lines, fs)
		}
	}
	return lines
}

func TestLabProvisioning(t *testing.T) {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "nsenter", "ping", "python3", "bird", "birdc"} {
		requireTool(t, tool)
	}
	_, nsctl := binaries(t)
	bin := filepath.Dir(nsctl)
	root := repoRoot(t)
	topo := readTopology(t)
	prefix := "nfV" + nstest.Unique() + "-"
	work := t.TempDir()

	// Every host a namespace, every link a veth pair, as scripts/lab.sh does.
	ns := map[string]*nstest.NS{}
	var hosts []string
	for _, l := range topo {
		if l[0] == "host" {
			hosts = append(hosts, l[1])
			ns[l[1]] = nstest.New(t, prefix+l[1])
		}
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(work, "bird.pid")); err == nil {
			exec.Command("kill", strings.TrimSpace(string(b))).Run()
		}
		exec.Command(filepath.Join(bin, "nfcustomer"), "--netns", prefix+"customer", "--down").Run()
		os.Remove(filepath.Join(bpfpin.BPFFS, "nfhost-customer", prefix+"customer"))
	})
	for _, l := range topo {
		if l[0] == "link" {
			runCmd(t, nil, "ip", "link", "add", l[3], "netns", prefix+l[2], "type", "veth", "peer", "name", l[6], "netns", prefix+l[5])
		}
	}
	env := []string{"LAB_RUN=" + work, "LAB_BIN=" + bin, "LAB_NS_PREFIX=" + prefix, "LAB_GRE=nfcustomer",
		"LAB_BIRD_CTL=" + filepath.Join(work, "bird.ctl")}
	provision := func() {
		for _, h := range hosts {
			runCmd(t, env, "nsenter", "--net=/run/netns/"+prefix+h, "--", filepath.Join(root, "scripts/lab/provision.sh"), h)
		}
	}
	provision()
	state := func() string { // addresses and routes of every host
		var b strings.Builder
		for _, h := range hosts {
			b.WriteString(h + ":\n" + ns[h].MustExec(t, "ip", "-br", "addr") + ns[h].MustExec(t, "ip", "route") + ns[h].MustExec(t, "ip", "rule"))
		}
		return b.String()
	}
	first := state()
	provision() // idempotent: a second run changes nothing
	if second := state(); second != first {
		t.Errorf("a second provisioning changed the hosts:\nfirst:\n%s\nsecond:\n%s", first, second)
	}

	// Each link's ends reach each other; each route's next hop is on a link.
	for _, l := range topo {
		switch l[0] {
		case "link":
			peer, _, _ := strings.Cut(l[7], "/")
			if _, err := ns[l[2]].Exec(t, "ping", "-c1", "-W2", peer); err != nil {
				t.Errorf("link %s: %s cannot ping %s (%s): %v", l[1], l[2], l[5], peer, err)
			}
		case "addr":
			if out := ns[l[1]].MustExec(t, "ip", "-o", "addr", "show", "dev", l[2]); !strings.Contains(out, l[3]) {
				t.Errorf("%s %s: no %s:\n%s", l[1], l[2], l[3], out)
			}
		case "route":
			if l[1] == "server" {
				continue // nfcustomer replaced it with the tunnel's
			}
			if out := ns[l[1]].MustExec(t, "ip", "route", "show", l[2]); !strings.Contains(out, "via "+l[3]) {
				t.Errorf("%s: route %s not via %s:\n%s", l[1], l[2], l[3], out)
			}
		}
	}
	// nfcustomer's tunnel interfaces are in the server's namespace, which
	// routes what comes out of them: a reply-type health probe (from the
	// edge's tunnel address to its uplink) goes back into a tunnel only
	// if that namespace forwards (make lab: the edges saw every probe lost).
	if out := strings.TrimSpace(ns["server"].MustExec(t, "sysctl", "-n", "net.ipv4.ip_forward")); out != "1" {
		t.Errorf("server (nfcustomer's tunnels): net.ipv4.ip_forward = %s, want 1", out)
	}
	// The client reaches the server's side of the customer (not the
	// tenant: no edge runs here) through the router.
	if _, err := ns["client"].Exec(t, "ping", "-c1", "-W2", "-I", "192.0.2.100", "198.51.100.130"); err != nil {
		t.Errorf("client cannot reach the customer through the router: %v", err)
	}

	// The router: BIRD with one session per edge.
	out := runCmd(t, nil, "birdc", "-s", filepath.Join(work, "bird.ctl"), "show", "protocols")
	for _, p := range []string{"edge1", "edge2"} {
		if !strings.Contains(out, p+" ") {
			t.Errorf("BIRD has no session %s:\n%s", p, out)
		}
	}
	// The edges: nsd's BGP config, peering with the router's side of the uplink.
	for e, peer := range map[string]string{"edge1": "192.0.2.1", "edge2": "192.0.2.5"} {
		b, err := os.ReadFile(filepath.Join(work, "bgp-"+e+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			ASN   int `json:"asn"`
			Peers []struct {
				Address string `json:"address"`
				ASN     int    `json:"asn"`
			} `json:"peers"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("bgp-%s.json: %v\n%s", e, err, b)
		}
		if cfg.ASN != 65001 || len(cfg.Peers) != 1 || cfg.Peers[0].Address != peer || cfg.Peers[0].ASN != 65000 {
			t.Errorf("bgp-%s.json: %s", e, b)
		}
	}
	// The customer (nfcustomer here: this kernel has no GRE): both tunnels'
	// interfaces in the server's namespace, the default route through gre1.
	for dev, addr := range map[string]string{"gre1": "169.254.20.1/31", "gre2": "169.254.21.1/31"} {
		if out := ns["server"].MustExec(t, "ip", "-o", "addr", "show", "dev", dev); !strings.Contains(out, addr) {
			t.Errorf("server: %s has no %s:\n%s", dev, addr, out)
		}
	}
	if out := ns["server"].MustExec(t, "ip", "route", "show", "default"); !strings.Contains(out, "169.254.20.0") {
		t.Errorf("server: default route not through gre1:\n%s", out)
	}
	// The kernel GRE mode is the VMs' (make test-vagrant).
	if err := exec.Command("ip", "-n", prefix+"customer", "link", "add", "nfVgre", "type", "gre", "local", "198.51.100.130", "remote", "192.0.2.10").Run(); err != nil {
		t.Log("this kernel has no GRE: provision.sh's LAB_GRE=kernel runs in make test-vagrant's customer VM only")
	}
}
