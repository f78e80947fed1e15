package bgpspec

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestParseConfig(t *testing.T) {
	v, err := Parse("bgp.json", []byte(`{"asn": 65001, "router_id": "192.0.2.2",
	  "peers": [{"address": "192.0.2.1", "asn": 65000, "hold_time": "9s", "passive": true, "password": "s3cret"},
	            {"address": "2001:db8::1", "asn": 65000, "port": 1179, "flowspec": false}],
	  "communities": ["65001:100"], "med": 10, "graceful_restart": {"restart_time": "60s"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if v.ASN != 65001 || v.RouterID != netip.MustParseAddr("192.0.2.2") || v.ListenPort != 179 || *v.MED != 10 ||
		v.RestartTime != time.Minute || len(v.Communities) != 1 || FormatCommunity(v.Communities[0]) != "65001:100" {
		t.Errorf("got %+v", v)
	}
	p0, p1 := v.Peers[0], v.Peers[1]
	if !p0.Passive || p0.HoldTime != 9*time.Second || !p0.FlowSpec || p0.Password != "s3cret" {
		t.Errorf("peer 0: %+v", p0)
	}
	if p1.Passive || p1.HoldTime != DefaultHoldTime || p1.FlowSpec || p1.Port != 1179 {
		t.Errorf("peer 1: %+v", p1)
	}
}

// Every bad field is named, all at once.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"asn": 0, "peers": []}`, `bgp.json: asn: "0": required: the local AS number (1..4294967295, not 23456); bgp.json: peers: required: at least one peer`},
		{`{"asn": 1, "router_id": "2001:db8::1", "peers": [{"address": "192.0.2.1", "asn": 2}]}`, `bgp.json: router_id: "2001:db8::1": must be an IPv4 address`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.300", "asn": 2}]}`, `bgp.json: peers[0].address: "192.0.2.300": not an IP address`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1"}]}`, `bgp.json: peers[0].asn: "0": required: the peer's AS number (1..4294967295, not 23456)`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2}, {"address": "192.0.2.1", "asn": 3}]}`, `bgp.json: peers[1].address: "192.0.2.1": duplicate of peers[0]`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2, "hold_time": "1s"}]}`, `bgp.json: peers[0].hold_time: "1s": whole seconds from 3s to 65535s, e.g. "9s"`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2, "password": "` + strings.Repeat("x", 81) + `"}]}`, `bgp.json: peers[0].password: 81 bytes, at most 80 (TCP-MD5)`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2}], "communities": ["65536:1"]}`, `bgp.json: communities[0]: "65536:1": not a community: want ASN:value, both 0..65535`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2}], "graceful_restart": {"restart_time": "5000s"}}`, `bgp.json: graceful_restart.restart_time: "5000s": whole seconds from 1s to 1h8m15s, e.g. "120s"`},
		{`{"asn": 1, "peers": [{"address": "192.0.2.1", "asn": 2, "passive": true, "port": 1}]}`, `bgp.json: peers[0].port: "1": only for peers nsd dials (not passive)`},
		{`{"asn": 1, "peer": []}`, `bgp.json: unknown field "peer"`},
	} {
		_, err := Parse("bgp.json", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func sigs(t *testing.T, doc string) *dosspec.Spec {
	t.Helper()
	s, err := dosspec.Parse("acme", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

func render(d Desired) string {
	var b strings.Builder
	for _, r := range d.Routes {
		kind := "prefix"
		if r.Endpoint {
			kind = "endpoint"
		}
		fmt.Fprintf(&b, "route %s %s %s\n", r.Prefix, kind, strings.Join(r.Owners, ","))
	}
	for _, f := range d.FlowSpec {
		fmt.Fprintf(&b, "flowspec %s\n", f)
	}
	for _, n := range d.NotExported {
		fmt.Fprintf(&b, "not exported %s\n", n)
	}
	return b.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n got:\n%s\nwant:\n%s", name, got, want)
	}
}

func input(t *testing.T) Input {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	acmeDoS := sigs(t, `{"signatures": [
	  {"id": "ntp", "expression": "udp.dstport == 123 and ip.len >= 400", "action": "drop", "export": "flowspec"},
	  {"id": "syn", "expression": "ip.dst == 203.0.113.5 and tcp.flags.syn and tcp.dstport == 80", "action": "ratelimit", "bps": 8000000, "per": "rule", "export": "flowspec"},
	  {"id": "mon", "expression": "udp.dstport == 1900", "action": "drop", "export": "flowspec"},
	  {"id": "payload", "expression": "udp.dstport == 123 and payload[0:1] == 0x17", "action": "drop", "export": "flowspec"},
	  {"id": "ttl", "expression": "ip.ttl == 3", "action": "drop", "export": "flowspec"},
	  {"id": "perip", "expression": "udp.dstport == 53", "action": "ratelimit", "pps": 100, "export": "flowspec"},
	  {"id": "outside", "expression": "ip.dst == 198.51.100.1 and ip.proto == 17", "action": "drop", "export": "flowspec"},
	  {"id": "old", "expression": "udp.dstport == 7", "action": "drop", "export": "flowspec", "expires": "2026-11-30T00:00:00Z"},
	  {"id": "local", "expression": "udp.dstport == 9", "action": "drop"}]}`)
	return Input{Now: now, Tenants: []Tenant{
		{ID: "beta", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Advertise: false,
			Endpoints: []netip.Addr{netip.MustParseAddr("192.0.2.10")}},
		{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}, Advertise: true,
			Endpoints: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, DoS: acmeDoS},
		{ID: "gamma", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}, Advertise: true},
	}, Global: func() *dosspec.Spec {
		s, err := dosspec.ParseGlobal([]byte(`{"signatures": [
		  {"id": "g1", "expression": "ip.dst == 198.18.0.1 and udp.srcport == 19", "action": "drop", "export": "flowspec"},
		  {"id": "g2", "expression": "udp.srcport == 19", "action": "drop", "export": "flowspec"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		return &s
	}()}
}

// TestAnnounce is the golden file of what a host announces: advertise
// switches, shared anycast endpoints, FlowSpec rules and the signatures
// FlowSpec cannot express.
func TestAnnounce(t *testing.T) {
	in := input(t)
	golden(t, "announce", render(Announce(in)))
	// The order of the tenants does not matter.
	in.Tenants[0], in.Tenants[2] = in.Tenants[2], in.Tenants[0]
	golden(t, "announce", render(Announce(in)))
	in.Drained = true
	golden(t, "announce-drained", render(Announce(in)))
}

func TestExportField(t *testing.T) {
	_, err := dosspec.Parse("acme", []byte(`{"signatures": [{"id": "a", "expression": "ip.proto == 17", "action": "drop", "export": "bgp"}]}`))
	if err == nil || !strings.Contains(err.Error(), `signatures[0].export: "bgp": must be flowspec or absent`) {
		t.Errorf("got %v", err)
	}
}
