package e2e

import (
	"strings"
	"testing"

	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// nsd and nsctl against an agent that serves HTTPS only and verifies
// client certificates, configured the Consul way: CONSUL_HTTP_ADDR=https://…,
// CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY. Without the CA
// nsctl fails saying what to set.
func TestTLSConsul(t *testing.T) {
	l := newLabPrefix(t, "nfA", consultest.WithTLS())
	l.consulAddr = "" // CONSUL_HTTP_ADDR decides
	l.nsdEnv, l.ctlEnv = l.consul.Env(), l.consul.Env()
	if !strings.HasPrefix(l.consul.URL, "https://") {
		t.Fatalf("agent URL %s", l.consul.URL)
	}
	l.startNSD()
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	l.waitApplied("acme")
	l.tenantNS("acme").MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	l.client.MustExec(t, "ping", "-c2", "-W2", "203.0.113.1")

	tlsFiles := []string{"CONSUL_CACERT=" + l.consul.TLS.CAFile, "CONSUL_CLIENT_CERT=" + l.consul.TLS.ClientCert, "CONSUL_CLIENT_KEY=" + l.consul.TLS.ClientKey}
	// --consul-addr without a scheme keeps the https of CONSUL_HTTP_ADDR
	// or CONSUL_HTTP_SSL.
	for _, env := range [][]string{
		append([]string{"CONSUL_HTTP_ADDR=" + l.consul.URL}, tlsFiles...),
		append([]string{"CONSUL_HTTP_SSL=true"}, tlsFiles...),
	} {
		if out, code := l.nsctlEnv(env, "--consul-addr", l.consul.Addr, "fw", "add-rule", "acme", "--id", "ssh",
			"--expression", "tcp.dstport == 22", "--action", "block"); code != 0 && !strings.Contains(out, "exists") {
			t.Errorf("nsctl --consul-addr %s with %v: exit %d\n%s", l.consul.Addr, env[0], code, out)
		}
	}
	eventually(t, "rule ssh in force over TLS", func() bool { return l.firewallHas("acme", "ssh") })

	// Without the CA: a clear error, exit 1.
	out, code := l.nsctlEnv([]string{"CONSUL_HTTP_ADDR=" + l.consul.URL, "CONSUL_CLIENT_CERT=" + l.consul.TLS.ClientCert,
		"CONSUL_CLIENT_KEY=" + l.consul.TLS.ClientKey}, "tenant", "list")
	if code != 1 || !strings.Contains(out, "certificate") || !strings.Contains(out, "CONSUL_CACERT") {
		t.Errorf("nsctl without the CA: exit %d\n%s", code, out)
	}
	// Without a client certificate the agent refuses the handshake.
	out, code = l.nsctlEnv([]string{"CONSUL_HTTP_ADDR=" + l.consul.URL, "CONSUL_CACERT=" + l.consul.TLS.CAFile}, "tenant", "list")
	if code != 1 || !strings.Contains(out, "CONSUL_CLIENT_CERT") {
		t.Errorf("nsctl without a client certificate: exit %d\n%s", code, out)
	}
	// Plain HTTP to the HTTPS port fails too.
	if out, code := l.nsctlEnv(nil, "--consul-addr", "http://"+l.consul.Addr, "tenant", "list"); code != 1 {
		t.Errorf("nsctl over plain HTTP: exit %d\n%s", code, out)
	}
	if strings.Contains(l.nsd.Log(), "config source unavailable") {
		t.Errorf("nsd lost the TLS agent:\n%s", l.nsd.Log())
	}
}
