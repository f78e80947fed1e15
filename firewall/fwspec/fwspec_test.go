package fwspec

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func rulesDoc(n int, expr string) []byte {
	c := Config{}
	for i := 0; i < n; i++ {
		c.Rules = append(c.Rules, Rule{ID: fmt.Sprintf("r%d", i), Expression: expr, Action: Block})
	}
	b, _ := json.Marshal(c)
	return b
}

func listDoc(lists, entries int) []byte {
	c := Config{Rules: []Rule{}, Lists: map[string][]string{}}
	for l := 0; l < lists; l++ {
		name := fmt.Sprintf("l%d", l)
		for i := 0; i < entries; i++ {
			c.Lists[name] = append(c.Lists[name], fmt.Sprintf("%d.%d.%d.0/24", 10+l, (i>>8)&255, i&255))
		}
	}
	b, _ := json.Marshal(c)
	return b
}

// Over-limit documents are refused with one error naming the document and
// the limit, before their rules or entries are looked at (the rules here
// are all invalid: validating them would add errors).
func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"10,000 rules", rulesDoc(10000, "tcp.dstprot == 1"), "tenants/acme/firewall: rules: 10000 rules, at most 1000"},
		{"5 MiB", append(rulesDoc(1, "tcp.dstport == 1"), make([]byte, 5<<20)...), "tenants/acme/firewall: document is 5242952 bytes, at most 4194304 (4 MiB)"},
		{"entries in all lists", listDoc(3, 70000), "tenants/acme/firewall: lists: 210000 entries in all lists, at most 200000"},
		{"one list", listDoc(1, 100001), "tenants/acme/firewall: lists.l0: 100001 entries, at most 100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("acme", tc.data)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}
	// At the limits: 1,000 rules, a 100,000-entry list (1.6 MB).
	if _, err := Parse("acme", rulesDoc(1000, "tcp.dstport == 1")); err != nil {
		t.Fatal(err)
	}
	big := listDoc(1, 100000)
	if s, err := Parse("acme", big); err != nil || len(s.Lists["l0"]) == 0 {
		t.Fatalf("100,000-entry list (%d bytes): %v", len(big), err)
	}
}

// BenchmarkRefuse: what refusing an over-limit document costs a pass,
// against parsing a document at the limit.
func BenchmarkRefuse(b *testing.B) {
	for _, bc := range []struct {
		name string
		data []byte
	}{
		{"10000-rules", rulesDoc(10000, "tcp.dstport == 1 and ip.src in {192.0.2.0/24}")},
		{"1000-rules", rulesDoc(1000, "tcp.dstport == 1 and ip.src in {192.0.2.0/24}")},
		{"5MiB", make([]byte, 5<<20)},
		{"100k-list", listDoc(1, 100000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				Parse("acme", bc.data)
			}
		})
	}
}

func TestSharedLists(t *testing.T) {
	threats, err := ParseSharedList("cf.anonymizer", [][]byte{[]byte(`["192.0.2.0/24", "2001:db8::/32"]`), []byte(`["192.0.2.7"]`)})
	if err != nil || len(threats) != 2 {
		t.Fatalf("%v %v", threats, err)
	}
	env := Env{Shared: map[string][]netip.Prefix{"cf.anonymizer": threats, "office": {netip.MustParsePrefix("10.0.0.0/8")}}}
	s, err := ParseEnv("acme", []byte(`{"rules": [
	  {"id": "a", "expression": "ip.src in $cf.anonymizer", "action": "block"},
	  {"id": "b", "expression": "ip.dst in $office", "action": "block"}],
	  "lists": {"office": ["198.51.100.0/24"]}}`), env)
	if err != nil {
		t.Fatal(err)
	}
	// The shared list under its own name; the tenant's office wins over
	// the shared one of the same name.
	if len(s.Lists["_s_cf.anonymizer"]) != 2 || s.Lists["office"][0].String() != "198.51.100.0/24" || s.Lists["_s_office"] != nil {
		t.Fatalf("lists %v", s.Lists)
	}
	if got := s.Rules[0].Alts[0][0].String(); got != "ip.src in $_s_cf.anonymizer" {
		t.Fatalf("rule a: %s", got)
	}
	for parts, want := range map[string]string{
		`["192.0.2.1/24"]`: `lists/x: part 0 entry 0 "192.0.2.1/24": host bits set`,
		`{"a": 1}`:         `lists/x: part 0: want a JSON array`,
	} {
		if _, err := ParseSharedList("x", [][]byte{[]byte(parts)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", parts, err, want)
		}
	}
	if _, err := ParseSharedList("Bad Name", nil); err == nil {
		t.Error("bad name accepted")
	}
}
