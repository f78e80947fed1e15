package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// topLab is an nfT-tagged lab (namespaces, host ID and bpffs pins start
// with nfT; Consul on the ports from consulPort) with an attacker and nsd
// serving metrics and the top endpoint; tenant acme holds 203.0.113.0/24
// with 203.0.113.1 answering on the ResponderPorts and its packets
// sampled 1 in 64.
func topLab(t testing.TB, consulPort int) (l *lab, att *nstest.NS, p *proc, maddr string) {
	t.Helper()
	l = newLabPrefix(t, "nfT", consultest.WithPorts(consulPort))
	u := strings.TrimSuffix(strings.TrimPrefix(l.nsPrefix, "nfT"), "-")
	l.hostID = "nfT-" + u
	pins := filepath.Join(bpfpin.BPFFS, "nfT-"+u)
	t.Cleanup(func() { dos.Detach(pins); os.RemoveAll(pins) })
	nstest.RequireTool(t, "python3")
	att = l.addAttacker()
	p = l.startNSD("--metrics-addr", "127.0.0.1:0", "--bpf-pin-dir", pins, "--log-level", "info")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	maddr = p.metricsAddr(t)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	nstest.StartResponder(t, tn)
	l.consul.Put(t, "nfhost/tenants/acme/dos", `{"sample_rate": 64}`)
	eventually(t, "dos document applied", func() bool { return strings.Contains(p.Log(), "DoS maps updated") })
	return l, att, p, maddr
}

// topOnce runs nsctl dos top --once -o json against the lab's nsd.
func (l *lab) topOnce(t testing.TB, maddr string, args ...string) top.Summary {
	t.Helper()
	out, code := l.nsctl(append([]string{"dos", "top", "--edge", maddr, "--once", "-o", "json"}, args...)...)
	var s top.Summary
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil {
		t.Fatalf("nsctl dos top: exit %d\n%s", code, out)
	}
	return s
}

// TestDoSTop: during an 18k pps NTP-monlist flood from 192.0.2.66,
// `nsctl dos top acme --once -o json` names the victim, the attack's
// source /24 and protocol/port and a candidate signature; the printed
// command, run as it is, drops the flood in XDP while the client keeps
// reaching the victim (NTP included).
func TestDoSTop(t *testing.T) {
	l, att, _, maddr := topLab(t, 28800)

	// Before the flood: sampling is on and the view is (nearly) empty.
	if s := l.topOnce(t, maddr, "acme", "--window", "500ms"); len(s.Candidates) != 0 || len(s.Notes) != 0 {
		t.Errorf("before the flood: %+v", s)
	}

	flood := nstest.StartFlood(t, att, "203.0.113.1", 123, 18000, 15*time.Second, []byte(ntpMonlist))
	time.Sleep(2500 * time.Millisecond) // a window (2 s) all inside the flood
	s := l.topOnce(t, maddr, "acme")
	if out, code := l.nsctl("dos", "top", "acme", "--edge", maddr, "--once", "--top", "3"); code == 0 {
		t.Logf("during the flood:\n%s", out)
	}
	if len(s.Destinations) == 0 || s.Destinations[0].Key != "203.0.113.1" || s.Destinations[0].Tenant != "acme" {
		t.Fatalf("victim not the top destination: %+v", s.Destinations)
	}
	// Scaled back from 1-in-64 samples; the sender may fall behind on a
	// busy machine.
	if s.Destinations[0].PPS < 9000 || s.Destinations[0].PPS > 27000 {
		t.Errorf("victim at an estimated %.0f pps during an 18k pps flood", s.Destinations[0].PPS)
	}
	if len(s.Sources) == 0 || s.Sources[0].Key != "192.0.2.0/24" || len(s.Protocols) == 0 || s.Protocols[0].Key != "udp" ||
		len(s.DstPorts) == 0 || s.DstPorts[0].Key != "udp/123" || len(s.Payloads) == 0 || s.Payloads[0].Key != "0x1700032a" {
		t.Errorf("source block, protocol, port or payload: %+v %+v %+v %+v", s.Sources, s.Protocols, s.DstPorts, s.Payloads)
	}
	if len(s.Candidates) == 0 {
		t.Fatal("no candidate signature")
	}
	c := s.Candidates[0]
	if c.Victim != "203.0.113.1" || c.Tenant != "acme" || c.Action != "drop" ||
		!strings.Contains(c.Expression, "udp.dstport == 123") || !strings.Contains(c.Expression, "payload[0:4] == 0x1700032a") {
		t.Fatalf("candidate %+v", c)
	}
	// Through Consul (for edges nsctl cannot reach): the same view.
	out, code := l.nsctl("dos", "top", "acme", "--via-store", "--host", l.hostID, "--once", "-o", "json")
	var vs top.Summary
	if code != 0 || json.Unmarshal([]byte(out), &vs) != nil || len(vs.Hosts) != 1 || vs.Hosts[0] != l.hostID ||
		len(vs.Destinations) == 0 || vs.Destinations[0].Key != "203.0.113.1" || len(vs.Candidates) == 0 || vs.Candidates[0].Expression != c.Expression {
		t.Errorf("--via-store: exit %d\n%s", code, out)
	}
	eventuallyFor(t, 5*time.Second, "the watch request and the published summary removed", func() bool {
		return len(kvKeys(t, l.consul.URL, "nfhost/control/top/")) == 0 && len(kvKeys(t, l.consul.URL, "nfhost/top/")) == 0
	})
	// The text frame prints the same command.
	if out, code := l.nsctl("dos", "top", "acme", "--edge", maddr, "--once"); code != 0 || !strings.Contains(out, c.Command) {
		t.Errorf("text frame without the command %s:\n%s", c.Command, out)
	}

	// Apply it as printed.
	if out, code := l.nsctl(c.Argv...); code != 0 {
		t.Fatalf("%s: exit %d\n%s", c.Command, code, out)
	}
	series := `nfhost_dos_rule_dropped_packets_total{kind="signature",rule="acme/` + c.ID + `"}`
	eventuallyFor(t, 10*time.Second, "the flood dropped by the candidate signature", func() bool { return metric(t, maddr, series) > 0 })
	d0 := metric(t, maddr, series)
	// The client keeps working, legitimate NTP included.
	for _, probe := range []struct {
		proto string
		port  int
	}{{"udp", 53}, {"tcp", 80}, {"icmp", 0}, {"udp", 123}} {
		if !nstest.Reach(t, l.client, probe.proto, "203.0.113.1", probe.port) {
			t.Errorf("the client cannot reach 203.0.113.1 %s/%d while the flood is dropped", probe.proto, probe.port)
		}
	}
	time.Sleep(time.Second) // a window of samples all after the signature
	after := l.topOnce(t, maddr, "acme", "--window", "1s")
	if len(after.Destinations) == 0 || after.Destinations[0].Key != "203.0.113.1" || after.Destinations[0].Dropped < 0.9 {
		t.Errorf("after the signature, the victim's traffic is not dropped: %+v", after.Destinations)
	}
	d1 := metric(t, maddr, series)
	sent := flood.Wait()
	total := metric(t, maddr, series)
	t.Logf("flood: %d packets sent in 15 s; the candidate signature dropped %d (%d while the client probed and top looked)", sent, total, d1-d0)
	if d1-d0 < 1000 {
		t.Errorf("only %d drops in the seconds after the signature went in", d1-d0)
	}
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read nsd's CPU time: %v", err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14, stime 15, in clock ticks (100 per second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkDoSTopCost: nsd's CPU during an 18k pps UDP flood with
// sampling at 1 in 64 (and 1 in 8), without and with a viewer (`nsctl
// dos top -o json` asking every second), alternating, three rounds each;
// the baseline is the same flood without a viewer in the same run.
func BenchmarkDoSTopCost(b *testing.B) {
	l, att, p, maddr := topLab(b, 28810)
	pid := p.cmd.Process.Pid
	med := func(xs []float64) float64 {
		s := append([]float64(nil), xs...)
		for i := range s {
			for j := i + 1; j < len(s); j++ {
				if s[j] < s[i] {
					s[i], s[j] = s[j], s[i]
				}
			}
		}
		return s[len(s)/2]
	}
	// measure returns nsd's CPU in ms per second of a 5 s stretch of flood.
	measure := func(viewer bool) float64 {
		f := nstest.StartFlood(b, att, "203.0.113.1", 123, 18000, 9*time.Second, []byte(ntpMonlist))
		time.Sleep(time.Second)
		if viewer {
			v := exec.Command(l.ctlBin, "dos", "top", "acme", "--edge", maddr, "-o", "json", "--interval", "1s")
			if err := v.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { v.Process.Kill(); v.Wait() }()
		}
		time.Sleep(2500 * time.Millisecond) // the viewer's first window is recorded
		c0, t0 := procCPU(b, pid), time.Now()
		time.Sleep(5 * time.Second)
		c1, el := procCPU(b, pid), time.Since(t0)
		f.Wait()
		time.Sleep(time.Second)
		return float64((c1 - c0).Milliseconds()) / el.Seconds()
	}
	for _, rate := range []int{64, 8} {
		l.consul.Put(b, "nfhost/tenants/acme/dos", fmt.Sprintf(`{"sample_rate": %d}`, rate))
		time.Sleep(2 * time.Second)
		var none, view []float64
		for i := 0; i < b.N; i++ {
			for round := 0; round < 3; round++ {
				none = append(none, measure(false))
				view = append(view, measure(true))
			}
		}
		sfx := fmt.Sprintf("-1in%d", rate)
		b.ReportMetric(med(none), "no-viewer-cpu-ms/s"+sfx)
		b.ReportMetric(med(view), "viewer-cpu-ms/s"+sfx)
		b.ReportMetric(med(view)/med(none), "viewer/no-viewer"+sfx)
		b.Logf("1 in %d: no viewer %v, viewer %v (nsd CPU ms per s)", rate, none, view)
	}
}

// kvKeys lists the Consul keys under prefix.
func kvKeys(t testing.TB, consulURL, prefix string) []string {
	t.Helper()
	resp, err := http.Get(consulURL + "/v1/kv/" + prefix + "?keys")
	if err != nil {
		t.Fatalf("list %s: %v", prefix, err)
	}
	defer resp.Body.Close()
	var keys []string
	json.NewDecoder(resp.Body).Decode(&keys) // 404 (none): empty
	return keys
}
