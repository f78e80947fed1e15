package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	p := l.startNSD("--metrics-addr", "127.0.0.1:0", "--bpf-pin-dir", pins, "--metrics-per-rule", "--log-level", "info")
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

// dashboardQueries are the PromQL expressions of the shipped Grafana
// dashboard, with its variables bound as the test and the lab bind them
// (all instances, 1m rate windows), by panel title.
func dashboardQueries(t testing.TB) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("../deploy/grafana/nfhost.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy/grafana/nfhost.json: %v", err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], bindDashboard(tg.Expr))
		}
	}
	if len(out) == 0 {
		t.Fatal("no queries in the dashboard")
	}
	return out
}

func bindDashboard(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*").Replace(expr)
}

// alertExprs are the expressions of deploy/prometheus/alerts.yml, by alert.
func alertExprs(t testing.TB) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The file is YAML; its rules are "- alert: NAME" followed by
	// "expr: EXPR" on one line (promtool checks the file itself).
	out := map[string]string{}
	var name string
	for _, line := range strings.Split(string(b), "\n") {
		l := strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(l, "- alert: "); ok {
			name = v
		} else if v, ok := strings.CutPrefix(l, "expr: "); ok && name != "" {
			out[name] = v
			name = ""
		}
	}
	return out
}

// promQuery evaluates expr through Prometheus's HTTP API.
func promQuery(t testing.TB, base, expr string) (results []json.RawMessage, err error) {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status, Error string
		Data          struct {
			ResultType string
			Result     json.RawMessage
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	if r.Data.ResultType == "scalar" {
		return []json.RawMessage{r.Data.Result}, nil
	}
	err = json.Unmarshal(r.Data.Result, &results)
	return results, err
}

// startPrometheus runs Debian's prometheus with the shipped configuration
// (deploy/prometheus, scraping every second) against targets, on
// 127.0.0.1:port; it returns the base URL.
func startPrometheus(t *testing.T, port int, targets ...string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nfT-prometheus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.NewReplacer("scrape_interval: 15s", "scrape_interval: 1s", "scrape_timeout: 10s", "scrape_timeout: 1s", "evaluation_interval: 15s", "evaluation_interval: 1s").Replace(string(cfg)))
	alerts, _ := os.ReadFile("../deploy/prometheus/alerts.yml")
	tj, _ := json.Marshal([]map[string]any{{"targets": targets}})
	os.MkdirAll(filepath.Join(dir, "targets"), 0o755)
	for name, b := range map[string][]byte{"prometheus.yml": cfg, "alerts.yml": alerts, "targets/nsd.json": tj} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("promtool", "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config deploy/prometheus/prometheus.yml: %v\n%s", err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command("prometheus", "--config.file", filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", addr, "--log.level", "warn")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", log.String())
		}
	})
	base := "http://" + addr
	eventuallyFor(t, 30*time.Second, "prometheus ready", func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return base
}

// TestPrometheusDashboard: every query of the shipped Grafana dashboard and
// every alert expression passes `promtool check rules` and evaluates
// without error on a live Prometheus (the shipped scrape config and alert
// rules) scraping a real nsd; the dashboard's tunnel state, drop rate per
// reason and applied tenants per host return series; every alert rule
// evaluates healthy.
func TestPrometheusDashboard(t *testing.T) {
	requireTool(t, "promtool")
	requireTool(t, "prometheus")
	queries, alerts := dashboardQueries(t), alertExprs(t)
	if len(alerts) < 8 {
		t.Fatalf("%d alerts parsed from alerts.yml", len(alerts))
	}
	// Syntax and types first, offline: the queries as recording rules.
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, title := range slices.Sorted(maps.Keys(queries)) {
		for _, q := range queries[title] {
			n++
			fmt.Fprintf(&rules, "      - record: nfhost:dashboard:%d\n        expr: %q\n", n, q)
		}
	}
	rf := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	os.WriteFile(rf, []byte(rules.String()), 0o644)
	if out, err := exec.Command("promtool", "check", "rules", rf, "../deploy/prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	l, maddr := metricsLab(t, 28840)
	base := startPrometheus(t, 28830, maddr)
	eventuallyFor(t, 30*time.Second, "nsd scraped", func() bool {
		r, err := promQuery(t, base, `count_over_time(up{job="nfhost"}[1m])`)
		return err == nil && len(r) == 1 && strings.Contains(string(r[0]), `"5"`)
	})
	// Drops to rate: a burst the tenant's monlist signature drops.
	nstest.SendUDP(t, l.client, "", "203.0.113.5", 123, 200, []byte(ntpMonlist))
	time.Sleep(3 * time.Second)

	for _, title := range slices.Sorted(maps.Keys(queries)) {
		for _, q := range queries[title] {
			r, err := promQuery(t, base, q)
			if err != nil {
				t.Errorf("dashboard %q: %s: %v", title, q, err)
				continue
			}
			t.Logf("%-45s %3d series  %s", title, len(r), q)
		}
	}
	for name, q := range alerts {
		if _, err := promQuery(t, base, q); err != nil {
			t.Errorf("alert %s: %s: %v", name, q, err)
		}
	}
	// What the lab prints: these must have data.
	for _, title := range []string{"Applied tenants per host", "Tunnel state (0 healthy, 1 degraded, 2 down)", "XDP drop rate per reason"} {
		r, err := promQuery(t, base, queries[title][0])
		if err != nil || len(r) == 0 {
			t.Errorf("dashboard %q: no series (%v)", title, err)
			continue
		}
		t.Logf("%s: %s", title, r)
	}
	if r, _ := promQuery(t, base, bindDashboard(`sum by (reason) (rate(nfhost_dos_packets_total{reason="signature_drop"}[1m]))`)); len(r) == 0 {
		t.Error("no signature_drop rate after the monlist burst")
	}
	// The alert rules are loaded and evaluate without error.
	eventuallyFor(t, 15*time.Second, "alert rules evaluated", func() bool {
		resp, err := http.Get(base + "/api/v1/rules?type=alert")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name, Health, LastError string
					}
				}
			}
		}
		json.NewDecoder(resp.Body).Decode(&r)
		ok := 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if rule.Health == "ok" {
					ok++
				} else if rule.Health == "err" {
					t.Errorf("alert %s: %s", rule.Name, rule.LastError)
					return true
				}
			}
		}
		return ok == len(alerts)
	})
}
