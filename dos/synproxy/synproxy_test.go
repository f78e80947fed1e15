package synproxy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/nstest"
)

// TestApply: the table appears with the rule nft prints as synproxy, an
// unchanged spec costs nothing (also from a fresh call: a restart), a
// changed one replaces the table, nil removes it; a foreign table in the
// namespace is left alone.
func TestApply(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	ns := nstest.New(t, "nfS"+nstest.Unique()+"p")
	ns.MustExec(t, "nft", "add table inet someone_else")
	s := &Spec{Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:a::/48")},
		Ports: []dosspec.PortRange{{Lo: 80, Hi: 80}, {Lo: 8000, Hi: 8100}}, MSS: 1436, WScale: 7}
	ch, err := Apply(ns.Handle, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) != 2 || !strings.Contains(ch[0], "nf_conntrack_tcp_loose=0") {
		t.Errorf("changes %v", ch)
	}
	out := ns.MustExec(t, "nft", "list", "table", "inet", "nfhost_synproxy")
	for _, want := range []string{"ct state invalid tcp flags ack / fin,syn,rst,ack ip daddr @dst4 tcp dport @ports",
		"ip6 daddr @dst6", "synproxy mss 1436 wscale 7 timestamp sack-perm", "elements = { 80, 8000-8100 }", "priority filter - 10"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if ch, err := Apply(ns.Handle, s); err != nil || len(ch) != 0 {
		t.Fatalf("re-apply: %v %v", ch, err)
	}
	same := *s
	if ch, err := Apply(ns.Handle, &same); err != nil || len(ch) != 0 {
		t.Fatalf("apply of an equal spec: %v %v", ch, err)
	}
	s.MSS = 1400
	if ch, err := Apply(ns.Handle, s); err != nil || len(ch) != 1 {
		t.Fatalf("change: %v %v", ch, err)
	}
	if out := ns.MustExec(t, "nft", "list", "table", "inet", "nfhost_synproxy"); !strings.Contains(out, "mss 1400") || strings.Contains(out, "mss 1436") {
		t.Errorf("not replaced:\n%s", out)
	}
	if ch, err := Apply(ns.Handle, nil); err != nil || len(ch) != 1 {
		t.Fatalf("remove: %v %v", ch, err)
	}
	if ch, err := Apply(ns.Handle, nil); err != nil || len(ch) != 0 {
		t.Fatalf("remove again: %v %v", ch, err)
	}
	out = ns.MustExec(t, "nft", "list", "tables")
	if strings.Contains(out, "nfhost_synproxy") || !strings.Contains(out, "someone_else") {
		t.Errorf("tables after removal:\n%s", out)
	}
}

func TestForTenant(t *testing.T) {
	tp := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
	if ForTenant(nil, tp) != nil || ForTenant(&dosspec.TCPProtection{Monitor: true, SYNCookies: true}, tp) != nil ||
		ForTenant(&dosspec.TCPProtection{OutOfState: true}, tp) != nil {
		t.Error("a table for protection that answers no SYN")
	}
	s := ForTenant(&dosspec.TCPProtection{SYNCookies: true, MSS: 1436, WScale: 7}, tp)
	if s == nil || len(s.Prefixes) != 1 || s.Prefixes[0] != tp[0] {
		t.Errorf("%+v", s)
	}
}
