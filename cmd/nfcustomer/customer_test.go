package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/cliutil"
)

func run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	env := cliutil.Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out}
	code := nfcustomer(env, args)
	return out.String(), code
}

const gre1 = "name=gre1,local=198.51.100.130,remote=192.0.2.10,address=169.254.20.1/31"

func TestHelp(t *testing.T) {
	out, code := run(t, "--help")
	if code != cliutil.ExitOK || !strings.Contains(out, "Usage:") || !strings.Contains(out, "--tunnel") || !strings.Contains(out, "--down") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

// Everything here fails before nfcustomer touches a namespace or bpffs.
func TestFlagErrors(t *testing.T) {
	base := []string{"--netns", "lab-cust", "--router", "lab-cust-r"}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{nil, cliutil.ExitUsage, `required flag(s) "netns" not set`},
		{[]string{"--netns", "lab-cust"}, cliutil.ExitUsage, "--router is required"},
		{append(base, "extra"), cliutil.ExitUsage, "unknown command"},
		{append(base, "--tunnel", "name"), cliutil.ExitUsage, `--tunnel 1: "name": want key=value`},
		{append(base, "--tunnel", gre1, "--tunnel", "name=gre2,bogus=1"), cliutil.ExitUsage, `--tunnel 2: unknown key "bogus" (want name, local, remote, address, mtu, ttl)`},
		{append(base, "--tunnel", gre1+",mtu=big"), cliutil.ExitUsage, "--tunnel 1: mtu: "},
		{append(base, "--tunnel", gre1+",ttl=x"), cliutil.ExitUsage, "--tunnel 1: ttl: "},
		{append(base, "--tunnel", gre1, "--route", "prefix=0.0.0.0/0,via=169.254.20.0,priority=high"), cliutil.ExitUsage, "--route 1: priority: "},
		{append(base, "--tunnel", gre1, "--route", "prefix=0.0.0.0/0,via=169.254.20.0,weight=heavy"), cliutil.ExitUsage, "--route 1: weight: "},
		{append(base, "--tunnel", gre1, "--route", "prefix=0.0.0.0/0,dev=x"), cliutil.ExitUsage, `--route 1: unknown key "dev"`},
		// Invalid tunnels are invalid configuration, told in the flags' terms.
		{append(base, "--tunnel", "name=gre1,local=198.51.100.130,remote=192.0.2.10,address=169.254.20.1/33"), cliutil.ExitInvalid, "--tunnel[0].address"},
		{append(base, "--tunnel", "name=gre1,local=nowhere,remote=192.0.2.10,address=169.254.20.1/31"), cliutil.ExitInvalid, "--tunnel[0].local"},
	} {
		out, code := run(t, tc.args...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("nfcustomer %v: exit %d, want %d with %q\n%s", tc.args, code, tc.code, tc.want, out)
		}
		if strings.Contains(out, "tenants/customer") || strings.Contains(out, "anycast_endpoint") {
			t.Errorf("nfcustomer %v: speaks in the tenant document's terms:\n%s", tc.args, out)
		}
	}
}

func TestCustomerNetwork(t *testing.T) {
	vn, err := customerNetwork([]string{gre1 + ",mtu=1400,ttl=32"}, []string{"prefix=0.0.0.0/0,via=169.254.20.0,priority=5,weight=2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(vn.Tunnels) != 1 || len(vn.Routes) != 1 {
		t.Fatalf("got %d tunnels, %d routes", len(vn.Tunnels), len(vn.Routes))
	}
	tu := vn.Tunnels[0]
	if tu.Name != "gre1" || tu.Anycast != netip.MustParseAddr("198.51.100.130") || tu.Customer != netip.MustParseAddr("192.0.2.10") ||
		tu.MTU != 1400 || tu.TTL != 32 || tu.Health {
		t.Errorf("tunnel: %+v", tu)
	}
	if r := vn.Routes[0]; r.Prefix != netip.MustParsePrefix("0.0.0.0/0") || r.Priority != 5 || r.Weight != 2 {
		t.Errorf("route: %+v", r)
	}
}

func TestKeyValues(t *testing.T) {
	kv, err := keyValues("a=1,b=,c=x=y", "a", "b", "c")
	if err != nil || len(kv) != 3 || kv["a"] != "1" || kv["b"] != "" || kv["c"] != "x=y" {
		t.Errorf("keyValues: %v %v", kv, err)
	}
	if _, err := keyValues("a=1,,b=2", "a", "b"); err == nil {
		t.Error("empty part: no error")
	}
}
