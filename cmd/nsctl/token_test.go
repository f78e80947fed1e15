package main

import (
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/internal/cliutil"
)

// secret is the SecretID in token create's output.
func secret(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "SecretID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no SecretID in:\n%s", out)
	return ""
}

func TestTenantTokens(t *testing.T) {
	l := newACLLab(t)
	mgmt := l.a.Token
	l.must(mgmt, "acl", "init")
	for _, id := range []string{"acme", "beta"} {
		l.a.Put(t, "nfhost/tenants/"+id+"/network", `{"prefixes": []}`)
	}
	out := l.must(mgmt, "tenant", "token", "create", "acme")
	if !strings.Contains(out, "policy nfhost-tenant-acme created") || !strings.Contains(out, "AccessorID: ") {
		t.Errorf("token create:\n%s", out)
	}
	acme := secret(t, out)
	if out := l.must(mgmt, "tenant", "token", "create", "acme"); !strings.Contains(out, "policy nfhost-tenant-acme unchanged") {
		t.Errorf("second token create:\n%s", out)
	}
	beta := secret(t, l.must(mgmt, "tenant", "token", "create", "beta"))

	// The token names the tenant; list shows the three, never a secret.
	out = l.must(mgmt, "tenant", "token", "list")
	if strings.Count(out, "nfhost tenant acme") != 2 || strings.Count(out, "nfhost tenant beta") != 1 || strings.Contains(out, acme) {
		t.Errorf("token list:\n%s", out)
	}

	// acme's token edits acme's firewall, nothing else.
	l.must(acme, "fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 22", "--action", "block")
	out, code := l.ctl(acme, "fw", "add-rule", "beta", "--id", "ssh", "--expression", "tcp.dstport == 22", "--action", "block")
	if code != cliutil.ExitForbidden || !strings.Contains(out, "nfhost/tenants/beta/firewall") || !strings.Contains(out, "nfhost-tenant-beta") {
		t.Errorf("acme edits beta's firewall: exit %d\n%s", code, out)
	}
	t.Logf("acme edits beta's firewall:\n%s", out)
	l.must(beta, "fw", "add-rule", "beta", "--id", "ssh", "--expression", "tcp.dstport == 22", "--action", "block")

	// Revoke: every token of acme goes, beta's stays.
	out = l.must(mgmt, "tenant", "token", "revoke", "acme")
	if strings.Count(out, "revoked") != 2 {
		t.Errorf("revoke:\n%s", out)
	}
	if out, code := l.ctl(mgmt, "tenant", "token", "revoke", "acme"); code != ExitNotFound {
		t.Errorf("second revoke: exit %d\n%s", code, out)
	}
	out, code = l.ctl(acme, "fw", "get", "acme")
	t.Logf("revoked token:\n%s", out)
	if code != cliutil.ExitForbidden || !strings.Contains(out, "the token was refused") {
		t.Errorf("revoked token: exit %d\n%s", code, out)
	}
	if out := l.must(mgmt, "tenant", "token", "list"); strings.Contains(out, "acme") || !strings.Contains(out, "beta") {
		t.Errorf("list after revoke:\n%s", out)
	}

	// The operator's policy is enough to issue tokens.
	op, _, err := l.a.Client.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{Name: "nfhost-operator"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.must(op.SecretID, "tenant", "token", "create", "gamma")
	// A tenant cannot issue tokens.
	out, code = l.ctl(beta, "tenant", "token", "create", "beta")
	if code != cliutil.ExitForbidden || !strings.Contains(out, "nfhost-operator") {
		t.Errorf("tenant issues a token: exit %d\n%s", code, out)
	}
	if out, code := l.ctl(mgmt, "tenant", "token", "create", "Bad_ID"); code != ExitInvalid {
		t.Errorf("bad tenant ID: exit %d\n%s", code, out)
	}
}
