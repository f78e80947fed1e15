package tunnels

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/internal/vmtest"
)

// requireKernelGRE skips (loudly) where the kernel has no ip_gre, except
// inside the kernel-test VM, where a missing ip_gre is a failure.
// TestKernelGREInVM runs these tests in the VM on this machine.
func requireKernelGRE(t *testing.T) {
	t.Helper()
	nstest.RequireRoot(t)
	if f := ProbeFeatures(netns.None()); !f.IPGRE {
		if vmtest.InVM() {
			t.Fatalf("the VM's kernel has no ip_gre: %v", f.IPGREErr)
		}
		t.Skipf("SKIP (this kernel has no ip_gre: %v): TestKernelGREInVM runs it in a VM", f.IPGREErr)
	}
}

// kgreLab is the kernel GRE backend's lab:
//
//	T (acme)  gre-acme1 169.254.20.0/31, gre-acme2 169.254.21.0/31 ┐ (GRE devices, underlay in E)
//	U (beta)  gre-beta1 169.254.30.0/31, gre-beta2 169.254.31.0/31 ┘
//	E (edge)  uplink 192.0.2.2 (anycast 192.0.2.10 local) ── eth0 192.0.2.1 C (internet)
//	C cust  198.51.100.1 ── eth0 198.51.100.130,.131 G (acme's Linux router: gre1, gre2; 10.9.0.1)
//	C cust2 203.0.113.1  ── eth0 203.0.113.132,.133  H (beta's Linux router: gre1, gre2; 10.9.1.1)
//
// Both tenants share the anycast endpoint; ip_gre tells them apart by
// the remote. The routers are Linux's own ip_gre in namespaces.
type kgreLab struct {
	E, C, G, H, T, U *nstest.NS
	prefix           string // namespace prefix of the tenants (recovery)
	acme, beta       TenantSpec
}

func newKGRELab(t *testing.T) *kgreLab {
	requireKernelGRE(t)
	u := nstest.Unique()
	l := &kgreLab{E: nstest.New(t, "nfK"+u+"e"), C: nstest.New(t, "nfK"+u+"c"), G: nstest.New(t, "nfK"+u+"g"), H: nstest.New(t, "nfK"+u+"h"),
		T: nstest.New(t, "nfK"+u+"-acme"), U: nstest.New(t, "nfK"+u+"-beta"), prefix: "nfK" + u + "-"}
	nstest.Link(t, l.C, "eth0", "192.0.2.1/24", l.E, "uplink", "192.0.2.2/24")
	nstest.Link(t, l.C, "cust", "198.51.100.1/24", l.G, "eth0", "198.51.100.130/24")
	nstest.Link(t, l.C, "cust2", "203.0.113.1/24", l.H, "eth0", "203.0.113.132/24")
	l.G.MustExec(t, "ip", "addr", "add", "198.51.100.131/24", "dev", "eth0")
	l.H.MustExec(t, "ip", "addr", "add", "203.0.113.133/24", "dev", "eth0")
	l.E.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
	l.E.MustExec(t, "ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.1")
	l.C.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2")
	for _, n := range []*nstest.NS{l.C, l.G, l.H, l.T, l.U} {
		n.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	for _, r := range []struct {
		ns       *nstest.NS
		gw, lo   string
		locals   [2]string
		theirs   [2]string
		loPrefix string
	}{
		{l.G, "198.51.100.1", "10.9.0.1", [2]string{"198.51.100.130", "198.51.100.131"}, [2]string{"169.254.20.1", "169.254.21.1"}, ""},
		{l.H, "203.0.113.1", "10.9.1.1", [2]string{"203.0.113.132", "203.0.113.133"}, [2]string{"169.254.30.1", "169.254.31.1"}, ""},
	} {
		r.ns.MustExec(t, "ip", "route", "add", "default", "via", r.gw)
		r.ns.MustExec(t, "ip", "addr", "add", r.lo+"/32", "dev", "lo")
		for i := range 2 {
			g := fmt.Sprintf("gre%d", i+1)
			r.ns.MustExec(t, "ip", "link", "add", g, "type", "gre", "local", r.locals[i], "remote", "192.0.2.10", "ttl", "64")
			r.ns.MustExec(t, "ip", "addr", "add", r.theirs[i]+"/31", "dev", g)
			r.ns.MustExec(t, "ip", "link", "set", g, "up")
		}
	}
	hc := func(typ, dir string) HealthSpec {
		return HealthSpec{Enabled: true, Type: typ, Direction: dir, Interval: time.Second}
	}
	a1 := tunnel("gre-acme1", "192.0.2.10", "198.51.100.130", "169.254.20.0/31", "169.254.20.1")
	a1.MSS, a1.Health = 1300, hc("reply", Unidirectional)
	a2 := tunnel("gre-acme2", "192.0.2.10", "198.51.100.131", "169.254.21.0/31", "169.254.21.1")
	a2.Health = hc("request", Unidirectional)
	b1 := tunnel("gre-beta1", "192.0.2.10", "203.0.113.132", "169.254.30.0/31", "169.254.30.1")
	b1.Health = hc("reply", Bidirectional)
	b2 := tunnel("gre-beta2", "192.0.2.10", "203.0.113.133", "169.254.31.0/31", "169.254.31.1")
	b2.Health = hc("request", Bidirectional)
	route := func(p, nh, tun string, prio int) Route {
		return Route{Prefix: netip.MustParsePrefix(p), Nexthop: netip.MustParseAddr(nh), Tunnel: tun, Priority: prio, Weight: 1}
	}
	l.acme = TenantSpec{Tenant: "acme", Namespace: l.T.Name, Tunnels: []Tunnel{a1, a2},
		Routes: []Route{route("10.9.0.0/24", "169.254.20.1", "gre-acme1", 100), route("10.9.0.0/24", "169.254.21.1", "gre-acme2", 200)}}
	l.beta = TenantSpec{Tenant: "beta", Namespace: l.U.Name, Tunnels: []Tunnel{b1, b2},
		Routes: []Route{route("10.9.1.0/24", "169.254.30.1", "gre-beta1", 100), route("10.9.1.0/24", "169.254.31.1", "gre-beta2", 200)}}
	return l
}

// reconciler is a new kernel backend and Reconciler (a "restart").
func (l *kgreLab) reconciler(t *testing.T) *Reconciler {
	t.Helper()
	kb, err := NewKernelBackend(KernelConfig{HostNS: l.E.Handle, NSPrefix: l.prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kb.Close)
	rec, err := NewReconciler(Config{HostNS: l.E.Handle, Backend: kb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rec.Close)
	return rec
}

// state is everything the backend touches, as ip and nft print it.
func (l *kgreLab) state(t *testing.T) string {
	var b strings.Builder
	for _, c := range []struct {
		ns   *nstest.NS
		args []string
	}{
		{l.E, []string{"ip", "-d", "link"}}, {l.E, []string{"ip", "route", "show", "table", "local"}}, {l.E, []string{"ip", "route"}},
		{l.T, []string{"ip", "-d", "link"}}, {l.T, []string{"ip", "addr"}}, {l.T, []string{"ip", "route"}}, {l.T, []string{"nft", "list", "ruleset"}},
		{l.U, []string{"ip", "-d", "link"}}, {l.U, []string{"ip", "addr"}}, {l.U, []string{"ip", "route"}}, {l.U, []string{"nft", "list", "ruleset"}},
	} {
		out := c.ns.MustExec(t, c.args...)
		// Counters and the devices' statistics move with the probes.
		out = regexp.MustCompile(`packets \d+ bytes \d+`).ReplaceAllString(out, "packets N bytes N")
		fmt.Fprintf(&b, "## %s: %s\n%s\n", c.ns.Name, strings.Join(c.args, " "), out)
	}
	return b.String()
}

func (l *kgreLab) ping(t *testing.T, from *nstest.NS, args ...string) error {
	out, err := from.Exec(t, append([]string{"ping", "-c2", "-i", "0.3", "-W2"}, args...)...)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, out)
	}
	return nil
}

// TestKernelGRE: the kernel GRE backend end to end against Linux routers:
// devices, the anycast endpoint made local, traffic both ways, counters,
// MSS clamping, idempotent re-apply, restart recovery, health checks of
// every type and direction, failover on a blocked path, and deletion of
// exactly what it made.
func TestKernelGRE(t *testing.T) {
	l := newKGRELab(t)
	ctx := context.Background()
	hostLinks := l.E.MustExec(t, "ip", "-br", "link")
	hostLocal := l.E.MustExec(t, "ip", "route", "show", "table", "local")
	rec := l.reconciler(t)
	for _, s := range []TenantSpec{l.acme, l.beta} {
		ch, err := rec.Apply(ctx, s)
		if err != nil {
			t.Fatalf("apply %s: %v\n%s", s.Tenant, err, strings.Join(ch, "\n"))
		}
		t.Logf("%s: changes:\n%s", s.Tenant, strings.Join(ch, "\n"))
	}

	// The devices: kernel GRE in the tenant namespace, underlay in E.
	out := l.T.MustExec(t, "ip", "-d", "link", "show", "gre-acme1")
	for _, want := range []string{"mtu 1476", "NOARP", "gre remote 198.51.100.130 local 192.0.2.10 ttl 64", "alias nfhost:tunnel=acme/gre-acme1", "link-netns"} {
		if !strings.Contains(out, want) {
			t.Errorf("gre-acme1 lacks %q:\n%s", want, out)
		}
	}
	if out := l.T.MustExec(t, "ip", "-6", "addr", "show", "dev", "gre-acme1"); strings.TrimSpace(out) != "" {
		t.Errorf("IPv6 addresses on gre-acme1:\n%s", out)
	}
	if out := l.E.MustExec(t, "ip", "-br", "link"); out != hostLinks {
		t.Errorf("host links changed:\n%s\nwas:\n%s", out, hostLinks)
	}
	if out := l.E.MustExec(t, "ip", "route", "show", "table", "local", "192.0.2.10"); !strings.Contains(out, "local 192.0.2.10 dev lo proto 110") {
		t.Errorf("anycast endpoint not local in the host: %q", out)
	}

	// Traffic both ways, both tenants, through the shared endpoint.
	if err := l.ping(t, l.T, "10.9.0.1"); err != nil {
		t.Fatalf("acme cannot reach 10.9.0.1 through gre-acme1: %v\n%s", err, l.state(t))
	}
	if err := l.ping(t, l.G, "-I", "10.9.0.1", "169.254.20.0"); err != nil {
		t.Errorf("acme's router cannot reach the tenant end of gre-acme1: %v", err)
	}
	if err := l.ping(t, l.G, "-I", "gre2", "169.254.21.0"); err != nil {
		t.Errorf("acme's router cannot reach the tenant end of gre-acme2: %v", err)
	}
	if err := l.ping(t, l.U, "10.9.1.1"); err != nil {
		t.Errorf("beta cannot reach 10.9.1.1 through gre-beta1: %v", err)
	}
	id, ok := rec.ID("acme", "gre-acme1")
	st, err := rec.Stats(id)
	if !ok || err != nil || st.RxPackets < 4 || st.TxPackets < 4 || st.RxBytes == 0 || st.TxBytes == 0 {
		t.Errorf("gre-acme1 counters: %+v (id %d %v, %v)", st, id, ok, err)
	}
	t.Logf("gre-acme1 counters: %+v", st)

	// MSS clamping: the SYN that reaches the router carries mss_clamp.
	l.G.MustExec(t, "nft", "add table inet nfKmss; add chain inet nfKmss in { type filter hook input priority 0; }; "+
		"add rule inet nfKmss in tcp flags syn tcp option maxseg size 1300 counter")
	nstest.StartResponder(t, l.G)
	if !nstest.Reach(t, l.T, "tcp", "10.9.0.1", 80) {
		t.Errorf("no TCP through gre-acme1")
	}
	if out := l.G.MustExec(t, "nft", "list", "table", "inet", "nfKmss"); !strings.Contains(out, "counter packets 1 ") && !regexp.MustCompile(`counter packets [1-9]`).MatchString(out) {
		t.Errorf("the router saw no SYN clamped to 1300:\n%s", out)
	}

	// Re-apply: nothing changes; a restarted nsd finds every device.
	before := l.state(t)
	for _, s := range []TenantSpec{l.acme, l.beta} {
		if ch, err := rec.Apply(ctx, s); err != nil || len(ch) > 0 {
			t.Errorf("re-apply %s: %v %q", s.Tenant, err, ch)
		}
	}
	rec = l.reconciler(t)
	if got := rec.Tenants(); !slices.Equal(got, []string{"acme", "beta"}) {
		t.Errorf("recovered tenants %v", got)
	}
	for _, s := range []TenantSpec{l.acme, l.beta} {
		if ch, err := rec.Apply(ctx, s); err != nil || len(ch) > 0 {
			t.Errorf("apply %s after a restart: %v %q", s.Tenant, err, ch)
		}
	}
	if after := l.state(t); after != before {
		t.Errorf("state changed by re-applies:\n%s\nwas:\n%s", after, before)
	}

	// Health checks: reply and request, unidirectional (acme) and
	// bidirectional (beta), all healthy with Linux's own GRE.
	p, cancel := startRecordingProber(t, ctx, l.E.Handle, rec, rec.Stats)
	defer p.Close()
	defer cancel()
	health := func(tenant, name string) Health {
		h, _ := p.HealthOf(tenant, name)
		return h
	}
	wait := func(what string, limit time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("timed out after %v waiting for %s; health:\n%s", limit, what, dump(p.Health()))
	}
	all := [][2]string{{"acme", "gre-acme1"}, {"acme", "gre-acme2"}, {"beta", "gre-beta1"}, {"beta", "gre-beta2"}}
	wait("every tunnel healthy", 120*time.Second, func() bool {
		for _, k := range all {
			if h := health(k[0], k[1]); h.State != StateHealthy || h.Received < 3 {
				return false
			}
		}
		return true
	})
	t.Logf("healthy:\n%s", dump(p.Health()))

	// The internet loses the path to gre-acme1's router address: down,
	// and the route moves to gre-acme2; traffic follows.
	l.C.MustExec(t, "nft", "add table inet nfKcut; add chain inet nfKcut f { type filter hook forward priority 0; }; add rule inet nfKcut f ip daddr 198.51.100.130 drop")
	wait("gre-acme1 down", 30*time.Second, func() bool { return health("acme", "gre-acme1").State == StateDown })
	wait("route on gre-acme2", 10*time.Second, func() bool {
		return strings.Contains(l.T.MustExec(t, "ip", "route", "show", "10.9.0.0/24"), "via 169.254.21.1 dev gre-acme2")
	})
	if err := l.ping(t, l.T, "10.9.0.1"); err != nil {
		t.Errorf("no traffic over gre-acme2 after failover: %v", err)
	}
	if h := health("beta", "gre-beta1"); h.State != StateHealthy {
		t.Errorf("beta's tunnel went %s with acme's path", h.State)
	}
	l.C.MustExec(t, "nft", "delete table inet nfKcut")
	wait("gre-acme1 back (degraded)", 30*time.Second, func() bool { return health("acme", "gre-acme1").State != StateDown })
	// Degraded still carries a penalty: the route returns once healthy
	// (the last 30 probes answered, about 27 s more at one a second).
	wait("gre-acme1 healthy", 120*time.Second, func() bool { return health("acme", "gre-acme1").State == StateHealthy })
	wait("route back on gre-acme1", 10*time.Second, func() bool {
		return strings.Contains(l.T.MustExec(t, "ip", "route", "show", "10.9.0.0/24"), "via 169.254.20.1 dev gre-acme1")
	})
	cancel()
	p.Close()
	if got := p.path("gre-acme1"); got != "healthy down degraded healthy" {
		t.Errorf("gre-acme1's states: %s", got)
	}

	// A restarted nsd whose config lost a tunnel removes it (and only it).
	rec = l.reconciler(t)
	one := l.acme
	one.Tunnels, one.Routes = one.Tunnels[:1], one.Routes[:1]
	ch, err := rec.Apply(ctx, one)
	if err != nil || !slices.Contains(ch, "tunnel: delete GRE device gre-acme2") {
		t.Errorf("apply without gre-acme2 after a restart: %v %q", err, ch)
	}
	if _, err := l.T.Exec(t, "ip", "link", "show", "gre-acme2"); err == nil {
		t.Errorf("gre-acme2 still there")
	}

	// Deletion: acme's devices and routes go; beta keeps the endpoint.
	if _, err := rec.Remove("acme"); err != nil {
		t.Fatal(err)
	}
	if out := l.T.MustExec(t, "ip", "-br", "link", "show", "type", "gre"); strings.Contains(out, "gre-acme") {
		t.Errorf("acme's devices left:\n%s", out)
	}
	if out := l.T.MustExec(t, "ip", "route", "show", "proto", fmt.Sprint(owned.TunnelRouteProtocol)); strings.TrimSpace(out) != "" {
		t.Errorf("acme's tunnel routes left:\n%s", out)
	}
	if out := l.E.MustExec(t, "ip", "route", "show", "table", "local", "192.0.2.10"); !strings.Contains(out, "proto 110") {
		t.Errorf("beta's anycast endpoint no longer local: %q", out)
	}
	if err := l.ping(t, l.U, "10.9.1.1"); err != nil {
		t.Errorf("beta lost its tunnel with acme's deletion: %v", err)
	}
	if _, err := rec.Remove("beta"); err != nil {
		t.Fatal(err)
	}
	if out := l.E.MustExec(t, "ip", "route", "show", "table", "local"); out != hostLocal {
		t.Errorf("host local table after deleting both tenants:\n%s\nwas:\n%s", out, hostLocal)
	}
	if out := l.E.MustExec(t, "ip", "-br", "link"); out != hostLinks {
		t.Errorf("host links after deleting both tenants:\n%s\nwas:\n%s", out, hostLinks)
	}
	if out := l.U.MustExec(t, "ip", "-br", "link", "show", "type", "gre"); strings.Contains(out, "gre-beta") {
		t.Errorf("beta's devices left:\n%s", out)
	}
}

// TestKernelGREForeign: the backend leaves what is not nfhost's alone: an
// anycast address the host already owns (no route of ours, and it stays
// after deletion), and a tenant-namespace link of the tunnel's name that
// someone else made (the apply fails naming it, nothing is created).
func TestKernelGREForeign(t *testing.T) {
	l := newKGRELab(t)
	ctx := context.Background()
	l.E.MustExec(t, "ip", "addr", "add", "192.0.2.10/32", "dev", "lo")
	l.T.MustExec(t, "ip", "link", "add", "gre-acme2", "type", "dummy")
	rec := l.reconciler(t)
	_, err := rec.Apply(ctx, l.acme)
	if err == nil || !strings.Contains(err.Error(), "gre-acme2") || !strings.Contains(err.Error(), "not nfhost's") {
		t.Fatalf("apply over a foreign gre-acme2: %v", err)
	}
	if out := l.T.MustExec(t, "ip", "-d", "link", "show", "gre-acme2"); !strings.Contains(out, "dummy") {
		t.Errorf("the foreign link was touched:\n%s", out)
	}
	l.T.MustExec(t, "ip", "link", "del", "gre-acme2")
	if _, err := rec.Apply(ctx, l.acme); err != nil {
		t.Fatal(err)
	}
	if out := l.E.MustExec(t, "ip", "route", "show", "table", "local", "192.0.2.10"); strings.Contains(out, "proto 110") {
		t.Errorf("a route of ours for an address the host owns: %q", out)
	}
	if err := l.ping(t, l.T, "10.9.0.1"); err != nil {
		t.Errorf("no traffic with the host's own anycast address: %v", err)
	}
	if _, err := rec.Remove("acme"); err != nil {
		t.Fatal(err)
	}
	if out := l.E.MustExec(t, "ip", "-br", "addr", "show", "dev", "lo"); !strings.Contains(out, "192.0.2.10/32") {
		t.Errorf("the host's own anycast address went: %s", out)
	}
}

// TestKernelGREBackendSwitch: a host that ran the eBPF backend's veth
// tunnels and now runs kernel GRE: the veth pair (with its host end) is
// replaced by the device, and back the kernel backend's routes go with
// RemoveAnycastRoutes.
func TestKernelGREBackendSwitch(t *testing.T) {
	l := newKGRELab(t)
	host := owned.TunnelIfName("acme", "gre-acme1")
	// What the eBPF backend leaves: a veth whose host end carries the alias.
	l.E.MustExec(t, "ip", "link", "add", host, "type", "veth", "peer", "name", "gre-acme1", "netns", l.T.Name)
	l.E.MustExec(t, "ip", "link", "set", host, "alias", owned.TunnelAlias("acme", "gre-acme1"))
	rec := l.reconciler(t)
	ch, err := rec.Apply(context.Background(), l.acme)
	if err != nil || !slices.ContainsFunc(ch, func(c string) bool { return strings.Contains(c, "delete eBPF veth gre-acme1") }) {
		t.Fatalf("apply over the eBPF backend's tunnel: %v %q", err, ch)
	}
	if _, err := l.E.Exec(t, "ip", "link", "show", host); err == nil {
		t.Errorf("the eBPF host end %s is still there", host)
	}
	if out := l.T.MustExec(t, "ip", "-d", "link", "show", "gre-acme1"); !strings.Contains(out, "gre remote") {
		t.Errorf("gre-acme1 is not a GRE device:\n%s", out)
	}
	if err := l.ping(t, l.T, "10.9.0.1"); err != nil {
		t.Errorf("no traffic after the switch: %v", err)
	}
	ch, err = RemoveAnycastRoutes(l.E.Handle)
	if err != nil || len(ch) != 1 {
		t.Errorf("RemoveAnycastRoutes: %v %q", err, ch)
	}
	if out := l.E.MustExec(t, "ip", "route", "show", "table", "local", "192.0.2.10"); strings.TrimSpace(out) != "" {
		t.Errorf("anycast route left: %q", out)
	}
}
