package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/nsd/source"
)

func TestDoSCommands(t *testing.T) {
	l := newDirLab(t)
	l.tenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	for _, args := range [][]string{{"dos", "get"}, {"dos", "get", "acme", "--global"}, {"dos", "put", "-f", "-"}, {"dos", "delete-signature", "acme", "x", "--global"}} {
		if out, code := l.ctl(args...); code != ExitUsage || !strings.Contains(out, "give a TENANT or --global") {
			t.Errorf("nsctl %v: exit %d\n%s", args, code, out)
		}
	}
	if out, code := l.ctl("dos", "get", "ghost"); code != ExitNotFound {
		t.Errorf("get ghost: exit %d\n%s", code, out)
	}
	// Absent documents are empty.
	for _, args := range [][]string{{"dos", "get", "acme"}, {"dos", "get", "--global"}} {
		if out := l.must(args...); out != "{}\n" {
			t.Errorf("nsctl %v: %q", args, out)
		}
	}

	tenantDoc := `{"deny": ["198.51.100.0/24"], "signatures": [{"id": "dns", "expression": "udp.srcport == 53 and ip.len > 512", "action": "drop"}]}`
	if out, code := l.ctlIn(tenantDoc, "dos", "validate", "-f", "-"); code != ExitOK || out != "dos: valid (1 signatures, 0 allow, 1 deny, 0 rate limits)\n" {
		t.Errorf("validate: exit %d\n%s", code, out)
	}
	if out := l.must("dos", "put", "acme", "-f", writeFile(t, tenantDoc)); out != "tenants/acme/dos written (1 signatures, 0 allow, 1 deny, 0 rate limits)\n" {
		t.Errorf("put: %s", out)
	}
	if out, code := l.ctlIn(`{"signatures": [{"id": "x", "expression": "tcp.dstport ==", "action": "drop"}]}`, "dos", "put", "acme", "-f", "-"); code != ExitInvalid {
		t.Errorf("put invalid: exit %d\n%s", code, out)
	}
	globalDoc := `{"allow": ["192.0.2.0/24"], "deny": ["198.51.100.7/32"]}`
	if out, code := l.ctlIn(globalDoc, "dos", "validate", "--global", "-f", "-"); code != ExitOK || out != "dos: valid (0 signatures, 1 allow, 1 deny, 0 rate limits)\n" {
		t.Errorf("validate --global: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn(globalDoc, "dos", "put", "--global", "-f", "-"); code != ExitOK || out != "dos/global written (0 signatures, 1 allow, 1 deny, 0 rate limits)\n" {
		t.Errorf("put --global: exit %d\n%s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(l.cfg, "_global", "dos.json")); err != nil || !strings.Contains(string(b), "192.0.2.0/24") {
		t.Errorf("_global/dos.json: %s %v", b, err)
	}

	// add-signature adds, or replaces the signature with its ID.
	if out := l.must("dos", "add-signature", "acme", "--id", "syn", "--expression", "tcp.flags.syn", "--action", "ratelimit", "--pps", "1000"); out != "signature syn written to tenants/acme/dos\n" {
		t.Errorf("add-signature: %s", out)
	}
	l.must("dos", "add-signature", "acme", "--id", "dns", "--expression", "udp.srcport == 53", "--action", "monitor")
	before := time.Now().UTC().Truncate(time.Second)
	if out := l.must("dos", "add-signature", "--global", "--id", "ntp", "--expression", "udp.srcport == 123", "--expires-in", "1h"); out != "signature ntp written to dos/global\n" {
		t.Errorf("add-signature --global: %s", out)
	}
	out := l.must("dos", "get", "acme")
	if strings.Count(out, `"id": "dns"`) != 1 || !strings.Contains(out, `"action": "monitor"`) || !strings.Contains(out, `"pps": 1000`) || !strings.Contains(out, "198.51.100.0/24") {
		t.Errorf("get after add-signature:\n%s", out)
	}
	after := time.Now().UTC()
	var global dosspec.Config
	if err := json.Unmarshal([]byte(l.must("dos", "get", "--global")), &global); err != nil || len(global.Signatures) != 1 || global.Signatures[0].Expires == nil {
		t.Fatalf("get --global after add-signature --expires-in 1h: %+v %v", global, err)
	}
	if exp := *global.Signatures[0].Expires; exp.Before(before.Add(time.Hour)) || exp.After(after.Add(time.Hour)) {
		t.Errorf("--expires-in 1h between %v and %v expires at %v", before, after, exp)
	}
	if out, code := l.ctl("dos", "add-signature", "acme", "--id", "bad", "--expression", "tcp.dstport == 1 or tcp.dstport == 2"); code != ExitInvalid || !strings.Contains(out, "signatures[2].expression") {
		t.Errorf("add-signature beyond what XDP evaluates: exit %d\n%s", code, out)
	}

	if out := l.must("dos", "delete-signature", "acme", "dns"); out != "signature dns deleted from tenants/acme/dos\n" {
		t.Errorf("delete-signature: %s", out)
	}
	if out := l.must("dos", "delete-signature", "--global", "ntp"); out != "signature ntp deleted from dos/global\n" {
		t.Errorf("delete-signature --global: %s", out)
	}
	if out, code := l.ctl("dos", "delete-signature", "acme", "dns"); code != ExitNotFound {
		t.Errorf("delete-signature again: exit %d\n%s", code, out)
	}
	if out := l.must("dos", "get", "acme"); strings.Contains(out, `"dns"`) || !strings.Contains(out, `"syn"`) {
		t.Errorf("get after delete-signature:\n%s", out)
	}
}

func TestDoSStats(t *testing.T) {
	l := newDirLab(t)
	// Hosts without DoS counters (no uplink) are left out.
	l.status("edge1", "acme", source.Status{})
	if out, code := l.ctl("dos", "stats", "acme"); code != ExitNotFound || !strings.Contains(out, "no DoS counters for tenant acme") {
		t.Errorf("stats without counters: exit %d\n%s", code, out)
	}
	l.status("edge2", "acme", source.Status{DoS: &source.DoSCounters{Packets: 100, Dropped: 40,
		Rules: map[string]source.DoSRuleCount{"signature:dns": {Packets: 40, Dropped: 40}}}})
	want := `HOST   RULE           PACKETS  DROPPED
edge2  (all traffic)  100      40
edge2  signature:dns  40       40
`
	if out := l.must("dos", "stats", "acme"); out != want {
		t.Errorf("stats:\n%s\nwant\n%s", out, want)
	}
}

// writeFile writes body to a file and returns its path.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
