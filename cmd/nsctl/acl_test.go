package main

import (
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// aclLab is a Consul agent with ACLs on (default deny) and nsctl pointed
// at it with some token.
type aclLab struct {
	t *testing.T
	a *consultest.Agent
}

func newACLLab(t *testing.T) *aclLab {
	if testing.Short() {
		t.Skip("needs a Consul agent")
	}
	return &aclLab{t: t, a: consultest.Start(t, consultest.WithACL())}
}

// ctl runs nsctl with token.
func (l *aclLab) ctl(token string, args ...string) (string, int) {
	l.t.Helper()
	return run(l.t, nsctl, append([]string{"--consul-addr", l.a.Addr, "--token", token, "--timeout", "5s"}, args...)...)
}

func (l *aclLab) must(token string, args ...string) string {
	l.t.Helper()
	out, code := l.ctl(token, args...)
	if code != ExitOK {
		l.t.Fatalf("nsctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func TestACLInitIsIdempotent(t *testing.T) {
	l := newACLLab(t)
	out := l.must(l.a.Token, "acl", "init")
	for _, want := range []string{"policy nfhost-nsd created", "policy nfhost-operator created"} {
		if !strings.Contains(out, want) {
			t.Errorf("first init lacks %q:\n%s", want, out)
		}
	}
	out = l.must(l.a.Token, "acl", "init")
	if want := "policy nfhost-nsd unchanged\npolicy nfhost-operator unchanged\nnothing changed\n"; out != want {
		t.Errorf("second init:\n%s\nwant:\n%s", out, want)
	}
	// A policy edited by hand is put back.
	p, _, err := l.a.Client.ACL().PolicyReadByName("nfhost-nsd", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Rules += "\nkey_prefix \"\" { policy = \"write\" }\n"
	if _, _, err := l.a.Client.ACL().PolicyUpdate(p, nil); err != nil {
		t.Fatal(err)
	}
	if out := l.must(l.a.Token, "acl", "init"); !strings.Contains(out, "policy nfhost-nsd updated") {
		t.Errorf("init after a hand edit:\n%s", out)
	}
	// Another prefix has its own policies.
	if out := l.must(l.a.Token, "--kv-prefix", "lab/nf", "acl", "init"); !strings.Contains(out, "policy nfhost-lab-nf-nsd created") {
		t.Errorf("init with --kv-prefix lab/nf:\n%s", out)
	}
}

func TestACLInitRefusals(t *testing.T) {
	l := newACLLab(t)
	out, code := l.ctl("", "acl", "init")
	if code != cliutil.ExitForbidden || !strings.Contains(out, "nfhost-operator") {
		t.Errorf("acl init without a token: exit %d\n%s", code, out)
	}
	if testing.Short() {
		return
	}
	plain := consultest.Start(t)
	out, code = run(t, nsctl, "--consul-addr", plain.Addr, "acl", "init")
	if code != ExitFailure || !strings.Contains(out, "ACL system is off") {
		t.Errorf("acl init without ACLs: exit %d\n%s", code, out)
	}
}
