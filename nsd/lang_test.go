package nsd

import (
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/nsd/source"
)

// recFirewall records the specs applied per namespace.
type recFirewall struct {
	mu    sync.Mutex
	specs map[string]*fwspec.Spec
	n     int
}

func (f *recFirewall) Apply(ns string, s *fwspec.Spec) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs[ns] = s
	f.n++
	return nil, nil
}

func (f *recFirewall) Counters(string) (map[string]fwspec.Counter, error) { return nil, nil }

func (f *recFirewall) list(ns, name string) []netip.Prefix {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.specs[ns] == nil {
		return nil
	}
	return f.specs[ns].Lists[name]
}

type oneCountry struct{ ps []netip.Prefix }

func (g oneCountry) HasCountries() bool              { return true }
func (g oneCountry) HasASNs() bool                   { return false }
func (g oneCountry) Country(c string) []netip.Prefix { return g.ps }
func (g oneCountry) ASN(uint32) []netip.Prefix       { return nil }

// A shared list change reaches every tenant that uses it without any of
// their keys changing; an environment change (a new geo database, a
// site) re-compiles their rules; a bad shared list keeps the last good.
func TestSharedListsAndEnvironment(t *testing.T) {
	fw := &recFirewall{specs: map[string]*fwspec.Spec{}}
	geo := oneCountry{[]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	env := fwspec.Env{Env: lang.Env{Site: "ams01"}, Geo: geo, Version: "db1"}
	h := newHarness(t, Options{Firewall: fw, FirewallEnv: func() fwspec.Env { return env }})
	h.snap.Lists = map[string][]source.Entry{"threats": {{Value: []byte(`["198.51.100.0/24"]`), ModifyIndex: 1}}}
	for _, id := range []string{"acme", "beta"} {
		h.put(id, "network", `{"prefixes": []}`)
		h.put(id, "firewall", `{"rules": [{"id": "t", "expression": "ip.src in $threats or ip.src.country == \"BR\" and cf.colo.name == \"ams01\"", "action": "block"}]}`)
	}
	h.pass(t, true)
	for _, id := range []string{"acme", "beta"} {
		if st := h.store.tenantStatus(id); st.State != "applied" {
			t.Fatalf("%s: %+v", id, st)
		}
	}
	ns := "nf-acme"
	if got := fw.list(ns, "_s_threats"); len(got) != 1 || got[0].String() != "198.51.100.0/24" {
		t.Fatalf("shared list in the spec: %v (%v)", got, fw.specs)
	}
	if got := fw.list(ns, "_cc_br"); len(got) != 1 {
		t.Fatalf("geo list: %v", got)
	}
	// The list changes; no tenant key does: both tenants get it.
	h.snap.Lists["threats"] = []source.Entry{{Value: []byte(`["198.51.100.0/25", "2001:db8::/32"]`), ModifyIndex: 2}}
	h.pass(t, false)
	for _, n := range []string{"nf-acme", "nf-beta"} {
		if got := fw.list(n, "_s_threats"); len(got) != 2 {
			t.Fatalf("%s after the list change: %v", n, got)
		}
	}
	// A bad version is refused: the last good one stays.
	h.snap.Lists["threats"] = []source.Entry{{Value: []byte(`["198.51.100.1/24"]`), ModifyIndex: 3}}
	h.pass(t, false)
	if got := fw.list(ns, "_s_threats"); len(got) != 2 {
		t.Fatalf("after a bad list: %v", got)
	}
	// A new database version: re-compiled from the new prefixes.
	env.Geo, env.Version = oneCountry{[]netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}, "db2"
	h.pass(t, true)
	if got := fw.list(ns, "_cc_br"); len(got) != 1 || got[0].String() != "203.0.113.0/24" {
		t.Fatalf("geo list after reload: %v", got)
	}
	// A server without the database refuses the rule and keeps the last
	// good firewall in force.
	env.Geo = nil
	env.Version = "none"
	h.pass(t, true)
	if st := h.store.tenantStatus("acme"); !strings.Contains(st.Error+strings.Join(st.Warnings, ";")+st.State, "country database") {
		t.Fatalf("status without a database: %+v", st)
	}
	if got := fw.list(ns, "_cc_br"); len(got) != 1 {
		t.Fatalf("last good firewall replaced: %v", got)
	}
}
