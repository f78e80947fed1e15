package nsd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/nfhost/nfhost/nsd/source"
)

// One change (one Consul transaction) swaps two prefixes between tenants:
// both apply in the same pass, and the kernel never sees an overlap.
func TestPrefixSwapInOnePass(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("mv1", "network", `{"prefixes": ["203.0.113.128/28"]}`)
	h.put("mv2", "network", `{"prefixes": ["203.0.113.112/28"]}`)
	h.pass(t, true)
	h.put("mv1", "network", `{"prefixes": ["203.0.113.112/28"]}`)
	h.put("mv2", "network", `{"prefixes": ["203.0.113.128/28"]}`)
	rs := h.pass(t, false)
	if Failed(rs) {
		t.Fatalf("swap failed: %+v", rs)
	}
	if got := h.k.specs["mv1"].Prefixes[0].String(); got != "203.0.113.112/28" {
		t.Fatalf("mv1 holds %s", got)
	}
	if got := h.k.specs["mv2"].Prefixes[0].String(); got != "203.0.113.128/28" {
		t.Fatalf("mv2 holds %s", got)
	}
	for _, id := range []string{"mv1", "mv2"} {
		if st := h.store.tenantStatus(id); st.State != "applied" {
			t.Fatalf("%s: %+v", id, st)
		}
	}
}

// A confirmation is good for the one hold it was given for: after the
// confirmed deletion, the same tenants put back and wiped again are held
// again although the old token is still in the control key.
func TestConfirmationIsSingleUse(t *testing.T) {
	h := newHarness(t, Options{})
	fill := func() {
		for i := 0; i < 5; i++ {
			h.put(fmt.Sprintf("t%d", i), "network", fmt.Sprintf(`{"prefixes": ["198.51.%d.0/24"]}`, i))
		}
	}
	fill()
	h.pass(t, true)
	saved := h.snap.Tenants
	h.snap.Tenants = map[string]map[string]source.Entry{}
	h.pass(t, false)
	hs := h.store.status[source.HostStatusName].(source.HostStatus)
	if hs.Tenants != 5 || len(hs.HeldDeletes) != 5 {
		t.Fatalf("host status during the hold: %+v (the held tenants still run and count)", hs)
	}
	h.snap.Control[source.ConfirmKey("edge1")] = source.Entry{Value: []byte(hs.ConfirmToken)}
	h.pass(t, false)
	if len(h.k.deletes) != 5 {
		t.Fatalf("confirmed deletes: %v", h.k.deletes)
	}
	h.resetCalls()
	h.snap.Tenants = saved
	fill()
	h.pass(t, false)
	h.snap.Tenants = map[string]map[string]source.Entry{}
	h.pass(t, false)
	if len(h.k.deletes) != 0 {
		t.Fatalf("an old confirmation let a new mass delete through: %v", h.k.deletes)
	}
	hs2 := h.store.status[source.HostStatusName].(source.HostStatus)
	if len(hs2.HeldDeletes) != 5 || hs2.ConfirmToken == hs.ConfirmToken || hs2.SpentConfirmToken != hs.ConfirmToken {
		t.Fatalf("second hold: %+v (first token %s)", hs2, hs.ConfirmToken)
	}
}

// A wiped store (a new Consul cluster: no tenant, and this host's own
// status gone too) deletes nothing unconfirmed, even a host's only tenant,
// and keeps holding through later passes; an operator deleting the last
// tenant from a store that is not wiped is not held.
func TestWipedStoreHoldsOnlyTenant(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("only", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.pass(t, true)
	h.snap.Tenants = map[string]map[string]source.Entry{}
	h.store.status = map[string]any{} // wiped: statuses gone too
	for i := 0; i < 3; i++ {
		rs := h.pass(t, i == 2)
		if len(h.k.deletes) != 0 || len(rs) != 1 || rs[0].State != "held" {
			t.Fatalf("wiped store, pass %d: deletes %v results %+v", i, h.k.deletes, rs)
		}
	}

	h2 := newHarness(t, Options{})
	h2.put("only", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h2.pass(t, true)
	h2.snap.Tenants = map[string]map[string]source.Entry{}
	h2.pass(t, false)
	if len(h2.k.deletes) != 1 {
		t.Fatalf("deleting the last tenant was held: %v", h2.k.deletes)
	}
}

// The status of a tenant that never applied goes with its keys, and the
// tenant gauge forgets it.
func TestStatusOfGoneTenantRemoved(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("keep", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("bad", "network", `{"prefixes": ["198.51.100.0/33"]}`)
	h.pass(t, true)
	if st := h.store.tenantStatus("bad"); st.State != "error" || !st.AppliedAt.IsZero() {
		t.Fatalf("bad: %+v (applied_at must stay zero for a tenant that never applied)", st)
	}
	if v := value(h.d.m.Tenants.WithLabelValues("error")); v != 1 {
		t.Fatalf("error gauge %v", v)
	}
	delete(h.snap.Tenants, "bad")
	h.pass(t, false)
	if _, ok := h.store.status["bad"]; ok {
		t.Fatal("status of the deleted tenant stays")
	}
	if v := value(h.d.m.Tenants.WithLabelValues("error")); v != 0 {
		t.Fatalf("error gauge %v after delete", v)
	}
}

// Passes that change nothing do not rewrite the host status: on an empty
// tenant prefix, each write would wake the watch and feed a loop.
func TestHostStatusWrittenOnlyWhenChanged(t *testing.T) {
	h := newHarness(t, Options{})
	h.pass(t, true)
	for i := 0; i < 10; i++ {
		h.pass(t, false)
	}
	if n := h.store.writes[source.HostStatusName]; n != 1 {
		t.Fatalf("host status written %d times for 11 passes without change", n)
	}
}

// An unchanged bad document counts as one config error and one error
// reconcile per version, however often it is validated again; the error
// result is counted.
func TestErrorsCountedOncePerDocument(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("bad", "network", `{"prefixes": ["198.51.100.0/33"]}`)
	for i := 0; i < 5; i++ {
		h.pass(t, true)
	}
	if v := value(h.d.m.ConfigErrors); v != 1 {
		t.Fatalf("config errors %v after 5 passes over one bad document", v)
	}
	if v := value(h.d.m.Reconciles.WithLabelValues("routing", "error")); v != 5 {
		t.Fatalf("reconcile errors %v", v)
	}
	h.put("bad", "network", `{"prefixes": ["198.51.100.0/34"]}`)
	h.pass(t, false)
	if v := value(h.d.m.ConfigErrors); v != 2 {
		t.Fatalf("config errors %v after a new bad version", v)
	}
	if st := h.store.tenantStatus("bad"); !strings.Contains(st.Error, "/34") {
		t.Fatalf("status %+v", st)
	}
}

// value reads one gauge or counter.
func value(m prometheus.Metric) float64 {
	var out dto.Metric
	m.Write(&out)
	if out.Gauge != nil {
		return out.Gauge.GetValue()
	}
	return out.Counter.GetValue()
}

// A listing the store's ACLs filtered (nsd --once reads one) deletes
// nothing: the tenants missing from it may only be invisible to the token.
func TestHiddenKeysDeleteNothing(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("b", "network", `{"prefixes": ["198.51.101.0/24"]}`)
	h.pass(t, true)
	delete(h.snap.Tenants, "b")
	h.snap.Hidden = true
	if rs := h.pass(t, false); len(h.k.deletes) != 0 || len(rs) != 1 || rs[0].State != "held" {
		t.Fatalf("a filtered listing deleted %v (results %+v)", h.k.deletes, rs)
	}
}
