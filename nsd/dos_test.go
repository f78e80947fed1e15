package nsd

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/nsd/source"
)

// fakeDoS records what the daemon asks the DoS layer to hold.
type fakeDoS struct {
	applies int
	global  dosspec.Spec
	tenants map[string]dos.Tenant
	errs    map[string]error
}

func (f *fakeDoS) Apply(g dosspec.Spec, ts []dos.Tenant, _ time.Time) (map[string]error, error) {
	f.applies++
	f.global, f.tenants = g, map[string]dos.Tenant{}
	for _, t := range ts {
		f.tenants[t.ID] = t
	}
	return f.errs, nil
}

func (f *fakeDoS) Counters() (dos.Counters, error) { return dos.Counters{}, nil }

func TestDoSDocumentsReachTheDoSLayer(t *testing.T) {
	fd := &fakeDoS{}
	h := newHarness(t, Options{DoS: fd})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "dos", `{"deny": ["192.0.2.66"], "signatures": [{"id": "amp", "expression": "udp.srcport == 53", "action": "drop"}]}`)
	h.put("beta", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.snap.DoSGlobal = &source.Entry{Value: []byte(`{"deny": ["192.0.2.0/28"]}`), ModifyIndex: 900}
	h.pass(t, true)
	if fd.applies != 1 || len(fd.global.Deny) != 1 || fd.tenants["acme"].Spec == nil || len(fd.tenants["acme"].Spec.Signatures) != 1 ||
		fd.tenants["beta"].Spec != nil || fd.tenants["beta"].Prefixes[0].String() != "198.51.100.0/24" {
		t.Fatalf("DoS layer got %+v", fd)
	}
	if st := h.store.tenantStatus("acme"); st.Subsystems["dos"] != "ok" {
		t.Fatalf("status %+v", st)
	}
	// Nothing changed: an incremental pass does not touch the maps.
	h.pass(t, false)
	if fd.applies != 1 {
		t.Fatalf("unchanged pass applied the DoS maps again")
	}
	// A bad document is refused with its field; the last good one stays.
	h.put("acme", "dos", `{"signatures": [{"id": "amp", "expression": "udp.srcport == 53 or ip.ttl < 3", "action": "drop"}]}`)
	rs := h.pass(t, false)
	st := h.store.tenantStatus("acme")
	if !strings.Contains(st.Error, "tenants/acme/dos: signatures[0].expression: 1:19: or is not supported") || !Failed(rs) {
		t.Fatalf("status %+v", st)
	}
	if len(fd.tenants["acme"].Spec.Signatures) != 1 || fd.tenants["acme"].Spec.Signatures[0].ID != "amp" || len(fd.tenants["acme"].Spec.Deny) != 1 {
		t.Fatalf("last good document not kept: %+v", fd.tenants["acme"].Spec)
	}
	// A bad global document keeps the last good global one, reported on the
	// host status.
	h.snap.DoSGlobal = &source.Entry{Value: []byte(`{"deny": ["192.0.2.1/24"]}`), ModifyIndex: 901}
	h.pass(t, false)
	hs, _ := h.store.status[source.HostStatusName].(source.HostStatus)
	if !strings.Contains(hs.DoSGlobalError, `dos/global: deny[0]: "192.0.2.1/24": host bits set`) || hs.DoSGlobalIndex != 900 {
		t.Fatalf("host status %+v", hs)
	}
	if len(fd.global.Deny) != 1 || fd.global.Deny[0].String() != "192.0.2.0/28" {
		t.Fatalf("global: %+v", fd.global)
	}
	// A placement error from the DoS layer lands on the tenant's status.
	const msg = `tenants/beta/dos: rate_limits[0].prefix: "203.0.113.0/24": not inside the tenant's prefixes`
	fd.errs = map[string]error{"beta": &dos.PlacementError{Err: errTest(msg)}}
	h.put("beta", "dos", `{"rate_limits": [{"prefix": "203.0.113.0/24", "pps": 10, "per": "ip"}]}`)
	h.pass(t, false)
	if st := h.store.tenantStatus("beta"); st.State != "error" || st.Error != msg || st.Subsystems["dos"] != dosNotPlaced {
		t.Fatalf("beta status %+v", st)
	}
}

func TestDoSKeysWithoutUplinkAreReported(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "dos", `{"deny": ["192.0.2.66"]}`)
	h.pass(t, true)
	if st := h.store.tenantStatus("acme"); st.State != "applied" || !strings.Contains(strings.Join(st.Warnings, "\n"), "runs without the XDP DoS layer") {
		t.Fatalf("status %+v", st)
	}
}

// placingDoS is the DoS layer without a kernel: the real placement
// (dos.Build) with what is in force carried from one Apply to the next,
// as dos.Reconciler does.
type placingDoS struct {
	last    *dos.State
	applies int
}

func (p *placingDoS) Apply(g dosspec.Spec, ts []dos.Tenant, now time.Time) (map[string]error, error) {
	p.applies++
	var in []dos.TenantInput
	for i, t := range ts {
		in = append(in, dos.TenantInput{ID: t.ID, Index: uint32(i + 1), Prefixes: t.Prefixes, Spec: t.Spec})
	}
	var inForce map[string]*dosspec.Spec
	if p.last != nil {
		inForce = p.last.InForce
	}
	st, errs := dos.Build(dos.Desired{Global: g, Tenants: in, Now: now, InForce: inForce})
	p.last = st
	return errs, nil
}

func (p *placingDoS) Counters() (dos.Counters, error) { return dos.Counters{}, nil }

// sigs counts the signatures in force of a scope (a tenant or "global").
func (p *placingDoS) sigs(scope string) int {
	n := 0
	for _, s := range p.last.Sigs {
		if strings.HasPrefix(s.ID, scope+"/") {
			n++
		}
	}
	return n
}

// historyStore records every tenant status written, in order.
type historyStore struct {
	*fakeStore
	writes []string // tenant: state
}

func (s *historyStore) PutStatus(ctx context.Context, host, name string, st any) error {
	if ts, ok := st.(source.Status); ok {
		s.writes = append(s.writes, ts.Tenant+": "+ts.State)
	}
	return s.fakeStore.PutStatus(ctx, host, name, st)
}

func slotDoc(n int) string {
	var sigs []string
	for i := 0; i < n; i++ {
		sigs = append(sigs, fmt.Sprintf(`{"id": "s%d", "expression": "udp.dstport == %d", "action": "drop"}`, i, 10000+i))
	}
	return `{"signatures": [` + strings.Join(sigs, ",") + `]}`
}

// TestDoSSlotsRunOut is the reliability issue's item 9 at the daemon: a
// tenant with 256 signatures in force, then a one-signature dos/global.
// The tenant keeps its signatures and stays applied; the global document
// is refused on the host status. When the tenant's own document is the
// one that does not fit, the tenant's status is error with the field, and
// its earlier signatures stay in force.
func TestDoSSlotsRunOut(t *testing.T) {
	pd := &placingDoS{}
	h := newHarness(t, Options{DoS: pd})
	hist := &historyStore{fakeStore: h.store}
	h.d.o.Store = hist
	hostStatus := func() source.HostStatus {
		hs, _ := h.store.status[source.HostStatusName].(source.HostStatus)
		return hs
	}
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "dos", slotDoc(256))
	h.pass(t, true)
	if st := h.store.tenantStatus("acme"); st.State != "applied" || st.Subsystems["dos"] != "ok" || pd.sigs("acme") != 256 {
		t.Fatalf("status %+v, %d signatures", st, pd.sigs("acme"))
	}

	// The reported failure: the global document is the one that does not
	// fit.
	h.snap.DoSGlobal = &source.Entry{Value: []byte(`{"signatures": [{"id": "chargen", "expression": "udp.dstport == 19", "action": "drop"}]}`), ModifyIndex: 900}
	h.pass(t, false)
	hs := hostStatus()
	if hs.DoSGlobalError != "dos/global: signatures[0]: no free signature slot (256 in use: 0 global, 256 tenant)" || hs.DoSGlobalIndex != 0 {
		t.Fatalf("host status %+v", hs)
	}
	if st := h.store.tenantStatus("acme"); st.State != "applied" || pd.sigs("acme") != 256 || pd.sigs("global") != 0 {
		t.Fatalf("acme status %+v, %d signatures, %d global", st, pd.sigs("acme"), pd.sigs("global"))
	}

	// The tenant makes room: the global document is placed.
	h.put("acme", "dos", slotDoc(200))
	h.pass(t, false)
	if hs := hostStatus(); hs.DoSGlobalError != "" || hs.DoSGlobalIndex != 900 || pd.sigs("global") != 1 {
		t.Fatalf("host status %+v", hs)
	}

	// The tenant grows back: its document is refused, its 200 stay.
	h.put("acme", "dos", slotDoc(256))
	rs := h.pass(t, false)
	const msg = "tenants/acme/dos: signatures[255]: no free signature slot (256 in use: 1 global, 255 tenant)"
	st := h.store.tenantStatus("acme")
	if st.State != "error" || st.Error != msg || st.Subsystems["dos"] != "error (not placed; the rules placed before stay in force)" || !Failed(rs) {
		t.Fatalf("status %+v, results %+v", st, rs)
	}
	if pd.sigs("acme") != 200 || pd.sigs("global") != 1 {
		t.Fatalf("in force: %d acme, %d global", pd.sigs("acme"), pd.sigs("global"))
	}

	// Resyncs and changes to the tenant's other keys keep the status; it
	// is not rewritten as applied in between.
	hist.writes = nil
	h.pass(t, true)
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24", "2001:db8:a::/48"]}`)
	h.pass(t, false)
	h.pass(t, false)
	for _, w := range hist.writes {
		if w != "acme: error" {
			t.Fatalf("status writes %v", hist.writes)
		}
	}
	if st := h.store.tenantStatus("acme"); st.State != "error" || st.Error != msg || pd.sigs("acme") != 200 {
		t.Fatalf("status %+v", st)
	}

	// The global document goes: the tenant's document fits and is applied.
	h.snap.DoSGlobal = nil
	h.pass(t, false)
	if st := h.store.tenantStatus("acme"); st.State != "applied" || st.Error != "" || st.Subsystems["dos"] != "ok" || pd.sigs("acme") != 256 {
		t.Fatalf("status %+v, %d signatures", st, pd.sigs("acme"))
	}
	if hs := hostStatus(); hs.DoSGlobalError != "" || hs.DoSGlobalIndex != 0 {
		t.Fatalf("host status %+v", hs)
	}
}

// TestDoSOnceReportsPlacement: nsd --once runs one pass; a document that
// is not placed fails it.
func TestDoSOnceReportsPlacement(t *testing.T) {
	h := newHarness(t, Options{DoS: &placingDoS{}})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "dos", `{"rate_limits": [{"prefix": "198.51.100.0/24", "pps": 10, "per": "ip"}]}`)
	rs := h.pass(t, true)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Tenant < rs[j].Tenant })
	if len(rs) != 1 || rs[0].State != "error" || rs[0].Err == nil ||
		rs[0].Err.Error() != `tenants/acme/dos: rate_limits[0].prefix: "198.51.100.0/24": not inside the tenant's prefixes` {
		t.Fatalf("results %+v", rs)
	}
	if st := h.store.tenantStatus("acme"); st.State != "error" || st.Subsystems["dos"] != "error (not placed; no rules in force)" {
		t.Fatalf("status %+v", st)
	}
}

type errTest string

func (e errTest) Error() string { return string(e) }
