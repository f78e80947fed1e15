package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// requireTool is nstest.RequireTool, but a failure when
// NFHOST_REQUIRE_TOOLS=1 (make test): there a missing tool must not pass.
func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil && os.Getenv("NFHOST_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s not found but NFHOST_REQUIRE_TOOLS=1: run scripts/deps.sh", name)
	}
	nstest.RequireTool(t, name)
}

// metricsLab is an nfT lab whose nsd exports every kind of series: tenant
// acme with two GRE tunnels (health-checked), a firewall with per-rule
// series, a DoS document with a signature, sampling and automatic
// mitigation, and traffic through all of them.
func metricsLab(t *testing.T, consulPort int) (l *lab, maddr string) {
	t.Helper()
	l = newLabPrefix(t, "nfT", consultest.WithPorts(consulPort))
	u := strings.TrimSuffix(strings.TrimPrefix(l.nsPrefix, "nfT"), "-")
	l.hostID = "nfT-" + u
	pins := filepath.Join(bpfpin.BPFFS, "nfT-"+u)
	t.Cleanup(func() { dos.Detach(pins); os.RemoveAll(pins) })
	_, r, _ := l.addCustomer()
	p := l.startNSD("--metrics-addr", "127.0.0.1:0", "--bpf-pin-dir", pins, "--metrics-firewall-rules", "--log-level", "info")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	maddr = p.metricsAddr(t)
	l.applyTenant("acme", tunnelNetwork)
	l.consul.Put(t, "nfhost/tenants/acme/firewall", `{"rules": [{"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"},
	  {"id": "icmp-log", "expression": "ip.proto == icmp", "action": "log"}]}`)
	l.consul.Put(t, "nfhost/tenants/acme/dos", `{"sample_rate": 16, "auto_mitigation": {"pps": 50000, "duration": "1m"},
	  "signatures": [{"id": "monlist", "action": "drop", "expression": "udp.dstport == 123 and payload[0:4] == 0x1700032a"}]}`)
	var st string
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("status: %s", st)
		}
	})
	eventuallyFor(t, 30*time.Second, "tenant applied with healthy tunnels", func() bool {
		st = l.status("acme")
		tun, _ := l.nsctl("tunnels", "acme")
		st += "\n" + tun
		return strings.Contains(st, "applied") && strings.Count(tun, "healthy") == 2
	})
	nstest.StartResponder(t, r)
	for i := 0; i < 5; i++ {
		nstest.Reach(t, l.client, "icmp", "203.0.113.5", 0)
		nstest.Reach(t, l.client, "udp", "203.0.113.5", 53)
	}
	nstest.SendUDP(t, l.client, "", "203.0.113.5", 123, 20, []byte(ntpMonlist))
	return l, maddr
}

func scrape(t testing.TB, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	return b
}

// TestMetricsPromtool: `promtool check metrics` finds nothing to complain
// about in a real nsd's /metrics with every subsystem in use, and the
// series the dashboard and alerts use are there.
func TestMetricsPromtool(t *testing.T) {
	requireTool(t, "promtool")
	l, maddr := metricsLab(t, 28820)
	_ = l
	// Wait for a resync (counters into status and metrics) and a probe RTT.
	time.Sleep(2 * time.Second)
	body := scrape(t, maddr)
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	for _, series := range []string{
		`nfhost_subsystem_apply_duration_seconds_bucket{subsys="routing"`, `nfhost_subsystem_apply_duration_seconds_bucket{subsys="firewall"`,
		`nfhost_subsystem_apply_duration_seconds_bucket{subsys="tunnels"`, `nfhost_subsystem_apply_duration_seconds_bucket{subsys="dos"`,
		`nfhost_tenant_apply_duration_seconds_count`, `nfhost_reconcile_duration_seconds_count{pass="full"}`,
		`nfhost_firewall_rule_packets_total{rule="ssh",tenant="acme"}`, `nfhost_tunnel_health_state{tenant="acme",tunnel="gre-acme1"} 0`,
		`nfhost_dos_packets_total{reason="pass"}`, `nfhost_dos_rule_dropped_packets_total{kind="signature",rule="acme/monlist"}`,
		`nfhost_tenants{state="applied"} 1`, `nfhost_deletes_held 0`,
	} {
		if !bytes.Contains(body, []byte(series)) {
			t.Errorf("no %s in /metrics", series)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}
