package dos

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/nfhost/nfhost/firewall/lang"
)

// BenchmarkXDP: ns/packet by BPF_PROG_TEST_RUN (the duration
// Program.Benchmark returns), side by side in one run:
//   - floor: a program that only returns XDP_DROP;
//   - lookup: a program that parses IPv4 and does one lookup in a
//     100,000-prefix LPM trie (bpf/lookup_only.c), the baseline;
//   - the full program with 100,000 deny prefixes, 256 signatures,
//     1,000 tenants with 10,000 rate-limit rules and 10,000 buckets, for:
//     a clean packet (every stage misses, no rate limit on its
//     destination); a clean packet to a rate-limited destination (under
//     its limit); a packet only the last signature matches; a denied one.
func BenchmarkXDP(b *testing.B) {
	objs := loadForTest(b)
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	var lk lookupBPFObjects
	if err := loadLookupBPFObjects(&lk, nil); err != nil {
		b.Fatal(err)
	}
	defer lk.Close()

	deny := make([]netip.Prefix, 0, 100000)
	var lkeys []lookupBPFLpmKey4
	var lvals []uint32
	for i := 0; i < 100000; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("%d.%d.%d.0/24", 10+i>>16, (i>>8)&255, i&255))
		deny = append(deny, p)
		a := p.Addr().As4()
		lkeys = append(lkeys, lookupBPFLpmKey4{Prefixlen: 24, Addr: binary.LittleEndian.Uint32(a[:])})
		lvals = append(lvals, 1)
	}
	if _, err := lk.LookupTrie.BatchUpdate(lkeys, lvals, nil); err != nil {
		b.Fatal(err)
	}
	// 255 signatures that miss the test packets, then one that hits.
	var sigs []CompiledSignature
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
	global := Spec{Deny: deny, Signatures: sigs}
	// 1,000 tenants with a /24 each (172.16.0.0/14 and 203.0.113.0/24) and
	// ten per-ip rate limits on /28s inside it.
	var tenants []Tenant
	for i := 0; i < 1000; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("172.%d.%d.0/24", 16+i>>8, i&255))
		if i == 0 {
			p = netip.MustParsePrefix("203.0.113.0/24")
		}
		s := &Spec{}
		for j := 0; j < 10; j++ {
			a := p.Addr().As4()
			a[3] = byte(96 + j*16)
			s.RateLimits = append(s.RateLimits, CompiledRateLimit{Prefix: netip.PrefixFrom(netip.AddrFrom4(a), 28), Limit: Limit{PPS: MaxPPS, PerIP: true}})
		}
		tenants = append(tenants, Tenant{ID: fmt.Sprintf("t%04d", i), Prefixes: []netip.Prefix{p}, Spec: s})
	}
	clean := pkt{src: "192.0.2.1", dst: "203.0.113.1"}.bytes(b)
	limited := pkt{src: "192.0.2.1", dst: "203.0.113.129"}.bytes(b)
	denied := pkt{src: "10.1.2.3", dst: "203.0.113.1"}.bytes(b)
	lastSig := pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 7777, dport: 9999}.bytes(b)
	run := func(p *ebpf.Program, data []byte) float64 {
		_, d, err := p.Benchmark(data, 1_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(d.Nanoseconds())
	}
	r, err := newReconciler(objs, nil)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if errs, err := r.Apply(global, tenants, time.Now()); err != nil || len(errs) > 0 {
		b.Fatal(err, errs)
	}
	apply := time.Since(t0)
	// 10,000 buckets in the LRU map besides the benchmark's own.
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
	if ret, _ := objs.NfhostDos.Run(&ebpf.RunOptions{Data: lastSig}); ret != xdpDrop {
		b.Fatalf("last signature did not drop: %d", ret)
	}
	if ret, _ := objs.NfhostDos.Run(&ebpf.RunOptions{Data: limited}); ret != xdpPass {
		b.Fatalf("rate-limited clean packet dropped: %d", ret)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := run(floor, clean)
		lookup := run(lk.LookupOnly, clean)
		fullClean := run(objs.NfhostDos, clean)
		fullLimited := run(objs.NfhostDos, limited)
		fullLast := run(objs.NfhostDos, lastSig)
		d := run(objs.NfhostDos, denied)
		b.ReportMetric(f, "floor-ns/pkt")
		b.ReportMetric(lookup, "lookup-ns/pkt")
		b.ReportMetric(fullClean, "clean-ns/pkt")
		b.ReportMetric(fullLimited, "clean-ratelimited-ns/pkt")
		b.ReportMetric(fullLast, "last-sig-ns/pkt")
		b.ReportMetric(d, "denied-ns/pkt")
		b.ReportMetric(fullClean/lookup, "clean/lookup")
		b.ReportMetric(fullLimited/lookup, "ratelimited/lookup")
		b.ReportMetric(fullLast/lookup, "last-sig/lookup")
		b.ReportMetric(float64(apply.Milliseconds()), "apply-all-ms")
	}
}

func mustSig(b *testing.B, id, src string) CompiledSignature {
	e, err := lang.Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	m, err := CompileMatch(e)
	if err != nil {
		b.Fatal(err)
	}
	return CompiledSignature{ID: id, Action: "drop", Match: m}
}
