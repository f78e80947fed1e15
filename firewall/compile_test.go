package firewall

import (
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

var update = flag.Bool("update", false, "rewrite golden files")

// recorder is a netlink peer that answers every dump with nothing (an empty
// namespace) and records every message nftables sends.
type recorder struct{ msgs []netlink.Message }

func (r *recorder) conn(t testing.TB) *nftables.Conn {
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		r.msgs = append(r.msgs, req...)
		return nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *recorder) text() string {
	var b strings.Builder
	for _, m := range r.msgs {
		if m.Header.Flags&netlink.Dump != 0 {
			continue // reads
		}
		fmt.Fprintf(&b, "type=%#04x flags=%#04x %s\n", uint16(m.Header.Type), uint16(m.Header.Flags), hex.EncodeToString(m.Data))
	}
	return b.String()
}

func mustParse(t testing.TB, doc string) *fwspec.Spec {
	t.Helper()
	s, err := fwspec.Parse("acme", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

// TestBatchGolden pins the bytes of the batch for a fresh namespace: no
// root, no kernel. A change here is a change in what the kernel receives.
func TestBatchGolden(t *testing.T) {
	r := &recorder{}
	spec := mustParse(t, `{"default": "block", "rules": [
	  {"id": "ssh", "expression": "tcp.dstport == 22 and not ip.src in $office", "action": "block"},
	  {"id": "dns", "expression": "udp.dstport in {53, 5353} and ip.len <= 512", "action": "allow"},
	  {"id": "v6", "expression": "ip.dst == 2001:db8::/32 and icmp.type == 128", "action": "log"}],
	  "lists": {"office": ["198.51.100.0/24", "2001:db8::/32"]}}`)
	ch, err := apply(r.conn(t), spec, &listState{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) == 0 {
		t.Fatal("no changes for an empty namespace")
	}
	got := r.text()
	p := filepath.Join("testdata", "batch.golden")
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("batch differs from %s (go test ./firewall -run BatchGolden -update):\n%s", p, got)
	}
}

func TestParseErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`{"rules": [{"id": "x", "expression": "tcp.dstprot == 1", "action": "block"}]}`:                                                         `tenants/acme/firewall: rules[0].expression: 1:1: unknown field "tcp.dstprot"; did you mean "tcp.dstport"?`,
		`{"rules": [{"id": "x", "expression": "ip.src in $ofice", "action": "block"}], "lists": {"office": []}}`:                                `rules[0].expression: 1:1: unknown list $ofice; did you mean $office?`,
		`{"rules": [{"id": "x", "expression": "udp.dstport == 53 and ip.src.country == \"BR\"", "action": "block"}]}`:                           `rules[0].expression: 1:23: ip.src.country needs a country database: this server has none (nsd --geoip-db)`,
		`{"rules": [{"id": "x", "expression": "ip.dst.asnum in {13335}", "action": "block"}]}`:                                                  `rules[0].expression: 1:1: ip.dst.asnum needs an ASN database: this server has none (nsd --asn-db)`,
		`{"rules": [{"id": "x", "expression": "cf.colo.name == \"ams01\"", "action": "block"}]}`:                                                `rules[0].expression: 1:1: cf.colo.name: this server has no site (nsd --site)`,
		`{"rules": [{"id": "x", "expression": "ip.hdr_len > 5", "action": "block"}]}`:                                                           `rules[0].expression: 1:1: ip.hdr_len is not supported by nfhost`,
		`{"rules": [{"id": "x", "expression": "ip.src in $cf.anonymizer", "action": "block"}]}`:                                                 `rules[0].expression: 1:1: unknown list $cf.anonymizer`,
		`{"rules": [{"id": "x", "expression": "tcp.flags.syn", "action": "drop"}]}`:                                                             `rules[0].action: "drop": must be allow, block or log`,
		`{"rules": [{"id": "x", "expression": "tcp.flags.syn", "action": "log"}, {"id": "x", "expression": "tcp.flags.syn", "action": "log"}]}`: `rules[1].id: "x": duplicate of rules[0].id`,
		`{"rules": [], "default": "deny"}`:                   `default: "deny": must be allow or block`,
		`{"rules": [], "lists": {"o": ["198.51.100.1/24"]}}`: `lists.o[0]: "198.51.100.1/24": host bits set`,
		`{"rules": [], "lists": {"Bad": []}}`:                `lists.Bad: invalid list name`,
		`{"rulez": []}`:                                      `unknown field "rulez"`,
		`{}`:                                                 `rules: required`,
		`{"rules": [{"id": "x", "expression": "(ip.ttl == 1 or ip.ttl == 2) and (ip.len == 1 or ip.len == 2) and (tcp.flags == 1 or tcp.flags == 2) and (icmp.code == 1 or icmp.code == 2) and (ip.proto == 1 or ip.proto == 2)", "action": "log"}]}`: `more than 16 alternatives`,
	} {
		_, err := fwspec.Parse("acme", []byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v\nwant substring %q", doc, err, want)
		}
	}
}

// FuzzCompile: every expression the parser accepts compiles to a batch.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"tcp.dstport == 22 and not ip.src in $office",
		"udp.srcport in {53, 123, 1900} and ip.len > 512",
		"ip.src in {192.0.2.0/24, 2001:db8:5::/48, 198.51.100.1..198.51.100.77} or ip.dst == 203.0.113.7",
		"not (tcp.flags.syn and not tcp.flags.ack) or ip.version == 6 and ip.ttl < 3",
		"icmp.type in {0..255} and ip.proto in {tcp, udp, 1..5}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		c := fwspec.Config{Rules: []fwspec.Rule{{ID: "f", Expression: expr, Action: fwspec.Block}}, Lists: map[string][]string{"office": {"198.51.100.0/24", "2001:db8::/32"}}}
		spec, err := c.Validate("fuzz")
		if err != nil {
			return
		}
		r := &recorder{}
		if _, err := apply(r.conn(t), &spec, &listState{}); err != nil {
			t.Fatalf("accepted %q but compiling failed: %v", expr, err)
		}
	})
}

// TestCloudflareExamples: every expression of Cloudflare's Magic Firewall
// documentation (firewall/lang/testdata/cloudflare.txt) compiles to nft
// rules, or is refused with the reason the table gives; the DoS compiler
// compiles it or refuses it at a position.
func TestCloudflareExamples(t *testing.T) {
	b, err := os.ReadFile("lang/testdata/cloudflare.txt")
	if err != nil {
		t.Fatal(err)
	}
	lists := map[string][]string{"endpoints": {"203.0.113.0/25"}, "internal_routers": {"203.0.113.129"},
		"web_servers": {"203.0.113.200/29"}, "iplist": {"10.0.0.1", "10.10.0.0/24"}}
	n, dosOK := 0, 0
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		want, src, _ := strings.Cut(line, "\t")
		n++
		c := fwspec.Config{Rules: []fwspec.Rule{{ID: "cf", Expression: src, Action: fwspec.Block}}, Lists: lists}
		spec, err := c.ValidateEnv("acme", diffEnv)
		if refusal, ok := strings.CutPrefix(want, "refused: "); ok {
			if err == nil || !strings.Contains(err.Error(), refusal) {
				t.Errorf("%s: %v\nwant a refusal containing %q", src, err, refusal)
			}
		} else if err != nil {
			t.Errorf("%s: %v", src, err)
		} else {
			r := &recorder{}
			if _, err := apply(r.conn(t), &spec, &listState{}); err != nil {
				t.Errorf("%s: compile: %v", src, err)
			}
		}
		e, err := lang.Parse(src)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if _, err := dosspec.CompileMatch(e); err == nil {
			dosOK++
		} else if _, ok := err.(*lang.Error); !ok {
			t.Errorf("%s: DoS refusal without a position: %v", src, err)
		}
	}
	t.Logf("%d documented expressions; %d also compile as DoS signatures", n, dosOK)
}

// Alternatives covered by an earlier allow or block alternative of the
// same chain are left out; log rules cover nothing.
func TestShadowedAlternatives(t *testing.T) {
	spec := mustParse(t, `{"rules": [
	  {"id": "a", "expression": "tcp.flags.syn and ip.ttl < 5", "action": "block"},
	  {"id": "b", "expression": "tcp.flags.syn and ip.ttl < 3 and tcp.dstport == 22", "action": "allow"},
	  {"id": "c", "expression": "tcp.dstport == 80", "action": "log"},
	  {"id": "d", "expression": "tcp.dstport == 80 and ip.ttl == 9", "action": "block"},
	  {"id": "e", "expression": "tcp.flags.syn and ip.ttl <= 4 or udp.dstport == 53", "action": "block"}]}`)
	var got []string
	for _, lc := range layout(spec, nil) {
		if lc.name == "v4_tcp" || lc.name == "v4_udp" {
			for _, e := range lc.entries {
				id, _, _ := strings.Cut(strings.TrimPrefix(e.tag, tagPrefix), ":")
				got = append(got, lc.name+"/"+id)
			}
		}
	}
	if s := strings.Join(got, " "); s != "v4_tcp/a#0 v4_tcp/c#0 v4_tcp/d#0 v4_udp/e#2" {
		t.Fatalf("entries %s", s)
	}
}
