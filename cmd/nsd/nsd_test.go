package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd"
)

// runNSD runs nsd like a process and returns what it wrote to stdout and
// stderr, interleaved, and its exit code.
func runNSD(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	env := cliutil.Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out}
	code := run(env, args)
	return out.String(), code
}

// Flags are checked before nsd needs root, so these are usage errors for
// anyone, and nothing touches the kernel.
func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"--source", "zk", "--once"}, {"--log-level", "loud"}, {"--max-delete-fraction", "2"}, {"extra-arg"},
		// flag-parsing errors, which cobra makes and hands to FlagErrorFunc
		{"--resync-interval", "abc"}, {"-z"}, {"--once=maybe"}, {"--host-id"}, {"---x"}} {
		if out, code := runNSD(t, args...); code != cliutil.ExitUsage {
			t.Errorf("nsd %v: exit %d, want %d\n%s", args, code, cliutil.ExitUsage, out)
		}
	}
}

// checkArgs parses args and checks them like nsd does before it needs
// root, without running anything: a case that is valid by mistake fails
// here instead of starting a daemon on the test machine.
func checkArgs(t *testing.T, args ...string) (nsdFlags, slog.Level, netip.Addr, error) {
	t.Helper()
	var f nsdFlags
	if err := nsdCommand(cliutil.Env{}, &f).ParseFlags(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	level, probe, err := f.check()
	return f, level, probe, err
}

func TestFlagChecks(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-delete-fraction", "0"}, "--max-delete-fraction must be in (0, 1], got 0"},
		{[]string{"--host-id", "edge 1"}, `--host-id must be non-empty without '/' or spaces, got "edge 1"`},
		{[]string{"--host-id", ""}, "--host-id must be non-empty"},
		{[]string{"--resync-interval", "-1s"}, "--resync-interval must be 0 (off) or positive, got -1s"},
		{[]string{"--status-counters", "never"}, `--status-counters must be on-demand, always or auto, got "never"`},
		{[]string{"--status-writes", "some"}, `--status-writes must be per-tenant or ack, got "some"`},
		{[]string{"--source", "dir", "--status-writes", "ack"}, `--status-writes ack needs --source consul`},
		{[]string{"--ack-interval", "0s"}, `--ack-interval must be positive, got 0s`},
		{[]string{"--ns-prefix", "nf/e"}, "--ns-prefix: "},
		{[]string{"--ns-prefix", strings.Repeat("n", owned.MaxNSPrefix+1)}, "--ns-prefix: "},
		{[]string{"--probe-address", "2001:db8::1"}, `--probe-address: want an IPv4 address, got "2001:db8::1"`},
		{[]string{"--probe-address", "edge1"}, `--probe-address: want an IPv4 address, got "edge1"`},
		{[]string{"--xdp-mode", "offload"}, `--xdp-mode must be native, generic or auto, got "offload"`},
		{[]string{"--gre-backend", "vxlan"}, `--gre-backend must be ebpf, kernel or auto, got "vxlan"`},
		{[]string{"--site", "ams 01"}, `--site: want a name of letters, digits, - _ and ., got "ams 01"`},
		{[]string{"--region", "W/EUR"}, `--region: want a name of letters, digits, - _ and ., got "W/EUR"`},
		{[]string{"--geo-reload-interval", "0s"}, `--geo-reload-interval must be positive, got 0s`},
	} {
		_, _, _, err := checkArgs(t, tc.args...)
		if cliutil.ExitCode(err) != cliutil.ExitUsage || !strings.Contains(fmt.Sprint(err), tc.want) {
			t.Errorf("nsd %v: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestHelpForEveryCommand(t *testing.T) {
	if out, code := runNSD(t, "--help"); code != 0 || !strings.Contains(out, "--host-netns") {
		t.Errorf("nsd --help: %d\n%s", code, out)
	}
}

func TestFlagDefaults(t *testing.T) {
	f, level, probe, err := checkArgs(t, "--host-id", "edge7", "--probe-address", "192.0.2.2", "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	if level != slog.LevelDebug || probe != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("level %v, probe %v", level, probe)
	}
	if want := filepath.Join(bpfpin.BPFFS, "nfhost", "edge7"); f.pinDir != want {
		t.Errorf("pin dir %q, want %q", f.pinDir, want)
	}
	if f.store.Source != "dir" || f.store.ConfigDir != "/etc/nfhost/tenants" || f.maxDelFraction != 0.2 || f.xdpMode != "auto" || f.nsPrefix != owned.DefaultNSPrefix {
		t.Errorf("defaults: %+v", f)
	}
	if f, _, _, _ := checkArgs(t, "--host-id", "edge7", "--bpf-pin-dir", "/sys/fs/bpf/x"); f.pinDir != "/sys/fs/bpf/x" {
		t.Errorf("--bpf-pin-dir: %q", f.pinDir)
	}
}

func TestPrintOnce(t *testing.T) {
	var out bytes.Buffer
	printOnce(&out, []nsd.Result{
		{Tenant: "acme", State: "applied", Changes: 12},
		{Tenant: "beta", State: "error", Err: errors.New("tenants/beta/network: prefixes[0]: overlaps acme")},
	})
	want := `TENANT  STATE    CHANGES  ERROR
acme    applied  12       
beta    error    0        tenants/beta/network: prefixes[0]: overlaps acme
`
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
	if cliutil.ExitCode(errOnceFailed) != cliutil.ExitFailure {
		t.Error("a failed --once pass does not exit 1")
	}
}
