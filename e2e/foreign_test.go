package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
)

// Namespaces with nsd's prefix that nsd did not create survive nsd: an
// empty one, and one joined to the edge by another owner's veth (with a
// route through it), through resyncs and a confirmed mass delete of every
// tenant. nsd logs them and never counts them as tenants.
//
//	client ── uplink edge ── fgn… 10.99.0.1/30 ═ eth0 10.99.0.2/30 [<prefix>other]
//	                  │                                              [<prefix>empty]
//	                  └─ nfv… ═ host0 [<prefix>t0], [<prefix>t1], [<prefix>t2]
func TestForeignNamespacesSurviveNSD(t *testing.T) {
	l := newLabPrefix(t, "nfR") // its cleanup removes every namespace with the prefix
	prefix := l.nsPrefix
	empty := nstest.New(t, prefix+"empty")
	other := nstest.New(t, prefix+"other")
	hostEnd := "fgn" + nstest.Unique()
	nstest.Link(t, l.edge, hostEnd, "10.99.0.1/30", other, "eth0", "10.99.0.2/30")
	other.MustExec(t, "ip", "route", "add", "198.18.0.0/15", "via", "10.99.0.1")
	l.edge.MustExec(t, "ip", "route", "add", "198.18.0.0/15", "via", "10.99.0.2")
	state := func() string {
		var b strings.Builder
		for _, ns := range []*nstest.NS{empty, other} {
			if !namedns.Exists(namedns.DefaultDir, ns.Name) {
				fmt.Fprintf(&b, "%s: GONE\n", ns.Name)
				continue
			}
			// IPv4 only: link-local addresses change as DAD completes.
			for _, args := range [][]string{{"ip", "-d", "-o", "link", "show"}, {"ip", "-4", "-o", "addr", "show"}, {"ip", "-4", "route", "show", "table", "all"}} {
				b.WriteString(ns.MustExec(t, args...))
			}
		}
		out, err := l.edge.Output(t, "ip", "-d", "-o", "link", "show", hostEnd)
		b.WriteString(out)
		if err != nil {
			b.WriteString(hostEnd + ": GONE\n")
		}
		b.WriteString(l.edge.MustExec(t, "ip", "route", "show", "198.18.0.0/15"))
		return b.String()
	}
	before := state()

	p := l.startNSD("--max-delete-fraction", "0.5")
	for i, pfx := range []string{"203.0.113.0/26", "203.0.113.64/26", "203.0.113.128/26"} {
		l.applyTenant(fmt.Sprintf("t%d", i), fmt.Sprintf(`{"prefixes": [%q]}`, pfx))
	}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("t%d", i)
		eventually(t, id+" applied", func() bool { return strings.Contains(l.status(id), "applied") })
	}
	time.Sleep(2500 * time.Millisecond) // at least two resyncs
	if got := state(); got != before {
		t.Fatalf("nsd changed foreign state during resyncs:\n--- before\n%s\n--- after\n%s", before, got)
	}
	if strings.Contains(p.Log(), "tenant deleted") {
		t.Errorf("nsd deleted something although every tenant is configured:\n%s", p.Log())
	}
	if log := p.Log(); !strings.Contains(log, "not nfhost's") || !strings.Contains(log, empty.Name) || !strings.Contains(log, other.Name) {
		t.Errorf("nsd did not warn about the foreign namespaces:\n%s", log)
	}

	// The store comes back empty: the hold counts nsd's three tenants only;
	// confirming deletes them and nothing else.
	l.consul.Restart(t)
	var out string
	eventually(t, "held deletes reported", func() bool {
		out, _ = l.nsctl("status", "--host", l.hostID)
		return strings.Contains(out, "HOLDING deletion of")
	})
	if !strings.Contains(out, "HOLDING deletion of 3 tenants") {
		t.Errorf("hold does not count exactly nsd's three tenants:\n%s", out)
	}
	l.confirmDeletes()
	eventually(t, "tenants deleted after confirmation", func() bool {
		names, _ := namedns.List(namedns.DefaultDir, prefix+"t")
		return len(names) == 0 && !strings.Contains(l.edge.MustExec(t, "ip", "-o", "link", "show"), "nfv")
	})
	time.Sleep(1500 * time.Millisecond) // another resync after the deletes
	if got := state(); got != before {
		t.Errorf("foreign state changed by the mass delete:\n--- before\n%s\n--- after\n%s", before, got)
	}
	l.edge.MustExec(t, "ping", "-c1", "-W2", "10.99.0.2")
}
