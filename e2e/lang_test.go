package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/geoip/geoiptest"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// TestLanguageThroughConsul: nsd with --site and --geoip-db, a tenant's
// rules on cf.colo.name, ip.src.country and a shared list
// (nfhost/lists/threats), on IPv4 and IPv6 traffic from the client. A new
// database file and a list change reach the kernel as set elements
// without any tenant key changing.
func TestLanguageThroughConsul(t *testing.T) {
	l := newLabPrefix(t, "nfL", consultest.WithPorts(28720))
	nstest.RequireTool(t, "python3")
	l.hostID = "nfL" + l.hostID // the pin directory below carries the tag
	pins := filepath.Join(bpfpin.BPFFS, "nfL"+strings.TrimPrefix(l.nsPrefix, "nfL"))
	t.Cleanup(func() { dos.Detach(pins) })
	dir := t.TempDir()
	db := geoiptest.WriteCountry(t, dir, "cc.mmdb", map[string][]string{"BR": {"192.0.2.0/24", "2001:db8:ff::/64"}, "FR": {"198.51.100.0/24"}})
	l.consul.Put(t, "nfhost/lists/threats", `["192.0.2.1", "2001:db8:ff::1"]`)
	l.startNSD("--site", "ams01", "--region", "WEUR", "--geoip-db", db, "--geo-reload-interval", "200ms", "--bpf-pin-dir", pins)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"]}`)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	nstest.StartResponder(t, tn)
	l.consul.Put(t, "nfhost/tenants/acme/firewall", `{"rules": [
	  {"id": "site", "expression": "cf.colo.name == \"AMS01\" and tcp.dstport == 80", "action": "block"},
	  {"id": "geo", "expression": "ip.src.country == \"BR\" and tcp.dstport == 22", "action": "block"},
	  {"id": "threats", "expression": "ip.src in $threats and udp.dstport == 53", "action": "block"},
	  {"id": "region", "expression": "cf.colo.region != \"WEUR\" and udp.dstport == 123", "action": "block"}]}`)
	reach := func(proto, addr string, port int) bool { return nstest.Reach(t, l.client, proto, addr, port) }
	for _, a := range []string{"203.0.113.1", "2001:db8:1::1"} {
		eventually(t, "rules in force for "+a, func() bool { return !reach("tcp", a, 80) })
		if reach("tcp", a, 22) || reach("udp", a, 53) || !reach("udp", a, 123) {
			t.Fatalf("%s: wrong verdicts: %s", a, l.tenantNS("acme").MustExec(t, "nft", "list", "ruleset"))
		}
	}
	// A new database: the client is no longer in BR.
	time.Sleep(20 * time.Millisecond)
	geoiptest.WriteCountry(t, dir, "cc.mmdb", map[string][]string{"BR": {"198.51.100.0/24"}})
	for _, a := range []string{"203.0.113.1", "2001:db8:1::1"} {
		eventually(t, "database reload for "+a, func() bool { return reach("tcp", a, 22) })
	}
	// The shared list changes; no tenant key does.
	l.consul.Put(t, "nfhost/lists/threats", `["198.51.100.0/24"]`)
	for _, a := range []string{"203.0.113.1", "2001:db8:1::1"} {
		eventually(t, "list change for "+a, func() bool { return reach("udp", a, 53) })
		if reach("tcp", a, 80) || !reach("udp", a, 123) {
			t.Fatalf("%s: other rules changed", a)
		}
	}
	log := l.nsd.Log()
	if !strings.Contains(log, "geo databases reloaded") {
		t.Errorf("no reload in the log:\n%s", log)
	}
	// The rules' chains were not rewritten after the first apply: the
	// reload and the list change were element changes.
	after := strings.SplitN(log, "geo databases reloaded", 2)
	if len(after) != 2 || strings.Contains(after[1], "rewrite") || !strings.Contains(after[1], "list l4__cc_br") || !strings.Contains(after[1], "list l6__s_threats") {
		t.Errorf("after the reload, not element changes only:\n%s", after[len(after)-1])
	}
}
