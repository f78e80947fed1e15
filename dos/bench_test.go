package dos

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// BenchmarkXDP: ns/packet by BPF_PROG_TEST_RUN (the duration
// Program.Benchmark returns), in one run: a program that only returns
// XDP_DROP (the floor), and this program with 100,000 source prefixes for
// a clean packet (every stage misses) and for a denied one.
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
	run := func(p *ebpf.Program, data []byte) float64 {
		_, d, err := p.Benchmark(data, 1_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		return float64(d.Nanoseconds())
	}
	for i := 0; i < b.N; i++ {
		f, c, d := run(floor, clean), run(objs.NfhostDos, clean), run(objs.NfhostDos, denied)
		b.ReportMetric(f, "floor-ns/pkt")
		b.ReportMetric(c, "clean-ns/pkt")
		b.ReportMetric(d, "denied-ns/pkt")
		b.ReportMetric(c/f, "clean/floor")
		b.ReportMetric(float64(load.Milliseconds()), "load-100k-ms")
	}
}
