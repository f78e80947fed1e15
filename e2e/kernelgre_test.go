package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/vmtest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
	"github.com/nfhost/nfhost/tunnels"
)

const kernelGRENetwork = `{"prefixes": ["203.0.113.0/24"],
 "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130",
   "interface_address": "169.254.20.0/31", "mss_clamp": 1300, "health_check": {"type": "reply", "rate": "high"}}],
 "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}]}`

// TestKernelGREThroughConsul: nsd with --gre-backend auto on a kernel
// without tcx (Linux 6.1, in the VM: TestKernelGREThroughConsulInVM; on a
// kernel with tcx it asks for kernel) runs kernel GRE, says so in its log and host status, and serves a
// tenant from Consul through a kernel GRE device to a Linux router using
// the kernel's own GRE: traffic both ways, a healthy health check and
// counters in nsctl tunnels; a restart changes nothing.
//
//	client 192.0.2.1 ── uplink 192.0.2.2 edge (nsd --host-netns)
//	client gcust 198.51.100.129 ── eth0 198.51.100.130 G (ip link add gre1 type gre; 203.0.113.5 on lo)
func TestKernelGREThroughConsul(t *testing.T) {
	nstest.RequireRoot(t)
	f := tunnels.ProbeFeatures(netns.None())
	if !f.IPGRE {
		if vmtest.InVM() {
			t.Fatalf("the VM's kernel has no ip_gre: %v", f.IPGREErr)
		}
		t.Skipf("SKIP (this kernel has no ip_gre: %v): TestKernelGREThroughConsulInVM runs it in a VM", f.IPGREErr)
	}
	want := tunnels.BackendKernel
	if f.TCX {
		want = tunnels.BackendEBPF // auto's choice here; the test asks for kernel
	}
	l := newLabPrefix(t, "nfK")
	u := nstest.Unique()
	g := nstest.New(t, "nfK"+u+"g")
	nstest.Link(t, l.client, "gcust", "198.51.100.129/25", g, "eth0", "198.51.100.130/25")
	g.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.129")
	g.MustExec(t, "ip", "addr", "add", "203.0.113.5/32", "dev", "lo")
	g.MustExec(t, "ip", "link", "add", "gre1", "type", "gre", "local", "198.51.100.130", "remote", "192.0.2.10", "ttl", "64")
	g.MustExec(t, "ip", "addr", "add", "169.254.20.1/31", "dev", "gre1")
	g.MustExec(t, "ip", "link", "set", "gre1", "up")
	g.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1") // a router: it forwards the decapsulated probes
	l.client.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.client.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2")
	l.edge.MustExec(t, "ip", "route", "add", "198.51.100.128/25", "via", "192.0.2.1")

	backendFlag := tunnels.BackendAuto
	if want == tunnels.BackendEBPF {
		backendFlag = tunnels.BackendKernel
	}
	p := l.startNSD("--gre-backend", backendFlag)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	// Under emulation the XDP layer's verification takes a while.
	eventuallyFor(t, 240*time.Second, "kernel GRE backend started", func() bool { return strings.Contains(p.Log(), "kernel GRE backend started") })
	if !regexp.MustCompile(`GRE backend chosen.*backend=kernel flag=` + backendFlag).MatchString(p.Log()) {
		t.Errorf("the log does not say which backend was chosen:\n%s", p.Log())
	}
	l.applyTenant("acme", kernelGRENetwork)
	eventuallyFor(t, 60*time.Second, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	if out := tn.MustExec(t, "ip", "-d", "link", "show", "gre-acme1"); !strings.Contains(out, "gre remote 198.51.100.130 local 192.0.2.10 ttl 64") {
		t.Fatalf("gre-acme1 is not a kernel GRE device:\n%s", out)
	}
	if _, err := l.client.Exec(t, "ping", "-c3", "-i", "0.3", "-W2", "203.0.113.5"); err != nil {
		t.Fatalf("client cannot reach 203.0.113.5 behind the Linux router:\n%s", tn.MustExec(t, "ip", "route"))
	}
	if _, err := g.Exec(t, "ping", "-c2", "-i", "0.3", "-W2", "-I", "gre1", "169.254.20.0"); err != nil {
		t.Errorf("the router cannot reach the tenant's end of the tunnel")
	}
	nstest.StartResponder(t, g)
	if !nstest.Reach(t, l.client, "tcp", "203.0.113.5", 80) {
		t.Errorf("no TCP through the tunnel")
	}
	var row string
	eventuallyFor(t, 60*time.Second, "gre-acme1 healthy in nsctl tunnels", func() bool {
		out, _ := l.nsctl("tunnels", "acme")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) > 3 && f[1] == "gre-acme1" && f[2] == "healthy" {
				row = line
				return true
			}
		}
		return false
	})
	out, _ := l.nsctl("tunnels", "acme")
	t.Logf("nsctl tunnels acme:\n%s", out)
	// RX TX DROPS are the last three columns: the device's counters.
	if f := strings.Fields(row); len(f) < 3 || f[len(f)-3] == "0" || f[len(f)-2] == "0" {
		t.Errorf("no tunnel counters: %q", row)
	}
	hs := consulRaw(t, l.consul, "nfhost/host-status/"+l.hostID)
	if !strings.Contains(hs, `"gre_backend":"kernel"`) {
		t.Errorf("host status does not name the backend: %s", hs)
	}

	// A restart with the same config changes nothing.
	before := tn.MustExec(t, "ip", "-d", "link") + tn.MustExec(t, "ip", "route") + l.edge.MustExec(t, "ip", "route", "show", "table", "local")
	p.stop(t)
	p = l.startNSD("--gre-backend", backendFlag)
	eventuallyFor(t, 240*time.Second, "a pass after the restart", func() bool { return strings.Contains(p.Log(), "kernel GRE backend started") })
	time.Sleep(3 * time.Second) // a few resync passes (1 s)
	after := tn.MustExec(t, "ip", "-d", "link") + tn.MustExec(t, "ip", "route") + l.edge.MustExec(t, "ip", "route", "show", "table", "local")
	if after != before {
		t.Errorf("the restart changed the kernel:\n%s\nwas:\n%s", after, before)
	}
	if strings.Contains(p.Log(), "tunnel: create") || strings.Contains(p.Log(), "tunnel: delete") {
		t.Errorf("the restart made tunnel changes:\n%s", p.Log())
	}
}

// TestGREBackendRefused: nsd refuses at start a backend this kernel
// cannot do, naming the missing feature (kernel GRE without ip_gre, on
// this machine).
func TestGREBackendRefused(t *testing.T) {
	nstest.RequireRoot(t)
	f := tunnels.ProbeFeatures(netns.None())
	var flag, msg string
	switch {
	case !f.IPGRE:
		flag, msg = tunnels.BackendKernel, "kernel GRE backend: the kernel has no ip_gre (modprobe ip_gre or use --gre-backend ebpf)"
	default:
		t.Skip("SKIP: this kernel has ip_gre; nothing to refuse (eBPF GRE runs everywhere: tcx or tc clsact)")
	}
	nsdBin, _ := binaries(t)
	u := nstest.Unique()
	e, c := nstest.New(t, "nfK"+u+"e"), nstest.New(t, "nfK"+u+"c")
	nstest.Link(t, c, "eth0", "192.0.2.1/24", e, "uplink", "192.0.2.2/24")
	dir := t.TempDir()
	cmd := exec.Command(nsdBin, "--source", "dir", "--config-dir", filepath.Join(dir, "tenants"), "--state-dir", filepath.Join(dir, "state"),
		"--host-id", "nfK"+u, "--host-netns", e.Name, "--uplink", "uplink", "--ns-prefix", "nfK"+u+"-", "--gre-backend", flag, "--once",
		"--bpf-pin-dir", "/sys/fs/bpf/nfK-"+u)
	t.Cleanup(func() { os.RemoveAll("/sys/fs/bpf/nfK-" + u) })
	os.MkdirAll(filepath.Join(dir, "tenants"), 0o755)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), msg) {
		t.Fatalf("nsd --gre-backend %s: %v\n%s\nwant %q", flag, err, out, msg)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(out)))
	// Refused before anything changed: no XDP layer pinned, no nfhost
	// table, no GRE device.
	if _, err := os.Stat("/sys/fs/bpf/nfK-" + u); err == nil {
		t.Errorf("the refused nsd pinned its XDP layer")
	}
	if out, _ := e.Exec(t, "nft", "list", "tables"); strings.Contains(out, "nfhost") {
		t.Errorf("the refused nsd wrote nft tables: %s", out)
	}
	if out := e.MustExec(t, "ip", "-br", "link", "show", "type", "gre"); strings.Contains(out, "nfg") {
		t.Errorf("a GRE device was left: %s", out)
	}
}

// TestKernelGREThroughConsulInVM runs TestKernelGREThroughConsul in a VM
// on Debian 12's kernel (6.1: no tcx, so auto chooses kernel GRE), with
// nsd, nsctl and Consul from this machine.
func TestKernelGREThroughConsulInVM(t *testing.T) {
	if f := tunnels.ProbeFeatures(netns.None()); f.IPGRE && os.Getenv("NFHOST_VM_FORCE") == "" {
		t.Skip("SKIP: this kernel has ip_gre; TestKernelGREThroughConsul runs here directly")
	}
	vmtest.Require(t)
	consul := consultest.Binary()
	if consul == "" {
		t.Skip("SKIP (needs consul): run scripts/install-consul.sh")
	}
	nsdBin, _ := binaries(t)
	env := []string{"NFHOST_E2E_BIN_DIR=" + vmtest.GuestPath(filepath.Dir(nsdBin)), "NFHOST_CONSUL=" + vmtest.GuestPath(consul), "NFHOST_REQUIRE_CONSUL=1"}
	vm := vmtest.StartHostRoot(t, "linux-image-cloud-amd64", "nfK", 1024)
	res := vm.RunIn(t, vmtest.RunConfig{Run: "^TestKernelGREThroughConsul$", Timeout: 15 * time.Minute, Env: env})
	for _, w := range []string{"TestKernelGREThroughConsul"} {
		if !contains(res.Passed, w) {
			t.Errorf("%s did not pass in the VM (kernel %s): failed %v, skipped %v %v (%v)", w, res.Kernel, res.Failed, res.Skipped, res.SkipReasons, res.Err)
		}
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// consulRaw reads one KV value.
func consulRaw(t *testing.T, a *consultest.Agent, key string) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(a.URL + "/v1/kv/" + key + "?raw")
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
