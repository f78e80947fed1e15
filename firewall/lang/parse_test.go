package lang

import (
	"os"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	for src, want := range map[string]string{
		"tcp.dstport == 22 and not ip.src in $office":               "(tcp.dstport == 22 and not ip.src in $office)",
		"ip.proto == udp and udp.dstport in {53, 123, 1024..65535}": "(ip.proto == 17 and udp.dstport in {53, 123, 1024..65535})",
		"ip.proto eq TCP && tcp.flags.syn && !tcp.flags.ack":        "((ip.proto == 6 and tcp.flags.syn) and not tcp.flags.ack)",
		"ip.src == 198.51.100.7 or ip.src == 2001:db8::/32":         "(ip.src == 198.51.100.7 or ip.src == 2001:db8::/32)",
		"ip.dst in {203.0.113.1..203.0.113.9, 2001:db8::1}":         "ip.dst in {203.0.113.1..203.0.113.9, 2001:db8::1}",
		"a or b":                              "",
		"not (ip.ttl < 5 or ip.len >= 0x200)": "not (ip.ttl < 5 or ip.len >= 512)",
		"icmp.type == 8 and icmp.code == 0 and ip.version == 6":              "((icmp.type == 8 and icmp.code == 0) and ip.version == 6)",
		"tcp.flags == 0x12\n and\ttcp.srcport != 0":                          "(tcp.flags == 18 and tcp.srcport != 0)",
		"ip.src in $office or ip.dst in $servers and udp.srcport > 1023":     "(ip.src in $office or (ip.dst in $servers and udp.srcport > 1023))",
		"udp.dstport == 53 and payload[2:2] & 0x80FF == 0x0001":              "(udp.dstport == 53 and payload[2:2] & 0x80ff == 0x0001)",
		"payload[0:4] != 0xDEADBEEF":                                         "payload[0:4] & 0xffffffff != 0xdeadbeef",
		`ip.proto eq "tcp" and tcp.dstport in {80 443}`:                      "(ip.proto == 6 and tcp.dstport in {80, 443})",
		`ip.proto.num == 17 || ip.proto == "ipv6-icmp"`:                      "(ip.proto == 17 or ip.proto == 58)",
		"tcp.flags.psh and tcp.flags.rst or tcp.flags.ece":                   "((tcp.flags.push and tcp.flags.reset) or tcp.flags.ecn)",
		"true and not false":                                                 "(true and not false)",
		"tcp.flags.syn xor tcp.flags.ack or tcp.flags.fin and tcp.flags.cwr": "((tcp.flags.syn xor tcp.flags.ack) or (tcp.flags.fin and tcp.flags.cwr))",
		`ip.src.country in {"br" "FR"} and ip.dst.asnum != 13335`:            `(ip.src.country in {"BR", "FR"} and ip.dst.asnum != 13335)`,
		`cf.colo.name == "sfo06" && cf.colo.region ne "WNAM"`:                `(cf.colo.name == "sfo06" and cf.colo.region != "WNAM")`,
		"bit_slice(udp, 64, 72) in {0x17 0x20..0x2f}":                        "bit_slice(udp, 64, 72) in {23, 32..47}",
		`ip.src in $cf.anonymizer`:                                           "ip.src in $cf.anonymizer",
	} {
		e, err := Parse(src)
		if want == "" {
			if err == nil {
				t.Errorf("Parse(%q) accepted", src)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", src, err)
			continue
		}
		if e.String() != want {
			t.Errorf("Parse(%q) = %s, want %s", src, e, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for src, want := range map[string]string{
		"tcp.dstprot == 22":                 `1:1: unknown field "tcp.dstprot"; did you mean "tcp.dstport"?`,
		"ip.source == 1.2.3.4":              `unknown field "ip.source"; did you mean "ip.src"?`,
		"frobnicate":                        `1:1: unknown field "frobnicate"`,
		"ip.src > 198.51.100.1":             `1:8: ip.src cannot be compared with >; use ==, != or in`,
		"udp.dstport == 70000":              `1:16: 70000 is out of range for udp.dstport (0..65535)`,
		"ip.ttl <":                          `1:9: expected a value for ip.ttl (integer), found end of expression`,
		"ip.version == 5":                   `ip.version is 4 or 6`,
		"tcp.flags.syn == 1":                `1:15: tcp.flags.syn is a flag: write "tcp.flags.syn" or "not tcp.flags.syn", without an operator`,
		"tcp.dstport in {1, 2":              `1:21: expected "," or "}", found end of expression`,
		"tcp.dstport in {9..3}":             `empty range 9..3`,
		"tcp.dstport == 1..3":               `a range needs in: tcp.dstport in {1..3}`,
		"ip.src == 198.51.100.1/24":         `1:11: host bits set: did you mean 198.51.100.0/24?`,
		"ip.src == 198.51.100.0/33":         `invalid CIDR`,
		"ip.src in {1.2.3.4..2001:db8::1}":  `mixes IPv4 and IPv6`,
		"tcp.dstport in $office":            `named lists hold IP prefixes; tcp.dstport is an integer`,
		"ip.proto == tcpp":                  `"tcpp" is not a number or a known name for ip.proto`,
		"(tcp.dstport == 22":                `expected ")", found end of expression`,
		"tcp.dstport == 22 tcp.srcport":     `1:19: expected and, or, xor or the end of the expression, found "tcp.srcport"`,
		"":                                  `empty expression`,
		"ip.src == 1.2.3.4 # comment":       `unexpected character '#'`,
		"ip.src in $":                       `expected a list name after $`,
		"payload == 0x01":                   `expected "[" after payload`,
		"payload[0:17] == 0x01":             `payload length 17: must be 1..16 bytes`,
		"payload[0-4] == 0x01":              `expected offset:length in bytes`,
		"payload[2000:1] == 0x01":           `payload offset 2000: at most 1500`,
		"payload[0:2] == 0x01":              `1:17: value has 1 bytes, payload[0:2] has 2`,
		"payload[0:1] == 01":                `"01" is not a hex byte string`,
		"payload[0:1] & 0x0f == 0x10":       `value byte 0 (0x10) has bits outside the mask (0x0f)`,
		"payload[0:1] > 0x10":               `expected == or != after payload[...]`,
		"tcp.dstport == 22 and\n  ip.ttl >": `2:11: expected a value`,
		strings.Repeat("(", 100) + "tcp.flags.syn" + strings.Repeat(")", 100): "nested deeper than 64",
		"ip.src.country == BR":           `1:19: expected a string in double quotes for ip.src.country, found "BR"`,
		`ip.src.country == "BRA"`:        `"BRA" is not a 2-letter country code`,
		`ip.src.country < "BR"`:          `ip.src.country cannot be compared with <`,
		`cf.colo.name == "a b"`:          `"a b" is not a site or region name`,
		`ip.proto == "tcpp"`:             `"tcpp" is not a known name for ip.proto`,
		`ip.proto == "tcp`:               `1:13: unterminated string`,
		"ip == 1":                        `1:1: ip is the raw header: compare bits of it with bit_slice(ip, start, end)`,
		"bit_slice(udp, 64, 8) == 1":     `1:20: bit_slice(udp, 64, 8): the end offset must be past the start`,
		"bit_slice(udp, 0, 40) == 1":     `bit_slice is at most 32 bits, this one 40`,
		"bit_slice(eth, 0, 8) == 1":      `bit_slice reads ip, tcp, udp or icmp, not "eth"`,
		"bit_slice(ip, 2040, 2048) == 1": `bit_slice offsets end at 2040 bits`,
		"bit_slice(ip, 0, 4) == 16":      `16 is out of range for bit_slice(ip, 0, 4) (0..15)`,
		"tcp.flags.syn ^^":               `expected a field, not or (, found end of expression`,
	} {
		_, err := Parse(src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v\nwant substring %q", src, err, want)
		}
	}
}

func TestLists(t *testing.T) {
	e, err := Parse("ip.src in $office and not ip.dst in $servers or ip.src in $office")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(Lists(e), ","); got != "office,servers" {
		t.Fatalf("Lists = %s", got)
	}
}

// FuzzParse: never panic; anything accepted prints to a form that parses
// to the same expression.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tcp.dstport == 22 and not ip.src in $office",
		"ip.proto == udp and udp.dstport in {53, 123, 1024..65535}",
		"ip.dst in {203.0.113.1..203.0.113.9, 2001:db8::1} or tcp.flags.syn",
		"not (ip.ttl < 5 or ip.len >= 0x200)", "((", "ip.src == ::", "$", "tcp.flags.syn == 1",
		"payload[0:4] & 0xffff0000 == 0x12340000", "payload[1:1] != 0x00 and udp.srcport == 53",
		`ip.proto eq "tcp" and tcp.dstport in {80 443}`, `ip.geoip.country in {"UK" "FR"}`, "true xor false",
		`cf.colo.name ne "sfo06" ^^ ip.src.asnum == 1`, "bit_slice(tcp, 104, 112) in {0x12 0x02}", "“udp”",
		"tcp.flags.push || !tcp.flags.reset", "ip.src in $cf.anonymizer",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		again, err := Parse(e.String())
		if err != nil {
			t.Fatalf("printed form %q of %q does not parse: %v", e.String(), src, err)
		}
		if again.String() != e.String() {
			t.Fatalf("round trip %q -> %q", e.String(), again.String())
		}
	})
}

func TestDNF(t *testing.T) {
	for src, want := range map[string]string{
		"tcp.dstport == 22":                              "[ip.proto == 6 tcp.dstport == 22]",
		"not tcp.dstport == 22":                          "[not ip.proto == 6] | [not tcp.dstport == 22]",
		"(ip.ttl < 5 or ip.ttl > 200) and tcp.flags.syn": "[ip.ttl < 5 ip.proto == 6 tcp.flags.syn] | [ip.ttl > 200 ip.proto == 6 tcp.flags.syn]",
		"not (ip.len > 1 and ip.ttl > 2)":                "[not ip.len > 1] | [not ip.ttl > 2]",
		"icmp.type == 8":                                 "[ip.proto in {1, 58} icmp.type == 8]",
		"tcp.flags.syn and not tcp.flags.ack":            "[ip.proto == 6 tcp.flags.syn not tcp.flags.ack]",
		"tcp.dstport == 22 and udp.dstport == 53":        "",
		// Unified Routing: != on a field the packet lacks is true.
		"tcp.dstport != 80":                       "[not ip.proto == 6] | [not tcp.dstport == 80]",
		"not tcp.flags.syn":                       "[not ip.proto == 6] | [not tcp.flags.syn]",
		"ip.proto == tcp and not tcp.flags.syn":   "[ip.proto == 6 not tcp.flags.syn]",
		"udp.dstport == 53 and tcp.dstport != 80": "[ip.proto == 17 udp.dstport == 53]",
		"bit_slice(icmp, 0, 8) == 8":              "[ip.proto in {1, 58} bit_slice(icmp, 0, 8) == 8]",
		"true":                                    "[]",
		"false or ip.ttl == 1":                    "[ip.ttl == 1]",
		"ip.ttl == 1 xor ip.len == 2":             "[ip.ttl == 1 not ip.len == 2] | [not ip.ttl == 1 ip.len == 2]",
		"not (ip.ttl == 1 xor ip.len == 2)":       "[not ip.ttl == 1 not ip.len == 2] | [ip.len == 2 ip.ttl == 1]",
	} {
		e, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		d, err := DNF(e, 16)
		if err != nil {
			t.Fatal(err)
		}
		var parts []string
		for _, c := range d {
			var lits []string
			for _, l := range c {
				lits = append(lits, l.String())
			}
			parts = append(parts, "["+strings.Join(lits, " ")+"]")
		}
		if got := strings.Join(parts, " | "); got != want && !(want == "" && len(d) == 0) {
			t.Errorf("DNF(%s) = %s\nwant %s", src, got, want)
		}
	}
	e, _ := Parse("(ip.ttl == 1 or ip.ttl == 2) and (ip.len == 1 or ip.len == 2) and (icmp.code == 1 or icmp.code == 2)")
	if _, err := DNF(e, 4); err == nil {
		t.Fatal("cap not enforced")
	}
}

// cloudflareExamples reads testdata/cloudflare.txt: expectation and
// expression per line.
func cloudflareExamples(t *testing.T) [][2]string {
	b, err := os.ReadFile("testdata/cloudflare.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		want, expr, ok := strings.Cut(line, "\t")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		out = append(out, [2]string{want, expr})
	}
	return out
}

// Every expression Cloudflare documents for Magic Firewall parses, and its
// printed form parses to the same expression.
func TestCloudflareExamples(t *testing.T) {
	exs := cloudflareExamples(t)
	if len(exs) < 60 {
		t.Fatalf("only %d examples", len(exs))
	}
	for _, ex := range exs {
		e, err := Parse(ex[1])
		if err != nil {
			t.Errorf("Parse(%q): %v", ex[1], err)
			continue
		}
		again, err := Parse(e.String())
		if err != nil || again.String() != e.String() {
			t.Errorf("round trip of %q: %q, %v", ex[1], e.String(), err)
		}
	}
}

func TestFold(t *testing.T) {
	env := Env{Site: "ams01", Region: "WEUR"}
	for src, want := range map[string]string{
		`cf.colo.name == "AMS01"`:                          "true",
		`cf.colo.name != "ams01"`:                          "false",
		`cf.colo.region in {"WNAM" "ENAM"} or ip.ttl == 1`: "(false or ip.ttl == 1)",
		`ip.geoip.country == "BR"`:                         `(ip.src.country == "BR" or ip.dst.country == "BR")`,
		`ip.geoip.country != "BR"`:                         `not (ip.src.country == "BR" or ip.dst.country == "BR")`,
		`not ip.geoip.country in {"UK" "FR"}`:              `not (ip.src.country in {"UK", "FR"} or ip.dst.country in {"UK", "FR"})`,
	} {
		e, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Fold(e, env)
		if err != nil || got.String() != want {
			t.Errorf("Fold(%s) = %v, %v; want %s", src, got, err, want)
		}
	}
	e, _ := Parse(`ip.ttl == 1 and cf.colo.region == "WEUR"`)
	if _, err := Fold(e, Env{Site: "x"}); err == nil || err.Error() != "1:17: cf.colo.region: this server has no region (nsd --region)" {
		t.Errorf("Fold without region: %v", err)
	}
}
