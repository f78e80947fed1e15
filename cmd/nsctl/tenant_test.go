package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNsctlDirStore(t *testing.T) {
	cfg, state := t.TempDir(), t.TempDir()
	base := []string{"--source", "dir", "--config-dir", cfg, "--state-dir", state}
	file := filepath.Join(t.TempDir(), "acme.json")
	os.WriteFile(file, []byte(`{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}}`), 0o644)
	ctl := func(args ...string) (string, int) { return run(t, nsctl, append(base, args...)...) }

	if out, code := ctl("tenant", "apply", "-f", file); code != 0 || !strings.Contains(out, "written") {
		t.Fatalf("apply: %d %s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(cfg, "acme", "network.json")); err != nil || !strings.Contains(string(b), "203.0.113.0/24") {
		t.Fatalf("file: %s %v", b, err)
	}
	if out, code := ctl("tenant", "list"); code != 0 || !strings.Contains(out, "acme") {
		t.Fatalf("list: %d %s", code, out)
	}
	if out, code := ctl("tenant", "show", "ghost"); code != ExitNotFound {
		t.Fatalf("show ghost: %d %s", code, out)
	}
	if out, code := ctl("status"); code != 0 || !strings.HasPrefix(out, "HOST") {
		t.Fatalf("status: %d %s", code, out)
	}
	if out, code := ctl("tenant", "delete", "acme"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	// An invalid tenant ID that is not there is not found; one that is
	// there (nsd reports it as a problem) can be deleted.
	if out, code := ctl("tenant", "delete", "Bad!"); code != ExitNotFound {
		t.Fatalf("delete missing bad id: %d %s", code, out)
	}
	os.MkdirAll(filepath.Join(cfg, "Bad!"), 0o755)
	if out, code := ctl("tenant", "delete", "Bad!"); code != 0 {
		t.Fatalf("delete bad id: %d %s", code, out)
	}
	if out, code := ctl("tenant", "delete", "a/b"); code != ExitUsage {
		t.Fatalf("delete a/b: %d %s", code, out)
	}
}

func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		body string
		code int
		want string
	}{
		"ok":         {`{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}}`, ExitOK, "valid"},
		"bad cidr":   {`{"id": "acme", "network": {"prefixes": ["203.0.113.0/33"]}}`, ExitInvalid, `prefixes[0]: "203.0.113.0/33": invalid CIDR`},
		"bad id":     {`{"id": "ACME", "network": {"prefixes": []}}`, ExitInvalid, "invalid tenant ID"},
		"no network": {`{"id": "acme"}`, ExitInvalid, "missing"},
		"unknown":    {`{"id": "acme", "netwrk": {}}`, ExitInvalid, `unknown field "netwrk"`},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".json")
		os.WriteFile(p, []byte(tc.body), 0o644)
		out, code := run(t, nsctl, "validate", "-f", p)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d want %d\n%s", name, code, tc.code, out)
		}
	}
	if _, code := run(t, nsctl, "validate", "-f", filepath.Join(dir, "missing.json")); code != ExitFailure {
		t.Errorf("missing file: exit %d", code)
	}
}

// A tenant file can come through stdin (-f -), for validate and apply.
func TestTenantFileFromStdin(t *testing.T) {
	l := newDirLab(t)
	file := `{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}, "firewall": {"rules": [{"id": "ssh", "expression": "tcp.dstport == 22", "action": "block"}]}}`
	if out, code := l.ctlIn(file, "validate", "-f", "-"); code != ExitOK || out != "tenant acme: valid\n" {
		t.Errorf("validate -f -: exit %d\n%s", code, out)
	}
	out, code := l.ctlIn(file, "tenant", "apply", "-f", "-")
	if want := "tenants/acme/firewall written\ntenants/acme/network written\n"; code != ExitOK || out != want {
		t.Fatalf("apply -f -: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if b, err := os.ReadFile(filepath.Join(l.cfg, "acme", "firewall.json")); err != nil || !strings.Contains(string(b), `"tcp.dstport == 22"`) {
		t.Errorf("firewall.json: %s %v", b, err)
	}
	// Errors name the file as given.
	if out, code := l.ctlIn(`{"id": "acme", "network": [}`, "validate", "-f", "-"); code != ExitInvalid || !strings.Contains(out, "-: invalid tenant file") {
		t.Errorf("invalid stdin: exit %d\n%s", code, out)
	}
	if out, code := l.ctlIn("", "tenant", "apply", "-f", "-"); code != ExitInvalid {
		t.Errorf("empty stdin: exit %d\n%s", code, out)
	}
}

func TestTenantApply(t *testing.T) {
	l := newDirLab(t)
	l.tenant("other", `{"prefixes": ["198.51.100.0/24"]}`)
	acme := `{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}}`
	l.ctlIn(acme, "tenant", "apply", "-f", "-")
	// Written again with other whitespace: nothing to do.
	if out, code := l.ctlIn(`{"id":"acme","network":{ "prefixes":["203.0.113.0/24"] }}`, "tenant", "apply", "-f", "-"); code != ExitOK || out != "tenants/acme/network unchanged\n" {
		t.Errorf("reapply: exit %d\n%s", code, out)
	}
	// Prefixes another tenant holds are refused before anything is written.
	out, code := l.ctlIn(`{"id": "acme", "network": {"prefixes": ["198.51.100.128/25"]}}`, "tenant", "apply", "-f", "-")
	if code != ExitInvalid || !strings.Contains(out, "other") {
		t.Errorf("overlap: exit %d\n%s", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(l.cfg, "acme", "network.json")); !strings.Contains(string(b), "203.0.113.0/24") {
		t.Errorf("overlap changed the network: %s", b)
	}
	// An invalid network of another tenant holds nothing.
	l.tenant("broken", `{"prefixes": ["192.0.2.0/33"]}`)
	if out, code := l.ctlIn(`{"id": "acme", "network": {"prefixes": ["192.0.2.0/24"]}}`, "tenant", "apply", "-f", "-"); code != ExitOK {
		t.Errorf("beside an invalid tenant: exit %d\n%s", code, out)
	}
	out = l.must("tenant", "list")
	for _, want := range []string{"TENANT", "acme    network  192.0.2.0/24", "broken  network  INVALID", "other   network  198.51.100.0/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("list: no %q in\n%s", want, out)
		}
	}
}

func TestTenantShow(t *testing.T) {
	l := newDirLab(t)
	l.tenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	os.WriteFile(filepath.Join(l.cfg, "acme", "notes.json"), []byte("plain text"), 0o644)
	os.WriteFile(filepath.Join(l.cfg, "acme", "blob.json"), []byte{0xff, 0xfe}, 0o644)
	out := l.must("tenant", "show", "acme")
	for _, want := range []string{`"id": "acme"`, `"network": {`, `"203.0.113.0/24"`, `"notes": "plain text"`, `"blob": {`, `"base64": "//4="`} {
		if !strings.Contains(out, want) {
			t.Errorf("show: no %q in\n%s", want, out)
		}
	}
}
