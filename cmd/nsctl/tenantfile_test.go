package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// A tenant file is valid only if every part of it is: validate and apply
// check the firewall and DoS documents as nsd would (the DoS document
// against the network's prefixes), refuse trailing data, and apply
// writes nothing when any part is wrong.
func TestTenantFileChecksEveryPart(t *testing.T) {
	net := `"network": {"prefixes": ["203.0.113.0/24"]}`
	for name, tc := range map[string]struct{ body, want string }{
		"dos mode":        {`{"id": "acme", ` + net + `, "dos": {"mode": "mitigatee"}}`, `mode: "mitigatee": must be mitigate or monitor`},
		"dos two payload": {`{"id": "acme", ` + net + `, "dos": {"signatures": [{"id": "a", "expression": "payload[0:1] == 0x01 and payload[1:1] == 0x02", "action": "drop"}]}}`, "one payload comparison"},
		"dos not a doc":   {`{"id": "acme", ` + net + `, "dos": [1, 2]}`, "tenants/acme/dos"},
		"dos outside":     {`{"id": "acme", ` + net + `, "dos": {"rate_limits": [{"prefix": "198.51.100.0/24", "pps": 1000, "per": "ip"}]}}`, `rate_limits[0].prefix: "198.51.100.0/24": not inside the tenant's prefixes`},
		"tcp outside":     {`{"id": "acme", ` + net + `, "dos": {"tcp_protection": {"prefixes": ["198.51.100.0/24"]}}}`, `tcp_protection.prefixes[0]: "198.51.100.0/24": not inside the tenant's prefixes`},
		"fw default":      {`{"id": "acme", ` + net + `, "firewall": {"default": "allwo", "rules": []}}`, "default"},
		"fw field":        {`{"id": "acme", ` + net + `, "firewall": {"rules": [{"id": "a", "expression": "tcp.dstprot == 22", "action": "block"}]}}`, "tcp.dstprot"},
		"fw not a doc":    {`{"id": "acme", ` + net + `, "firewall": "hello"}`, "tenants/acme/firewall"},
		"two tenants":     {`{"id": "acme", ` + net + "}\n" + `{"id": "beta", "network": {"prefixes": ["198.51.100.0/24"]}}`, "trailing data"},
		"trailing":        {`{"id": "acme", ` + net + `} trailing`, "trailing data"},
	} {
		l := newDirLab(t)
		out, code := l.ctlIn(tc.body, "validate", "-f", "-")
		if code != ExitInvalid || !strings.Contains(out, tc.want) {
			t.Errorf("%s: validate: exit %d, want %d with %q\n%s", name, code, ExitInvalid, tc.want, out)
		}
		out, code = l.ctlIn(tc.body, "tenant", "apply", "-f", "-")
		if code != ExitInvalid || !strings.Contains(out, tc.want) {
			t.Errorf("%s: apply: exit %d, want %d with %q\n%s", name, code, ExitInvalid, tc.want, out)
		}
		if ents, _ := os.ReadDir(l.cfg); len(ents) > 0 {
			t.Errorf("%s: apply of an invalid file wrote %v", name, ents[0].Name())
		}
	}
	// What the DoS document may hold inside the prefixes is taken.
	l := newDirLab(t)
	ok := `{"id": "acme", ` + net + `, "dos": {"rate_limits": [{"prefix": "203.0.113.0/25", "pps": 1000, "per": "ip"}], "tcp_protection": {"prefixes": ["203.0.113.7"]}}}`
	if out, code := l.ctlIn(ok, "tenant", "apply", "-f", "-"); code != ExitOK || !strings.Contains(out, "tenants/acme/dos written") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
}

// tenant apply writes its keys in one transaction: a file too large for
// Consul writes nothing, and one too large for one transaction, whose keys
// each fit, is written key by key with a warning.
func TestTenantApplyAllOrNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul")
	}
	a := consultest.Start(t)
	ctl := func(stdin string, args ...string) (string, int) {
		return runIn(t, strings.NewReader(stdin), nsctl, append([]string{"--consul-addr", a.Addr}, args...)...)
	}
	// A firewall of n thousand /32s in a list (about 17 bytes each).
	firewall := func(n int) string {
		return `{"rules": [{"id": "r", "expression": "ip.src in $big", "action": "block"}], "lists": {"big": ["` +
			strings.ReplaceAll(cidrs(0, n*1000), ", ", `", "`) + `"]}}`
	}
	prefix := map[string]string{"big": "203.0.113.0/26", "mid": "203.0.113.64/26", "small": "203.0.113.128/26"}
	file := func(id string, fw string) string {
		return `{"id": "` + id + `", "network": {"prefixes": ["` + prefix[id] + `"]}, "dos": {"mode": "monitor"}, "firewall": ` + fw + `}`
	}
	// A firewall over 512 KiB: refused, and neither the network nor the
	// DoS document is written.
	big := firewall(36)
	if len(big) < 512<<10 {
		t.Fatalf("test firewall is %d bytes", len(big))
	}
	out, code := ctl(file("big", big), "tenant", "apply", "-f", "-")
	if code == ExitOK || !strings.Contains(out, "too large") || strings.Contains(out, "written\n") {
		t.Fatalf("apply of a too large firewall: exit %d\n%s", code, out)
	}
	t.Logf("too large:\n%s", out)
	if out, _ := ctl("", "tenant", "list"); strings.Contains(out, "big") {
		t.Fatalf("a refused apply left keys behind:\n%s", out)
	}
	// About 400 KB: each key fits, the transaction (base64) does not.
	mid := firewall(24)
	out, code = ctl(file("mid", mid), "tenant", "apply", "-f", "-")
	if code != ExitOK || !strings.Contains(out, "key by key") || strings.Count(out, "written\n") != 3 {
		t.Fatalf("apply of a large tenant: exit %d\n%s", code, out)
	}
	// A small one goes in one transaction, and again is unchanged.
	out, code = ctl(file("small", firewall(1)), "tenant", "apply", "-f", "-")
	if code != ExitOK || strings.Contains(out, "key by key") || strings.Count(out, "written\n") != 3 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	out, code = ctl(file("small", firewall(1)), "tenant", "apply", "-f", "-")
	if code != ExitOK || strings.Count(out, "unchanged") != 3 {
		t.Fatalf("apply again: exit %d\n%s", code, out)
	}
}

// cidrs is n distinct /32s from 198.18.0.0/15, block i.
func cidrs(i, n int) string {
	out := make([]string, n)
	for j := range n {
		k := i*n + j
		out[j] = fmt.Sprintf("198.%d.%d.%d/32", 18+k>>16, k>>8&255, k&255)
	}
	return strings.Join(out, ", ")
}

// The DoS and firewall commands: put replaces a stored document that does
// not parse (written with another client); dos validate checks a tenant's
// document as a tenant's; dos put refuses what nsd would (outside the
// tenant's prefixes); --expires-in must be positive; --global belongs to
// the commands that pick a document.
func TestDocumentCommandsReview(t *testing.T) {
	l := newDirLab(t)
	l.tenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	os.WriteFile(l.cfg+"/acme/firewall.json", []byte(`"hello"`), 0o644)
	os.WriteFile(l.cfg+"/acme/dos.json", []byte(`[1, 2]`), 0o644)
	if out, code := l.ctl("fw", "add-rule", "acme", "--id", "a", "--expression", "tcp.dstport == 22", "--action", "block"); code == ExitOK || !strings.Contains(out, "put replaces it") {
		t.Errorf("fw add-rule on a broken document: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn(`{"default": "allow", "rules": []}`, "fw", "put", "acme", "-f", "-"); code != ExitOK {
		t.Errorf("fw put over a broken document: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn(`{"mode": "mitigate"}`, "dos", "put", "acme", "-f", "-"); code != ExitOK {
		t.Errorf("dos put over a broken document: exit %d\n%s", code, out)
	}
	for _, d := range []string{`{"sample_rate": 1000, "auto_mitigation": {"pps": 5000}}`, `{"tcp_protection": {"prefixes": ["203.0.113.0/24"]}}`} {
		if out, code := l.ctlIn(d, "dos", "validate", "-f", "-"); code != ExitOK {
			t.Errorf("dos validate %s: exit %d\n%s", d, code, out)
		}
		if out, code := l.ctlIn(d, "dos", "validate", "--global", "-f", "-"); code != ExitInvalid {
			t.Errorf("dos validate --global %s: exit %d\n%s", d, code, out)
		}
	}
	out, code := l.ctlIn(`{"rate_limits": [{"prefix": "10.0.0.0/24", "pps": 1000, "per": "ip"}]}`, "dos", "put", "acme", "-f", "-")
	if code != ExitInvalid || !strings.Contains(out, "not inside the tenant's prefixes") {
		t.Errorf("dos put outside the prefixes: exit %d\n%s", code, out)
	}
	for _, d := range []string{"-1h", "0s"} {
		if out, code := l.ctl("dos", "add-signature", "acme", "--id", "s1", "--expression", "udp.dstport == 123", "--expires-in", d); code != ExitUsage {
			t.Errorf("--expires-in %s: exit %d\n%s", d, code, out)
		}
	}
	if out, code := l.ctl("dos", "stats", "acme", "--global"); code != ExitUsage {
		t.Errorf("dos stats --global: exit %d\n%s", code, out)
	}
}
