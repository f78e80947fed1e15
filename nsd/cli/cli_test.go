package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, f func(Env, []string) int, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	env := Env{Ctx: context.Background(), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
	code := f(env, args)
	return out.String(), code
}

func TestNsctlDirStore(t *testing.T) {
	cfg, state := t.TempDir(), t.TempDir()
	base := []string{"--source", "dir", "--config-dir", cfg, "--state-dir", state}
	file := filepath.Join(t.TempDir(), "acme.json")
	os.WriteFile(file, []byte(`{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"]}}`), 0o644)
	ctl := func(args ...string) (string, int) { return run(t, Nsctl, append(base, args...)...) }

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
		out, code := run(t, Nsctl, "validate", "-f", p)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d want %d\n%s", name, code, tc.code, out)
		}
	}
	if _, code := run(t, Nsctl, "validate", "-f", filepath.Join(dir, "missing.json")); code != ExitFailure {
		t.Errorf("missing file: exit %d", code)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"--source", "zk", "--once"}, {"--log-level", "loud"}, {"--max-delete-fraction", "2"}, {"extra-arg"}} {
		if out, code := run(t, NSD, args...); code != ExitUsage {
			t.Errorf("nsd %v: exit %d, want %d\n%s", args, code, ExitUsage, out)
		}
	}
	for _, args := range [][]string{{"frob"}, {"tenant"}, {"tenant", "apply"}, {"tenant", "show"}} {
		if out, code := run(t, Nsctl, args...); code != ExitUsage {
			t.Errorf("nsctl %v: exit %d, want %d\n%s", args, code, ExitUsage, out)
		}
	}
}

func TestHelpForEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"tenant", "--help"}, {"tenant", "apply", "--help"}, {"tenant", "list", "--help"},
		{"tenant", "show", "--help"}, {"tenant", "delete", "--help"}, {"validate", "--help"}, {"status", "--help"}, {"confirm-deletes", "--help"}} {
		out, code := run(t, Nsctl, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("nsctl %v: exit %d\n%s", args, code, out)
		}
	}
	if out, code := run(t, NSD, "--help"); code != 0 || !strings.Contains(out, "--host-netns") {
		t.Errorf("nsd --help: %d\n%s", code, out)
	}
}
