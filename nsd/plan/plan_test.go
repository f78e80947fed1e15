package plan

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd/config"
)

var update = flag.Bool("update", false, "rewrite golden files")

func tenant(t *testing.T, id, doc string) Tenant {
	t.Helper()
	n, err := config.ParseNetwork(id, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return Tenant{ID: id, Network: n}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read golden (run go test -update): %v", err)
	}
	if string(want) != got {
		t.Errorf("plan differs from %s (go test ./nsd/plan -update to accept):\n%s", p, got)
	}
}

func TestPlanGolden(t *testing.T) {
	ts := []Tenant{
		tenant(t, "acme", `{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"]}`),
		tenant(t, "globex", `{"prefixes": ["198.51.100.0/25"]}`),
	}
	d, err := Plan(Options{NSPrefix: "nf-"}, ts, nil)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "two-tenants", d.Render())

	// Existing slots survive, whatever order tenants come in.
	rev := []Tenant{ts[1], ts[0]}
	d2, err := Plan(Options{NSPrefix: "nf-"}, rev, map[string]uint16{"acme": d.Tenants["acme"].Slot})
	if err != nil {
		t.Fatal(err)
	}
	if d2.Render() != d.Render() {
		t.Error("plan depends on input order")
	}
}

func TestAllocateSlotsStableAndUnique(t *testing.T) {
	ids := make([]string, 0, 3000)
	for i := 0; i < 3000; i++ {
		ids = append(ids, "t"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)))
	}
	a, err := AllocateSlots(ids, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]string{}
	for id, s := range a {
		if s == 0 || s > owned.MaxSlot {
			t.Fatalf("slot %d out of range", s)
		}
		if o, dup := seen[s]; dup {
			t.Fatalf("slot %d for %s and %s", s, o, id)
		}
		seen[s] = id
	}
	// Adding a tenant never moves existing ones.
	b, _ := AllocateSlots(append(ids, "newcomer"), a)
	for id, s := range a {
		if b[id] != s {
			t.Fatalf("%s moved from %d to %d", id, s, b[id])
		}
	}
	// Conflicting recovered slots: the lexically first keeps it.
	c, _ := AllocateSlots([]string{"x", "y"}, map[string]uint16{"x": 5, "y": 5})
	if c["x"] != 5 || c["y"] == 5 {
		t.Fatalf("conflict resolution: %v", c)
	}
}

func TestCheckOverlap(t *testing.T) {
	acme := tenant(t, "acme", `{"prefixes": ["203.0.113.0/24"]}`)
	holdings := map[string][]netip.Prefix{"acme": acme.Network.Prefixes}
	other := tenant(t, "other", `{"prefixes": ["198.51.100.0/24", "203.0.113.128/25"]}`)
	err := CheckOverlap("other", other.Network.Prefixes, holdings)
	want := `tenants/other/network: prefixes[1]: "203.0.113.128/25": overlaps 203.0.113.0/24 held by tenant "acme"`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	// A tenant never overlaps itself.
	if err := CheckOverlap("acme", acme.Network.Prefixes, holdings); err != nil {
		t.Fatal(err)
	}
}

func TestAssignPrefixes(t *testing.T) {
	p := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	a, b := "203.0.113.128/28", "203.0.113.112/28"
	for _, tc := range []struct {
		name    string
		held    map[string][]netip.Prefix
		claims  []Claim
		refused []string
	}{
		{"swap in one change", map[string][]netip.Prefix{"mv1": p(a), "mv2": p(b)},
			[]Claim{{"mv1", p(b)}, {"mv2", p(a)}}, nil},
		{"move", map[string][]netip.Prefix{"mv1": p(a)},
			[]Claim{{"mv2", p(a)}, {"mv1", nil}}, nil},
		{"incumbent keeps", map[string][]netip.Prefix{"acme": p("203.0.113.0/24")},
			[]Claim{{"intruder", p("203.0.113.128/25")}}, []string{"intruder"}},
		{"incumbent that changes keeps what it still claims", map[string][]netip.Prefix{"acme": p("203.0.113.0/24")},
			[]Claim{{"intruder", p("203.0.113.128/25")}, {"acme", p("203.0.113.0/24", "198.51.100.0/24")}}, []string{"intruder"}},
		{"older claim wins", nil,
			[]Claim{{"old", p("198.51.100.0/24")}, {"new", p("198.51.100.0/25")}}, []string{"new"}},
		// mv1 gives up a but is refused (c is held by mv3), so it keeps a:
		// mv2's claim on a is refused in turn.
		{"refusal cascades", map[string][]netip.Prefix{"mv1": p(a), "mv3": p("198.51.100.0/24")},
			[]Claim{{"mv2", p(a)}, {"mv1", p("198.51.100.0/25")}}, []string{"mv1", "mv2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AssignPrefixes(tc.held, tc.claims)
			var ids []string
			for id := range got {
				ids = append(ids, id)
			}
			sort.Strings(ids)
			if fmt.Sprint(ids) != fmt.Sprint(tc.refused) {
				t.Fatalf("refused %v, want %v (%v)", ids, tc.refused, got)
			}
		})
	}
}

// ForTenant is what nsd applies: one tenant's plan for every subsystem,
// from its documents as stored.
func TestForTenantGolden(t *testing.T) {
	docs := map[string]Doc{
		"network": {Index: 7, Value: []byte(`{"prefixes": ["203.0.113.0/24"],
 "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31",
   "health_check": {"type": "request"}}],
 "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1", "priority": 100}]}`)},
		"firewall": {Index: 8, Value: []byte(`{"default": "allow", "rules": [
 {"id": "ssh", "expression": "tcp.dstport == 22 and not ip.src in $office", "action": "block"}],
 "lists": {"office": ["198.51.100.0/24", "198.51.100.7"]}}`)},
		"dos": {Index: 9, Value: []byte(`{"deny": ["192.0.2.66"], "signatures": [{"id": "amp", "expression": "udp.srcport == 53", "action": "drop"}]}`)},
	}
	n, err := Network("acme", docs["network"], true)
	if err != nil {
		t.Fatal(err)
	}
	p := ForTenant(Options{NSPrefix: "nf-"}, "acme", docs, n, nil, 42)
	got := p.Render()

	// A refused document is carried with its error, no spec.
	docs["firewall"] = Doc{Index: 10, Value: []byte(`{"default": "allow", "rules": [{"id": "x", "expression": "tcp.dstprot == 1", "action": "block"}]}`)}
	p = ForTenant(Options{NSPrefix: "nf-"}, "acme", docs, n, nil, 42)
	if p.Firewall.Err == nil || p.Firewall.Spec != nil || p.Firewall.Index != 10 {
		t.Fatalf("refused firewall part %+v", p.Firewall)
	}
	got += p.Render()
	_, err = Network("ghost", Doc{}, false)
	got += ForTenant(Options{NSPrefix: "nf-"}, "ghost", nil, config.ValidNetwork{}, err, 0).Render()
	golden(t, "for-tenant", got)
}

// A plan built with Reuse takes the parts whose document kept its index
// from the earlier plan (the same spec, not parsed again) and parses the
// others; another tenant's plan or a document at index 0 is never reused.
func TestForTenantReuse(t *testing.T) {
	docs := map[string]Doc{
		"network":  {Index: 7, Value: []byte(`{"prefixes": ["203.0.113.0/24"]}`)},
		"firewall": {Index: 8, Value: []byte(`{"rules": [{"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"}]}`)},
		"dos":      {Index: 9, Value: []byte(`{"deny": ["192.0.2.66"]}`)},
	}
	n, err := Network("acme", docs["network"], true)
	if err != nil {
		t.Fatal(err)
	}
	first := ForTenant(Options{NSPrefix: "nf-"}, "acme", docs, n, nil, 42)
	docs["network"] = Doc{Index: 11, Value: []byte(`{"prefixes": ["203.0.113.0/25"]}`)}
	p := ForTenant(Options{NSPrefix: "nf-", Reuse: &first}, "acme", docs, n, nil, 42)
	if p.Firewall.Spec != first.Firewall.Spec || p.DoS.Spec != first.DoS.Spec {
		t.Fatal("unchanged firewall and dos documents were parsed again")
	}
	docs["firewall"] = Doc{Index: 12, Value: []byte(`{"rules": [{"id": "ssh", "expression": "tcp.dstport == 23", "action": "block"}]}`)}
	p = ForTenant(Options{NSPrefix: "nf-", Reuse: &first}, "acme", docs, n, nil, 42)
	if p.Firewall.Spec == first.Firewall.Spec || p.Firewall.Index != 12 || p.Firewall.Spec.Rules[0].Source != "tcp.dstport == 23" {
		t.Fatalf("changed firewall document: %+v", p.Firewall)
	}
	if p.DoS.Spec != first.DoS.Spec {
		t.Fatal("unchanged dos document parsed again")
	}
	if q := ForTenant(Options{NSPrefix: "nf-", Reuse: &first}, "beta", docs, n, nil, 42); q.DoS.Spec == first.DoS.Spec {
		t.Fatal("another tenant's part reused")
	}
	zero := map[string]Doc{"dos": {Value: []byte(`{"deny": ["192.0.2.1"]}`)}}
	z1 := ForTenant(Options{NSPrefix: "nf-"}, "acme", zero, n, nil, 42)
	zero["dos"] = Doc{Value: []byte(`{"deny": ["192.0.2.2"]}`)}
	if z2 := ForTenant(Options{NSPrefix: "nf-", Reuse: &z1}, "acme", zero, n, nil, 42); z2.DoS.Spec == z1.DoS.Spec {
		t.Fatal("a document at index 0 reused")
	}
}
