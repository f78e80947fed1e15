package routing_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// ruleMark is the fwmark of the tenant's ip rule as `ip rule` prints it.
func ruleMark(t *testing.T, ns *nstest.NS, family string, table uint32) string {
	t.Helper()
	out := ns.MustExec(t, "ip", family, "rule", "show", "table", fmt.Sprint(table))
	m := regexp.MustCompile(`fwmark (0x[0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no fwmark rule for table %d:\n%s", table, out)
	}
	return m[1]
}

// mapElements returns the "prefix : mark" pairs of one nft map as nft lists them.
func mapElements(t *testing.T, ns *nstest.NS, name string) []string {
	t.Helper()
	out := ns.MustExec(t, "nft", "list", "map", "inet", "nfhost", name)
	i := strings.Index(out, "elements = {")
	if i < 0 {
		return nil
	}
	body := out[i+len("elements = {"):]
	body = body[:strings.Index(body, "}")]
	var els []string
	for _, e := range strings.Split(body, ",") {
		if e = strings.Join(strings.Fields(e), " "); e != "" {
			els = append(els, e)
		}
	}
	return els
}

// nft shows the mark of a map element as the same number as the ip rule
// that matches it (0x6e66f201, not 0x01f2666e), and the datapath sets that
// mark (the ping goes through the rule's table).
func TestNFTMapShowsRuleMark(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	spec := tp.spec("acme", 0xf201, "203.0.113.0/24", "2001:db8:1::/48")
	mustApply(t, tp.rec, spec)
	for _, c := range []struct{ family, m, prefix string }{
		{"-4", "tenant_marks4", "203.0.113.0/24"},
		{"-6", "tenant_marks6", "2001:db8:1::/48"},
	} {
		want := c.prefix + " : " + ruleMark(t, tp.edge, c.family, spec.Table)
		if got := mapElements(t, tp.edge, c.m); len(got) != 1 || got[0] != want {
			t.Errorf("nft map %s = %q, want [%q] (the ip rule's mark)", c.m, got, want)
		}
	}
	tn := tp.tenantNS(t, spec)
	tn.MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tn.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/128", "dev", "lo")
	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")
	tp.client.MustExec(t, "ping", "-6", "-c1", "-W2", "2001:db8:1::1")
}

// writeV1Table replaces the nft table with what the previous nfhost
// version wrote: the same maps and chains, rules tagged
// nfhost-routing-v1 without a byte-order conversion, and mark values in
// host byte order.
func writeV1Table(t *testing.T, ns *nstest.NS, marks map[netip.Prefix]uint32) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: owned.NFTTable}
	m4 := &nftables.Set{Table: tbl, Name: "tenant_marks4", KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark, IsMap: true, Interval: true}
	m6 := &nftables.Set{Table: tbl, Name: "tenant_marks6", KeyType: nftables.TypeIP6Addr, DataType: nftables.TypeMark, IsMap: true, Interval: true}
	c.DelTable(tbl)
	c.AddTable(tbl)
	c.AddSet(m4, nil)
	c.AddSet(m6, nil)
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: tbl, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle})
	for _, ch := range []*nftables.Chain{pre, out} {
		for _, r := range []struct {
			proto    byte
			set      *nftables.Set
			off, len uint32
			tag      string
		}{{unix.NFPROTO_IPV4, m4, 16, 4, "mark4"}, {unix.NFPROTO_IPV6, m6, 24, 16, "mark6"}} {
			c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, UserData: []byte("nfhost-routing-v1:" + r.tag), Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{r.proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: r.off, Len: r.len},
				&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: r.set.Name, SetID: r.set.ID},
				&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			}})
		}
	}
	for p, m := range marks {
		set := m6
		if p.Addr().Is4() {
			set = m4
		}
		if err := c.SetAddElements(set, nftset.Elements(p, binaryutil.NativeEndian.PutUint32(m))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("write v1 nft table: %v", err)
	}
}

// addNativeElement adds one map element in the old (host) byte order to
// the table as it stands, the way an older nsd would have.
func addNativeElement(t *testing.T, ns *nstest.NS, p netip.Prefix, mark uint32) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: owned.NFTTable}
	set := &nftables.Set{Table: tbl, Name: "tenant_marks4", KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark, IsMap: true, Interval: true}
	if err := c.SetAddElements(set, nftset.Elements(p, binaryutil.NativeEndian.PutUint32(mark))); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("add element: %v", err)
	}
}

// A table written by the previous version (marks in host byte order) is
// converted by the first pass of the new one: every element is rewritten
// once, with the mark the ip rule has, nothing is duplicated, the tenants
// are converged afterwards and traffic keeps flowing.
func TestNFTMapUpgradeFromHostByteOrder(t *testing.T) {
	tp := newTopoNamed(t, "nfR")
	a := tp.spec("acme", 0xf201, "203.0.113.0/24", "2001:db8:1::/48")
	b := tp.spec("beta", 2, "198.51.100.0/25")
	mustApply(t, tp.rec, a)
	mustApply(t, tp.rec, b)
	tp.tenantNS(t, a).MustExec(t, "ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
	tp.tenantNS(t, b).MustExec(t, "ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
	writeV1Table(t, tp.edge, map[netip.Prefix]uint32{
		netip.MustParsePrefix("203.0.113.0/24"):  a.Mark,
		netip.MustParsePrefix("2001:db8:1::/48"): a.Mark,
		netip.MustParsePrefix("198.51.100.0/25"): b.Mark,
	})
	want4 := []string{"198.51.100.0/25 : " + ruleMark(t, tp.edge, "-4", b.Table), "203.0.113.0/24 : " + ruleMark(t, tp.edge, "-4", a.Table)}
	want6 := []string{"2001:db8:1::/48 : " + ruleMark(t, tp.edge, "-6", a.Table)}
	check := func(when string) {
		t.Helper()
		if got := mapElements(t, tp.edge, "tenant_marks4"); strings.Join(got, ",") != strings.Join(want4, ",") {
			t.Errorf("%s: tenant_marks4 = %q, want %q", when, got, want4)
		}
		if got := mapElements(t, tp.edge, "tenant_marks6"); strings.Join(got, ",") != strings.Join(want6, ",") {
			t.Errorf("%s: tenant_marks6 = %q, want %q", when, got, want6)
		}
	}

	// The upgraded nsd starts: New converts the table.
	rec, err := routing.New(routing.Config{HostNS: tp.edge.Handle, NSPrefix: tp.nsPrefix})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	check("after upgrade")
	if _, err := rec.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range []rtspec.TenantSpec{a, b} {
		if ch := mustApply(t, rec, s); len(ch) != 0 {
			t.Errorf("Apply(%s) after the upgrade changed the kernel: %v", s.ID, ch)
		}
	}
	check("after the first pass")
	tp.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.1")
	tp.client.MustExec(t, "ping", "-c1", "-W2", "198.51.100.1")

	// An element an old nsd added to the new table is rewritten too.
	addNativeElement(t, tp.edge, netip.MustParsePrefix("198.51.100.128/25"), b.Mark)
	if _, err := rec.Observe(context.Background()); err != nil {
		t.Fatal(err)
	}
	want4 = append([]string{"198.51.100.0/25 : " + ruleMark(t, tp.edge, "-4", b.Table), "198.51.100.128/25 : " + ruleMark(t, tp.edge, "-4", b.Table)}, want4[1:]...)
	check("after an old-order element")
}
