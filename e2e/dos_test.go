package e2e

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/nfhost/nfhost/internal/nstest"
)

// addAttacker makes a namespace that reaches the edge through the client
// (the lab's "internet"), from 192.0.2.66.
//
//	attacker 192.0.2.66 ── eth0 ═ att ── client ── eth0 ═ uplink ── edge [XDP]
func (l *lab) addAttacker() *nstest.NS {
	l.t.Helper()
	a := nstest.New(l.t, l.prefix+nstest.Unique()+"a")
	nstest.Link(l.t, a, "eth0", "192.0.2.66/32", l.client, "att", "192.0.2.65/32")
	a.MustExec(l.t, "ip", "route", "add", "192.0.2.65", "dev", "eth0")
	a.MustExec(l.t, "ip", "route", "add", "default", "via", "192.0.2.65")
	l.client.MustExec(l.t, "ip", "route", "add", "192.0.2.66/32", "dev", "att")
	l.client.MustExec(l.t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The edge's uplink /24 is on-link; the attacker is behind the client.
	l.edge.MustExec(l.t, "ip", "route", "add", "192.0.2.64/26", "via", "192.0.2.1")
	return a
}

// attackLab adds the attacker and starts nsd with metrics; nsd's log is
// printed if the test fails.
func (l *lab) attackLab(t testing.TB) (att *nstest.NS, p *proc, metricsAddr string) {
	t.Helper()
	nstest.RequireTool(t, "python3")
	att = l.addAttacker()
	p = l.startNSD("--metrics-addr", "127.0.0.1:0")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	return att, p, p.metricsAddr(t)
}

// metricsAddr waits for nsd's "serving metrics" log line.
func (p *proc) metricsAddr(t testing.TB) string {
	t.Helper()
	re := regexp.MustCompile(`msg="serving metrics".* addr=(\S+)`)
	var addr string
	eventually(t, "metrics endpoint", func() bool {
		if m := re.FindStringSubmatch(p.Log()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

// metric reads one sample (name{labels} value) from the endpoint.
func metric(t testing.TB, addr, series string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return uint64(f)
		}
	}
	return 0
}

// TestDoSThroughConsul: a tenant's deny list and signature, written with
// nsctl into Consul, stop an attacker namespace's traffic in XDP while the
// client keeps working, and the counters match the packets sent; killing
// nsd leaves the filtering in place, and the next nsd replaces the
// program in place.
func TestDoSThroughConsul(t *testing.T) {
	l := newLab(t)
	att, p, maddr := l.attackLab(t)
	eventually(t, "XDP attached", func() bool { return strings.Contains(p.Log(), "XDP DoS layer attached") })
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	nstest.StartResponder(t, tn)
	reach := func(from *nstest.NS, port int) bool { return nstest.Reach(t, from, "udp", "203.0.113.1", port) }
	if !reach(l.client, 53) || !reach(att, 53) {
		t.Fatal("no traffic before any DoS rule")
	}
	if out := l.edge.MustExec(t, "ip", "link", "show", "uplink"); !strings.Contains(out, "xdp") {
		t.Fatalf("no XDP program on the uplink:\n%s", out)
	}

	// 1. A tenant deny list.
	doc := filepath.Join(t.TempDir(), "dos.json")
	os.WriteFile(doc, []byte(`{"deny": ["192.0.2.66"]}`), 0o644)
	if out, code := l.nsctl("dos", "put", "acme", "-f", doc); code != 0 {
		t.Fatalf("nsctl dos put: %d %s", code, out)
	}
	eventually(t, "attacker dropped", func() bool { return !reach(att, 53) })
	if !reach(l.client, 53) || !nstest.Reach(t, l.client, "icmp", "203.0.113.1", 0) {
		t.Fatal("the client lost traffic")
	}
	dropped := "nfhost_dos_tenant_dropped_packets_total{tenant=\"acme\"}"
	before := metric(t, maddr, dropped)
	nstest.SendUDP(t, att, "", "203.0.113.1", 53, 200, []byte("flood"))
	eventually(t, "200 drops counted", func() bool { return metric(t, maddr, dropped)-before == 200 })

	// 2. A signature with a payload match (NTP mode 7, "monlist"), added
	// with nsctl; the deny entry goes. The client's NTP-port probe has
	// another payload and passes.
	os.WriteFile(doc, []byte(`{}`), 0o644)
	if out, code := l.nsctl("dos", "put", "acme", "-f", doc); code != 0 {
		t.Fatalf("nsctl dos put: %d %s", code, out)
	}
	eventually(t, "deny entry removed", func() bool { return reach(att, 123) })
	if out, code := l.nsctl("dos", "add-signature", "acme", "--id", "ntp-monlist",
		"--expression", "udp.dstport == 123 and payload[0:1] & 0x07 == 0x07"); code != 0 {
		t.Fatalf("add-signature: %d %s", code, out)
	}
	sig := "nfhost_dos_rule_dropped_packets_total{kind=\"signature\",rule=\"acme/ntp-monlist\"}"
	eventually(t, "signature in force", func() bool {
		nstest.SendUDP(t, att, "", "203.0.113.1", 123, 1, []byte{0x17, 0, 3, 0x2a})
		return metric(t, maddr, sig) > 0
	})
	base := metric(t, maddr, sig)
	nstest.SendUDP(t, att, "", "203.0.113.1", 123, 300, []byte{0x17, 0, 3, 0x2a})
	eventually(t, "300 signature drops counted", func() bool { return metric(t, maddr, sig)-base == 300 })
	if !reach(att, 123) || !reach(l.client, 123) || !reach(att, 53) {
		t.Fatal("traffic the signature does not match was dropped")
	}
	// A signature outside the XDP subset is refused with its position.
	out, code := l.nsctl("dos", "add-signature", "acme", "--id", "bad", "--expression", "udp.dstport == 123 or udp.dstport == 53")
	if code != 3 || !strings.Contains(out, "signatures[1].expression: 1:20: or is not supported") {
		t.Fatalf("bad signature: %d %s", code, out)
	}
	// The counters reach nsctl dos stats through the status keys.
	eventually(t, "dos stats", func() bool {
		out, code := l.nsctl("dos", "stats", "acme")
		return code == 0 && strings.Contains(out, "signature:ntp-monlist")
	})

	// 3. nsd is killed: filtering continues (the drops are counted in the
	// pinned maps and show up once nsd is back).
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	nstest.SendUDP(t, att, "", "203.0.113.1", 123, 100, []byte{0x17})
	if !reach(l.client, 123) || !reach(att, 53) {
		t.Fatal("legitimate traffic lost without nsd")
	}
	// The same build restarts: the attached program is left as it is.
	p2 := l.startNSD("--metrics-addr", "127.0.0.1:0")
	eventually(t, "restart", func() bool { return strings.Contains(p2.Log(), "XDP DoS layer attached") })
	if !strings.Contains(p2.Log(), "unchanged=true") {
		t.Errorf("a restart of the same build replaced the XDP program:\n%s", grep(p2.Log(), "XDP"))
	}
	m2 := p2.metricsAddr(t)
	eventually(t, "drops while nsd was down counted", func() bool { return metric(t, m2, sig) == base+300+100 })
	p2.stop(t)

	// A new build: its program replaces the old one through the pinned
	// link, with no gap; counters and map contents are kept.
	nextBin := filepath.Join(filepath.Dir(l.nsdBin), "nsd-next")
	p3 := l.startNSDBin(nextBin, "--metrics-addr", "127.0.0.1:0")
	eventually(t, "in-place upgrade", func() bool { return strings.Contains(p3.Log(), "upgraded_in_place=true") })
	m3 := p3.metricsAddr(t)
	// The counters live in the pinned maps; the new nsd names them once
	// its first pass has read the config.
	eventually(t, "counters kept across the upgrade", func() bool { return metric(t, m3, sig) == base+400 })
	before = metric(t, m3, sig)
	nstest.SendUDP(t, att, "", "203.0.113.1", 123, 50, []byte{0x17})
	eventually(t, "filtering after the upgrade", func() bool { return metric(t, m3, sig)-before == 50 })
	if !reach(l.client, 123) {
		t.Fatal("client lost traffic after the upgrade")
	}
	for _, q := range []*proc{p2, p3} {
		if strings.Contains(q.Log(), "DoS maps updated") {
			t.Errorf("a restarted nsd rewrote DoS maps for an unchanged config:\n%s", grep(q.Log(), "DoS maps"))
		}
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
