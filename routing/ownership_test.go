package routing_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/routing"
)

// foreignState renders what another owner keeps in a namespace.
func foreignState(t *testing.T, ns *nstest.NS) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-d", "-o", "link", "show"},
		{"ip", "-4", "-o", "addr", "show"}, // IPv4: link-locals change as DAD completes
		{"ip", "-4", "route", "show", "table", "all"},
		{"ip", "rule"},
	} {
		b.WriteString(ns.MustExec(t, args...))
	}
	return b.String()
}

// Namespaces with nfhost's prefix that nfhost did not create are left
// alone: an empty one, and one holding a veth into the host namespace
// (whose deletion would take the other owner's host-side link and routes
// with it). Observe does not take them for tenants and reports them,
// Apply for a tenant whose namespace name is taken fails naming the
// namespace, Delete refuses them, and GC does not touch them.
//
//	edge ── fgn… 10.99.0.1/30 ═ eth0 10.99.0.2/30 [<prefix>other]   [<prefix>empty]
func TestForeignNamespacesLeftAlone(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	ctx := context.Background()
	acme := tp.spec("acme", 4, "203.0.113.0/24")
	mustApply(t, tp.rec, acme)

	empty := nstest.New(t, tp.nsPrefix+"empty")
	other := nstest.New(t, tp.nsPrefix+"other")
	hostEnd := "fgn" + nstest.Unique()
	nstest.Link(t, tp.edge, hostEnd, "10.99.0.1/30", other, "eth0", "10.99.0.2/30")
	other.MustExec(t, "ip", "route", "add", "198.18.0.0/15", "via", "10.99.0.1")
	tp.edge.MustExec(t, "ip", "route", "add", "198.18.0.0/15", "via", "10.99.0.2")
	before := map[string]string{"empty": foreignState(t, empty), "other": foreignState(t, other)}
	hostLink := func() string { return tp.edge.MustExec(t, "ip", "-d", "-o", "link", "show", hostEnd) }
	hostBefore := hostLink()
	hostRoute := func() string { return tp.edge.MustExec(t, "ip", "route", "show", "198.18.0.0/15") }
	hostRouteBefore := hostRoute()

	obs, err := tp.rec.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(obs) != 1 || obs["acme"].Namespace != acme.Namespace {
		t.Errorf("Observe = %+v, want only acme", obs)
	}
	if got, want := tp.rec.Foreign(), []string{empty.Name, other.Name}; !slices.Equal(got, want) {
		t.Errorf("Foreign() = %q, want %q", got, want)
	}

	for _, id := range []string{"empty", "other"} {
		_, err := tp.rec.Apply(ctx, tp.spec(id, 5, "198.51.100.0/24"))
		want := "netns " + tp.nsPrefix + id + " exists and is not nfhost's"
		if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, routing.ErrNotOwned) {
			t.Errorf("Apply(%s) = %v, want an ErrNotOwned error containing %q", id, err, want)
		}
	}
	if out := tp.edge.MustExec(t, "ip", "-o", "link", "show"); strings.Contains(out, owned.HostIfName("other")) || strings.Contains(out, owned.HostIfName("empty")) {
		t.Errorf("Apply into a foreign namespace created a host link:\n%s", out)
	}
	for _, id := range []string{"empty", "other"} {
		_, err := tp.rec.Delete(ctx, routing.Observed{ID: id})
		if !errors.Is(err, routing.ErrNotOwned) {
			t.Errorf("Delete(%s) = %v, want ErrNotOwned", id, err)
		}
		_, err = tp.rec.Delete(ctx, routing.Observed{ID: id, Namespace: tp.nsPrefix + id})
		if !errors.Is(err, routing.ErrNotOwned) {
			t.Errorf("Delete(%s with its namespace) = %v, want ErrNotOwned", id, err)
		}
	}
	if _, err := tp.rec.Observe(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.rec.GC(ctx, map[uint16]bool{4: true}); err != nil {
		t.Fatal(err)
	}
	// Deleting our tenant leaves them alone as well.
	if _, err := tp.rec.Delete(ctx, obs["acme"]); err != nil {
		t.Fatalf("Delete(acme): %v", err)
	}
	if namedns.Exists(namedns.DefaultDir, acme.Namespace) {
		t.Error("our namespace survived Delete")
	}

	for name, ns := range map[string]*nstest.NS{"empty": empty, "other": other} {
		if !namedns.Exists(namedns.DefaultDir, ns.Name) {
			t.Fatalf("foreign namespace %s was deleted", ns.Name)
		}
		if got := foreignState(t, ns); got != before[name] {
			t.Errorf("foreign namespace %s changed:\n--- before\n%s\n--- after\n%s", ns.Name, before[name], got)
		}
	}
	if got := hostLink(); got != hostBefore {
		t.Errorf("other owner's host link changed:\n%s\n%s", hostBefore, got)
	}
	if got := hostRoute(); got != hostRouteBefore {
		t.Errorf("other owner's host route changed: %q -> %q", hostRouteBefore, got)
	}
	tp.edge.MustExec(t, "ping", "-c1", "-W2", "10.99.0.2")
}

// A namespace made by an older nsd carries no mark, but nfhost's host veth
// of the same tenant has its peer in it: Observe adopts and marks it, and
// so does Apply; a converged tenant is not changed by either.
func TestOldUnmarkedNamespaceAdopted(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	ctx := context.Background()
	spec := tp.spec("old", 6, "203.0.113.0/24")
	mustApply(t, tp.rec, spec)
	tn := tp.tenantNS(t, spec)
	loAlias := func() string {
		out := tn.MustExec(t, "ip", "-d", "link", "show", "lo")
		if _, a, ok := strings.Cut(out, "alias "); ok {
			return strings.Fields(a)[0]
		}
		return ""
	}
	if got, want := loAlias(), "nfhost:tenant=old"; got != want {
		t.Fatalf("lo alias of a namespace nfhost created = %q, want %q", got, want)
	}
	unmark := func() { tn.MustExec(t, "ip", "link", "set", "dev", "lo", "alias", "") }

	// The upgraded nsd starts on the old state.
	unmark()
	rec, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	obs, err := rec.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o := obs["old"]; o.Namespace != spec.Namespace || o.Slot != 6 || len(rec.Foreign()) != 0 {
		t.Fatalf("Observe = %+v, foreign %q; want the old namespace adopted", obs, rec.Foreign())
	}
	if got := loAlias(); got != "nfhost:tenant=old" {
		t.Errorf("Observe did not mark the adopted namespace: lo alias %q", got)
	}
	if ch := mustApply(t, rec, spec); len(ch) != 0 {
		t.Errorf("Apply after adoption changed the kernel: %v", ch)
	}

	// Apply alone adopts too.
	unmark()
	ch := mustApply(t, rec, spec)
	if len(ch) != 1 || !strings.HasPrefix(ch[0], "netns: mark") {
		t.Errorf("Apply on an unmarked namespace with our veth = %v, want one mark change", ch)
	}
	if got := loAlias(); got != "nfhost:tenant=old" {
		t.Errorf("Apply did not mark the namespace: lo alias %q", got)
	}

	// Delete, too, knows the namespace by the veth.
	unmark()
	if _, err := rec.Delete(ctx, routing.Observed{ID: "old", Slot: 6}); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if namedns.Exists(namedns.DefaultDir, spec.Namespace) {
		t.Error("the old namespace survived Delete")
	}
}

// Observe reads a namespace's mark once and then relies on the tenant's
// veth still having its peer inside. A namespace someone else put under
// the tenant's name after ours went (the kernel may even give it the old
// inode number) has no veth of ours and is found foreign.
func TestReplacedNamespaceRechecked(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	ctx := context.Background()
	spec := tp.spec("swap", 8, "203.0.113.0/24")
	mustApply(t, tp.rec, spec)
	for i := 0; i < 2; i++ { // the second pass takes the shortcut
		if obs, err := tp.rec.Observe(ctx); err != nil || obs["swap"].Namespace != spec.Namespace {
			t.Fatalf("Observe %d = %+v, %v", i, obs, err)
		}
	}
	ino := func() string { return tp.edge.MustExec(t, "stat", "-L", "-c", "%i", "/run/netns/"+spec.Namespace) }
	before := ino()
	if err := namedns.Delete(namedns.DefaultDir, spec.Namespace); err != nil {
		t.Fatal(err)
	}
	other := nstest.New(t, spec.Namespace)
	t.Logf("inode before %s, after %s", strings.TrimSpace(before), strings.TrimSpace(ino()))
	obs, err := tp.rec.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o := obs["swap"]; o.Namespace != "" {
		t.Errorf("Observe took the replacement namespace for the tenant's: %+v", o)
	}
	if got := tp.rec.Foreign(); !slices.Equal(got, []string{other.Name}) {
		t.Errorf("Foreign() = %q, want the replacement", got)
	}
	if _, err := tp.rec.Delete(ctx, routing.Observed{ID: "swap", Slot: 8}); !errors.Is(err, routing.ErrNotOwned) || !namedns.Exists(namedns.DefaultDir, other.Name) {
		t.Errorf("Delete = %v (namespace exists: %v), want ErrNotOwned and the namespace kept", err, namedns.Exists(namedns.DefaultDir, other.Name))
	}
}
