package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/doc"
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
		{"tunnel name too long", `{"prefixes": [], "tunnels": [{"name": "a-very-long-name0", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].name: "a-very-long-name0": an interface name`},
		{"tunnel name reserved", `{"prefixes": [], "tunnels": [{"name": "host0", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].name: "host0": reserved interface name`},
		{"anycast not IPv4", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "2001:db8::1", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].anycast_endpoint: "2001:db8::1": want an IPv4 address`},
		{"customer multicast", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "224.0.0.1", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].customer_endpoint: "224.0.0.1": not a unicast address`},
		{"interface /29", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/29"}]}`, `tunnels[0].interface_address: "169.254.20.0/29": must be a /31 or /30`},
		{"interface /30 network address", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/30"}]}`, `tunnels[0].interface_address: "169.254.20.0/30": in a /30 use one of the two host addresses`},
		{"mtu too big", `{"prefixes": [], "tunnels": [{"name": "gre1", "mtu": 1500, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].mtu: "1500": must be 576..1476`},
		{"ttl", `{"prefixes": [], "tunnels": [{"name": "gre1", "ttl": 300, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].ttl: "300": must be 1..255`},
		{"mss above mtu-40", `{"prefixes": [], "tunnels": [{"name": "gre1", "mtu": 1400, "mss_clamp": 1400, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].mss_clamp: "1400": must be 536..1360 (mtu - 40)`},
		{"health type", `{"prefixes": [], "tunnels": [{"name": "gre1", "health_check": {"type": "ping"}, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].health_check.type: "ping": must be reply or request`},
		{"health direction", `{"prefixes": [], "tunnels": [{"name": "gre1", "health_check": {"direction": "both"}, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].health_check.direction: "both": must be unidirectional or bidirectional`},
		{"bidirectional reply to itself", `{"prefixes": [], "tunnels": [{"name": "gre1", "health_check": {"direction": "bidirectional", "target": "10.100.0.8"}, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "10.100.0.8/31"}]}`, `tunnels[0].health_check.target: "10.100.0.8": bidirectional reply probes return to 10.100.0.8, the interface address: the target must be another address`},
		{"health rate", `{"prefixes": [], "tunnels": [{"name": "gre1", "health_check": {"rate": "fast"}, "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[0].health_check.rate: "fast": must be low, mid or high`},
		{"duplicate tunnel", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}, {"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[1].name: "gre1": duplicate of tunnels[0].name`},
		{"same endpoints twice", `{"prefixes": [], "tunnels": [{"name": "gre2", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}, {"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}]}`, `tunnels[1].customer_endpoint: "198.51.100.130": tunnels[0] already joins these endpoints`},
		{"route nexthop not a tunnel", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.30.1"}]}`, `routes[0].nexthop: "169.254.30.1": not the far side of any of the tenant's tunnels`},
		{"route nexthop is our side", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.0"}]}`, `routes[0].nexthop: "169.254.20.0": not the far side`},
		{"route prefix", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "203.0.113.1/24", "nexthop": "169.254.20.1"}]}`, `routes[0].prefix: "203.0.113.1/24": host bits set`},
		{"route weight", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1", "weight": 999}]}`, `routes[0].weight: "999": must be 1..256`},
		{"route priority", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1", "priority": -1}]}`, `routes[0].priority: "-1": must be 0..1000000`},
		{"route family", `{"prefixes": [], "tunnels": [{"name": "gre1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}], "routes": [{"prefix": "2001:db8::/32", "nexthop": "169.254.20.1"}]}`, `routes[0].nexthop: "169.254.20.1": address family differs`},
		{"unknown tunnel field", `{"prefixes": [], "tunnels": [{"nmae": "x"}]}`, `unknown field "nmae"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNetwork("acme", []byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted %s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant substring %q", err, tc.want)
			}
			var fe *doc.FieldError
			if !errors.As(err, &fe) || fe.Tenant != "acme" || fe.Key != doc.KeyNetwork {
				t.Fatalf("error %T does not carry tenant and key: %#v", err, fe)
			}
		})
	}
}

func TestParseNetworkReportsAllErrors(t *testing.T) {
	_, err := ParseNetwork("acme", []byte(`{"prefixes": ["x", "203.0.113.0/24", "y"]}`))
	var es doc.Errors
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
		if err := doc.ValidateTenantID(id); (err == nil) != ok {
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
			if q, err := doc.ParsePrefix(p.String()); err != nil || q != p {
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

func TestParseTunnelsDefaults(t *testing.T) {
	n, err := ParseNetwork("acme", []byte(`{"prefixes": ["203.0.113.0/24"],
	  "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"},
	              {"name": "gre-acme2", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.131", "interface_address": "169.254.21.2/30",
	               "mtu": 1400, "ttl": 32, "health_check": {"enabled": false, "type": "request", "rate": "high", "target": "198.51.100.1"}}],
	  "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}, {"prefix": "203.0.113.0/24", "nexthop": "169.254.21.1", "priority": 200, "weight": 3}]}`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := n.Tunnels[0], n.Tunnels[1]
	if a.MTU != 1476 || a.TTL != 64 || a.MSS != 1436 || !a.Health || a.Type != "reply" || a.Interval != time.Second ||
		a.Direction != "unidirectional" ||
		a.Target.String() != "169.254.20.0" || a.Peer.String() != "169.254.20.1" {
		t.Errorf("defaults: %+v", a)
	}
	if b.MTU != 1400 || b.TTL != 32 || b.MSS != 1360 || b.Health || b.Type != "request" || b.Interval != 250*time.Millisecond ||
		b.Target.String() != "198.51.100.1" || b.Peer.String() != "169.254.21.1" {
		t.Errorf("explicit: %+v", b)
	}
	// The other defaults: a request probes the router's side of the
	// tunnel; a bidirectional reply comes from the probe address (nsd's,
	// unknown here: invalid).
	n2, err := ParseNetwork("acme", []byte(`{"prefixes": [], "tunnels": [
	  {"name": "g1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31", "health_check": {"type": "request"}},
	  {"name": "g2", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.131", "interface_address": "169.254.21.0/31", "health_check": {"direction": "bidirectional"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if a := n2.Tunnels[0]; a.Target.String() != "169.254.20.1" || a.Direction != "unidirectional" {
		t.Errorf("request defaults: %+v", a)
	}
	if b := n2.Tunnels[1]; b.Target.IsValid() || b.Direction != "bidirectional" || b.Type != "reply" {
		t.Errorf("bidirectional reply defaults: %+v", b)
	}
	if r := n.Routes[0]; r.Priority != 100 || r.Weight != 1 || r.Tunnel != "gre-acme1" {
		t.Errorf("route defaults: %+v", r)
	}
	if r := n.Routes[1]; r.Priority != 200 || r.Weight != 3 || r.Tunnel != "gre-acme2" {
		t.Errorf("route: %+v", r)
	}
}
