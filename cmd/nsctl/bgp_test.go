package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
)

func TestPrintBGP(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hs := source.HostStatus{Host: "edge1", Drained: true, BGP: &source.BGPStatus{LocalASN: 65001, RouterID: "192.0.2.2",
		Sessions: []source.BGPSession{
			{Peer: "192.0.2.1", ASN: 65000, State: "established", Since: now.Add(-90 * time.Second), FlowSpec: true, UpdatesSent: 7},
			{Peer: "192.0.2.9", ASN: 65009, State: "backoff", Failures: 3, RetryAt: now.Add(20 * time.Second), LastError: "bad peer AS"}},
		Announced: []string{"192.0.2.10/32", "203.0.113.0/24"}, AnnouncedCount: 2, FlowSpec: []string{"acme/ntp@203.0.113.0/24: dst 203.0.113.0/24 proto 17 dport 123 then discard"},
		NotExported: []string{"acme/p: payload bytes cannot be expressed in FlowSpec"}}}
	raw, _ := json.Marshal(hs)
	edge2, _ := json.Marshal(source.HostStatus{Host: "edge2"})
	var b strings.Builder
	if err := printBGP(&b, map[string]map[string]json.RawMessage{"edge1": {source.HostStatusName: raw}, "edge2": {source.HostStatusName: edge2}}, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"edge1: AS 65001 router ID 192.0.2.2 DRAINED (nsctl undrain edge1 announces again)",
		"192.0.2.1  65000  established ",
		"1m30s  yes       7",
		"backoff (3 failures, retry in 20s)",
		"announced (2): 192.0.2.10/32 203.0.113.0/24",
		"flowspec: acme/ntp@203.0.113.0/24",
		"not exported: acme/p: payload bytes",
		"edge2: no BGP (nsd runs without --bgp-config)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
}

func TestDrainUsage(t *testing.T) {
	for _, args := range [][]string{{"drain"}, {"undrain", "a", "b"}} {
		if _, code := run(t, nsctl, args...); code != ExitUsage {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	if out, code := run(t, nsctl, "drain", "a/b"); code != ExitInvalid || !strings.Contains(out, `invalid host ID "a/b"`) {
		t.Errorf("drain a/b: exit %d\n%s", code, out)
	}
}
