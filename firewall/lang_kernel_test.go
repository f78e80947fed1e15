package firewall

// Kernel tests of the language's new fields with real packets and real
// nftables, on IPv4 and IPv6: raw bytes (bit_slice, payload), geo and ASN
// conditions from a generated MaxMind database, site scoping. Every
// expression is a "log" rule with its own counter; hand-built frames are
// injected one at a time from a client namespace, and the counters that
// moved must be exactly the rules lang.Eval says match. Namespaces carry
// the nfL tag.

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/fwspec/fwtest"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/geoip"
	"github.com/nfhost/nfhost/internal/geoip/geoiptest"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
)

// injector sends raw IP packets out of the client's eth0 to the tenant's
// host0 MAC, whatever their addresses.
type injector struct {
	fd      int
	ifindex int
	src     net.HardwareAddr
	dst     net.HardwareAddr
}

func newInjector(t *testing.T, client, tenant *nstest.NS) *injector {
	// The client only injects frames: without IPv6 on its link it sends
	// no MLD reports (hop limit 1) that the tenant's rules would count.
	client.MustExec(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
	mac := func(ns *nstest.NS, dev string) net.HardwareAddr {
		out := ns.MustExec(t, "ip", "-o", "link", "show", "dev", dev)
		_, rest, _ := strings.Cut(out, "link/ether ")
		m, err := net.ParseMAC(strings.Fields(rest + " x")[0])
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	in := &injector{src: mac(client, "eth0"), dst: mac(tenant, "host0")}
	err := namedns.Do(client.Handle, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		in.ifindex = ifi.Index
		in.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		return err
	})
	if err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(in.fd) })
	return in
}

func (in *injector) send(t *testing.T, raw []byte) {
	etype := uint16(unix.ETH_P_IP)
	if raw[0]>>4 == 6 {
		etype = unix.ETH_P_IPV6
	}
	frame := append(append(append([]byte{}, in.dst...), in.src...), byte(etype>>8), byte(etype))
	frame = append(frame, raw...)
	sa := &unix.SockaddrLinklayer{Ifindex: in.ifindex, Protocol: htons(etype), Halen: 6}
	copy(sa.Addr[:], in.dst)
	// ENOBUFS is transient (the link's queue is full under load): retry.
	for try := 0; ; try++ {
		err := unix.Sendto(in.fd, frame, 0, sa)
		if err == nil {
			return
		}
		if err != unix.ENOBUFS || try == 50 {
			t.Fatalf("send: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// ipv4Checksum fills in an IPv4 header checksum (the kernel drops packets
// with a wrong one before the prerouting hook).
func ipv4Checksum(raw []byte) {
	if raw[0]>>4 != 4 {
		return
	}
	raw[10], raw[11] = 0, 0
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(raw[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(raw[10:], ^uint16(sum))
}

// langTopo: client (eth0) ═ tenant (host0), the tenant's firewall on host0.
func langTopo(t *testing.T) (client, tenant *nstest.NS) {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	client, tenant = nstest.New(t, "nfL"+u+"c"), nstest.New(t, "nfL"+u+"t")
	nstest.Link(t, client, "eth0", "203.0.113.2/24", tenant, "host0", "203.0.113.1/24")
	client.MustExec(t, "ip", "addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad")
	tenant.MustExec(t, "ip", "addr", "add", "2001:db8:1::1/64", "dev", "host0", "nodad")
	return client, tenant
}

// kernelExprs are the expressions under test: the new fields first, then
// atoms of the differential generator.
var kernelExprs = []string{
	// raw bytes
	"bit_slice(ip, 0, 4) == 4", "bit_slice(ip, 0, 4) == 6", "bit_slice(ip, 64, 72) < 64",
	"bit_slice(tcp, 104, 112) == 0x02", "bit_slice(tcp, 107, 112) in {0x02 0x12}", "bit_slice(udp, 16, 32) == 53",
	"bit_slice(udp, 64, 72) == 0x17", "bit_slice(icmp, 0, 8) in {8 128}", "bit_slice(udp, 64, 68) != 1",
	"payload[0:2] & 0xff00 == 0x1700", "payload[1:1] != 0x00", "payload[0:1] == 0x17 and ip.proto == 47",
	"not payload[2:2] == 0x1717",
	// geo and ASN
	`ip.src.country == "BR"`, `ip.dst.country in {"FR" "BR"}`, `ip.geoip.country == "FR"`, `ip.src.country != "BR"`,
	"ip.src.asnum == 64500", "ip.dst.asnum in {64501 64502}", `not ip.geoip.country in {"BR"}`,
	// site scoping
	`cf.colo.name == "ams01"`, `cf.colo.name == "fra02" or ip.ttl == 1`, `cf.colo.region in {"WEUR" "ENAM"} and udp.dstport == 53`,
	`cf.colo.region != "WEUR"`,
	// Cloudflare syntax and Unified Routing semantics
	`ip.proto eq "tcp" and tcp.dstport in {80 443}`, "tcp.dstport != 80", "not tcp.flags.syn", "tcp.flags.push || tcp.flags.reset",
	"ip.src ne fe80::/64", "tcp.flags.syn xor tcp.flags.ack", "true",
}

func kernelSpec(t *testing.T, env fwspec.Env, exprs []string) (*fwspec.Spec, []fwspec.Rule) {
	var rules []fwspec.Rule
	for i, e := range exprs {
		rules = append(rules, fwspec.Rule{ID: "e" + string(rune('a'+i/26)) + string(rune('a'+i%26)), Expression: e, Action: fwspec.Log})
	}
	c := fwspec.Config{Rules: rules, Lists: diffLists}
	s, err := c.ValidateEnv("nfl", env)
	if err != nil {
		t.Fatal(err)
	}
	return &s, rules
}

func TestLanguageKernel(t *testing.T) {
	client, tenant := langTopo(t)
	dir := t.TempDir()
	db, err := geoip.Open(geoiptest.WriteCountry(t, dir, "cc.mmdb", geoCountries), geoiptest.WriteASN(t, dir, "as.mmdb", geoASNs))
	if err != nil {
		t.Fatal(err)
	}
	env := fwspec.Env{Env: lang.Env{Site: "ams01", Region: "WEUR"}, Geo: db, Version: db.Version()}
	spec, rules := kernelSpec(t, env, kernelExprs)
	rec := &Reconciler{}
	if _, err := rec.Apply(tenant.Handle, spec); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	in := newInjector(t, client, tenant)
	time.Sleep(200 * time.Millisecond) // let the link's own IPv6 chatter pass
	base, err := rec.Counters(tenant.Handle)
	if err != nil {
		t.Fatal(err)
	}
	refs := newRef(t, rules)
	r := rand.New(rand.NewPCG(13, 5))
	var pkts []testPkt
	// Packets aimed at the new fields, both families, then random ones.
	for _, v6 := range []bool{false, true} {
		src, dst := "198.51.100.7", "203.0.113.5"
		if v6 {
			src, dst = "2001:db8:1::9", "2001:db8:ffff::1"
		}
		pkts = append(pkts,
			testPkt{v6: v6, src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: unix.IPPROTO_UDP, ttl: 63, sport: 1024, dport: 53, payload: []byte{0x17, 0, 0x17, 0x17, 1, 2, 3, 4}},
			testPkt{v6: v6, src: netip.MustParseAddr(dst), dst: netip.MustParseAddr(src), proto: unix.IPPROTO_TCP, ttl: 1, sport: 443, dport: 80, flags: 0x02, payload: []byte{0x17, 0xff}},
		)
	}
	for len(pkts) < 64 {
		pkts = append(pkts, randPkt(r))
	}
	matched := map[string]int{}
	for k, p := range pkts {
		raw := p.raw()
		ipv4Checksum(raw)
		in.send(t, raw)
		var now map[string]fwspec.Counter
		// Counters are read back until the packet has been seen (at least
		// the "true" rule counts it).
		last := rules[len(rules)-1].ID
		for i := 0; i < 300; i++ {
			if now, err = rec.Counters(tenant.Handle); err != nil {
				t.Fatal(err)
			}
			if now[last].Packets > base[last].Packets {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if now[last].Packets != base[last].Packets+1 {
			t.Fatalf("packet %d (%+v) was not seen once by the firewall: %d", k, p, now[last].Packets-base[last].Packets)
		}
		d, _ := lang.Decode(raw)
		for i, rule := range rules {
			got := now[rule.ID].Packets - base[rule.ID].Packets
			want := lang.Eval(refs.exprs[i], d, evalEnv)
			if (got == 1) != want || got > 1 {
				t.Errorf("packet %d %+v\n%q: kernel counted %d, the language says %v", k, p, rule.Expression, got, want)
			}
			if got == 1 {
				matched[rule.Expression]++
			}
		}
		base = now
	}
	// Every new-field expression met a packet that it matched (so the
	// agreement above is not only on "no").
	for _, e := range kernelExprs[:24] {
		if matched[e] == 0 && !strings.Contains(e, "fra02") && !strings.Contains(e, `!= "WEUR"`) {
			t.Errorf("%q matched no packet", e)
		}
	}

	// The same document on another site: the folded rules differ, so the
	// chains are rewritten (the tags include the compiled form).
	other := env
	other.Site, other.Region = "fra02", "ENAM"
	spec2, _ := kernelSpec(t, other, kernelExprs)
	ch, err := rec.Apply(tenant.Handle, spec2)
	if err != nil || len(ch) == 0 {
		t.Fatalf("site change: %v %v", ch, err)
	}
	if ch, err := rec.Apply(tenant.Handle, spec2); err != nil || len(ch) != 0 {
		t.Fatalf("re-apply on the new site changed %v (%v)", ch, err)
	}

	// A new database: BR moves. Only the geo lists' elements change, in
	// one batch, and the rules follow the new database.
	db2, err := geoip.Open(geoiptest.WriteCountry(t, dir, "cc.mmdb", map[string][]string{"BR": {"203.0.113.0/24", "2001:db8:ffff::/48"}, "FR": {"198.51.100.0/24"}}),
		geoiptest.WriteASN(t, dir, "as.mmdb", geoASNs))
	if err != nil {
		t.Fatal(err)
	}
	env3 := other
	env3.Geo, env3.Version = db2, db2.Version()
	spec3, _ := kernelSpec(t, env3, kernelExprs)
	ch, err = rec.Apply(tenant.Handle, spec3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ch {
		if !strings.Contains(c, "_cc_") {
			t.Errorf("database reload changed more than geo lists: %v", ch)
		}
	}
	if len(ch) == 0 {
		t.Fatal("database reload changed nothing")
	}
	out := tenant.MustExec(t, "nft", "list", "set", "inet", "nfhost", "l4__cc_br")
	if !strings.Contains(out, "203.0.113.0/24") || strings.Contains(out, "198.51.100.0/24") {
		t.Errorf("BR set after reload:\n%s", out)
	}
	// Log rules with overlapping alternatives have chains of their own;
	// they go when the rules do, and so do the geo lists.
	if out := tenant.MustExec(t, "nft", "list", "chains", "inet"); !strings.Contains(out, "chain log_") {
		t.Errorf("no log chains:\n%s", out)
	}
	spec4, _ := kernelSpec(t, env3, []string{"tcp.dstport != 80"})
	if _, err := rec.Apply(tenant.Handle, spec4); err != nil {
		t.Fatal(err)
	}
	// tcp.dstport != 80 is one nft rule per chain (true outside TCP):
	// no log chain left.
	if out := tenant.MustExec(t, "nft", "list", "ruleset"); strings.Contains(out, "chain log_") || strings.Contains(out, "_cc_") {
		t.Errorf("after removing rules, log chains or geo sets are left:\n%s", out)
	}
}

func meminfo(t testing.TB) map[string]int64 {
	out, err := exec.Command("cat", "/proc/meminfo").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			m[strings.TrimSuffix(f[0], ":")] = v
		}
	}
	return m
}

// BenchmarkSharedList: a shared list of NFHOST_BENCH_PREFIXES prefixes
// (default 1,000,000) referenced by one rule of NFHOST_BENCH_TENANTS
// tenants (default 10), applied by one Reconciler (as nsd does), then
// changed by 1% and applied again; against `nft -f` loading the same set
// into one fresh namespace, same run. Kernel memory is the growth of
// Slab + vmalloc over the run (/proc/meminfo, machine-wide: other load
// adds noise).
func BenchmarkSharedList(b *testing.B) {
	nstest.RequireRoot(b)
	nstest.RequireTool(b, "nft")
	n, tenants := envInt("NFHOST_BENCH_PREFIXES", 1_000_000), envInt("NFHOST_BENCH_TENANTS", 10)
	mk := func(shift int) []netip.Prefix {
		ps := make([]netip.Prefix, 0, n)
		for i := 0; i < n; i++ {
			j := i
			if i < n/100 {
				j += shift // the first 1% moves
			}
			ps = append(ps, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(1 + j>>16&127), byte(j >> 8), byte(j), 0}), 24))
		}
		return fwspec.MergePrefixes(ps)
	}
	list1, list2 := mk(0), mk(n)
	spec := func(l []netip.Prefix) *fwspec.Spec {
		s, err := (fwspec.Config{Rules: []fwspec.Rule{{ID: "threats", Expression: "ip.src in $threats", Action: fwspec.Block}}}).
			ValidateEnv("bench", fwspec.Env{Shared: map[string][]netip.Prefix{"threats": l}})
		if err != nil {
			b.Fatal(err)
		}
		return &s
	}
	s1, s2 := spec(list1), spec(list2)
	for i := 0; i < b.N; i++ {
		// Baseline: nft -f with the same set into one namespace.
		var f strings.Builder
		f.WriteString("table inet nfhost {\n set l4__s_threats {\n  type ipv4_addr\n  flags interval\n  elements = { ")
		for k, p := range list1 {
			if k > 0 {
				f.WriteString(", ")
			}
			f.WriteString(p.String())
		}
		f.WriteString(" }\n }\n}\n")
		file := filepath.Join(b.TempDir(), "set.nft")
		os.WriteFile(file, []byte(f.String()), 0o644)
		base := nstest.New(b, "nfL"+nstest.Unique()+"b")
		m0 := meminfo(b)
		t0 := time.Now()
		if out, err := exec.Command("nsenter", "--net="+base.Path(), "--", "nft", "-f", file).CombinedOutput(); err != nil {
			b.Fatalf("nft -f: %v %s", err, out)
		}
		cli := time.Since(t0)
		m1 := meminfo(b)
		kmem := func(a, z map[string]int64) float64 {
			return float64((z["Slab"]+z["VmallocUsed"])-(a["Slab"]+a["VmallocUsed"])) / 1024
		}
		cliMem := kmem(m0, m1)

		rec := &Reconciler{}
		var nss []*nstest.NS
		for k := 0; k < tenants; k++ {
			nss = append(nss, nstest.New(b, "nfL"+nstest.Unique()+"s"))
		}
		m2 := meminfo(b)
		t1 := time.Now()
		for _, ns := range nss {
			if _, err := rec.Apply(ns.Handle, s1); err != nil {
				b.Fatal(err)
			}
		}
		apply := time.Since(t1)
		m3 := meminfo(b)
		t2 := time.Now()
		for _, ns := range nss {
			ch, err := rec.Apply(ns.Handle, s2)
			if err != nil || len(ch) != 1 || !strings.Contains(ch[0], "list l4__s_threats") {
				b.Fatalf("list change: %v %v", ch, err)
			}
		}
		change := time.Since(t2)
		b.ReportMetric(float64(n), "prefixes")
		b.ReportMetric(float64(tenants), "tenants")
		b.ReportMetric(float64(cli.Milliseconds()), "nft-cli-1-tenant-ms")
		b.ReportMetric(float64(apply.Milliseconds())/float64(tenants), "apply-ms/tenant")
		b.ReportMetric(apply.Seconds()/float64(tenants)/cli.Seconds(), "apply/nft-cli")
		b.ReportMetric(float64(change.Milliseconds())/float64(tenants), "1%-change-ms/tenant")
		b.ReportMetric(cliMem, "nft-cli-kmem-MiB")
		b.ReportMetric(kmem(m2, m3)/float64(tenants), "kmem-MiB/tenant")
		b.ReportMetric(kmem(m2, m3)/float64(tenants)/cliMem, "kmem/nft-cli")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestMergedKernel: a rule set that merging turns into verdict maps (the
// benchmark's 200 rules and groups of one field's values) in real nft:
// every injected packet is counted by exactly the rules first-match order
// picks, on IPv4 and IPv6.
func TestMergedKernel(t *testing.T) {
	client, tenant := langTopo(t)
	r := rand.New(rand.NewPCG(3, 3))
	var rules []fwspec.Rule
	for i := 1; i < 120; i++ {
		rules = append(rules, fwspec.Rule{ID: fmt.Sprintf("f%d", i), Expression: fwtest.Expression(i), Action: fwspec.Block})
	}
	for j := 0; j < 60; j++ {
		port := []int{22, 53, 80, 443, 1024, 8080, 0, 7, 9, 25}[r.IntN(10)]
		src := []string{fmt.Sprintf("tcp.dstport == %d", port), fmt.Sprintf("udp.dstport in {%d %d}", port, port+1),
			"ip.src == " + addrs4[r.IntN(len(addrs4))], "ip.src == " + addrs6[r.IntN(len(addrs6))], fmt.Sprintf("ip.ttl == %d", ttls[r.IntN(len(ttls))])}[r.IntN(5)]
		rules = append(rules, fwspec.Rule{ID: fmt.Sprintf("g%d", j), Expression: src, Action: []fwspec.Action{fwspec.Allow, fwspec.Block, fwspec.Log}[r.IntN(3)]})
	}
	// A rule every packet reaches last, so that each packet is seen.
	rules = append(rules, fwspec.Rule{ID: "all", Expression: "true", Action: fwspec.Allow})
	c := fwspec.Config{Rules: rules, Lists: diffLists}
	spec, err := c.ValidateEnv("nfl", diffEnv)
	if err != nil {
		t.Fatal(err)
	}
	rec := &Reconciler{}
	if _, err := rec.Apply(tenant.Handle, &spec); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if ch, err := rec.Apply(tenant.Handle, &spec); err != nil || len(ch) != 0 {
		t.Fatalf("re-apply: %v %v", ch, err)
	}
	if ch, err := (&Reconciler{}).Apply(tenant.Handle, &spec); err != nil || len(ch) != 0 {
		t.Fatalf("apply after a restart: %v %v", ch, err)
	}
	out := tenant.MustExec(t, "nft", "list", "table", "inet", "nfhost")
	if !strings.Contains(out, "chain m_v4_tcp_") || !strings.Contains(out, "vmap") {
		t.Fatalf("no maps:\n%s", out)
	}
	in := newInjector(t, client, tenant)
	time.Sleep(200 * time.Millisecond)
	refs := newRef(t, rules)
	base, _ := rec.Counters(tenant.Handle)
	for k := 0; k < 80; k++ {
		p := randPkt(r)
		raw := p.raw()
		ipv4Checksum(raw)
		d, _ := lang.Decode(raw)
		refs.verdict(&spec, d)
		want := map[string]uint64{}
		for _, id := range refs.counted {
			want[id]++
		}
		in.send(t, raw)
		// Wait until every counter the packet should move has moved, then
		// a little longer, so that nothing of this packet is left for the
		// next one's reading.
		var now map[string]fwspec.Counter
		for i := 0; i < 300; i++ {
			now, _ = rec.Counters(tenant.Handle)
			done := true
			for id, n := range want {
				if now[id].Packets-base[id].Packets < n {
					done = false
				}
			}
			if done {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(30 * time.Millisecond)
		now, _ = rec.Counters(tenant.Handle)
		for id, c := range now {
			if got := c.Packets - base[id].Packets; got != want[id] {
				t.Errorf("packet %d %+v: rule %s (%s) counted %d, first-match order says %d (counted %v)", k, p, id, ruleExpr(rules, id), got, want[id], refs.counted)
			}
		}
		base = now
	}
	// Change one rule of each group, then shrink the rule set: the maps and
	// the chains they go to are rewritten or removed in one batch each.
	rules[1].Expression, rules[2].Expression = "ip.src == 192.0.2.222", "tcp.dstport == 4444"
	spec2, err := (fwspec.Config{Rules: rules, Lists: diffLists}).ValidateEnv("nfl", diffEnv)
	if err != nil {
		t.Fatal(err)
	}
	if ch, err := rec.Apply(tenant.Handle, &spec2); err != nil || len(ch) == 0 {
		t.Fatalf("one rule changed: %v %v", ch, err)
	}
	spec3, err := (fwspec.Config{Rules: rules[:5], Lists: diffLists}).ValidateEnv("nfl", diffEnv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Apply(tenant.Handle, &spec3); err != nil {
		t.Fatalf("shrink: %v", err)
	}
	if out := tenant.MustExec(t, "nft", "list", "table", "inet", "nfhost"); strings.Contains(out, "chain m_") || strings.Contains(out, "vmap") {
		t.Fatalf("merge chains left after shrinking:\n%s", out)
	}
}

func ruleExpr(rules []fwspec.Rule, id string) string {
	for _, r := range rules {
		if r.ID == id {
			return r.Expression
		}
	}
	return ""
}
