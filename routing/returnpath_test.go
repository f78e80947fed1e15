package routing_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/routing"
)

// A tenant's replies do not depend on the host's routing table nor on its
// host-wide rp_filter: the edge has no default route and nothing covering
// the tenant's prefixes (only the connected route to the client), and
// net.ipv4.conf.all.rp_filter is strict, yet ping and TCP from the client
// reach the tenant, also with the host veth itself set to strict.
//
//	client 192.0.2.1/24 ── 192.0.2.2/24 edge (no default route) ── nfv… ═ host0 [tenant] 203.0.113.1
func TestReturnPathWithoutHostRoute(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	tp.edge.MustExec(t, "ip", "route", "del", "default")
	tp.edge.MustExec(t, "ip", "-6", "route", "del", "default")
	tp.edge.MustExec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	if out, err := tp.edge.Exec(t, "ip", "route", "get", "203.0.113.1"); err == nil {
		t.Fatalf("the edge routes the tenant prefix by itself: %s", out)
	}
	spec := tp.spec("acme", 7, "203.0.113.0/24", "2001:db8:1::/48")
	mustApply(t, tp.rec, spec)
	tn := tp.tenantNS(t, spec)
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	nstest.StartResponder(t, tn)

	reach := func(when string) {
		t.Helper()
		for _, c := range []struct {
			proto, addr string
			port        int
		}{{"icmp", "203.0.113.1", 0}, {"tcp", "203.0.113.1", 80}, {"icmp", "2001:db8:1::1", 0}, {"tcp", "2001:db8:1::1", 80}} {
			ok := false
			for i := 0; i < 3 && !ok; i++ {
				ok = nstest.Reach(t, tp.client, c.proto, c.addr, c.port)
			}
			if !ok {
				t.Errorf("%s: %s %s:%d from the client fails", when, c.proto, c.addr, c.port)
			}
		}
	}
	reach("loose rp_filter on the host veth")
	// No neighbour resolution across the veth: both ends are permanent.
	if out := tn.MustExec(t, "ip", "-4", "neigh", "show", "dev", spec.NSIf); !strings.Contains(out, "169.254.100.1 lladdr") || !strings.Contains(out, "PERMANENT") {
		t.Errorf("tenant side neighbour of the host end: %q", out)
	}
	if out := tp.edge.MustExec(t, "ip", "-4", "neigh", "show", "dev", spec.HostIf); !strings.Contains(out, "169.254.100.2 lladdr") || !strings.Contains(out, "PERMANENT") {
		t.Errorf("host side neighbour of the tenant end: %q", out)
	}
	// Strict reverse-path filtering on the host veth passes too.
	tp.edge.MustExec(t, "sysctl", "-qw", "net.ipv4.conf."+spec.HostIf+".rp_filter=1")
	reach("strict rp_filter on the host veth")
	tp.edge.MustExec(t, "sysctl", "-qw", "net.ipv4.conf."+spec.HostIf+".rp_filter=2")

	// Converged: nothing to do, also after a restart.
	if ch := mustApply(t, tp.rec, spec); len(ch) != 0 {
		t.Errorf("second Apply changed the kernel: %v", ch)
	}
	rec2, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rec2.Close()
	if _, err := rec2.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ch := mustApply(t, rec2, spec); len(ch) != 0 {
		t.Errorf("Apply after restart changed the kernel: %v", ch)
	}
}

// returnRoutes lists the return table.
func returnRoutes(t *testing.T, tp *topo) string {
	t.Helper()
	out, err := tp.edge.Exec(t, "ip", "route", "show", "table", fmt.Sprint(owned.ReturnTable))
	if err != nil && !strings.Contains(out, "does not exist") {
		t.Fatalf("ip route show table %d: %v\n%s", owned.ReturnTable, err, out)
	}
	if err != nil {
		return ""
	}
	return out
}

// The return routes follow the tenant's prefixes, go with the tenant, and
// GC removes those of no live tenant; the rule selecting the table is
// repaired by Observe.
func TestReturnRoutesFollowTenants(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	ctx := context.Background()
	a := tp.spec("alpha", 1, "203.0.113.0/25", "2001:db8:1::/48")
	b := tp.spec("beta", 2, "203.0.113.128/25", "198.51.100.0/24")
	mustApply(t, tp.rec, a)
	mustApply(t, tp.rec, b)
	want := func(lines ...string) {
		t.Helper()
		got := returnRoutes(t, tp)
		for _, l := range lines {
			if !strings.Contains(got, l) {
				t.Errorf("return table lacks %q:\n%s", l, got)
			}
		}
		if n := strings.Count(got, "\n"); n != len(lines) {
			t.Errorf("return table has %d routes, want %d:\n%s", n, len(lines), got)
		}
	}
	want("203.0.113.0/25 via 169.254.100.2 dev "+a.HostIf, "203.0.113.128/25 via 169.254.100.2 dev "+b.HostIf, "198.51.100.0/24 via 169.254.100.2 dev "+b.HostIf)
	rule := fmt.Sprintf("%d:\tfrom all lookup %d", owned.ReturnRulePriority, owned.ReturnTable)
	if got := tp.edge.MustExec(t, "ip", "rule"); strings.Count(got, rule) != 1 {
		t.Errorf("ip rule lacks exactly one %q:\n%s", rule, got)
	}

	// A prefix moves from beta to alpha.
	a = tp.spec("alpha", 1, "203.0.113.0/25", "198.51.100.0/24")
	b = tp.spec("beta", 2, "203.0.113.128/25")
	mustApply(t, tp.rec, b)
	mustApply(t, tp.rec, a)
	want("203.0.113.0/25 via 169.254.100.2 dev "+a.HostIf, "203.0.113.128/25 via 169.254.100.2 dev "+b.HostIf, "198.51.100.0/24 via 169.254.100.2 dev "+a.HostIf)

	// Drift: the rule and a route are deleted, a foreign route is added.
	tp.edge.MustExec(t, "ip", "rule", "del", "priority", fmt.Sprint(owned.ReturnRulePriority))
	tp.edge.MustExec(t, "ip", "route", "del", "203.0.113.0/25", "table", fmt.Sprint(owned.ReturnTable))
	tp.edge.MustExec(t, "ip", "route", "add", "192.0.2.128/25", "dev", "uplink", "table", fmt.Sprint(owned.ReturnTable))
	if _, err := tp.rec.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	if got := tp.edge.MustExec(t, "ip", "rule"); strings.Count(got, rule) != 1 {
		t.Errorf("Observe did not restore the return rule:\n%s", got)
	}
	if ch := mustApply(t, tp.rec, a); len(ch) != 1 {
		t.Errorf("Apply after a deleted return route = %v, want one change", ch)
	}
	if ch, err := tp.rec.GC(ctx, map[uint16]bool{1: true, 2: true}); err != nil || len(ch) != 1 {
		t.Errorf("GC = %v, %v; want the foreign route removed", ch, err)
	}
	want("203.0.113.0/25 via 169.254.100.2 dev "+a.HostIf, "203.0.113.128/25 via 169.254.100.2 dev "+b.HostIf, "198.51.100.0/24 via 169.254.100.2 dev "+a.HostIf)

	// Delete takes the tenant's routes and neighbour entries.
	if _, err := tp.rec.Delete(ctx, routing.Observed{ID: "beta", Slot: 2, HostIf: b.HostIf, Namespace: b.Namespace}); err != nil {
		t.Fatal(err)
	}
	want("203.0.113.0/25 via 169.254.100.2 dev "+a.HostIf, "198.51.100.0/24 via 169.254.100.2 dev "+a.HostIf)
	if out := tp.edge.MustExec(t, "ip", "neigh", "show", "nud", "permanent"); strings.Contains(out, b.HostIf) {
		t.Errorf("neighbour of beta survived: %s", out)
	}
	if ch := mustApply(t, tp.rec, a); len(ch) != 0 {
		t.Errorf("Apply(alpha) after deleting beta: %v", ch)
	}
}
