package config

import (
	"errors"
	"strings"
	"testing"
)

func TestParseNetworkErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"bad CIDR", `{"prefixes": ["203.0.113.0/24", "203.0.113.0/33"]}`,
			`tenants/acme/network: prefixes[1]: "203.0.113.0/33": invalid CIDR`},
		{"host bits", `{"prefixes": ["203.0.113.1/24"]}`,
			`tenants/acme/network: prefixes[0]: "203.0.113.1/24": host bits set: did you mean "203.0.113.0/24"?`},
		{"unknown field", `{"prefixes": [], "prefixs": []}`, `tenants/acme/network: unknown field "prefixs"`},
		{"invalid JSON", "{\n  \"prefixes\": [,]\n}", `tenants/acme/network: invalid JSON at line 2, column 16`},
		{"wrong type", `{"prefixes": "203.0.113.0/24"}`, `tenants/acme/network: prefixes: expected []string, got JSON string`},
		{"wrong element type", `{"prefixes": [42]}`, `tenants/acme/network: prefixes: expected string, got JSON number`},
		{"missing prefixes", `{}`, `tenants/acme/network: prefixes: required`},
		{"trailing data", `{"prefixes": []} {}`, `trailing data`},
		{"empty", ``, `empty document`},
		{"overlap within tenant", `{"prefixes": ["203.0.113.0/24", "203.0.113.128/25"]}`,
			`prefixes[1]: "203.0.113.128/25": overlaps prefixes[0] "203.0.113.0/24"`},
		{"default route", `{"prefixes": ["0.0.0.0/0"]}`, `a default route cannot belong to a tenant`},
		{"too broad", `{"prefixes": ["64.0.0.0/2"]}`, `IPv4 prefixes must be /8 or longer`},
		{"loopback", `{"prefixes": ["127.0.0.0/8"]}`, `not a routable unicast prefix`},
		{"multicast v6", `{"prefixes": ["ff02::/16"]}`, `not a routable unicast prefix`},
		{"mapped", `{"prefixes": ["::ffff:203.0.113.0/120"]}`, `IPv4-mapped`},
		{"tunnels not yet", `{"prefixes": [], "tunnels": [{"name": "gre1"}]}`, `tunnels[0]: tunnels are not supported by this nsd version`},
		{"routes not yet", `{"prefixes": [], "routes": [{}]}`, `routes[0]: routes are not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetwork("acme", []byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted %s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant substring %q", err, tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Tenant != "acme" || fe.Key != KeyNetwork {
				t.Fatalf("error %T does not carry tenant and key: %#v", err, fe)
			}
		})
	}
}

func TestParseNetworkReportsAllErrors(t *testing.T) {
	_, err := ParseNetwork("acme", []byte(`{"prefixes": ["x", "203.0.113.0/24", "y"]}`))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].Path != "prefixes[0]" || es[1].Path != "prefixes[2]" {
		t.Fatalf("got %v", err)
	}
}

func TestParseNetworkValid(t *testing.T) {
	n, err := ParseNetwork("acme", []byte(`{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48", "198.51.100.0/24"], "tunnels": [], "routes": []}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(n.Prefixes) != 3 || n.Prefixes[1].String() != "2001:db8:1::/48" {
		t.Fatalf("got %v", n.Prefixes)
	}
}

func TestValidateTenantID(t *testing.T) {
	for id, ok := range map[string]bool{
		"acme": true, "a": true, "0": true, "acme-corp-2": true, strings.Repeat("a", 31): true,
		"": false, "-acme": false, "Acme": false, "acme_corp": false, strings.Repeat("a", 32): false, "a/b": false, "_global": false,
	} {
		if err := ValidateTenantID(id); (err == nil) != ok {
			t.Errorf("ValidateTenantID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

// FuzzParseNetwork: never panic; anything accepted is canonical, disjoint
// and round-trips.
func FuzzParseNetwork(f *testing.F) {
	for _, s := range []string{
		`{"prefixes": ["203.0.113.0/24", "2001:db8:1::/48"]}`,
		`{"prefixes": ["203.0.113.0/33"]}`, `{"prefixes": []}`, `{}`, `[`, `{"prefixes": [1]}`,
		`{"prefixes": ["fe80::/10"], "tunnels": [], "routes": []}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		n, err := ParseNetwork("fuzz", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		for i, p := range n.Prefixes {
			if p.Masked() != p || !p.IsValid() {
				t.Fatalf("accepted non-canonical %v", p)
			}
			if q, err := ParsePrefix(p.String()); err != nil || q != p {
				t.Fatalf("round trip %v: %v %v", p, q, err)
			}
			for _, o := range n.Prefixes[:i] {
				if o.Overlaps(p) {
					t.Fatalf("accepted overlapping %v and %v", o, p)
				}
			}
		}
	})
}
