package routing_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// topo is the smallest edge: a client namespace and an edge ("host")
// namespace joined by a veth that plays the uplink.
//
//	client 192.0.2.1/24 ── uplink ── 192.0.2.2/24 edge ── nfv… ═ host0 [nf-…-acme]
//	       2001:db8:ff::1/64           2001:db8:ff::2/64         203.0.113.1 on lo
type topo struct {
	client, edge *nstest.NS
	nsPrefix     string
	rec          *routing.Reconciler
}

func newTopo(t testing.TB) *topo { return newTopoNamed(t, "nfT") }

// newTopoNamed is newTopo with the namespaces named tag + a unique suffix.
func newTopoNamed(t testing.TB, tag string) *topo {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	u := nstest.Unique()
	tp := &topo{
		client:   nstest.New(t, tag+u+"c"),
		edge:     nstest.New(t, tag+u+"e"),
		nsPrefix: tag + u + "-",
	}
	nstest.Link(t, tp.client, "eth0", "192.0.2.1/24", tp.edge, "uplink", "192.0.2.2/24")
	tp.client.MustExec(t, "ip", "addr", "add", "2001:db8:ff::1/64", "dev", "eth0", "nodad")
	tp.edge.MustExec(t, "ip", "addr", "add", "2001:db8:ff::2/64", "dev", "uplink", "nodad")
	tp.client.MustExec(t, "ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
	tp.client.MustExec(t, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
	tp.client.MustExec(t, "ip", "-6", "route", "add", "2001:db8:1::/48", "via", "2001:db8:ff::2")
	tp.edge.MustExec(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	tp.edge.MustExec(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:ff::1")
	t.Cleanup(func() {
		names, _ := namedns.List(namedns.DefaultDir, tp.nsPrefix)
		for _, n := range names {
			namedns.Delete(namedns.DefaultDir, n)
		}
	})
	rec, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatalf("routing.New: %v", err)
	}
	t.Cleanup(rec.Close)
	tp.rec = rec
	return tp
}

func (tp *topo) spec(id string, slot uint16, prefixes ...string) rtspec.TenantSpec {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	return rtspec.NewTenantSpec(id, slot, tp.nsPrefix, ps)
}

func (tp *topo) tenantNS(t *testing.T, spec rtspec.TenantSpec) *nstest.NS {
	return &nstest.NS{Name: spec.Namespace}
}

// state renders the kernel objects of one tenant with the CLI oracles.
func (tp *topo) state(t *testing.T, spec rtspec.TenantSpec) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(tp.edge.MustExec(t, "ip", "-d", "-o", "link", "show", spec.HostIf))
	// The kernel's own IPv6 link-local address is "tentative" until its
	// duplicate address detection ends (about a second after the link
	// comes up): not state nfhost made, and a slow kernel (emulation)
	// ends it between two dumps.
	b.WriteString(strings.ReplaceAll(tp.edge.MustExec(t, "ip", "-o", "addr", "show", "dev", spec.HostIf), " tentative", ""))
	b.WriteString(tp.edge.MustExec(t, "ip", "rule", "show", "table", fmt.Sprint(spec.Table)))
	b.WriteString(tp.edge.MustExec(t, "ip", "-6", "rule", "show", "table", fmt.Sprint(spec.Table)))
	b.WriteString(tp.edge.MustExec(t, "ip", "route", "show", "table", fmt.Sprint(spec.Table)))
	b.WriteString(tp.edge.MustExec(t, "ip", "-6", "route", "show", "table", fmt.Sprint(spec.Table)))
	b.WriteString(tp.edge.MustExec(t, "nft", "list", "table", "inet", "nfhost"))
	tn := tp.tenantNS(t, spec)
	b.WriteString(tn.MustExec(t, "ip", "-o", "link", "show", spec.NSIf))
	b.WriteString(tn.MustExec(t, "ip", "route"))
	b.WriteString(tn.MustExec(t, "ip", "-6", "route"))
	return b.String()
}

func mustApply(t *testing.T, rec *routing.Reconciler, spec rtspec.TenantSpec) []string {
	t.Helper()
	ch, err := rec.Apply(context.Background(), spec)
	if err != nil {
		t.Fatalf("Apply(%s): %v (changes so far: %v)", spec.ID, err, ch)
	}
	return ch
}

func TestApplyIdempotentAndTrafficFlows(t *testing.T) {
	tp := newTopo(t)
	spec := tp.spec("acme", 7, "203.0.113.0/24", "2001:db8:1::/48")
	if ch := mustApply(t, tp.rec, spec); len(ch) == 0 {
		t.Fatal("first Apply reported no changes")
	}
	tn := tp.tenantNS(t, spec)
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")

	before := tp.state(t, spec)
	if ch := mustApply(t, tp.rec, spec); len(ch) != 0 {
		t.Fatalf("second Apply changed the kernel: %v", ch)
	}
	if after := tp.state(t, spec); after != before {
		t.Fatalf("state changed by a no-op Apply:\n--- before\n%s\n--- after\n%s", before, after)
	}
	// A fresh Reconciler (a restarted nsd) changes nothing either.
	rec2, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rec2.Close()
	if ch := mustApply(t, rec2, spec); len(ch) != 0 {
		t.Fatalf("Apply after restart changed the kernel: %v", ch)
	}

	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")
	tp.client.MustExec(t, "ping", "-6", "-c1", "-W2", "2001:db8:1::1")
	// Both ways: the tenant reaches the client.
	tn.MustExec(t, "ping", "-c1", "-W2", "-I", "203.0.113.1", "192.0.2.1")
	tn.MustExec(t, "ping", "-6", "-c1", "-W2", "-I", "2001:db8:1::1", "2001:db8:ff::1")

	obs, err := tp.rec.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if o := obs["acme"]; o.Slot != 7 || o.HostIf != spec.HostIf || o.Namespace != spec.Namespace {
		t.Fatalf("Observe = %+v", obs)
	}
}

func TestApplyRepairsDrift(t *testing.T) {
	tp := newTopo(t)
	spec := tp.spec("drift", 9, "203.0.113.0/24")
	mustApply(t, tp.rec, spec)
	want := tp.state(t, spec)

	tp.edge.MustExec(t, "ip", "rule", "del", "table", fmt.Sprint(spec.Table))
	tp.edge.MustExec(t, "ip", "route", "flush", "table", fmt.Sprint(spec.Table))
	tn := tp.tenantNS(t, spec)
	tn.MustExec(t, "ip", "route", "flush", "dev", spec.NSIf)
	// A resync observes first (reloading the rule and map mirrors), then applies.
	if _, err := tp.rec.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ch := mustApply(t, tp.rec, spec); len(ch) == 0 {
		t.Fatal("Apply did not repair deleted rule and routes")
	}
	if got := tp.state(t, spec); got != want {
		t.Fatalf("after repair:\n%s\nwant:\n%s", got, want)
	}

	// Someone changes the sysctls nfhost keeps, on either side: Apply
	// (which reads them through rtnetlink) writes them back.
	tp.edge.MustExec(t, "sysctl", "-qw", "net.ipv4.conf."+spec.HostIf+".rp_filter=1")
	tn.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0",
		"net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf."+spec.NSIf+".rp_filter=1")
	ch := mustApply(t, tp.rec, spec)
	if got := strings.Count(strings.Join(ch, "\n"), "sysctl: "); got != 5 {
		t.Fatalf("sysctl drift: %d repaired, want 5: %v", got, ch)
	}
	if ch := mustApply(t, tp.rec, spec); len(ch) != 0 {
		t.Fatalf("not converged after the sysctl repair: %v", ch)
	}

	// Someone deletes the tenant's neighbour entry of the host, or gives
	// it another MAC: Apply (which looks it up by a get) sets it again.
	tn.MustExec(t, "ip", "neigh", "del", owned.HostAddr4.Addr().String(), "dev", spec.NSIf)
	if ch := mustApply(t, tp.rec, spec); !strings.Contains(strings.Join(ch, "\n"), "neigh: tenant") {
		t.Fatalf("deleted neighbour not set again: %v", ch)
	}
	tn.MustExec(t, "ip", "neigh", "replace", owned.HostAddr4.Addr().String(), "lladdr", "02:00:00:00:00:99", "dev", spec.NSIf, "nud", "permanent")
	if ch := mustApply(t, tp.rec, spec); !strings.Contains(strings.Join(ch, "\n"), "neigh: tenant") {
		t.Fatalf("wrong neighbour MAC not repaired: %v", ch)
	}
	if ch := mustApply(t, tp.rec, spec); len(ch) != 0 {
		t.Fatalf("not converged after the neighbour repair: %v", ch)
	}

	// Someone deletes the veth: it is recreated.
	tp.edge.MustExec(t, "ip", "link", "del", spec.HostIf)
	ch = mustApply(t, tp.rec, spec)
	if !strings.Contains(strings.Join(ch, "\n"), "create veth") {
		t.Fatalf("veth not recreated: %v", ch)
	}
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")

	// Someone deletes one map (and the rules using it): Observe rebuilds
	// the skeleton and carries the other map's elements over instead of
	// failing or starting empty.
	tp.edge.MustExec(t, "nft", "flush", "chain", "inet", "nfhost", "prerouting")
	tp.edge.MustExec(t, "nft", "flush", "chain", "inet", "nfhost", "output")
	tp.edge.MustExec(t, "nft", "delete", "map", "inet", "nfhost", "tenant_marks6")
	if _, err := tp.rec.Observe(context.Background()); err != nil {
		t.Fatalf("observe after a map was deleted: %v", err)
	}
	if m := tp.edge.MustExec(t, "nft", "list", "map", "inet", "nfhost", "tenant_marks4"); !strings.Contains(m, "203.0.113.0/24") {
		t.Fatalf("the IPv4 map lost its elements in the rebuild:\n%s", m)
	}
	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")

	// Someone deletes the whole nft table: Observe rebuilds it, Apply refills.
	tp.edge.MustExec(t, "nft", "delete", "table", "inet", "nfhost")
	if _, err := tp.rec.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustApply(t, tp.rec, spec)
	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")
}

func TestPrefixChangeAndDelete(t *testing.T) {
	tp := newTopo(t)
	a := tp.spec("alpha", 1, "203.0.113.0/25")
	b := tp.spec("beta", 2, "203.0.113.128/25", "198.51.100.0/24")
	mustApply(t, tp.rec, a)
	mustApply(t, tp.rec, b)
	ifindex := ifindexOf(t, tp.edge, a.HostIf)

	// Change alpha's prefixes: only map elements and return routes change.
	a2 := tp.spec("alpha", 1, "203.0.113.0/26")
	ch := mustApply(t, tp.rec, a2)
	for _, c := range ch {
		if !strings.HasPrefix(c, "nft:") && !strings.HasPrefix(c, "route: return table") {
			t.Errorf("prefix change made a change other than map elements and return routes: %s", c)
		}
	}
	if got := ifindexOf(t, tp.edge, a.HostIf); got != ifindex {
		t.Errorf("ifindex changed %s -> %s", ifindex, got)
	}
	nft := tp.edge.MustExec(t, "nft", "list", "map", "inet", "nfhost", "tenant_marks4")
	for _, want := range []string{"203.0.113.0/26", "203.0.113.128/25", "198.51.100.0/24"} {
		if !strings.Contains(nft, want) {
			t.Errorf("map lacks %s:\n%s", want, nft)
		}
	}

	if _, err := tp.rec.Delete(context.Background(), routing.Observed{ID: "alpha", Slot: 1, HostIf: a.HostIf, Namespace: a.Namespace}); err != nil {
		t.Fatal(err)
	}
	// Idempotent.
	if ch, err := tp.rec.Delete(context.Background(), routing.Observed{ID: "alpha", Slot: 1}); err != nil || len(ch) != 0 {
		t.Fatalf("second Delete: %v %v", ch, err)
	}
	if out, err := tp.edge.Exec(t, "ip", "link", "show", a.HostIf); err == nil {
		t.Errorf("link survived delete: %s", out)
	}
	if namedns.Exists(namedns.DefaultDir, a.Namespace) {
		t.Error("namespace survived delete")
	}
	if out := tp.edge.MustExec(t, "ip", "rule", "show", "table", fmt.Sprint(a.Table)); out != "" {
		t.Errorf("rule survived delete: %s", out)
	}
	nft = tp.edge.MustExec(t, "nft", "list", "map", "inet", "nfhost", "tenant_marks4")
	if strings.Contains(nft, "203.0.113.0/26") || !strings.Contains(nft, "198.51.100.0/24") {
		t.Errorf("map after delete:\n%s", nft)
	}
	obs, err := tp.rec.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := obs["alpha"]; ok || len(obs) != 1 {
		t.Errorf("Observe after delete: %+v", obs)
	}
}

func TestGCRemovesOnlyOrphansInOurRange(t *testing.T) {
	tp := newTopo(t)
	a := tp.spec("keep", 3, "203.0.113.0/24")
	mustApply(t, tp.rec, a)
	// An orphan rule in our range, and a foreign rule outside it.
	tp.edge.MustExec(t, "ip", "rule", "add", "priority", fmt.Sprint(owned.RulePriority), "fwmark", "0x6e660063", "table", fmt.Sprint(owned.SlotBase+99))
	tp.edge.MustExec(t, "ip", "rule", "add", "priority", "1700", "fwmark", "0x1", "table", "100")
	if _, err := tp.rec.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	ch, err := tp.rec.GC(context.Background(), map[uint16]bool{3: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) != 1 {
		t.Fatalf("GC changes = %v, want exactly the orphan rule", ch)
	}
	rules := tp.edge.MustExec(t, "ip", "rule")
	if !strings.Contains(rules, "lookup 100") || strings.Contains(rules, "0x6e660063") {
		t.Fatalf("rules after GC:\n%s", rules)
	}
}

// ifindexOf reads an ifindex with ip inside the namespace (sysfs shows the namespace it
// was mounted in, not the caller's).
func ifindexOf(t *testing.T, ns *nstest.NS, ifname string) string {
	t.Helper()
	out := ns.MustExec(t, "ip", "-o", "link", "show", "dev", ifname)
	idx, _, _ := strings.Cut(out, ":")
	return idx
}
