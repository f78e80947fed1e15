// Package e2e runs nsd and nsctl as processes against a real Consul dev
// agent and real namespaces:
//
//	client 192.0.2.1 ── eth0 ═ uplink ── 192.0.2.2 edge (nsd --host-netns edge)
//	                                         │ nfv… ═ host0
//	                                         └─ nfE…-acme: 203.0.113.1 on lo
//
// It needs root, iproute2, nft, ping and the Consul binary
// (scripts/install-consul.sh); `make test` provides all of them.
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

var buildOnce sync.Once
var binDir string
var buildErr error

// binaries builds nsd and nsctl once per test binary ($NFHOST_E2E_BIN_DIR:
// prebuilt ones there).
func binaries(t testing.TB) (nsd, nsctl string) {
	t.Helper()
	if d := os.Getenv("NFHOST_E2E_BIN_DIR"); d != "" {
		// Prebuilt (the kernel-test VM runs no Go toolchain).
		return filepath.Join(d, "nsd"), filepath.Join(d, "nsctl")
	}
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "nfhost-e2e-bin")
		if buildErr != nil {
			return
		}
		os.Chmod(binDir, 0o755) // the non-root test runs nsd as nobody
		out, err := exec.Command("go", "build", "-o", binDir+"/", "github.com/nfhost/nfhost/cmd/...").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		// "The next release": an nsd whose XDP program differs (stamped
		// instructions), to watch the in-place upgrade.
		out, err = exec.Command("go", "build", "-o", filepath.Join(binDir, "nsd-next"),
			"-ldflags", "-X github.com/nfhost/nfhost/dos.BuildStamp=next", "github.com/nfhost/nfhost/cmd/nsd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build nsd-next: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "nsd"), filepath.Join(binDir, "nsctl")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// lab is one edge server with one client.
type lab struct {
	t              testing.TB
	client, edge   *nstest.NS
	consul         *consultest.Agent
	nsdBin, ctlBin string
	nsPrefix       string
	prefix         string // of every namespace name
	hostID         string
	nsd            *proc
	// consulAddr is what --consul-addr gets ("" : no flag, the environment
	// decides); nsdEnv and ctlEnv are added to nsd's and nsctl's
	// environment (tokens, CONSUL_HTTP_ADDR, TLS files).
	consulAddr     string
	nsdEnv, ctlEnv []string
}

func newLab(t testing.TB) *lab { return newLabPrefix(t, "nfE") }

// newLabPrefix names the lab's namespaces with prefix and a unique suffix;
// opts start Consul with ACLs or TLS.
func newLabPrefix(t testing.TB, prefix string, opts ...consultest.Option) *lab {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "nft", "ping", "nsenter"} {
		nstest.RequireTool(t, tool)
	}
	u := nstest.Unique()
	l := &lab{t: t, client: nstest.New(t, prefix+u+"c"), edge: nstest.New(t, prefix+u+"e"),
		nsPrefix: prefix + u + "-", prefix: prefix, hostID: "edge-" + u}
	l.nsdBin, l.ctlBin = binaries(t)
	nstest.Link(t, l.client, "eth0", "192.0.2.1/24", l.edge, "uplink", "192.0.2.2/24")
	l.client.MustExec(t, "ip", "addr", "add", "2001:db8:ff::1/64", "dev", "eth0", "nodad")
	l.edge.MustExec(t, "ip", "addr", "add", "2001:db8:ff::2/64", "dev", "uplink", "nodad")
	for _, r := range []string{"203.0.113.0/24", "198.51.100.0/24"} {
		l.client.MustExec(t, "ip", "route", "add", r, "via", "192.0.2.2")
	}
	l.client.MustExec(t, "ip", "-6", "route", "add", "2001:db8::/32", "via", "2001:db8:ff::2")
	l.edge.MustExec(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	l.edge.MustExec(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:ff::1")
	t.Cleanup(func() {
		names, _ := namedns.List(namedns.DefaultDir, l.nsPrefix)
		for _, n := range names {
			namedns.Delete(namedns.DefaultDir, n)
		}
		// nsd leaves the XDP program pinned on purpose; the test removes it.
		dos.Detach(filepath.Join(bpfpin.BPFFS, "nfhost", l.hostID))
	})
	l.consul = consultest.Start(t, opts...)
	l.consulAddr = l.consul.Addr
	return l
}

// proc is a running nsd with its log captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
}

func (p *proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

func (l *lab) startNSD(extra ...string) *proc {
	l.t.Helper()
	return l.startNSDBin(l.nsdBin, extra...)
}

// startNSDBin starts the given nsd build.
func (l *lab) startNSDBin(bin string, extra ...string) *proc {
	l.t.Helper()
	args := append([]string{"--source", "consul", "--host-id", l.hostID,
		"--host-netns", l.edge.Name, "--uplink", "uplink", "--ns-prefix", l.nsPrefix,
		"--resync-interval", "1s", "--log-level", "debug"}, extra...)
	if l.consulAddr != "" {
		args = append([]string{"--consul-addr", l.consulAddr}, args...)
	}
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), l.nsdEnv...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("start nsd: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() { p.cmd.Wait(); pw.Close(); close(p.done) }()
	l.t.Cleanup(func() { p.stop(l.t) })
	l.nsd = p
	return p
}

func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("nsd did not stop on SIGTERM within 10s")
	}
}

func (l *lab) nsctl(args ...string) (string, int) {
	l.t.Helper()
	return l.nsctlEnv(l.ctlEnv, args...)
}

// nsctlEnv runs nsctl with env added to its environment (instead of ctlEnv).
func (l *lab) nsctlEnv(env []string, args ...string) (string, int) {
	l.t.Helper()
	if l.consulAddr != "" {
		args = append([]string{"--consul-addr", l.consulAddr}, args...)
	}
	cmd := exec.Command(l.ctlBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		l.t.Fatalf("nsctl: %v", err)
	}
	return string(out), code
}

func (l *lab) applyTenant(id, network string) {
	l.t.Helper()
	f := filepath.Join(l.t.TempDir(), id+".json")
	os.WriteFile(f, []byte(fmt.Sprintf(`{"id": %q, "network": %s}`, id, network)), 0o644)
	if out, code := l.nsctl("tenant", "apply", "-f", f); code != 0 {
		l.t.Fatalf("nsctl tenant apply: exit %d\n%s", code, out)
	}
}

// eventually polls cond for up to 10s.
func eventually(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	return eventuallyFor(t, 10*time.Second, what, cond)
}

// eventuallyFor polls cond for up to d.
func eventuallyFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
	return 0
}

func (l *lab) tenantNS(id string) *nstest.NS { return &nstest.NS{Name: l.nsPrefix + id} }

// kernelState renders everything nsd owns in the edge namespace.
func (l *lab) kernelState() string {
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "link", "show"},
		{"ip", "rule"}, {"ip", "-6", "rule"},
		{"nft", "list", "table", "inet", "nfhost"},
	} {
		b.WriteString(l.edge.MustExec(l.t, args...))
	}
	return b.String()
}

func (l *lab) status(id string) string {
	out, _ := l.nsctl("status", "--host", l.hostID)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == id {
			return line
		}
	}
	return ""
}

func TestTenantLifecycle(t *testing.T) {
	l := newLab(t)
	l.startNSD()

	// Create: namespace, veth and routing appear; ping crosses both ways.
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"], "tunnels": [], "routes": []}`)
	took := eventually(t, "tenant acme applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	t.Logf("Consul PUT -> status applied in %v", took)
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	l.client.MustExec(t, "ping", "-c2", "-W2", "203.0.113.1")
	l.client.MustExec(t, "ping", "-6", "-c2", "-W2", "2001:db8:1::1")
	tn.MustExec(t, "ping", "-c1", "-W2", "-I", "203.0.113.1", "192.0.2.1")

	// Change: prefixes move; the veth is not recreated.
	before := l.edge.MustExec(t, "ip", "-o", "link", "show")
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/25", "198.51.100.0/24"], "tunnels": [], "routes": []}`)
	eventually(t, "map updated", func() bool {
		m := l.edge.MustExec(t, "nft", "list", "map", "inet", "nfhost", "tenant_marks4")
		return strings.Contains(m, "203.0.113.0/25") && strings.Contains(m, "198.51.100.0/24")
	})
	if after := l.edge.MustExec(t, "ip", "-o", "link", "show"); after != before {
		t.Errorf("links changed on a prefix change:\n%s\n---\n%s", before, after)
	}
	tn.MustExec(t, "ip", "addr", "add", "198.51.100.7/32", "dev", "lo")
	l.client.MustExec(t, "ping", "-c1", "-W2", "198.51.100.7")

	// Restart: SIGTERM leaves the datapath; a new nsd changes nothing.
	state := l.kernelState()
	// A ping runs across the whole restart: not one packet may be lost.
	pinger := exec.Command("nsenter", "--net="+l.client.Path(), "--", "ping", "-q", "-i", "0.05", "-c", "80", "-W", "1", "203.0.113.1")
	var pingOut bytes.Buffer
	pinger.Stdout, pinger.Stderr = &pingOut, &pingOut
	if err := pinger.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	l.nsd.stop(t)
	p := l.startNSD()
	eventually(t, "second nsd completes a pass", func() bool { return strings.Contains(p.Log(), "nsd started") })
	time.Sleep(2500 * time.Millisecond) // at least two resyncs
	if err := pinger.Wait(); err != nil || !strings.Contains(pingOut.String(), " 0% packet loss") {
		t.Errorf("packets lost across the nsd restart (%v):\n%s", err, pingOut.String())
	}
	if got := l.kernelState(); got != state {
		t.Errorf("restart changed kernel state:\n%s\n---\n%s", state, got)
	}
	if strings.Contains(p.Log(), "kernel change") {
		t.Errorf("restarted nsd made kernel changes:\n%s", p.Log())
	}
	if strings.Contains(p.Log(), `mode=""`) || !strings.Contains(p.Log(), "XDP DoS layer attached") {
		t.Errorf("the restarted nsd does not say how XDP is attached:\n%s", p.Log())
	}

	// Bad config: refused with a field path; the old state keeps working.
	l.consul.Put(t, "nfhost/tenants/acme/network", `{"prefixes": ["203.0.113.0/33"]}`)
	eventually(t, "error status", func() bool {
		return strings.Contains(l.status("acme"), `prefixes[0]: "203.0.113.0/33": invalid CIDR`)
	})
	l.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")

	// Drift: someone deletes the ip rules; the resync restores them.
	l.edge.MustExec(t, "ip", "rule", "del", "priority", "1600")
	eventually(t, "rule restored", func() bool {
		return strings.Contains(l.edge.MustExec(t, "ip", "rule"), "1600:")
	})

	// Delete: everything nsd made goes, nothing else.
	if out, code := l.nsctl("tenant", "delete", "acme"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	eventually(t, "namespace removed", func() bool { return !namedns.Exists(namedns.DefaultDir, l.nsPrefix+"acme") })
	eventually(t, "links, rules and map entries removed", func() bool {
		s := l.kernelState()
		return !strings.Contains(s, "nfv") && !strings.Contains(s, "1600:") && !strings.Contains(s, "elements")
	})
	if !strings.Contains(l.edge.MustExec(t, "ip", "-o", "link", "show"), "uplink") {
		t.Error("uplink disappeared")
	}
	if _, err := l.client.Exec(t, "ping", "-c1", "-W1", "203.0.113.1"); err == nil {
		t.Error("deleted tenant still answers")
	}
}

func TestConsulOutageAndMassDeleteGuard(t *testing.T) {
	l := newLab(t)
	l.startNSD("--max-delete-fraction", "0.5")
	for i, p := range []string{"203.0.113.0/26", "203.0.113.64/26", "203.0.113.128/26"} {
		l.applyTenant(fmt.Sprintf("t%d", i), fmt.Sprintf(`{"prefixes": [%q]}`, p))
	}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("t%d", i)
		eventually(t, id+" applied", func() bool { return strings.Contains(l.status(id), "applied") })
	}
	// An overlapping tenant is refused; the incumbent keeps its prefix.
	l.applyTenantRaw("intruder", `{"prefixes": ["203.0.113.0/24"]}`)
	eventually(t, "overlap error", func() bool {
		return strings.Contains(l.status("intruder"), `overlaps 203.0.113.0/26 held by tenant "t0"`)
	})
	l.consul.Client.KV().DeleteTree("nfhost/tenants/intruder/", nil)

	state := l.kernelState()
	// Consul restarts empty ("wiped store"): nothing is deleted, the hold is
	// reported, and confirming lets it through.
	l.consul.Restart(t)
	eventually(t, "held deletes reported", func() bool {
		out, _ := l.nsctl("status", "--host", l.hostID)
		return strings.Contains(out, "HOLDING deletion of 3 tenants")
	})
	if got := l.kernelState(); got != state {
		t.Fatalf("a wiped store changed the kernel:\n%s\n---\n%s", state, got)
	}
	l.confirmDeletes()
	eventually(t, "deletes after confirmation", func() bool {
		return !strings.Contains(l.edge.MustExec(t, "ip", "-o", "link", "show"), "nfv")
	})
	// nsd caught up with the restarted Consul: new writes apply.
	l.applyTenant("after", `{"prefixes": ["203.0.113.0/24"]}`)
	eventually(t, "tenant written after the outage applied", func() bool { return strings.Contains(l.status("after"), "applied") })
}

// applyTenantRaw writes the network key directly, bypassing nsctl's checks.
func (l *lab) applyTenantRaw(id, network string) {
	l.consul.Put(l.t, "nfhost/tenants/"+id+"/network", network)
}

func TestNsctlExitCodes(t *testing.T) {
	l := newLab(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write("good.json", `{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}}`)
	bad := write("bad.json", `{"id": "acme", "network": {"prefixes": ["203.0.113.0/24", "203.0.113.0/33"]}}`)
	overlap := write("overlap.json", `{"id": "other", "network": {"prefixes": ["203.0.113.128/25"]}}`)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"validate", "-f", good}, 0, "tenant acme: valid"},
		{[]string{"validate", "-f", bad}, 3, `tenants/acme/network: prefixes[1]: "203.0.113.0/33": invalid CIDR`},
		{[]string{"tenant", "apply", "-f", good}, 0, "tenants/acme/network written"},
		{[]string{"tenant", "apply", "-f", good}, 0, "unchanged"},
		{[]string{"tenant", "apply", "-f", overlap}, 3, `overlaps 203.0.113.0/24 held by tenant "acme"`},
		{[]string{"tenant", "list"}, 0, "acme    network  203.0.113.0/24"},
		{[]string{"tenant", "show", "acme"}, 0, `"prefixes"`},
		{[]string{"tenant", "show", "nobody"}, 5, "not found"},
		{[]string{"tenant", "delete", "nobody"}, 5, "not found"},
		{[]string{"tenant", "frobnicate"}, 2, ""},
		{[]string{"tenant", "delete", "acme"}, 0, "tenant acme deleted"},
	} {
		out, code := l.nsctl(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("nsctl %v: exit %d, want %d; output:\n%s\nwant substring %q", tc.args, code, tc.code, out, tc.want)
		}
	}
}

func TestNSDRefusesToRunWithoutRoot(t *testing.T) {
	nstest.RequireRoot(t)
	nsdBin, _ := binaries(t)
	cmd := exec.Command(nsdBin, "--source", "dir", "--config-dir", t.TempDir(), "--once")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "nsd must run as root") {
		t.Fatalf("nsd as nobody: %v\n%s", err, out)
	}
}
