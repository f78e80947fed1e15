package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// aclLab is a lab whose Consul has ACLs on with default deny: the
// policies are made by `nsctl acl init`, nsctl runs with an operator
// token, and nsd with its own token from a token file.
type aclLab struct {
	*lab
	operator  string // SecretID
	nsdToken  *api.ACLToken
	tokenFile string
}

func newACLLab(t *testing.T) *aclLab {
	l := &aclLab{lab: newLabPrefix(t, "nfA", consultest.WithACL())}
	if out, code := l.nsctlEnv([]string{"CONSUL_HTTP_TOKEN=" + l.consul.Token}, "acl", "init"); code != 0 {
		t.Fatalf("nsctl acl init: exit %d\n%s", code, out)
	}
	l.operator = l.policyToken("nfhost-operator", "operator").SecretID
	l.ctlEnv = []string{"CONSUL_HTTP_TOKEN=" + l.operator}
	l.nsdToken = l.policyToken("nfhost-nsd", "nsd "+l.hostID)
	l.tokenFile = filepath.Join(t.TempDir(), "nsd-token")
	l.writeTokenFile(l.nsdToken.SecretID)
	return l
}

func (l *aclLab) policyToken(policy, desc string) *api.ACLToken {
	l.t.Helper()
	tok, _, err := l.consul.Client.ACL().TokenCreate(&api.ACLToken{Description: desc, Policies: []*api.ACLTokenPolicyLink{{Name: policy}}}, nil)
	if err != nil {
		l.t.Fatalf("create %s token: %v", policy, err)
	}
	return tok
}

func (l *aclLab) writeTokenFile(secret string) {
	l.t.Helper()
	// Rename, so that nsd never reads half a token.
	tmp := l.tokenFile + ".new"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		l.t.Fatal(err)
	}
	if err := os.Rename(tmp, l.tokenFile); err != nil {
		l.t.Fatal(err)
	}
}

// tenantToken issues a tenant token with nsctl and returns its SecretID.
func (l *aclLab) tenantToken(id string) string {
	l.t.Helper()
	out, code := l.nsctl("tenant", "token", "create", id)
	if code != 0 {
		l.t.Fatalf("nsctl tenant token create %s: exit %d\n%s", id, code, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "SecretID:"); ok {
			return strings.TrimSpace(v)
		}
	}
	l.t.Fatalf("no SecretID:\n%s", out)
	return ""
}

// raw sends one KV request with net/http and X-Consul-Token, as any Consul
// client would, and returns the status code and body.
func (l *aclLab) raw(method, key, token, body string) (int, string) {
	l.t.Helper()
	req, err := http.NewRequest(method, "http://"+l.consul.Addr+"/v1/kv/"+key, strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	req.Header.Set("X-Consul-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, key, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricText reads one metric of an nsd serving metrics on addr.
func metricText(addr, name string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// firewallHas reports whether tenant id's namespace holds rule ruleID.
func (l *lab) firewallHas(id, ruleID string) bool {
	out, err := l.tenantNS(id).Exec(l.t, "nft", "list", "table", "inet", "nfhost")
	return err == nil && strings.Contains(out, "c_"+ruleID)
}

const fwDoc = `{"default": "allow", "rules": [{"id": "%s", "expression": "tcp.dstport == %d", "action": "block"}]}`

// With ACLs on and default deny, a tenant's token edits its own firewall
// (nsctl fw, raw HTTP, consul kv put) and reads its own status from every
// host, and is refused everything else with a message that names the key
// and the policy; nsd's token applies tenants and writes status but
// cannot change a tenant's config.
func TestACLTenantTokenBoundaries(t *testing.T) {
	l := newACLLab(t)
	l.startNSD("--token-file", l.tokenFile)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	l.applyTenant("beta", `{"prefixes": ["198.51.100.0/24"]}`)
	l.waitApplied("acme", "beta")
	// A second host's status, as another edge server would write it.
	l.consul.Put(t, "nfhost/tenant-status/acme/edge-other", `{"tenant": "acme", "host": "edge-other", "state": "applied"}`)

	acme := l.tenantToken("acme")
	asAcme := []string{"CONSUL_HTTP_TOKEN=" + acme}

	// nsctl fw with the tenant's token, applied by nsd.
	if out, code := l.nsctlEnv(asAcme, "fw", "add-rule", "acme", "--id", "ssh", "--expression", "tcp.dstport == 22", "--action", "block"); code != 0 {
		t.Fatalf("acme: nsctl fw add-rule: exit %d\n%s", code, out)
	}
	eventually(t, "acme's rule ssh in force", func() bool { return l.firewallHas("acme", "ssh") })

	// Raw HTTP with X-Consul-Token.
	if code, body := l.raw("PUT", "nfhost/tenants/acme/firewall", acme, fmt.Sprintf(fwDoc, "raw", 2222)); code != 200 || strings.TrimSpace(body) != "true" {
		t.Fatalf("acme: raw PUT of its firewall: %d %s", code, body)
	}
	eventually(t, "acme's rule raw in force", func() bool { return l.firewallHas("acme", "raw") && !l.firewallHas("acme", "ssh") })

	// The consul CLI, as a tenant would run it.
	kv := exec.Command(consultest.Binary(), "kv", "put", "-http-addr="+l.consul.Addr, "-token="+acme,
		"nfhost/tenants/acme/firewall", fmt.Sprintf(fwDoc, "cli", 2223))
	if out, err := kv.CombinedOutput(); err != nil {
		t.Fatalf("acme: consul kv put: %v\n%s", err, out)
	}
	eventually(t, "acme's rule cli in force", func() bool { return l.firewallHas("acme", "cli") })

	// Its own status from every host.
	out, code := l.nsctlEnv(asAcme, "fw", "stats", "acme")
	if code != 0 || !strings.Contains(out, l.hostID) {
		t.Errorf("acme: nsctl fw stats: exit %d\n%s", code, out)
	}
	st, _, err := l.consul.Client.KV().List("nfhost/tenant-status/acme/", &api.QueryOptions{Token: acme})
	if err != nil || len(st) != 2 {
		t.Errorf("acme reads its status from every host: %d keys, %v", len(st), err)
	}

	// Everything else is refused, clearly.
	out, code = l.nsctlEnv(asAcme, "fw", "add-rule", "beta", "--id", "x", "--expression", "tcp.dstport == 1", "--action", "block")
	if code != 6 || !strings.Contains(out, "nfhost/tenants/beta/firewall") || !strings.Contains(out, "nfhost-tenant-beta") {
		t.Errorf("acme edits beta's firewall with nsctl: exit %d\n%s", code, out)
	}
	out, code = l.nsctlEnv(asAcme, "fw", "stats", "beta")
	if code != 6 || !strings.Contains(out, "nfhost/tenant-status/beta/") {
		t.Errorf("acme reads beta's status with nsctl: exit %d\n%s", code, out)
	}
	for _, c := range []struct{ method, key string }{
		{"PUT", "nfhost/tenants/beta/firewall"},
		{"PUT", "nfhost/tenants/acme/network"},
		{"PUT", "nfhost/tenants/acme/dos"},
		{"PUT", "nfhost/dos/global"},
		{"PUT", "nfhost/control/confirm-deletes/" + l.hostID},
		{"GET", "nfhost/control/confirm-deletes/" + l.hostID},
		{"GET", "nfhost/tenants/beta/network"},
		{"GET", "nfhost/tenant-status/beta/" + l.hostID},
		{"PUT", "nfhost/tenant-status/acme/" + l.hostID},
		{"GET", "nfhost/host-status/" + l.hostID},
	} {
		if code, body := l.raw(c.method, c.key, acme, "{}"); code != http.StatusForbidden {
			t.Errorf("acme: %s %s: want 403, got %d %s", c.method, c.key, code, body)
		}
	}
	// Own network and dos: readable.
	if code, _ := l.raw("GET", "nfhost/tenants/acme/network", acme, ""); code != 200 {
		t.Errorf("acme reads its network: %d", code)
	}

	// nsd's token: reads and writes status, never config.
	nsdTok := l.nsdToken.SecretID
	for _, key := range []string{"nfhost/tenants/acme/network", "nfhost/tenants/acme/firewall", "nfhost/dos/global", "nfhost/control/x"} {
		if code, body := l.raw("PUT", key, nsdTok, "{}"); code != http.StatusForbidden {
			t.Errorf("nsd's token: PUT %s: want 403, got %d %s", key, code, body)
		}
	}
	out, code = l.nsctlEnv([]string{"CONSUL_HTTP_TOKEN_FILE=" + l.tokenFile}, "fw", "add-rule", "acme", "--id", "x", "--expression", "tcp.dstport == 1", "--action", "block")
	if code != 6 || !strings.Contains(out, "nfhost-tenant-acme (tenant acme's token) or nfhost-operator") {
		t.Errorf("nsd's token edits a firewall with nsctl: exit %d\n%s", code, out)
	}
	if code, _ := l.raw("GET", "nfhost/host-status/"+l.hostID, nsdTok, ""); code != 200 {
		t.Errorf("nsd's token reads its host status: %d", code)
	}
	if strings.Contains(l.nsd.Log(), "refused by Consul ACLs") {
		t.Errorf("nsd was refused something with its own policy:\n%s", l.nsd.Log())
	}
}

// nsd's token is revoked while it runs: traffic keeps flowing, nsd says
// so (metric, log), and a new token in its token file resumes applying.
func TestACLNSDTokenRevoked(t *testing.T) {
	l := newACLLab(t)
	addr := freeAddr(t)
	p := l.startNSD("--token-file", l.tokenFile, "--metrics-addr", addr)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	l.waitApplied("acme")
	tn := l.tenantNS("acme")
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	l.client.MustExec(t, "ping", "-c2", "-W2", "203.0.113.1")
	state := l.kernelState()

	if _, err := l.consul.Client.ACL().TokenDelete(l.nsdToken.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	took := eventuallyFor(t, 30*time.Second, "nsd reports the refused token", func() bool {
		return metricText(addr, "nfhost_source_up") == "0" && metricText(addr, "nfhost_source_errors_total") != "0"
	})
	t.Logf("revoked token reported after %v", took)
	if !strings.Contains(p.Log(), "the token was refused") {
		t.Errorf("nsd's warning does not say the token was refused:\n%s", p.Log())
	}
	// A blocking query Consul authorised before the revocation returns
	// once more (Consul checks the token when a query starts); the first
	// write ends it, and the watch's next query is refused.
	for _, id := range []string{"early", "late"} {
		if out, code := l.nsctl("fw", "add-rule", "acme", "--id", id, "--expression", "tcp.dstport == 22", "--action", "block"); code != 0 {
			t.Fatalf("operator: nsctl fw add-rule: exit %d\n%s", code, out)
		}
		if id == "early" {
			eventuallyFor(t, 30*time.Second, "the tenants watch refused", func() bool {
				return strings.Contains(p.Log(), "watch nfhost/tenants/: refused by Consul ACLs")
			})
		}
	}
	// The late change cannot be read; what is applied stays.
	time.Sleep(2 * time.Second)
	l.client.MustExec(t, "ping", "-c2", "-W2", "203.0.113.1")
	if l.firewallHas("acme", "late") {
		t.Error("nsd applied a change it may not read")
	}
	if got := l.kernelState(); got != state {
		t.Errorf("kernel state changed while the token was refused:\n%s\n---\n%s", state, got)
	}

	// A new token, dropped into the file: no restart.
	l.writeTokenFile(l.policyToken("nfhost-nsd", "nsd "+l.hostID+" (2)").SecretID)
	took = eventuallyFor(t, 30*time.Second, "the late rule applied with the new token", func() bool { return l.firewallHas("acme", "late") })
	t.Logf("new token picked up and change applied after %v", took)
	eventuallyFor(t, 30*time.Second, "recovery logged and source up", func() bool {
		return strings.Contains(p.Log(), "config source available again") && metricText(addr, "nfhost_source_up") == "1"
	})
	l.client.MustExec(t, "ping", "-c2", "-W2", "203.0.113.1")
}
