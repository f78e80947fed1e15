package tunnels

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/vmtest"
)

// TestLinuxRouterVM: the customer's router is a Linux VM terminating
// nfhost's eBPF GRE with the kernel's own ip_gre, default sysctls except
// forwarding. Every tunnel's health check uses the default settings but
// for its type and direction:
//
//	T (tenant ns) nfHa..nfHe ═ nft… ─ E (edge) uplink 192.0.2.2 ── eth0 192.0.2.1 C (internet) tap 198.51.100.1 ── VM eth0 198.51.100.130-134
//	                                                                                   VM: gre1..gre5 (ip link add type gre), 10.9.0.1 on lo
//
//	a: reply,   unidirectional   b: request, unidirectional
//	c: reply,   bidirectional    d: request, bidirectional
//	e: reply with the target the old default used (the router's own
//	   address): never answered while traffic flows, and says why; then
//	   healthy once the router sets the one sysctl the README names.
//
// All but e turn healthy; traffic and a 2 MB HTTP download cross a; the
// router's own probes of nfhost's tunnel addresses are answered through
// the tunnels; a blocked path takes a down (straight from healthy), moves
// the route to b, and a recovers through degraded after 3 answered probes
// and to healthy after the last 30 answered, the documented figures.
// Last, strict rp_filter on the router: a and d pass, b and c do not.
func TestLinuxRouterVM(t *testing.T) {
	vmtest.Require(t)
	u := nstest.Unique()
	E, C, T := nstest.New(t, "nfH"+u+"e"), nstest.New(t, "nfH"+u+"c"), nstest.New(t, "nfH"+u+"t")
	nstest.Link(t, C, "eth0", "192.0.2.1/24", E, "uplink", "192.0.2.2/24")
	tap := "nfH" + u + "tap"
	C.MustExec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	C.MustExec(t, "ip", "addr", "add", "198.51.100.1/24", "dev", tap)
	C.MustExec(t, "ip", "link", "set", tap, "up")
	C.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2")
	C.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	E.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	T.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	vm := vmtest.Start(t, vmtest.Config{NSPath: C.Path(), Tap: tap, Addr: "198.51.100.130/24", Gateway: "198.51.100.1",
		Forward: true, TempPrefix: "nfH"})
	vm.MustRun(t, "ip addr add 10.9.0.1/32 dev lo")
	type tun struct {
		name, typ, dir string
		customer       string
		ours, theirs   string // interface addresses
		target         string
	}
	tuns := []tun{
		{"nfHa", "reply", Unidirectional, "198.51.100.130", "169.254.20.0", "169.254.20.1", ""},
		{"nfHb", "request", Unidirectional, "198.51.100.131", "169.254.21.0", "169.254.21.1", ""},
		{"nfHc", "reply", Bidirectional, "198.51.100.132", "169.254.22.0", "169.254.22.1", ""},
		{"nfHd", "request", Bidirectional, "198.51.100.133", "169.254.23.0", "169.254.23.1", ""},
		{"nfHe", "reply", Unidirectional, "198.51.100.134", "169.254.24.0", "169.254.24.1", "198.51.100.134"},
	}
	spec := TenantSpec{Tenant: "nfh" + u, Namespace: T.Name}
	for i, x := range tuns {
		if i > 0 {
			vm.MustRun(t, "ip addr add "+x.customer+"/24 dev eth0")
		}
		g := fmt.Sprintf("gre%d", i+1)
		vm.MustRun(t, fmt.Sprintf("ip link add %s type gre local %s remote 192.0.2.10 ttl 64 && ip addr add %s/31 dev %s && ip link set %s up",
			g, x.customer, x.theirs, g, g))
		tu := tunnel(x.name, "192.0.2.10", x.customer, x.ours+"/31", x.theirs)
		tu.Health = HealthSpec{Enabled: true, Type: x.typ, Direction: x.dir, Interval: time.Second} // rate mid, the default
		if x.target != "" {
			tu.Health.Target = netip.MustParseAddr(x.target)
		}
		spec.Tunnels = append(spec.Tunnels, tu)
	}
	spec.Routes = []Route{
		{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Nexthop: netip.MustParseAddr("169.254.20.1"), Tunnel: "nfHa", Priority: 100, Weight: 1},
		{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Nexthop: netip.MustParseAddr("169.254.21.1"), Tunnel: "nfHb", Priority: 200, Weight: 1},
	}
	// The router reaches nfhost's side of tunnel a for the download.
	if out := vm.MustRun(t, "sysctl -n net.ipv4.conf.all.rp_filter net.ipv4.conf.all.accept_local net.ipv4.conf.gre5.accept_local"); out != "0\n0\n0" {
		t.Fatalf("guest sysctls are not the kernel's defaults: %q", out)
	}

	pin := filepath.Join(bpfpin.BPFFS, "nfH-"+u, "tunnels")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(pin)) })
	t.Cleanup(func() { Detach(pin) })
	dp, err := Load(LoadConfig{PinDir: pin, HostNS: E.Handle, Uplink: "uplink"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	rec, err := NewReconciler(Config{HostNS: E.Handle, Datapath: dp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Close)
	if _, err := rec.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}

	p, cancel := startRecordingProber(t, context.Background(), E.Handle, rec, dp.Stats)
	defer p.Close()
	defer cancel()
	health := func(name string) Health {
		h, _ := p.HealthOf(spec.Tenant, name)
		return h
	}
	wait := func(what string, limit time.Duration, cond func() bool) time.Time {
		t.Helper()
		for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if cond() {
				return time.Now()
			}
		}
		t.Fatalf("timed out after %v waiting for %s; health:\n%s", limit, what, dump(p.Health()))
		return time.Time{}
	}
	// The router sends traffic through tunnel e (answered by nfhost), so
	// e's hint can tell the tunnel works while its probes do not.
	vm.MustRun(t, "ping -c3 -W2 -I gre5 169.254.24.0")

	wait("a..d healthy", 60*time.Second, func() bool {
		for _, x := range tuns[:4] {
			if h := health(x.name); h.State != StateHealthy || h.Received < 3 {
				return false
			}
		}
		return true
	})
	t.Logf("healthy with default settings:\n%s", dump(p.Health()))
	for _, x := range tuns[:4] {
		h := health(x.name)
		if h.Type != x.typ || h.Direction != x.dir {
			t.Errorf("%s: type/direction %s/%s", x.name, h.Type, h.Direction)
		}
	}
	if h := health("nfHc"); h.Target != netip.MustParseAddr("192.0.2.2") || h.Reply != netip.MustParseAddr("169.254.22.0") {
		t.Errorf("bidirectional reply addresses: %s -> %s", h.Target, h.Reply)
	}
	if h := health("nfHa"); h.Target != netip.MustParseAddr("169.254.20.0") || h.Reply != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("unidirectional reply addresses: %s -> %s", h.Target, h.Reply)
	}

	// e: the reply from the router's own address is dropped as a martian;
	// the tunnel carries traffic; the reason says what to change.
	wait("e down with the reason", 20*time.Second, func() bool {
		h := health("nfHe")
		return h.State == StateDown && strings.Contains(h.Reason, "accept_local")
	})
	t.Logf("e: %s", health("nfHe").Reason)
	vm.MustRun(t, "sysctl -qw net.ipv4.conf.gre5.accept_local=1")
	wait("e up after accept_local=1", 20*time.Second, func() bool { return health("nfHe").Received > 0 && health("nfHe").State != StateDown })

	// Bidirectional: the router's own probes of nfhost's tunnel addresses
	// are answered through the tunnels.
	for i, x := range tuns {
		if out, err := vm.Run(30*time.Second, fmt.Sprintf("ping -c2 -W2 -I gre%d %s", i+1, x.ours)); err != nil {
			t.Errorf("the router's probe of %s over gre%d: %v\n%s", x.ours, i+1, err, out)
		}
	}
	// Traffic through a (the primary): both ways, and a 2 MB download.
	if out, err := T.Exec(t, "ping", "-c2", "-W2", "10.9.0.1"); err != nil {
		t.Fatalf("tenant namespace cannot reach the router behind tunnel a: %v\n%s", err, out)
	}
	if !strings.Contains(T.MustExec(t, "ip", "route", "show", "10.9.0.0/24"), "169.254.20.1") {
		t.Fatalf("route not on tunnel a: %s", T.MustExec(t, "ip", "route"))
	}
	download(t, T, vm)

	// The internet loses the path to a's customer endpoint.
	C.MustExec(t, "nft", "add table inet nfHcut; add chain inet nfHcut f { type filter hook forward priority 0; }; add rule inet nfHcut f ip daddr 198.51.100.130 drop")
	blocked := time.Now()
	wait("a down", 20*time.Second, func() bool { return health("nfHa").State == StateDown })
	down := health("nfHa")
	wait("route on b", 10*time.Second, func() bool {
		return strings.Contains(T.MustExec(t, "ip", "route", "show", "10.9.0.0/24"), "169.254.21.1")
	})
	if out, err := T.Exec(t, "ping", "-c2", "-W2", "10.9.0.1"); err != nil {
		t.Fatalf("no traffic over tunnel b: %v\n%s", err, out)
	}
	C.MustExec(t, "nft", "delete table inet nfHcut")
	unblocked := time.Now()
	wait("a degraded", 20*time.Second, func() bool { return health("nfHa").State == StateDegraded })
	degraded := health("nfHa")
	wait("a healthy", 120*time.Second, func() bool { return health("nfHa").State == StateHealthy })
	healthy := health("nfHa")
	wait("route back on a", 10*time.Second, func() bool {
		return strings.Contains(T.MustExec(t, "ip", "route", "show", "10.9.0.0/24"), "169.254.20.1")
	})
	t.Logf("a: blocked -> down %v (%s); unblocked -> degraded %v (%s); degraded -> healthy %v (%s)",
		down.Since.Sub(blocked).Round(time.Millisecond), down.Reason,
		degraded.Since.Sub(unblocked).Round(time.Millisecond), degraded.Reason,
		healthy.Since.Sub(degraded.Since).Round(time.Millisecond), healthy.Reason)

	// The path a took: healthy -> down (not through degraded) -> degraded
	// -> healthy, and the documented counts behind each step.
	if got := p.path("nfHa"); got != "healthy down degraded healthy" {
		t.Errorf("a's states: %s", got)
	}
	if !strings.Contains(down.Reason, "probes of the last 1s lost") {
		t.Errorf("down reason: %s", down.Reason)
	}
	if !strings.Contains(degraded.Reason, "3 probes answered in a row") {
		t.Errorf("degraded reason: %s", degraded.Reason)
	}
	// Healthy needs the last 30 probes answered; 3 were at degraded, and
	// the other 27 at one a second (mid) take at least 26 s.
	if d := healthy.Since.Sub(degraded.Since); d < 26*time.Second || !strings.Contains(healthy.Reason, "last 30 probes answered") {
		t.Errorf("degraded -> healthy after %v (%s), want the 27 more probes of the last 30 (>= 26 s at mid)", d, healthy.Reason)
	}
	if healthy.LastFailure.IsZero() || healthy.Lost == 0 || healthy.Probes < 30 {
		t.Errorf("window after recovery: %+v", healthy)
	}

	// Strict reverse-path filtering on the router: the defaults whose
	// answer's source the router routes through the tunnel (a's reply from
	// nfhost's tunnel address, d's request from it) still pass; b's
	// request and c's reply come from the probe address, which the router
	// routes over the internet, and need rp_filter 0 or 2 (loose).
	vm.MustRun(t, "sysctl -qw net.ipv4.conf.all.rp_filter=1")
	wait("b and c down under strict rp_filter", 20*time.Second, func() bool {
		return health("nfHb").State == StateDown && health("nfHc").State == StateDown
	})
	before := map[string]uint64{"nfHa": health("nfHa").Received, "nfHd": health("nfHd").Received}
	time.Sleep(3 * time.Second)
	for name, n := range before {
		if h := health(name); h.State != StateHealthy || h.Received < n+2 {
			t.Errorf("%s under strict rp_filter: %s, %d answered (had %d)", name, h.State, h.Received, n)
		}
	}
}

// download fetches 2 MB from a server in the tenant namespace on nfhost's
// side of tunnel a with the router's wget (full-size segments, MSS clamped).
func download(t *testing.T, T *nstest.NS, vm *vmtest.VM) {
	t.Helper()
	nstest.RequireTool(t, "python3")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "blob"), make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// Port 28650: this test's range.
	srv := startIn(t, T, "python3", "-m", "http.server", "--bind", "169.254.20.0", "--directory", dir, "28650")
	defer srv()
	var out string
	var err error
	for i := 0; i < 20; i++ {
		if out, err = vm.Run(60*time.Second, "wget -q -O /tmp/blob http://169.254.20.0:28650/blob && wc -c </tmp/blob"); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(2<<20) {
		t.Fatalf("2 MB download through the tunnel: %v %q", err, out)
	}
}

func dump(hs []Health) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "  %s %s/%s: %s (%s) sent %d answered %d, window %d lost %d, rtt %v\n", h.Tunnel, h.Type, h.Direction,
			h.State, h.Reason, h.Sent, h.Received, h.Probes, h.Lost, h.RTT)
	}
	return b.String()
}

// startIn starts a background command in ns and returns a func that kills
// it (by its own pid) and waits for it.
func startIn(t *testing.T, ns *nstest.NS, args ...string) func() {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", args, ns.Name, err)
	}
	done := false
	stop := func() {
		if !done {
			done = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(stop)
	return stop
}
