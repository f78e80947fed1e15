package dos

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/nfhost/nfhost/firewall/lang"
)

// BenchmarkXDP: ns/packet by BPF_PROG_TEST_RUN (the duration
// Program.Benchmark returns), in one run: a program that only returns
// XDP_DROP (the floor); this program with 100,000 source prefixes and no
// signatures (parsing plus the single LPM lookup); and the full program
// with 256 signatures, for a clean packet (every stage misses) and for a
// packet that only the last signature matches.
func BenchmarkXDP(b *testing.B) {
	objs := loadForTest(b)
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	var keys []dosBPFLpmKey
	var vals []uint32
	for i := 0; i < 100000; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("%d.%d.%d.0/24", 10+i>>16, (i>>8)&255, i&255))
		keys = append(keys, Key(p))
		vals = append(vals, uint32(VerdictDeny))
	}
	t0 := time.Now()
	if _, err := objs.NfhSrcLists.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatal(err)
	}
	load := time.Since(t0)
	clean := pkt{src: "192.0.2.1", dst: "203.0.113.1"}.bytes(b)
	denied := pkt{src: "10.1.2.3", dst: "203.0.113.1"}.bytes(b)
	lastSig := pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 7777, dport: 9999}.bytes(b)
	run := func(p *ebpf.Program, data []byte) float64 {
		_, d, err := p.Benchmark(data, 1_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(d.Nanoseconds())
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
	tables, err := BuildTables(sigs)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		f := run(floor, clean)
		listsOnly := run(objs.NfhostDos, clean)
		d := run(objs.NfhostDos, denied)
		w := &Writer{d: objs}
		t1 := time.Now()
		if err := w.Write(tables, false); err != nil {
			b.Fatal(err)
		}
		sigLoad := time.Since(t1)
		fullClean := run(objs.NfhostDos, clean)
		fullLast := run(objs.NfhostDos, lastSig)
		if ret, _ := objs.NfhostDos.Run(&ebpf.RunOptions{Data: lastSig}); ret != xdpDrop {
			b.Fatalf("last signature did not drop: %d", ret)
		}
		// Reset for the next iteration.
		objs.NfhSettings.Put(uint32(0), dosBPFSettings{})
		b.ReportMetric(f, "floor-ns/pkt")
		b.ReportMetric(listsOnly, "lists-only-ns/pkt")
		b.ReportMetric(d, "denied-ns/pkt")
		b.ReportMetric(fullClean, "full-clean-ns/pkt")
		b.ReportMetric(fullLast, "full-last-sig-ns/pkt")
		b.ReportMetric(fullClean/listsOnly, "clean/lists-only")
		b.ReportMetric(fullLast/listsOnly, "last-sig/lists-only")
		b.ReportMetric(float64(load.Milliseconds()), "load-100k-ms")
		b.ReportMetric(float64(sigLoad.Milliseconds()), "load-256-sigs-ms")
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
