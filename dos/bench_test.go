package dos

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

// BenchmarkXDP: ns/packet by BPF_PROG_TEST_RUN (the duration
// Program.Benchmark returns), side by side in one run:
//   - floor: a program that only returns XDP_DROP;
//   - lookup: a program that parses IPv4 and does one lookup in a
//     100,000-prefix LPM trie (bpf/lookup_only.c), the baseline;
//   - the full program with the same 100,000 prefixes as global deny
//     list, 256 signatures, 1,000 tenants with 10,000 rate-limit rules and
//     10,000 more buckets in the LRU map, for: a clean packet (every stage
//     misses: no list entry, no signature, no rate limit on its
//     destination); a clean packet to a rate-limited destination (under its
//     limit); a packet only the last signature matches; a denied packet.
//
// The trie's shape decides what one lookup costs, so both list shapes run:
// "contiguous" (100,000 adjacent /24s; a miss leaves the trie near its
// root) and "spread" (100,000 /24s at random over the IPv4 space, fixed
// seed, like a threat feed; a miss walks as deep as a real list makes it).
func BenchmarkXDP(b *testing.B) {
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	sigs, tenants := benchRules(b)
	clean := pkt{src: "192.0.2.1", dst: "203.0.113.1"}.bytes(b)
	limited := pkt{src: "192.0.2.1", dst: "203.0.113.129"}.bytes(b)
	lastSig := pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 7777, dport: 9999}.bytes(b)
	run := func(p *ebpf.Program, data []byte) float64 {
		_, d, err := p.Benchmark(data, 1_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(d.Nanoseconds())
	}
	type setup struct {
		lookup *ebpf.Program
		full   *ebpf.Program
		denied []byte
		apply  time.Duration
	}
	setups := map[string]setup{}
	for _, shape := range []string{"contiguous", "spread"} {
		deny := benchList(shape)
		var lk lookupBPFObjects
		if err := loadLookupBPFObjects(&lk, nil); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { lk.Close() })
		var lkeys []lookupBPFLpmKey4
		var lvals []uint32
		for _, p := range deny {
			pa := p.Addr().As4()
			lkeys = append(lkeys, lookupBPFLpmKey4{Prefixlen: uint32(p.Bits()), Addr: binary.LittleEndian.Uint32(pa[:])})
			lvals = append(lvals, 1)
		}
		if _, err := lk.LookupTrie.BatchUpdate(lkeys, lvals, nil); err != nil {
			b.Fatal(err)
		}
		objs := loadForTest(b)
		r, err := newReconciler(objs, nil)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if errs, err := r.Apply(dosspec.Spec{Deny: deny, Signatures: sigs}, tenants, time.Now()); err != nil || len(errs) > 0 {
			b.Fatal(err, errs)
		}
		apply := time.Since(t0)
		var bk []dosBPFRateKey
		var bv []dosBPFRateBucket
		for i := 0; i < 10000; i++ {
			k := dosBPFRateKey{Rule: uint32(i)}
			k.Addr[15] = byte(i)
			bk, bv = append(bk, k), append(bv, dosBPFRateBucket{})
		}
		if _, err := objs.NfhBuckets.BatchUpdate(bk, bv, nil); err != nil {
			b.Fatal(err)
		}
		denied := pkt{src: deny[len(deny)/2].Addr().String(), dst: "203.0.113.1"}.bytes(b)
		for name, c := range map[string]struct {
			p    []byte
			want uint32
		}{"last signature": {lastSig, xdpDrop}, "clean": {clean, xdpPass}, "rate-limited clean": {limited, xdpPass}, "denied": {denied, xdpDrop}} {
			if ret, _ := objs.NfhostDos.Run(&ebpf.RunOptions{Data: c.p}); ret != c.want {
				b.Fatalf("%s %s packet: verdict %d, want %d", shape, name, ret, c.want)
			}
		}
		setups[shape] = setup{lookup: lk.LookupOnly, full: objs.NfhostDos, denied: denied, apply: apply}
	}
	xf := loadXDPFilter(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.ReportMetric(run(floor, clean), "floor-ns/pkt")
		var peer float64
		if xf != nil {
			peer = run(xf, clean)
			b.ReportMetric(peer, "xdpfilter-ns/pkt")
		}
		for _, shape := range []string{"contiguous", "spread"} {
			s := setups[shape]
			lookup := run(s.lookup, clean)
			c := run(s.full, clean)
			l := run(s.full, limited)
			last := run(s.full, lastSig)
			b.ReportMetric(lookup, shape+"-lookup-ns/pkt")
			b.ReportMetric(c, shape+"-clean-ns/pkt")
			b.ReportMetric(l, shape+"-ratelimited-ns/pkt")
			b.ReportMetric(last, shape+"-last-sig-ns/pkt")
			b.ReportMetric(run(s.full, s.denied), shape+"-denied-ns/pkt")
			b.ReportMetric(c/lookup, shape+"-clean/lookup")
			b.ReportMetric(l/lookup, shape+"-ratelimited/lookup")
			b.ReportMetric(last/lookup, shape+"-last-sig/lookup")
			b.ReportMetric(float64(s.apply.Milliseconds()), shape+"-apply-all-ms")
			if peer > 0 {
				b.ReportMetric(c/peer, shape+"-clean/xdpfilter")
				b.ReportMetric(last/peer, shape+"-last-sig/xdpfilter")
			}
		}
	}
}

// benchList returns 100,000 /24s, adjacent or spread, clear of the
// documentation ranges and of the benchmark tenants.
func benchList(shape string) []netip.Prefix {
	deny := make([]netip.Prefix, 0, 100000)
	if shape == "contiguous" {
		for i := 0; i < 100000; i++ {
			deny = append(deny, netip.MustParsePrefix(fmt.Sprintf("%d.%d.%d.0/24", 10+i>>16, (i>>8)&255, i&255)))
		}
		return deny
	}
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[netip.Prefix]bool{}
	avoid := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("172.16.0.0/12")}
	for len(deny) < 100000 {
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], rng.Uint32())
		p, _ := netip.AddrFrom4(a).Prefix(24)
		ok := !seen[p]
		for _, x := range avoid {
			ok = ok && !p.Overlaps(x)
		}
		if ok {
			seen[p] = true
			deny = append(deny, p)
		}
	}
	return deny
}

// benchRules: 255 signatures that miss the test packets and one that hits
// last; 1,000 tenants with a /24 each (203.0.113.0/24 and 172.16.0.0/14)
// and ten per-ip rate limits on the /28s from .96 up.
func benchRules(b *testing.B) ([]dosspec.CompiledSignature, []Tenant) {
	var sigs []dosspec.CompiledSignature
	for i := 0; i < 255; i++ {
		src := fmt.Sprintf("udp.srcport == %d and ip.len > %d", 1000+i, 100+i)
		if i%3 == 1 {
			src = fmt.Sprintf("tcp.flags.syn and tcp.dstport == %d", 2000+i)
		} else if i%3 == 2 {
			src = fmt.Sprintf("ip.src == 198.18.%d.0/24 and ip.ttl < %d", i, 1+i%60)
		}
		sigs = append(sigs, mustSig(b, fmt.Sprintf("s%d", i), src))
	}
	sigs = append(sigs, mustSig(b, "last", "udp.srcport == 7777 and udp.dstport == 9999 and ip.dst == 203.0.113.0/24"))
	var tenants []Tenant
	for i := 0; i < 1000; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&255))
		if i == 0 {
			p = netip.MustParsePrefix("203.0.113.0/24")
		}
		s := &dosspec.Spec{}
		for j := 0; j < 10; j++ {
			a := p.Addr().As4()
			a[3] = byte(96 + j*16)
			s.RateLimits = append(s.RateLimits, dosspec.CompiledRateLimit{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 28), Limit: dosspec.Limit{PPS: dosspec.MaxPPS, PerIP: true}})
		}
		tenants = append(tenants, Tenant{ID: fmt.Sprintf("t%04d", i), Prefixes: []netip.Prefix{p}, Spec: s})
	}
	return sigs, tenants
}

func mustSig(b *testing.B, id, src string) dosspec.CompiledSignature {
	e, err := lang.Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	m, err := dosspec.CompileMatch(e)
	if err != nil {
		b.Fatal(err)
	}
	return dosspec.CompiledSignature{ID: id, Action: "drop", Match: m}
}

// xdpFilterObject is xdp-filter's (Debian xdp-tools) IP filter in its default-allow mode (listed addresses dropped).
const xdpFilterObject = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_ip.o"

// loadXDPFilter loads the peer baseline, xdp-filter in "deny IP" mode with
// its maximum of 10,000 IPv4 addresses (exact matches, hash lookups of
// source and destination). Without xdp-tools it says so and returns nil.
func loadXDPFilter(b *testing.B) *ebpf.Program {
	spec, err := ebpf.LoadCollectionSpec(xdpFilterObject)
	if err != nil {
		b.Logf("SKIPPED the xdp-filter baseline: %v (apt install xdp-tools; make bench does)", err)
		return nil
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatalf("load xdp-filter: %v", err)
	}
	b.Cleanup(coll.Close)
	m := coll.Maps["filter_ipv4"]
	flags := make([]uint64, ebpf.MustPossibleCPU())
	for i := range flags {
		flags[i] = 1 | 2 // MAP_FLAG_SRC | MAP_FLAG_DST
	}
	for i := 0; i < 10000; i++ {
		a := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		if err := m.Put(binary.LittleEndian.Uint32(a[:]), flags); err != nil {
			b.Fatalf("fill xdp-filter: %v", err)
		}
	}
	p := coll.Programs["xdpfilt_alw_ip"]
	denied := pkt{src: "10.0.1.2", dst: "203.0.113.1"}.bytes(b)
	if ret, _ := p.Run(&ebpf.RunOptions{Data: denied}); ret != xdpDrop {
		b.Fatalf("xdp-filter passed a listed source (verdict %d)", ret)
	}
	return p
}
