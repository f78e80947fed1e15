package dos

import (
	"strings"
	"testing"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

func compile(t *testing.T, src string) (dosspec.Match, error) {
	t.Helper()
	e, err := lang.Parse(src)
	if err != nil {
		t.Fatalf("parse %q: %v", src, err)
	}
	return dosspec.CompileMatch(e)
}

func TestCompileMatch(t *testing.T) {
	for src, want := range map[string]string{
		"udp.srcport == 53 and ip.len > 512": "v0 proto[17-17] sport[53-53] len[513-65535]",
		"tcp.flags.syn and not tcp.flags.ack and tcp.dstport in {80..443} and ip.dst == 203.0.113.0/24": "v4 proto[6-6] dst=203.0.113.0/24 dport[80-443] flags&0x12=0x2",
		"ip.ttl <= 5 and ip.src == 2001:db8::/32":                                                       "v6 src=2001:db8::/32 ttl[0-5]",
		"icmp.type == 8 and icmp.code == 0 and ip.version == 4":                                         "v4 itype[8-8] icode[0-0]",
		"tcp.flags == 0x02":                                          "v0 proto[6-6] flags&0xff=0x2",
		"ip.len >= 100 and ip.len < 200":                             "v0 len[100-199]",
		`ip.proto eq "tcp" and not tcp.flags.syn and tcp.flags.push`: "v0 proto[6-6] flags&0xa=0x8",
		`not tcp.flags.reset and tcp.dstport in {80}`:                "v0 proto[6-6] dport[80-80] flags&0x4=0x0",
		"true and ip.ttl == 1":                                       "v0 ttl[1-1]",
		"not false":                                                  "v0",
		"tcp.flags.ecn and tcp.flags.cwr":                            "v0 proto[6-6] flags&0xc0=0xc0",
	} {
		m, err := compile(t, src)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if got := m.String(); got != want {
			t.Errorf("%s\n got %s\nwant %s", src, got, want)
		}
	}
}

func TestCompileMatchRefusesOutsideTheSubset(t *testing.T) {
	for src, want := range map[string]string{
		"udp.srcport == 53 or udp.srcport == 123":       "1:19: or is not supported: write one signature per alternative",
		"not udp.srcport == 53":                         "1:1: not is only supported before a flag",
		"udp.srcport != 53":                             "!= is not supported in signatures",
		"udp.srcport in {53, 123}":                      "in takes one value or range here",
		"ip.src in $office":                             "named lists are not supported in signatures",
		"udp.srcport == 53 and tcp.dstport == 80":       "ip.proto: the conditions on it never match together",
		"ip.src == 192.0.2.1 and ip.dst == 2001:db8::1": "mixes IPv4 and IPv6",
		"ip.len > 10 and ip.len < 5":                    "ip.len: the conditions on it never match together",
		"not tcp.flags.syn":                             `1:5: not tcp.flags.syn also matches packets that are not TCP`,
		"udp.dstport == 53 and not tcp.flags.ack":       "not tcp.flags.ack also matches packets that are not TCP",
		"ip.ttl < 3 xor ip.len > 5":                     "1:12: xor is not supported",
		"false":                                         "false never matches",
		`ip.src.country == "BR"`:                        "1:1: ip.src.country is not supported in signatures",
		`cf.colo.name == "sfo06"`:                       "cf.colo.name is not supported in signatures",
		"ip.dst.asnum == 13335":                         "ip.dst.asnum is not supported in signatures",
		"bit_slice(udp, 64, 72) == 1":                   "bit_slice is not supported in signatures",
		`ip.proto == "udp" and sip`:                     "1:23: sip (SIP validation) is not supported by nfhost",
	} {
		_, err := compile(t, src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant substring %q", src, err, want)
		}
	}
}

func TestParseDoSDocument(t *testing.T) {
	s, err := dosspec.Parse("acme", []byte(`{"mode": "mitigate", "allow": ["198.51.100.0/24"], "deny": ["192.0.2.66", "2001:db8::/32"],
	  "signatures": [{"id": "dns-amp", "expression": "udp.srcport == 53 and ip.len > 512", "action": "drop", "expires": "2030-01-01T00:00:00Z"}],
	  "rate_limits": [{"prefix": "203.0.113.0/24", "pps": 100000, "per": "ip"}], "sample_rate": 1000}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Deny) != 2 || s.Deny[0].String() != "192.0.2.66/32" || len(s.Signatures) != 1 || s.Signatures[0].Expires.Year() != 2030 {
		t.Fatalf("%+v", s)
	}
	for doc, want := range map[string]string{
		`{"mode": "block"}`:          `tenants/acme/dos: mode: "block": must be mitigate or monitor`,
		`{"deny": ["192.0.2.1/24"]}`: `deny[0]: "192.0.2.1/24": host bits set`,
		`{"signatures": [{"id": "x", "expression": "udp.srcport == 53 or ip.ttl < 2", "action": "drop"}]}`: `signatures[0].expression: 1:19: or is not supported`,
		`{"signatures": [{"id": "x", "expression": "udp.srcprt == 53", "action": "drop"}]}`:                `did you mean "udp.srcport"?`,
		`{"signatures": [{"id": "x", "expression": "ip.ttl < 2", "action": "block"}]}`:                     `signatures[0].action: "block": must be drop, ratelimit or monitor`,
		`{"rate_limits": [{"prefix": "203.0.113.0/24", "per": "host"}]}`:                                   `rate_limits[0]: set pps, bps or both`,
		`{"sample": 10}`: `unknown field "sample"`,
	} {
		_, err := dosspec.Parse("acme", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant substring %q", doc, err, want)
		}
	}
}

// FuzzCompileMatch: the second compiler never panics and either compiles
// or refuses with a positioned language error.
func FuzzCompileMatch(f *testing.F) {
	for _, s := range []string{"udp.srcport == 53 and ip.len > 512", "tcp.flags.syn and not tcp.flags.ack",
		"ip.src == 192.0.2.0/24 and ip.ttl < 3", "icmp.type in {0..8} or ip.len == 1",
		`ip.proto eq "tcp" and not tcp.flags.push`, "not tcp.flags.syn", "true xor false", `ip.src.country in {"BR" "FR"}`,
		"bit_slice(tcp, 104, 112) == 2", `cf.colo.name == "x" and tcp.dstport in {80 443}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := lang.Parse(src)
		if err != nil {
			return
		}
		if _, err := dosspec.CompileMatch(e); err != nil {
			if _, ok := err.(*lang.Error); !ok {
				t.Fatalf("%q: error of type %T", src, err)
			}
		}
	})
}

// FuzzParse: any document either parses into a Spec or is refused with
// config errors naming a field; never a panic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"mode": "monitor", "deny": ["192.0.2.0/24"]}`,
		`{"signatures": [{"id": "a", "expression": "udp.dstport == 123 and payload[0:2] & 0xff00 == 0x1700", "action": "ratelimit", "pps": 5}]}`,
		`{"rate_limits": [{"prefix": "203.0.113.0/24", "bps": 1000, "per": "prefix"}], "sample_rate": 10}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		s, err := dosspec.Parse("acme", doc)
		if err != nil {
			if !strings.Contains(err.Error(), "tenants/acme/dos") {
				t.Fatalf("error does not name the key: %v", err)
			}
			return
		}
		if len(s.Signatures) > dosspec.MaxSignatures || len(s.RateLimits) > dosspec.MaxRateLimits {
			t.Fatalf("limits not enforced: %d signatures, %d rate limits", len(s.Signatures), len(s.RateLimits))
		}
	})
}
