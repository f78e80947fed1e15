package tunnels

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
)

// BenchmarkGRE: ns/packet by BPF_PROG_TEST_RUN, side by side in one run:
// a program that only returns (the floor), decap of a 64-byte inner UDP
// packet and encap of the same, each with 1 tunnel and with 10,000
// tunnels in the maps.
func BenchmarkGRE(b *testing.B) {
	floor, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		b.Fatal(err)
	}
	defer floor.Close()
	objs := loadForTest(b)
	in, proto := inner(b, false, 18)
	decapFrame := greFrame(b, customer, anycast, &layers.GRE{Protocol: layers.EthernetTypeIPv4}, in, nil)
	encapFrame := serialize(b, append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: nsMAC, DstMAC: hostMAC, EthernetType: proto}}, in...)...)
	put := func(i int) {
		c := customer.As4()
		c[2], c[3] = byte(i>>8), byte(i)
		r := netip.AddrFrom4(c)
		if i == 0 {
			r = customer
		}
		v := greBPFDecapVal{Ifindex: 1, Id: uint32(i)}
		if err := objs.NftDecap.Put(greBPFEpKey{Local: be32(anycast), Remote: be32(r)}, v); err != nil {
			b.Fatal(err)
		}
		if err := objs.NftEncap.Put(uint32(i+1), greBPFEncapVal{Local: be32(anycast), Remote: be32(r), Uplink: 1, Id: uint32(i), Ttl: 64}); err != nil {
			b.Fatal(err)
		}
	}
	// A tc program changes the packet it runs on, and BPF_PROG_TEST_RUN
	// runs its repeats on one skb: after the first repeat there is nothing
	// left to decapsulate (or the packet grows by 24 bytes per encap). So
	// every measurement is one fresh packet per call, the kernel's own
	// timing of that run (BPF_PROG_TEST_RUN duration), averaged over
	// 200,000 calls; the floor program, timed the same way, is the
	// baseline and is subtracted ("net"). Test runs see ifindex 1 (lo).
	const calls = 200_000
	run := func(p *ebpf.Program, data []byte) float64 {
		var sum time.Duration
		for k := 0; k < calls; k++ {
			ret, d, err := p.Benchmark(data, 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			if p != floor && ret != tcxRedirect {
				b.Fatalf("verdict %d, want redirect", int32(ret))
			}
			sum += d
		}
		return float64(sum.Nanoseconds()) / calls
	}
	put(0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fl := run(floor, decapFrame)
		d1 := run(objs.NfhostGreDecap, decapFrame) - fl
		e1 := run(objs.NfhostGreEncap, encapFrame) - fl
		b.StopTimer()
		for j := 1; j < 10000; j++ {
			put(j)
		}
		b.StartTimer()
		d10 := run(objs.NfhostGreDecap, decapFrame) - fl
		e10 := run(objs.NfhostGreEncap, encapFrame) - fl
		b.ReportMetric(fl, "floor-ns/pkt")
		b.ReportMetric(d1, "decap-1-net-ns/pkt")
		b.ReportMetric(d10, "decap-10k-net-ns/pkt")
		b.ReportMetric(e1, "encap-1-net-ns/pkt")
		b.ReportMetric(e10, "encap-10k-net-ns/pkt")
		b.ReportMetric(d10/d1, "decap-10k/1")
		b.ReportMetric(e10/e1, "encap-10k/1")
	}
}

// BenchmarkIperf: TCP throughput from the tenant namespace to the
// customer router through the GRE tunnel, as a ratio to plain routing
// through exactly the same namespaces and as many veth hops (T -> E -> C
// -> G -> L), in one run.
func BenchmarkIperf(b *testing.B) {
	nstest.RequireTool(b, "iperf3")
	g := newGRETest(b)
	// Plain path: T plain0 ═ E, E -> C -> G (router), G plainG ═ L.
	nstest.Link(b, g.T, "plain0", "10.9.2.1/24", g.E, "plainE", "10.9.2.254/24")
	nstest.Link(b, g.G, "plainG", "10.9.3.254/24", g.L, "plainL", "10.9.3.1/24")
	g.L.MustExec(b, "ip", "addr", "add", "10.9.1.1/32", "dev", "lo")
	for _, c := range [][]string{
		{"T", "ip", "route", "add", "10.9.1.0/24", "via", "10.9.2.254"},
		{"E", "ip", "route", "add", "10.9.1.0/24", "via", "192.0.2.1"},
		{"C", "ip", "route", "add", "10.9.1.0/24", "via", "198.51.100.130"},
		{"C", "ip", "route", "add", "10.9.2.0/24", "via", "192.0.2.2"},
		{"G", "ip", "route", "add", "10.9.1.0/24", "via", "10.9.3.1"},
		{"G", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"E", "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"L", "ip", "route", "add", "10.9.2.0/24", "via", "10.9.3.254"},
	} {
		map[string]*nstest.NS{"T": g.T, "E": g.E, "C": g.C, "G": g.G, "L": g.L}[c[0]].MustExec(b, c[1:]...)
	}
	if _, err := g.rec.Apply(context.Background(), g.spec); err != nil {
		b.Fatal(err)
	}
	iperf := func(dst, src string) float64 {
		srv := exec.Command("nsenter", "--net="+g.L.Path(), "--", "iperf3", "-s", "-B", dst, "-1")
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		defer srv.Wait()
		time.Sleep(300 * time.Millisecond)
		out, err := g.T.Exec(b, "iperf3", "-c", dst, "-B", src, "-t", "3", "-J")
		if err != nil {
			srv.Process.Kill()
			b.Fatalf("iperf3 to %s: %v\n%s", dst, err, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		json.Unmarshal([]byte(out), &res)
		return res.End.SumReceived.BitsPerSecond / 1e9
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		plain := iperf("10.9.1.1", "10.9.2.1")
		gre := iperf("10.9.0.1", "169.254.20.0")
		b.ReportMetric(plain, "plain-Gbps")
		b.ReportMetric(gre, "gre-Gbps")
		b.ReportMetric(gre/plain, "gre/plain")
	}
}

// BenchmarkHealthChecks: CPU time of the prober for 1,000 tunnels at the
// mid rate (1 probe per tunnel per second) and the high rate (4/s), as a
// share of one core, measured with getrusage over 5 s. The probes leave
// through a veth into a namespace that drops them (the cost measured is
// ours: building, sending, bookkeeping, evaluation).
func BenchmarkHealthChecks(b *testing.B) {
	nstest.RequireRoot(b)
	u := nstest.Unique()
	e, sink := nstest.New(b, "nfB"+u+"e"), nstest.New(b, "nfB"+u+"s")
	nstest.Link(b, e, "uplink", "192.0.2.2/24", sink, "eth0", "192.0.2.1/24")
	e.MustExec(b, "ip", "route", "add", "default", "via", "192.0.2.1")
	for _, rate := range []string{"mid", "high"} {
		rec := &Reconciler{ids: map[string]uint32{}, specs: map[string]TenantSpec{}, penalty: func(string, string) int { return 0 }}
		spec := TenantSpec{Tenant: "bench"}
		for i := 0; i < 1000; i++ {
			t := Tunnel{Name: fmt.Sprintf("t%d", i), Local: anycast, Remote: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
				Peer: netip.MustParseAddr("169.254.20.1"), TTL: 64,
				Health: HealthSpec{Enabled: true, Type: "reply", Target: customer, Interval: map[string]time.Duration{"mid": time.Second, "high": 250 * time.Millisecond}[rate]}}
			spec.Tunnels = append(spec.Tunnels, t)
			rec.ids[owned.TunnelIfName("bench", t.Name)] = uint32(i + 1)
		}
		rec.specs["bench"] = spec
		p, err := NewProber(e.Handle, netip.MustParseAddr("192.0.2.2"), rec, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		time.Sleep(time.Second) // past the start
		var r0, r1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
		t0 := time.Now()
		time.Sleep(5 * time.Second)
		syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
		wall := time.Since(t0)
		cancel()
		p.Close()
		cpu := time.Duration(r1.Utime.Nano()-r0.Utime.Nano()) + time.Duration(r1.Stime.Nano()-r0.Stime.Nano())
		sent := 0
		for _, h := range p.Health() {
			sent += int(h.Sent)
		}
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), rate+"-cpu-%")
		b.ReportMetric(float64(sent), rate+"-probes-sent")
	}
}
