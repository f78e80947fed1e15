package tunnels

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
)

// gretest is the tunnel lab of the kernel tests:
//
//	T (tenant ns) gre1 169.254.20.0/31 ═ nft… ─ E (edge) uplink 192.0.2.2 ── eth0 192.0.2.1 C (internet)
//	C cust 198.51.100.1 ── eth0 198.51.100.130 G (customer GRE box) nft… ═ gre1 169.254.20.1/31 L (customer router, 10.9.0.1)
type gretest struct {
	E, C, G, T, L *nstest.NS
	dp            *Datapath
	rec           *Reconciler
	cust          *Customer
	spec          TenantSpec
}

var (
	tAnycast  = netip.MustParseAddr("192.0.2.10")
	tCustomer = netip.MustParseAddr("198.51.100.130")
)

func tunnel(name, local, remote, addr, peer string) Tunnel {
	return Tunnel{Name: name, Local: netip.MustParseAddr(local), Remote: netip.MustParseAddr(remote),
		Addr: netip.MustParsePrefix(addr), Peer: netip.MustParseAddr(peer), MTU: 1476, TTL: 64, MSS: 1436}
}

func newGRETest(t testing.TB) *gretest { return newGRETestMode(t, AttachAuto) }

// newGRETestMode is newGRETest with both ends' programs attached by mode.
func newGRETestMode(t testing.TB, mode AttachMode) *gretest {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	g := &gretest{E: nstest.New(t, "nfG"+u+"e"), C: nstest.New(t, "nfG"+u+"c"), G: nstest.New(t, "nfG"+u+"g"),
		T: nstest.New(t, "nfG"+u+"t"), L: nstest.New(t, "nfG"+u+"l")}
	nstest.Link(t, g.C, "eth0", "192.0.2.1/24", g.E, "uplink", "192.0.2.2/24")
	nstest.Link(t, g.C, "cust", "198.51.100.1/24", g.G, "eth0", "198.51.100.130/24")
	g.E.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	g.C.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2")
	g.C.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	g.G.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.1")
	g.L.MustExec(t, "ip", "addr", "add", "10.9.0.1/32", "dev", "lo")
	g.L.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1") // a router
	g.T.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	pin := filepath.Join(bpfpin.BPFFS, "nfhost-test-"+u, "tunnels")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(pin)) }) // runs after the Detach calls below
	t.Cleanup(func() { Detach(pin) })
	dp, err := Load(LoadConfig{PinDir: pin, HostNS: g.E.Handle, Uplink: "uplink", Attach: mode})
	if mode == AttachTCX && errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("SKIP (this kernel has no tcx, Linux 6.6+: the tc mode and kernel GRE run here): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	rec, err := NewReconciler(Config{HostNS: g.E.Handle, Datapath: dp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Close)
	g.dp, g.rec = dp, rec
	cpin := filepath.Join(bpfpin.BPFFS, "nfhost-test-"+u, "customer")
	t.Cleanup(func() { Detach(cpin) })
	cust, err := StartCustomer(context.Background(), CustomerConfig{HostNS: g.G.Handle, Uplink: "eth0", PinDir: cpin, Inner: g.L.Name, Attach: mode,
		Tunnels: []Tunnel{tunnel("gre1", "198.51.100.130", "192.0.2.10", "169.254.20.1/31", "169.254.20.0")},
		Routes:  []Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Nexthop: netip.MustParseAddr("169.254.20.0"), Tunnel: "gre1", Priority: 100, Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cust.Close)
	g.cust = cust
	g.spec = TenantSpec{Tenant: "acme", Namespace: g.T.Name,
		Tunnels: []Tunnel{tunnel("gre-acme1", "192.0.2.10", "198.51.100.130", "169.254.20.0/31", "169.254.20.1")},
		Routes:  []Route{{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Nexthop: netip.MustParseAddr("169.254.20.1"), Tunnel: "gre-acme1", Priority: 100, Weight: 1}}}
	return g
}

func (g *gretest) ping(t testing.TB, from *nstest.NS, args ...string) bool {
	_, err := from.Exec(t, append([]string{"ping", "-c2", "-i", "0.2", "-W1"}, args...)...)
	return err == nil
}

// TestTunnelKernel runs the GRE datapath end to end attached both ways:
// tcx links (6.6+) and tc clsact filters (the fallback on older kernels).
func TestTunnelKernel(t *testing.T) {
	for _, mode := range []AttachMode{AttachTCX, AttachTC} {
		t.Run(string(mode), func(t *testing.T) { testTunnelKernel(t, mode) })
	}
}

func testTunnelKernel(t *testing.T, mode AttachMode) {
	g := newGRETestMode(t, mode)
	if g.dp.Mode() != mode {
		t.Fatalf("datapath attached by %q, want %q", g.dp.Mode(), mode)
	}
	ch, err := g.rec.Apply(context.Background(), g.spec)
	if err != nil {
		t.Fatal(err)
	}
	// Each mode leaves its own kind of attachment and none of the other.
	filters := g.E.MustExec(t, "tc", "filter", "show", "dev", "uplink", "ingress")
	_, pinErr := os.Stat(filepath.Join(g.dp.cfg.PinDir, "decap"))
	if mode == AttachTC && (!strings.Contains(filters, "nfhost_gre_decap") || pinErr == nil) {
		t.Errorf("tc mode: filters %q, decap link pinned: %v", filters, pinErr == nil)
	}
	if mode == AttachTCX && (strings.Contains(filters, "nfhost_gre") || pinErr != nil) {
		t.Errorf("tcx mode: filters %q, pin: %v", filters, pinErr)
	}
	t.Logf("changes:\n%s", strings.Join(ch, "\n"))
	if !g.ping(t, g.T, "10.9.0.1") {
		t.Log(g.T.MustExec(t, "ip", "-d", "link"), g.T.MustExec(t, "ip", "route"))
		t.Fatal("tenant namespace cannot reach 10.9.0.1 behind the customer router through GRE")
	}
	// Both directions: the customer router starts a flow too.
	if !g.ping(t, g.L, "-I", "10.9.0.1", "169.254.20.0") {
		t.Fatal("customer router cannot reach the tenant end of the tunnel")
	}
	id, _ := g.rec.ID("acme", "gre-acme1")
	st, err := g.dp.Stats(id)
	if err != nil || st.TxPackets < 4 || st.RxPackets < 4 {
		t.Errorf("edge tunnel counters: %+v (%v)", st, err)
	}
	cs, _ := g.cust.Stats("gre1")
	if cs.TxPackets < 4 || cs.RxPackets < 4 {
		t.Errorf("customer tunnel counters: %+v", cs)
	}
	out := g.T.MustExec(t, "ip", "-d", "link", "show", "gre-acme1")
	if !strings.Contains(out, "mtu 1476") || !strings.Contains(out, "NOARP") {
		t.Errorf("tunnel interface:\n%s", out)
	}
	if out := g.T.MustExec(t, "nft", "list", "table", "inet", owned.TunnelNFTTable); !strings.Contains(out, "maxseg size set 1436") {
		t.Errorf("no MSS clamping:\n%s", out)
	}

	// Full-size TCP through the tunnel, both directions (MSS clamped).
	if _, err := exec.LookPath("iperf3"); err == nil {
		srv := exec.Command("nsenter", "--net="+g.L.Path(), "--", "iperf3", "-s", "-B", "10.9.0.1", "-1")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer srv.Process.Kill()
		time.Sleep(300 * time.Millisecond)
		out, err := g.T.Exec(t, "iperf3", "-c", "10.9.0.1", "-t", "1", "--bidir", "-J")
		if err != nil {
			t.Fatalf("iperf3 through the tunnel: %v\n%s", err, out)
		}
		var res struct {
			End struct {
				SumSent struct {
					Bytes uint64 `json:"bytes"`
				} `json:"sum_sent"`
			} `json:"end"`
		}
		if json.Unmarshal([]byte(out), &res); res.End.SumSent.Bytes < 1<<20 {
			t.Errorf("iperf3 moved only %d bytes through the tunnel", res.End.SumSent.Bytes)
		}
		srv.Wait()
	} else {
		t.Log("SKIP iperf3 part: iperf3 not installed (make test installs it)")
	}

	// The loader restarting (nsd restarted): the pinned decap and encap
	// links are kept as they are, traffic flows on.
	dp2, err := Load(LoadConfig{PinDir: g.dp.cfg.PinDir, HostNS: g.E.Handle, Uplink: "uplink", Attach: mode})
	if err != nil {
		t.Fatal(err)
	}
	if !dp2.Reused || dp2.Upgraded {
		t.Errorf("a restart of the same build changed the decap link (reused=%v upgraded=%v)", dp2.Reused, dp2.Upgraded)
	}
	dp2.Close()
	if !g.ping(t, g.T, "10.9.0.1") {
		t.Fatal("traffic stopped after the loader restarted")
	}

	// Idempotent, also across a restart (a new Reconciler on the pins).
	if ch, err := g.rec.Apply(context.Background(), g.spec); err != nil || len(ch) != 0 {
		t.Fatalf("re-apply changed %v (%v)", ch, err)
	}
	rec2, err := NewReconciler(Config{HostNS: g.E.Handle, Datapath: g.dp})
	if err != nil {
		t.Fatal(err)
	}
	defer rec2.Close()
	if ch, err := rec2.Apply(context.Background(), g.spec); err != nil || len(ch) != 0 {
		t.Fatalf("apply after restart changed %v (%v)", ch, err)
	}
	if id2, _ := rec2.ID("acme", "gre-acme1"); id2 != id {
		t.Errorf("tunnel id changed across restart: %d -> %d", id, id2)
	}

	// A tenant without tunnels costs nothing: its namespace is not even
	// opened (this one does not exist).
	if ch, err := rec2.Apply(context.Background(), TenantSpec{Tenant: "plain", Namespace: "nfG-does-not-exist"}); err != nil || len(ch) != 0 {
		t.Fatalf("empty spec of a tenant without tunnels: %v %v", ch, err)
	}

	// The config dropping the tunnel removes its interface, pins, routes
	// and MSS table (tenant deletion goes through Remove, in e2e).
	if _, err := rec2.Apply(context.Background(), TenantSpec{Tenant: "acme", Namespace: g.T.Name}); err != nil {
		t.Fatal(err)
	}
	if out, _ := g.T.Exec(t, "nft", "list", "tables"); strings.Contains(out, owned.TunnelNFTTable) {
		t.Errorf("MSS table left behind:\n%s", out)
	}
	if out, _ := g.T.Exec(t, "ip", "link", "show", "gre-acme1"); !strings.Contains(out, "does not exist") {
		t.Errorf("tunnel interface left behind:\n%s", out)
	}
	if g.ping(t, g.T, "10.9.0.1") {
		t.Error("traffic still flows after the tunnel was removed")
	}
	if mode == AttachTC {
		if err := DetachTC(g.E.Handle, "uplink"); err != nil {
			t.Fatal(err)
		}
		if f := g.E.MustExec(t, "tc", "filter", "show", "dev", "uplink", "ingress"); strings.Contains(f, "nfhost_gre") {
			t.Errorf("DetachTC left a filter: %s", f)
		}
	}
}

// TestFailover: a backup tunnel (larger priority value) carries the
// traffic while the first one fails its health checks, and the traffic
// returns after the first recovers.
func TestFailover(t *testing.T) {
	g := newGRETest(t)
	// The tenant namespace reaches the edge's own address (the probe
	// address) the way nsd's host veth lets it.
	nstest.Link(t, g.T, "host0", "169.254.100.2/32", g.E, "nfvtest", "169.254.100.1/32")
	g.T.MustExec(t, "ip", "route", "add", "default", "via", "169.254.100.1", "dev", "host0", "onlink")
	// A second customer endpoint and tunnel.
	g.G.MustExec(t, "ip", "addr", "add", "198.51.100.131/24", "dev", "eth0")
	custTunnels := []Tunnel{tunnel("gre1", "198.51.100.130", "192.0.2.10", "169.254.20.1/31", "169.254.20.0"),
		tunnel("gre2", "198.51.100.131", "192.0.2.10", "169.254.21.1/31", "169.254.21.0")}
	if _, err := g.cust.Apply(context.Background(), g.L.Name, custTunnels, []Route{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Nexthop: netip.MustParseAddr("169.254.20.0"), Tunnel: "gre1", Priority: 100, Weight: 1}}); err != nil {
		t.Fatal(err)
	}
	hc := HealthSpec{Enabled: true, Type: "reply", Interval: 100 * time.Millisecond}
	t1 := tunnel("gre-acme1", "192.0.2.10", "198.51.100.130", "169.254.20.0/31", "169.254.20.1")
	t1.Health, t1.Health.Target = hc, netip.MustParseAddr("198.51.100.130")
	t2 := tunnel("gre-acme2", "192.0.2.10", "198.51.100.131", "169.254.21.0/31", "169.254.21.1")
	// A request probe's target must be the router's own address; in this
	// lab the customer endpoint is the GRE box's, the router's is the
	// tunnel's far side.
	t2.Health, t2.Health.Target = hc, netip.MustParseAddr("169.254.21.1")
	t2.Health.Type = "request"
	g.spec.Tunnels = []Tunnel{t1, t2}
	g.spec.Routes = append(g.spec.Routes, Route{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Nexthop: netip.MustParseAddr("169.254.21.1"),
		Tunnel: "gre-acme2", Priority: 200, Weight: 1})
	if _, err := g.rec.Apply(context.Background(), g.spec); err != nil {
		t.Fatal(err)
	}
	p, err := NewProber(g.E.Handle, netip.MustParseAddr("192.0.2.2"), g.rec, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Run(ctx)
	state := func(name string) string {
		for _, h := range p.Health() {
			if h.Tunnel == name {
				return h.State
			}
		}
		return ""
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for i := 0; i < 150; i++ {
			if cond() {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s; health %+v\nroutes:\n%s", what, p.Health(), g.T.MustExec(t, "ip", "route"))
	}
	via := func() string { return g.T.MustExec(t, "ip", "route", "show", "10.9.0.0/24") }
	wait("probes answered on both tunnels", func() bool {
		hs := p.Health()
		return len(hs) == 2 && hs[0].Received >= 3 && hs[1].Received >= 3 && hs[0].State == StateHealthy && hs[1].State == StateHealthy
	})
	if !strings.Contains(via(), "169.254.20.1") || !g.ping(t, g.T, "10.9.0.1") {
		t.Fatalf("primary tunnel not in use: %s", via())
	}
	// The internet loses the path to the first customer endpoint.
	g.C.MustExec(t, "nft", "add table inet cut; add chain inet cut f { type filter hook forward priority 0; }; add rule inet cut f ip daddr 198.51.100.130 drop")
	wait("primary down", func() bool { return state("gre-acme1") == StateDown })
	wait("route on the backup", func() bool { return strings.Contains(via(), "169.254.21.1") })
	id2, _ := g.rec.ID("acme", "gre-acme2")
	before, _ := g.dp.Stats(id2)
	if !g.ping(t, g.T, "10.9.0.1") {
		t.Fatal("no traffic over the backup tunnel")
	}
	if after, _ := g.dp.Stats(id2); after.TxPackets <= before.TxPackets {
		t.Error("the backup tunnel carried nothing")
	}
	// Applies while the prober runs (nsd's resyncs do this every few
	// seconds): the reconciler asks the prober for penalties under its
	// own lock while the prober reads tunnel IDs; they must not deadlock.
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 200 && err == nil; i++ {
			_, err = g.rec.Apply(context.Background(), g.spec)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("apply while probing: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("200 applies did not finish in 30 s while the prober ran: the reconciler and the prober deadlock")
	}
	// The path heals: after a sustained healthy period traffic returns.
	g.C.MustExec(t, "nft", "delete table inet cut")
	wait("primary healthy", func() bool { return state("gre-acme1") == StateHealthy })
	wait("route back on the primary", func() bool { return strings.Contains(via(), "169.254.20.1") })
	if !g.ping(t, g.T, "10.9.0.1") {
		t.Fatal("no traffic after recovery")
	}
}

// TestECMPRoute: two tunnels at the same priority make one weighted
// multipath route, rewritten by nothing on a second apply.
func TestECMPRoute(t *testing.T) {
	g := newGRETest(t)
	g.G.MustExec(t, "ip", "addr", "add", "198.51.100.131/24", "dev", "eth0")
	t2 := tunnel("gre-acme2", "192.0.2.10", "198.51.100.131", "169.254.21.0/31", "169.254.21.1")
	g.spec.Tunnels = append(g.spec.Tunnels, t2)
	g.spec.Routes[0].Weight = 1
	g.spec.Routes = append(g.spec.Routes, Route{Prefix: netip.MustParsePrefix("10.9.0.0/24"), Nexthop: netip.MustParseAddr("169.254.21.1"),
		Tunnel: "gre-acme2", Priority: 100, Weight: 3})
	if _, err := g.rec.Apply(context.Background(), g.spec); err != nil {
		t.Fatal(err)
	}
	out := g.T.MustExec(t, "ip", "route", "show", "10.9.0.0/24")
	if !strings.Contains(out, "nexthop via 169.254.20.1 dev gre-acme1 weight 1") || !strings.Contains(out, "nexthop via 169.254.21.1 dev gre-acme2 weight 3") {
		t.Fatalf("no weighted multipath route:\n%s", out)
	}
	if ch, err := g.rec.Apply(context.Background(), g.spec); err != nil || len(ch) != 0 {
		t.Fatalf("re-apply changed %v (%v)", ch, err)
	}
	if got := g.T.MustExec(t, "sysctl", "-n", "net.ipv4.fib_multipath_hash_policy"); strings.TrimSpace(got) != "1" {
		t.Errorf("multipath hash policy %q, want 1 (5-tuple)", got)
	}
}
