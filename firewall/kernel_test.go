package firewall_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/firewall"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/nstest"
)

type fwTopo struct {
	client, tenant *nstest.NS
}

// client 203.0.113.2/24 2001:db8:1::2/64 ── eth0 ═ host0 ── 203.0.113.1 2001:db8:1::1 tenant
func newFWTopo(t *testing.T) *fwTopo {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	nstest.RequireTool(t, "python3")
	u := nstest.Unique()
	tp := &fwTopo{client: nstest.New(t, "nfF"+u+"c"), tenant: nstest.New(t, "nfF"+u+"t")}
	nstest.Link(t, tp.client, "eth0", "203.0.113.2/24", tp.tenant, "host0", "203.0.113.1/24")
	tp.client.MustExec(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	tp.tenant.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "host0", "nodad")
	nstest.StartResponder(t, tp.tenant)
	return tp
}

func (tp *fwTopo) reach(t *testing.T, proto, addr string, port int) bool {
	t.Helper()
	return nstest.Reach(t, tp.client, proto, addr, port)
}

func parse(t *testing.T, doc string) *fwspec.Spec {
	t.Helper()
	s, err := fwspec.Parse("acme", []byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return &s
}

func apply(t *testing.T, tp *fwTopo, spec *fwspec.Spec) []string {
	t.Helper()
	ch, err := (&firewall.Reconciler{}).Apply(tp.tenant.Handle, spec)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return ch
}

type probeCase struct {
	proto, addr string
	port        int
	want        bool
}

func expect(t *testing.T, tp *fwTopo, cases []probeCase) {
	t.Helper()
	for _, c := range cases {
		if got := tp.reach(t, c.proto, c.addr, c.port); got != c.want {
			t.Errorf("%s %s:%d reachable=%v, want %v", c.proto, c.addr, c.port, got, c.want)
		}
	}
}

func TestFirewallVerdictsAndCounters(t *testing.T) {
	tp := newFWTopo(t)
	doc := func(office string) string {
		return `{
	  "rules": [
	    {"id": "office-ssh", "expression": "tcp.dstport == 22 and ip.src in $office", "action": "allow"},
	    {"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"},
	    {"id": "ntp", "expression": "udp.dstport == 123 and ip.version == 6", "action": "block"},
	    {"id": "pings", "expression": "icmp.type == 8 or icmp.type == 128", "action": "log"},
	    {"id": "off", "expression": "tcp.dstport == 80", "action": "block", "enabled": false}
	  ],
	  "lists": {"office": [` + office + `]}}`
	}
	spec := parse(t, doc(`"198.51.100.0/24", "2001:db8:99::/48"`))
	apply(t, tp, spec)
	expect(t, tp, []probeCase{
		{"tcp", "203.0.113.1", 22, false}, {"tcp", "2001:db8:1::1", 22, false},
		{"tcp", "203.0.113.1", 80, true}, {"tcp", "2001:db8:1::1", 80, true},
		{"udp", "203.0.113.1", 123, true}, {"udp", "2001:db8:1::1", 123, false},
		{"udp", "203.0.113.1", 53, true}, {"icmp", "203.0.113.1", 0, true}, {"icmp", "2001:db8:1::1", 0, true},
	})
	ctr, err := (&firewall.Reconciler{}).Counters(tp.tenant.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if ctr["ssh"].Packets == 0 || ctr["office-ssh"].Packets != 0 || ctr["pings"].Packets != 2 || ctr["ntp"].Packets == 0 {
		t.Errorf("counters %+v", ctr)
	}
	// Idempotent.
	if ch := apply(t, tp, spec); len(ch) != 0 {
		t.Fatalf("second Apply changed %v", ch)
	}

	// A list of /24s is a hash set looked up with the source masked to
	// /24. Put the client's /24 in it: only list elements change, and
	// first match now allows SSH from the client (203.0.113.2).
	// The same for IPv6 (/48s, the client's 2001:db8:1::2).
	before := ctr["ssh"].Packets
	specA := parse(t, doc(`"198.51.100.0/24", "203.0.113.0/24", "2001:db8:99::/48", "2001:db8:1::/48"`))
	ch := apply(t, tp, specA)
	if got := strings.Join(ch, "; "); len(ch) != 2 || !strings.Contains(got, "list l4h24_office: 1 element changes") ||
		!strings.Contains(got, "list l6h48_office: 1 element changes") {
		t.Fatalf("list edit changed more than the list: %v", ch)
	}
	expect(t, tp, []probeCase{{"tcp", "203.0.113.1", 22, true}, {"tcp", "2001:db8:1::1", 22, true}})
	// Hand edits of a hash list (an element gone, one with host bits no
	// /24 has) are repaired by the first apply of a new process.
	tp.tenant.MustExec(t, "nft", "delete", "element", "inet", "nfhost", "l4h24_office", "{ 203.0.113.0 }")
	tp.tenant.MustExec(t, "nft", "add", "element", "inet", "nfhost", "l4h24_office", "{ 192.0.2.77 }")
	ch, err = (&firewall.Reconciler{}).Apply(tp.tenant.Handle, specA)
	if err != nil || len(ch) != 1 || !strings.Contains(ch[0], "list l4h24_office: 2 element changes") {
		t.Fatalf("repair of a hand-edited hash list: %v %v", ch, err)
	}
	if out := tp.tenant.MustExec(t, "nft", "list", "set", "inet", "nfhost", "l4h24_office"); strings.Contains(out, "192.0.2.77") || !strings.Contains(out, "203.0.113.0") {
		t.Fatalf("hash list after repair:\n%s", out)
	}
	// The client alone (a /32) beside a /24: the list becomes an interval
	// set, and the rule using it is rewritten in the same batch.
	spec2 := parse(t, doc(`"198.51.100.0/24", "203.0.113.2", "2001:db8:99::/48"`))
	ch = apply(t, tp, spec2)
	if got := strings.Join(ch, "; "); len(ch) != 4 || !strings.Contains(got, "list l4_office: 3 element changes") ||
		!strings.Contains(got, "delete list l4h24_office") || !strings.Contains(got, "rewrite 2 chains") ||
		!strings.Contains(got, "list l6h48_office: 1 element changes") {
		t.Fatalf("list edit that changes the set's kind: %v", ch)
	}
	expect(t, tp, []probeCase{{"tcp", "203.0.113.1", 22, true}, {"tcp", "2001:db8:1::1", 22, false}})
	ctr, _ = (&firewall.Reconciler{}).Counters(tp.tenant.Handle)
	if ctr["office-ssh"].Packets == 0 || ctr["ssh"].Packets <= before {
		t.Errorf("counters after list change %+v", ctr)
	}
	// Rule replacement keeps counters.
	spec3 := parse(t, `{"rules": [{"id": "ssh", "expression": "tcp.dstport in {22, 2222}", "action": "block"}]}`)
	apply(t, tp, spec3)
	ctr3, _ := (&firewall.Reconciler{}).Counters(tp.tenant.Handle)
	if ctr3["ssh"].Packets < ctr["ssh"].Packets || len(ctr3) != 1 {
		t.Errorf("counters after rule replacement %+v (before %+v)", ctr3, ctr)
	}
	// Removing the firewall removes the table.
	apply(t, tp, nil)
	if out, _ := tp.tenant.Exec(t, "nft", "list", "tables"); strings.Contains(out, "nfhost") {
		t.Fatalf("table left: %s", out)
	}
	expect(t, tp, []probeCase{{"tcp", "203.0.113.1", 22, true}})
}

func TestFirewallDefaultBlock(t *testing.T) {
	tp := newFWTopo(t)
	apply(t, tp, parse(t, `{"default": "block", "rules": [
	  {"id": "web", "expression": "tcp.dstport in {80, 443} and ip.dst in {203.0.113.0/24, 2001:db8:1::/48}", "action": "allow"},
	  {"id": "dns", "expression": "udp.dstport == 53 and not ip.src == 198.51.100.9", "action": "allow"}]}`))
	expect(t, tp, []probeCase{
		{"tcp", "203.0.113.1", 80, true}, {"tcp", "2001:db8:1::1", 80, true},
		{"tcp", "203.0.113.1", 22, false}, {"icmp", "203.0.113.1", 0, false},
		{"udp", "203.0.113.1", 53, true}, {"udp", "2001:db8:1::1", 53, true}, {"udp", "203.0.113.1", 123, false},
	})
}

func TestFirewallGolden(t *testing.T) {
	tp := newFWTopo(t)
	apply(t, tp, parse(t, `{"rules": [
	  {"id": "ssh", "expression": "tcp.dstport == 22 and not ip.src in $office", "action": "block"},
	  {"id": "amp", "expression": "udp.srcport in {53, 123, 1900} and ip.len > 512", "action": "block"},
	  {"id": "syn", "expression": "tcp.flags.syn and not tcp.flags.ack and ip.ttl < 10", "action": "log"},
	  {"id": "nets", "expression": "ip.src in {192.0.2.0/24, 2001:db8:5::/48} or ip.dst == 203.0.113.7", "action": "block"}],
	  "lists": {"office": ["198.51.100.0/24", "2001:db8::/32"]}}`))
	got := tp.tenant.MustExec(t, "nft", "list", "table", "inet", "nfhost")
	// Counter values depend on traffic; blank them.
	var lines []string
	for _, l := range strings.Split(got, "\n") {
		if strings.Contains(l, "packets ") && strings.Contains(l, "bytes ") {
			l = l[:strings.Index(l, "packets ")] + "packets N bytes N"
		}
		lines = append(lines, l)
	}
	got = strings.Join(lines, "\n")
	p := filepath.Join("testdata", "ruleset.golden")
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, _ := os.ReadFile(p)
	if got != string(want) {
		t.Errorf("ruleset differs from %s (UPDATE_GOLDEN=1 to accept):\n%s", p, got)
	}
}

func TestFirewall100kList(t *testing.T) {
	tp := newFWTopo(t)
	var b strings.Builder
	b.WriteString(`{"rules": [{"id": "deny", "expression": "ip.src in $big", "action": "block"}], "lists": {"big": [`)
	for i := 0; i < 99999; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"%d.%d.%d.0/24"`, 10+i>>16, (i>>8)&255, i&255)
	}
	b.WriteString(`, "203.0.113.2"]}}`)
	spec := parse(t, b.String())
	t0 := time.Now()
	apply(t, tp, spec)
	t.Logf("applied a 100,000-entry list in %v", time.Since(t0))
	expect(t, tp, []probeCase{{"icmp", "203.0.113.1", 0, false}, {"icmp", "2001:db8:1::1", 0, true}})
	out := tp.tenant.MustExec(t, "nft", "list", "set", "inet", "nfhost", "l4_big")
	if n := strings.Count(out, "/24"); n != 99999 {
		t.Errorf("set holds %d /24 entries", n)
	}
	if ch := apply(t, tp, spec); len(ch) != 0 {
		t.Fatalf("re-apply changed %v", ch)
	}
}
