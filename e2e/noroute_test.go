package e2e

import (
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/nstest"
)

// A tenant answers on an edge whose routing table holds nothing but the
// connected route to the client (no default route, nothing covering the
// tenant's prefix), with the host-wide rp_filter strict: the return path
// is nsd's, not the host's.
//
//	client 192.0.2.1 ── uplink 192.0.2.2 edge (192.0.2.0/24 only) ── nfv… ═ host0 [nfR…-acme] 203.0.113.1
func TestTenantReachableWithoutHostRoute(t *testing.T) {
	l := newLabPrefix(t, "nfR") // its cleanup removes every namespace with the prefix
	prefix := l.nsPrefix
	l.edge.MustExec(t, "ip", "route", "del", "default")
	l.edge.MustExec(t, "ip", "-6", "route", "del", "default")
	l.edge.MustExec(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
	if out := l.edge.MustExec(t, "ip", "route"); strings.TrimSpace(out) != "192.0.2.0/24 dev uplink proto kernel scope link src 192.0.2.2" {
		t.Fatalf("edge main table is not just the connected route:\n%s", out)
	}

	l.startNSD()
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"]}`)
	eventually(t, "tenant acme applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := &nstest.NS{Name: prefix + "acme"}
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	nstest.StartResponder(t, tn)

	for _, c := range []struct {
		proto, addr string
		port        int
	}{{"icmp", "203.0.113.1", 0}, {"tcp", "203.0.113.1", 80}, {"icmp", "2001:db8:1::1", 0}, {"tcp", "2001:db8:1::1", 22}} {
		ok := false
		for i := 0; i < 3 && !ok; i++ {
			ok = nstest.Reach(t, l.client, c.proto, c.addr, c.port)
		}
		if !ok {
			t.Errorf("%s %s:%d from the client fails on an edge without a covering route", c.proto, c.addr, c.port)
		}
	}
	// The tenant reaches out, too.
	if out, err := tn.Exec(t, "ping", "-c1", "-W2", "-I", "203.0.113.1", "192.0.2.1"); err != nil {
		t.Errorf("tenant cannot reach the client: %v\n%s", err, out)
	}
}
