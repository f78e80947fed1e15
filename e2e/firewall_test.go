package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/nstest"
)

// TestFirewallThroughConsul: a tenant blocks a port through Consul (nsctl
// fw), traffic from the client is blocked; a bad rule is refused and the
// old rules keep working; the rule is removed and traffic flows again.
func TestFirewallThroughConsul(t *testing.T) {
	l := newLab(t)
	nstest.RequireTool(t, "python3")
	l.startNSD()
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"]}`)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	nstest.StartResponder(t, tn)
	reach := func(addr string, port int) bool { return nstest.Reach(t, l.client, "tcp", addr, port) }
	if !reach("203.0.113.1", 22) || !reach("2001:db8:1::1", 22) || !reach("203.0.113.1", 80) {
		t.Fatal("no traffic before any rule")
	}

	// Block SSH.
	start := time.Now()
	if out, code := l.nsctl("fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 22", "--action", "block"); code != 0 {
		t.Fatalf("add-rule: %d %s", code, out)
	}
	eventually(t, "ssh blocked", func() bool { return !reach("203.0.113.1", 22) })
	t.Logf("rule written -> traffic blocked after %v (includes the 0.7 s probe timeout; make bench measures it)", time.Since(start))
	if reach("2001:db8:1::1", 22) || !reach("203.0.113.1", 80) || !reach("2001:db8:1::1", 80) {
		t.Fatal("wrong verdicts after blocking ssh")
	}

	// A misspelt field is refused by nsctl, pointing at the column.
	out, code := l.nsctl("fw", "add-rule", "acme", "--id", "web", "--expression", "tcp.dstprot == 80")
	if code != 3 || !strings.Contains(out, `rules[1].expression: 1:1: unknown field "tcp.dstprot"; did you mean "tcp.dstport"?`) {
		t.Fatalf("bad rule via nsctl: %d %s", code, out)
	}
	// Written past nsctl straight into Consul, it is refused by nsd; the
	// rules in force keep working.
	l.consul.Put(t, "nfhost/tenants/acme/firewall", `{"rules": [{"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"},
	  {"id": "web", "expression": "tcp.dstport == 80 and", "action": "block"}]}`)
	eventually(t, "firewall error in status", func() bool {
		return strings.Contains(l.status("acme"), `rules[1].expression: 1:22: expected a field, not or (, found end of expression`)
	})
	if reach("203.0.113.1", 22) || !reach("203.0.113.1", 80) {
		t.Fatal("old rules not in force after a bad update")
	}
	l.consul.Put(t, "nfhost/tenants/acme/firewall", `{"rules": [{"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"}]}`)
	eventually(t, "status recovers", func() bool { return strings.Contains(l.status("acme"), "applied") })

	// Counters reach nsctl fw stats (after a resync reads them).
	eventually(t, "ssh counter in stats", func() bool {
		out, code := l.nsctl("fw", "stats", "acme")
		if code != 0 {
			return false
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 4 && f[1] == "ssh" && f[2] != "0" {
				return true
			}
		}
		return false
	})

	// Remove the rule: SSH flows again.
	if out, code := l.nsctl("fw", "delete-rule", "acme", "ssh"); code != 0 {
		t.Fatalf("delete-rule: %d %s", code, out)
	}
	eventually(t, "ssh allowed again", func() bool { return reach("203.0.113.1", 22) })
}

// TestFirewallConcurrentEditors: two editors add rules at the same time;
// check-and-set with retry keeps every rule.
func TestFirewallConcurrentEditors(t *testing.T) {
	l := newLab(t)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for e := 0; e < 2; e++ {
		wg.Add(1)
		go func(e int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				id := fmt.Sprintf("e%d-r%d", e, i)
				if out, code := l.nsctl("fw", "add-rule", "acme", "--id", id, "--expression", fmt.Sprintf("tcp.dstport == %d", 1000+e*100+i)); code != 0 {
					errs <- fmt.Sprintf("%s: %d %s", id, code, out)
				}
			}
		}(e)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	out, _ := l.nsctl("fw", "get", "acme")
	if n := strings.Count(out, `"id":`); n != 20 {
		t.Fatalf("%d rules survived concurrent edits, want 20:\n%s", n, out)
	}
}
