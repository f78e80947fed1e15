package fwspec

import (
	"encoding/json"
	"fmt"
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
