package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/nsd/source"
)

func TestFirewallCommands(t *testing.T) {
	l := newDirLab(t)
	l.tenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	if out, code := l.ctl("fw", "get", "ghost"); code != ExitNotFound {
		t.Errorf("get ghost: exit %d\n%s", code, out)
	}
	if out, code := l.ctl("fw", "get", "Bad!"); code != ExitInvalid {
		t.Errorf("get Bad!: exit %d\n%s", code, out)
	}
	// A tenant without a firewall key has an empty document.
	if out := l.must("fw", "get", "acme"); !strings.Contains(out, `"rules": []`) {
		t.Errorf("get empty:\n%s", out)
	}

	doc := `{"rules": [{"id": "web", "expression": "tcp.dstport == 443", "action": "allow"}], "lists": {"bad": ["192.0.2.0/24"]}}`
	if out, code := l.ctlIn(doc, "fw", "validate", "-f", "-"); code != ExitOK || out != "firewall: valid (1 rules, 1 lists)\n" {
		t.Errorf("validate: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn(`{"rules": [{"id": "x", "expression": "tcp.dstport ==", "action": "allow"}]}`, "fw", "validate", "-f", "-"); code != ExitInvalid {
		t.Errorf("validate invalid: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn(doc, "fw", "put", "acme", "-f", "-"); code != ExitOK || out != "tenants/acme/firewall written (1 rules)\n" {
		t.Fatalf("put: exit %d\n%s", code, out)
	}

	// add-rule appends, or inserts before a rule; IDs are unique.
	if out := l.must("fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 22"); out != "rule ssh added to tenants/acme/firewall\n" {
		t.Errorf("add-rule: %s", out)
	}
	l.must("fw", "add-rule", "acme", "--id", "first", "--expression", "ip.src in $bad", "--before", "web", "--disabled", "--description", "lists first")
	if out, code := l.ctl("fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 23"); code != ExitInvalid || !strings.Contains(out, "a rule with this id exists") {
		t.Errorf("add-rule duplicate: exit %d\n%s", code, out)
	}
	if out, code := l.ctl("fw", "add-rule", "acme", "--id", "x", "--expression", "tcp.dstport == 23", "--before", "ghost"); code != ExitNotFound {
		t.Errorf("add-rule --before ghost: exit %d\n%s", code, out)
	}
	if out, code := l.ctl("fw", "add-rule", "acme", "--id", "x", "--expression", "tcp.bogus == 1"); code != ExitInvalid {
		t.Errorf("add-rule invalid expression: exit %d\n%s", code, out)
	}
	out := l.must("fw", "get", "acme")
	first, web, ssh := strings.Index(out, `"first"`), strings.Index(out, `"web"`), strings.Index(out, `"ssh"`)
	if first < 0 || !(first < web && web < ssh) || !strings.Contains(out, `"enabled": false`) {
		t.Errorf("rules not first, web, ssh with first disabled:\n%s", out)
	}

	if out := l.must("fw", "delete-rule", "acme", "web"); out != "rule web deleted from tenants/acme/firewall\n" {
		t.Errorf("delete-rule: %s", out)
	}
	if out, code := l.ctl("fw", "delete-rule", "acme", "web"); code != ExitNotFound {
		t.Errorf("delete-rule again: exit %d\n%s", code, out)
	}
	if out := l.must("fw", "get", "acme"); strings.Contains(out, `"web"`) {
		t.Errorf("web still there:\n%s", out)
	}
	// A file that cannot be read is a failure, not an invalid document.
	if out, code := l.ctl("fw", "put", "acme", "-f", filepath.Join(t.TempDir(), "missing.json")); code != ExitFailure {
		t.Errorf("put missing file: exit %d\n%s", code, out)
	}
}

// put checks and sets against the version it read: an edit that lands
// between the read and the write makes it fail with exit code 4.
func TestFirewallPutConflict(t *testing.T) {
	l := newDirLab(t)
	l.tenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	l.must("fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 22")
	// put reads the document, then the file: the "file" here is an
	// editor that writes the document first.
	racer := &racingReader{before: func() {
		p := filepath.Join(l.cfg, "acme", "firewall.json")
		os.WriteFile(p, []byte(`{"rules": []}`), 0o644)
	}, r: strings.NewReader(`{"rules": [{"id": "web", "expression": "tcp.dstport == 443", "action": "allow"}]}`)}
	out, code := runIn(t, racer, nsctl, l.args([]string{"fw", "put", "acme", "-f", "-"})...)
	if code != ExitConflict || !strings.Contains(out, source.ErrConflict.Error()) {
		t.Errorf("put after a concurrent edit: exit %d\n%s", code, out)
	}
	if out := l.must("fw", "get", "acme"); strings.Contains(out, `"web"`) {
		t.Errorf("the losing put was written:\n%s", out)
	}
}

// racingReader runs before on its first read.
type racingReader struct {
	before func()
	r      io.Reader
}

func (r *racingReader) Read(b []byte) (int, error) {
	if r.before != nil {
		r.before()
		r.before = nil
	}
	return r.r.Read(b)
}

func TestFirewallStats(t *testing.T) {
	l := newDirLab(t)
	if out, code := l.ctl("fw", "stats", "acme"); code != ExitNotFound || !strings.Contains(out, "no status for tenant acme") {
		t.Errorf("stats without status: exit %d\n%s", code, out)
	}
	l.status("edge2", "acme", source.Status{Firewall: map[string]source.RuleCounter{"ssh": {Packets: 3, Bytes: 180}, "http": {Packets: 10, Bytes: 4000}}})
	l.status("edge1", "acme", source.Status{Firewall: map[string]source.RuleCounter{"ssh": {Packets: 1, Bytes: 60}}})
	want := `HOST   RULE  PACKETS  BYTES
edge1  ssh   1        60
edge2  http  10       4000
edge2  ssh   3        180
`
	if out := l.must("fw", "stats", "acme"); out != want {
		t.Errorf("stats:\n%s\nwant\n%s", out, want)
	}
	if out := l.must("fw", "stats", "acme", "--host", "edge1"); !strings.Contains(out, "edge1") || strings.Contains(out, "edge2") {
		t.Errorf("stats --host edge1:\n%s", out)
	}
}
