package consulacl

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite deploy/consul/ from the code")

// The HCL files under deploy/consul/ are exactly what the code generates
// for the default prefix (go test ./internal/consulacl -update rewrites them).
func TestShippedPolicies(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "consul")
	for name, want := range map[string]string{
		"nsd.hcl":         NSD(DefaultPrefix).Rules,
		"operator.hcl":    Operator(DefaultPrefix).Rules,
		"tenant.hcl.tmpl": Tenant(DefaultPrefix, TenantPlaceholder).Rules,
	} {
		p := filepath.Join(dir, name)
		if *update {
			if err := os.WriteFile(p, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (go test ./internal/consulacl -update writes it)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from the generated policy (go test ./internal/consulacl -update):\n%s\n--- want ---\n%s", p, got, want)
		}
	}
	// The template with the placeholder replaced is the tenant's policy.
	got := strings.ReplaceAll(Tenant(DefaultPrefix, TenantPlaceholder).Rules, TenantPlaceholder, "acme")
	if want := Tenant(DefaultPrefix, "acme").Rules; got != want {
		t.Errorf("template with acme:\n%s\nwant:\n%s", got, want)
	}
}

func TestRulesFollowThePrefix(t *testing.T) {
	r := Tenant("edge/nf", "acme").Rules
	for _, want := range []string{`key "edge/nf/tenants/acme/firewall" {` + "\n  policy = \"write\"",
		`key "edge/nf/tenants/acme/network" {` + "\n  policy = \"read\"",
		`key_prefix "edge/nf/tenant-status/acme/" {`} {
		if !strings.Contains(r, want) {
			t.Errorf("tenant rules lack %q:\n%s", want, r)
		}
	}
	// Under control/ exactly one key: the tenant's own counter request.
	if strings.Contains(r, `"edge/nf/tenants/"`) || strings.Contains(r, "dos/global") || strings.Count(r, "control") != 1 ||
		!strings.Contains(r, `key "edge/nf/control/watch/acme" {`+"\n  policy = \"write\"") {
		t.Errorf("tenant rules reach beyond the tenant:\n%s", r)
	}
	n := NSD("/edge/nf/").Rules
	var writes []string
	for _, w := range NSDWrites() {
		writes = append(writes, w)
		if !strings.Contains(n, `key_prefix "edge/nf/`+w+`" {`+"\n  policy = \"write\"") {
			t.Errorf("nsd cannot write %s:\n%s", w, n)
		}
	}
	if got := strings.Join(writes, " "); got != "tenant-status/ host-status/ acks/ status/ dos/mitigations/ top/ index/" || strings.Count(n, `policy = "write"`) != len(writes)+1 || !strings.Contains(n, `session_prefix "" {`) {
		t.Errorf("nsd writes %s (and sessions); want status, acks/, dos/mitigations/, top/ and index/ only:\n%s", got, n)
	}
	for _, k := range []string{"tenants/", "dos/", "control/"} {
		if !strings.Contains(n, `key_prefix "edge/nf/`+k+`" {`+"\n  policy = \"read\"") {
			t.Errorf("nsd cannot read %s:\n%s", k, n)
		}
	}
	if got := NSDName("edge/nf"); got != "nfhost-edge-nf-nsd" {
		t.Errorf("NSDName = %q", got)
	}
	if got := TenantName(DefaultPrefix, "acme"); got != "nfhost-tenant-acme" {
		t.Errorf("TenantName = %q", got)
	}
}

func TestAllowing(t *testing.T) {
	for _, c := range []struct{ op, key, want string }{
		{"write", "nfhost/tenants/beta/firewall", "nfhost-tenant-beta (tenant beta's token) or nfhost-operator"},
		{"write", "nfhost/tenants/acme/network", "nfhost-operator (the operator's token)"},
		{"read", "nfhost/tenants/acme/network", "nfhost-tenant-acme (tenant acme's token), nfhost-nsd (nsd's token) or nfhost-operator"},
		{"write", "nfhost/dos/global", "nfhost-operator (the operator's token)"},
		{"write", "nfhost/dos/mitigations/acme/auto-1f", "nfhost-nsd (nsd's token) or nfhost-operator"},
		{"write", "nfhost/control/confirm-deletes/edge1", "nfhost-operator (the operator's token)"},
		{"write", "nfhost/control/watch/beta", "nfhost-tenant-beta (tenant beta's token) or nfhost-operator"},
		{"read", "nfhost/tenant-status/beta/edge1", "nfhost-tenant-beta (tenant beta's token), nfhost-nsd (nsd's token) or nfhost-operator"},
		{"write", "nfhost/tenant-status/beta/edge1", "nfhost-nsd (nsd's token) or nfhost-operator"},
		{"write", "nfhost/host-status/edge1", "nfhost-nsd (nsd's token) or nfhost-operator"},
		{"delete", "nfhost/status/edge1/", "nfhost-nsd (nsd's token) or nfhost-operator"},
		{"write", "elsewhere/x", "nfhost-operator (the operator's token)"},
	} {
		if got := Allowing("nfhost", c.op, c.key); got != c.want {
			t.Errorf("Allowing(%s %s) = %q, want %q", c.op, c.key, got, c.want)
		}
	}
}
