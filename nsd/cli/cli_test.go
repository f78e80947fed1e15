package cli

import (
	"bytes"
	"context"
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

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"--source", "zk", "--once"}, {"--log-level", "loud"}, {"--max-delete-fraction", "2"}, {"extra-arg"}} {
		if out, code := run(t, NSD, args...); code != ExitUsage {
			t.Errorf("nsd %v: exit %d, want %d\n%s", args, code, ExitUsage, out)
		}
	}
}

func TestHelpForEveryCommand(t *testing.T) {
	if out, code := run(t, NSD, "--help"); code != 0 || !strings.Contains(out, "--host-netns") {
		t.Errorf("nsd --help: %d\n%s", code, out)
	}
}
