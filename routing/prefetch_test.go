package routing_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// A restart's full pass applies converged tenants from views read ahead
// (Prefetch): drift in any of the reads a view holds is still repaired,
// a tenant applied out of order or left out still works, and the pass
// after is converged.
func TestPrefetchedApplyRepairsDrift(t *testing.T) {
	tp := newTopoNamed(t, "nfP")
	var specs []rtspec.TenantSpec
	want := map[string]string{}
	for i, id := range []string{"calm", "addr", "route", "sysctl", "neigh", "veth", "late", "calm2"} {
		s := tp.spec(id, uint16(i+1), fmt.Sprintf("198.18.%d.0/24", i+1))
		specs = append(specs, s)
		mustApply(t, tp.rec, s)
	}
	for _, s := range specs {
		want[s.ID] = tp.state(t, s)
	}
	byID := func(id string) rtspec.TenantSpec {
		for _, s := range specs {
			if s.ID == id {
				return s
			}
		}
		t.Fatalf("no tenant %s", id)
		return rtspec.TenantSpec{}
	}
	// Drift in each thing a view reads.
	tp.tenantNS(t, byID("addr")).MustExec(t, "ip", "addr", "flush", "dev", byID("addr").NSIf)
	tp.tenantNS(t, byID("route")).MustExec(t, "ip", "route", "flush", "dev", byID("route").NSIf)
	tp.tenantNS(t, byID("sysctl")).MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv4.conf."+byID("sysctl").NSIf+".rp_filter=1")
	tp.tenantNS(t, byID("neigh")).MustExec(t, "ip", "neigh", "del", owned.HostAddr4.Addr().String(), "dev", byID("neigh").NSIf)
	tp.edge.MustExec(t, "ip", "link", "del", byID("veth").HostIf)
	tp.edge.MustExec(t, "ip", "rule", "del", "table", fmt.Sprint(byID("calm2").Table))

	// A restart: a new Reconciler observes, then the pass applies in
	// order from views read ahead; "late" is skipped and applied last.
	rec, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	pass := func() map[string][]string {
		t.Helper()
		if _, err := rec.Observe(context.Background()); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range specs {
			ids = append(ids, s.ID)
		}
		stop := rec.Prefetch(context.Background(), ids)
		defer stop()
		rec.AwaitViews(len(ids)) // deterministic: every Apply finds its view
		got := map[string][]string{}
		for _, s := range specs {
			if s.ID != "late" {
				got[s.ID] = mustApply(t, rec, s)
			}
		}
		got["late"] = mustApply(t, rec, byID("late"))
		return got
	}
	got := pass()
	for _, id := range []string{"calm", "late"} {
		if len(got[id]) != 0 {
			t.Errorf("%s: changes on a converged tenant: %v", id, got[id])
		}
	}
	for id, what := range map[string]string{"addr": "addr", "route": "route", "sysctl": "sysctl: ", "neigh": "neigh: tenant", "veth": "create veth", "calm2": "rule"} {
		if c := strings.Join(got[id], "\n"); !strings.Contains(c, what) {
			t.Errorf("%s: drift not repaired (want a %q change): %v", id, what, got[id])
		}
	}
	// "late"'s view was dropped when "calm2", after it, took its own.
	if n := rec.ViewsTaken(); n != len(specs)-1 {
		t.Errorf("%d Applies took a prefetched view, want %d", n, len(specs)-1)
	}
	for id, c := range pass() {
		if len(c) != 0 {
			t.Errorf("%s: not converged after the repair pass: %v", id, c)
		}
	}
	if n := rec.ViewsTaken(); n != 2*(len(specs)-1) {
		t.Errorf("%d Applies took a prefetched view in two passes, want %d", n, 2*(len(specs)-1))
	}
	for _, s := range specs {
		if s.ID == "veth" {
			continue // made again: another ifindex and MAC
		}
		if got := tp.state(t, s); got != want[s.ID] {
			t.Errorf("%s after the repair:\n%s\nwant:\n%s", s.ID, got, want[s.ID])
		}
	}
}
