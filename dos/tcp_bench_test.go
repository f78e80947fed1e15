package dos

import (
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// BenchmarkSYNCookie: the XDP cost of answering a SYN with a cookie and of
// checking the cookie in the client's ACK, against the same program
// passing the same packets to a destination without tcp_protection, in
// one run. BPF_PROG_TEST_RUN cannot repeat a program that rewrites its
// packet (the second repeat would see the SYN-ACK), so every packet is
// one Program.Run (one syscall each, fresh data); the figure is the
// median of n calls, minus the same median for the unprotected packet:
// the syscall's cost cancels out.
func BenchmarkSYNCookie(b *testing.B) {
	objs := loadForTest(b)
	r, err := newReconciler(objs, nil)
	if err != nil {
		b.Fatal(err)
	}
	tenants := []Tenant{
		{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			Spec: mustSpec(b, "acme", `{"tcp_protection": {"ports": ["80"], "engage_pps": 0}}`)},
		{ID: "beta", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}},
	}
	if _, err := r.Apply(*mustSpec(b, "dos/global", `{}`), tenants, time.Now()); err != nil {
		b.Fatal(err)
	}
	opts := linuxSYNOpts(0x11223344, 7)
	synTo := func(dst string, sport uint16) []byte {
		return tcpPkt{src: "192.0.2.7", dst: dst, sport: sport, dport: 80, seq: 1000, flags: "S", opts: opts}.bytes(b)
	}
	const n = 20000
	median := func(data func(i int) []byte) float64 {
		ds := make([]float64, n)
		out := make([]byte, 256)
		for i := range ds {
			d := data(i)
			t0 := time.Now()
			if _, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: d, DataOut: out}); err != nil {
				b.Fatal(err)
			}
			ds[i] = float64(time.Since(t0).Nanoseconds())
		}
		sort.Float64s(ds)
		return ds[n/2]
	}
	// Cookies for the ACK case: answer n SYNs first.
	acks := make([][]byte, n)
	for i := range acks {
		sport := uint16(10000 + i%50000)
		out := make([]byte, 256)
		opt := &ebpf.RunOptions{Data: synTo("203.0.113.5", sport), DataOut: out}
		if ret, err := objs.NfhostDos.Run(opt); err != nil || ret != xdpTX {
			b.Fatalf("SYN: %d %v", ret, err)
		}
		seq := uint32(opt.DataOut[14+20+4])<<24 | uint32(opt.DataOut[14+20+5])<<16 | uint32(opt.DataOut[14+20+6])<<8 | uint32(opt.DataOut[14+20+7])
		acks[i] = tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: sport, dport: 80, seq: 1001, ack: seq + 1, flags: "A"}.bytes(b)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base := median(func(i int) []byte { return synTo("198.51.100.5", uint16(10000+i%50000)) })
		cookie := median(func(i int) []byte { return synTo("203.0.113.5", uint16(10000+i%50000)) })
		ackBase := median(func(i int) []byte {
			return tcpPkt{src: "192.0.2.7", dst: "198.51.100.5", sport: uint16(10000 + i%50000), dport: 80, seq: 1001, ack: 5, flags: "A"}.bytes(b)
		})
		// Each ACK once: the first starts its flow, a second would find it.
		ack := median(func(i int) []byte { return acks[i] })
		b.ReportMetric(base, "ns/unprotected-SYN-call")
		b.ReportMetric(cookie-base, "ns/SYN-cookie-extra")
		b.ReportMetric(ack-ackBase, "ns/cookie-ACK-extra")
		b.ReportMetric(cookie/base, "SYN-call-ratio")
	}
}
