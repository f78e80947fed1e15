package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/nsd/source"
)

// Exit codes under the names the tests have always used.
const (
	ExitOK       = cliutil.ExitOK
	ExitFailure  = cliutil.ExitFailure
	ExitUsage    = cliutil.ExitUsage
	ExitInvalid  = cliutil.ExitInvalid
	ExitConflict = cliutil.ExitConflict
	ExitNotFound = cliutil.ExitNotFound
)

// run runs f like a process with an empty stdin and returns what it wrote
// to stdout and stderr, interleaved, and its exit code.
func run(t *testing.T, f func(cliutil.Env, []string) int, args ...string) (string, int) {
	t.Helper()
	return runIn(t, strings.NewReader(""), f, args...)
}

// runIn is run with stdin.
func runIn(t *testing.T, stdin io.Reader, f func(cliutil.Env, []string) int, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	env := cliutil.Env{Ctx: context.Background(), Stdin: stdin, Stdout: &out, Stderr: &out}
	code := f(env, args)
	return out.String(), code
}

// dirLab is a directory store with nsctl pointed at it.
type dirLab struct {
	t          *testing.T
	cfg, state string
}

func newDirLab(t *testing.T) *dirLab { return &dirLab{t: t, cfg: t.TempDir(), state: t.TempDir()} }

func (l *dirLab) args(args []string) []string {
	return append([]string{"--source", "dir", "--config-dir", l.cfg, "--state-dir", l.state}, args...)
}

// ctl runs nsctl on the store.
func (l *dirLab) ctl(args ...string) (string, int) {
	l.t.Helper()
	return run(l.t, nsctl, l.args(args)...)
}

// ctlIn runs nsctl on the store with stdin.
func (l *dirLab) ctlIn(stdin string, args ...string) (string, int) {
	l.t.Helper()
	return runIn(l.t, strings.NewReader(stdin), nsctl, l.args(args)...)
}

// must runs nsctl and fails the test unless it exits 0.
func (l *dirLab) must(args ...string) string {
	l.t.Helper()
	out, code := l.ctl(args...)
	if code != ExitOK {
		l.t.Fatalf("nsctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// tenant writes a tenant with a network key the way nsd's directory
// source expects it.
func (l *dirLab) tenant(id, network string) {
	l.t.Helper()
	if err := os.MkdirAll(filepath.Join(l.cfg, id), 0o755); err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.cfg, id, "network.json"), []byte(network), 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// status writes a status document as nsd on host would.
func (l *dirLab) status(host, name string, st any) {
	l.t.Helper()
	if err := source.NewDir(l.cfg, l.state).PutStatus(context.Background(), host, name, st); err != nil {
		l.t.Fatal(err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frob"}, {"tenant"}, {"tenant", "apply"}, {"tenant", "show"}} {
		if out, code := run(t, nsctl, args...); code != ExitUsage {
			t.Errorf("nsctl %v: exit %d, want %d\n%s", args, code, ExitUsage, out)
		}
	}
	dir := t.TempDir()
	for _, args := range [][]string{{"fw"}, {"dos"}, {"--bogus", "status"}, {"--source", "zk", "status"},
		{"--timeout", "-1s", "status"}, {"fw", "delete-rule", "acme"}, {"fw", "add-rule", "acme", "--id", "r1"},
		{"--source", "dir", "--config-dir", dir, "dos", "get"}, {"--source", "dir", "--config-dir", dir, "dos", "get", "acme", "--global"},
		{"confirm-deletes", "--host", "edge1"}, {"tunnels"}, {"status", "extra"}} {
		if out, code := run(t, nsctl, args...); code != ExitUsage {
			t.Errorf("nsctl %v: exit %d, want %d\n%s", args, code, ExitUsage, out)
		}
	}
}

func TestHelpForEveryCommand(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"tenant", "--help"}, {"tenant", "apply", "--help"}, {"tenant", "list", "--help"},
		{"tenant", "show", "--help"}, {"tenant", "delete", "--help"}, {"validate", "--help"}, {"status", "--help"}, {"confirm-deletes", "--help"}} {
		out, code := run(t, nsctl, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("nsctl %v: exit %d\n%s", args, code, out)
		}
	}
}

// TestCommandTree walks every command: each has Short help (what
// `nsctl --help` lists) and answers --help with its usage.
func TestCommandTree(t *testing.T) {
	n := 0
	var walk func(path []string, c *cobra.Command)
	walk = func(path []string, c *cobra.Command) {
		n++
		name := strings.Join(append([]string{"nsctl"}, path...), " ")
		if strings.TrimSpace(c.Short) == "" {
			t.Errorf("%s: no Short help", name)
		}
		out, code := run(t, nsctl, append(append([]string{}, path...), "--help")...)
		if code != ExitOK || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: exit %d\n%s", name, code, out)
		}
		for _, sub := range c.Commands() {
			walk(append(append([]string{}, path...), sub.Name()), sub)
		}
	}
	walk(nil, rootCommand(&ctl{}))
	// root, tenant and its 4, validate, status, confirm-deletes, fw and
	// its 6, dos and its 6, tunnels
	if n < 24 {
		t.Errorf("walked %d commands, want at least 24", n)
	}
}

// A group without its subcommand prints its help and is a usage error.
func TestMissingSubcommand(t *testing.T) {
	for _, group := range []string{"tenant", "fw", "dos"} {
		out, code := run(t, nsctl, group)
		if code != ExitUsage || !strings.Contains(out, "Usage:") || !strings.Contains(out, "error: nsctl "+group+": missing subcommand") {
			t.Errorf("nsctl %s: exit %d\n%s", group, code, out)
		}
	}
}
