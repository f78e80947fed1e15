package nsd

import (
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/nsd/source"
)

// fakeDoS records what the daemon asks the DoS layer to hold.
type fakeDoS struct {
	applies int
	global  dos.Spec
	tenants map[string]dos.Tenant
	errs    map[string]error
}

func (f *fakeDoS) Apply(g dos.Spec, ts []dos.Tenant, _ time.Time) (map[string]error, error) {
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
	fd.errs = map[string]error{"beta": errTest("rate_limits[0].prefix: 203.0.113.0/24 is not inside the tenant's prefixes")}
	h.put("beta", "dos", `{"rate_limits": [{"prefix": "203.0.113.0/24", "pps": 10, "per": "ip"}]}`)
	h.pass(t, false)
	if st := h.store.tenantStatus("beta"); !strings.HasPrefix(st.Subsystems["dos"], "error: rate_limits[0].prefix") {
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

type errTest string

func (e errTest) Error() string { return string(e) }
