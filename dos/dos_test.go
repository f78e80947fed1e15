package dos

import (
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/nfhost/nfhost/dos/dosspec"
)

func TestResolveListsAllowWins(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	got := ResolveLists(pp("198.51.100.0/24", "2001:db8:1::/48"),
		pp("198.51.100.128/25", "198.51.0.0/16", "203.0.113.0/24", "2001:db8::/32", "198.51.100.0/24"))
	want := []Entry{
		{netip.MustParsePrefix("198.51.0.0/16"), VerdictDeny},
		{netip.MustParsePrefix("198.51.100.0/24"), VerdictAllow},
		{netip.MustParsePrefix("203.0.113.0/24"), VerdictDeny},
		{netip.MustParsePrefix("2001:db8::/32"), VerdictDeny},
		{netip.MustParsePrefix("2001:db8:1::/48"), VerdictAllow},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entry %d = %v, want %v (all: %v)", i, got[i], want[i], got)
		}
	}
}

// loadForTest loads the collection without pinning.
func loadForTest(t testing.TB) *dosBPFObjects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root): BPF program tests; run `sudo make test`")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadDosBPF()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs dosBPFObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatalf("load XDP program (BPF and LPM tries are required): %v", err)
	}
	if err := wireTailCalls(&objs); err != nil {
		objs.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	return &objs
}

type pkt struct {
	src, dst string
	vlans    int
	trunc    int // bytes to cut from the end
	proto    layers.EthernetType
	l4       string // "udp" (default), "tcp", "icmp"
	sport    uint16
	dport    uint16
	syn, ack bool
	ttl      uint8
	payload  int    // extra zero bytes
	data     []byte // payload bytes (replaces the default 18 zero bytes)
}

func (p pkt) bytes(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	var ls []gopacket.SerializableLayer
	ls = append(ls, eth)
	inner := layers.EthernetTypeIPv4
	src, dst := net.ParseIP(p.src), net.ParseIP(p.dst)
	if src != nil && src.To4() == nil {
		inner = layers.EthernetTypeIPv6
	}
	if p.proto != 0 {
		inner = p.proto
	}
	next := &eth.EthernetType
	for i := 0; i < p.vlans; i++ {
		tpid := layers.EthernetTypeDot1Q
		if i == 0 && p.vlans == 2 {
			tpid = layers.EthernetTypeQinQ
		}
		*next = tpid
		v := &layers.Dot1Q{VLANIdentifier: uint16(100 + i)}
		ls = append(ls, v)
		next = &v.Type
	}
	*next = inner
	sport, dport := p.sport, p.dport
	if sport == 0 && dport == 0 {
		sport, dport = 4000, 53
	}
	ttl := p.ttl
	if ttl == 0 {
		ttl = 64
	}
	var l4 interface {
		gopacket.SerializableLayer
		SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
	}
	proto := layers.IPProtocolUDP
	switch p.l4 {
	case "tcp":
		proto = layers.IPProtocolTCP
		l4 = &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: p.syn, ACK: p.ack, Window: 1000}
	case "icmp":
		proto = layers.IPProtocolICMPv4
	default:
		l4 = &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	}
	switch inner {
	case layers.EthernetTypeIPv4:
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Protocol: proto, SrcIP: src, DstIP: dst}
		ls = append(ls, ip)
		if l4 != nil {
			l4.SetNetworkLayerForChecksum(ip)
			ls = append(ls, l4)
		} else {
			ls = append(ls, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)})
		}
	case layers.EthernetTypeIPv6:
		ip := &layers.IPv6{Version: 6, HopLimit: ttl, NextHeader: proto, SrcIP: src, DstIP: dst}
		if l4 != nil {
			l4.SetNetworkLayerForChecksum(ip)
		}
		ls = append(ls, ip, l4)
	}
	body := make([]byte, 18+p.payload)
	if p.data != nil {
		body = append(append([]byte(nil), p.data...), make([]byte, p.payload)...)
	}
	ls = append(ls, gopacket.Payload(body))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	return b[:len(b)-p.trunc]
}

const (
	xdpDrop = 1
	xdpPass = 2
)

func TestVerdicts(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(dosspec.Spec{
		Allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8:1::/48")},
		Deny:  []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8::/32")},
	}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	counts := map[int]uint64{}
	for _, tc := range []struct {
		name    string
		p       pkt
		want    uint32
		counter int
	}{
		{"v4 clean", pkt{src: "192.0.2.1", dst: "203.0.113.1"}, xdpPass, 0},
		{"v4 denied", pkt{src: "198.51.100.9", dst: "203.0.113.1"}, xdpDrop, 2},
		{"v4 allow beats deny", pkt{src: "198.51.100.7", dst: "203.0.113.1"}, xdpPass, 1},
		{"v6 denied", pkt{src: "2001:db8:2::1", dst: "2001:db8:ff::1"}, xdpDrop, 2},
		{"v6 allowed inside deny", pkt{src: "2001:db8:1::5", dst: "2001:db8:ff::1"}, xdpPass, 1},
		{"v6 clean", pkt{src: "2001:db9::1", dst: "2001:db8:ff::1"}, xdpPass, 0},
		{"802.1Q denied", pkt{src: "198.51.100.9", dst: "203.0.113.1", vlans: 1}, xdpDrop, 2},
		{"QinQ denied", pkt{src: "2001:db8:2::1", dst: "2001:db8:ff::1", vlans: 2}, xdpDrop, 2},
		{"ARP passes", pkt{proto: layers.EthernetTypeARP}, xdpPass, 3},
		{"truncated IPv4 header passes", pkt{src: "198.51.100.9", dst: "203.0.113.1", trunc: 18 + 8 + 4}, xdpPass, 4},
		{"truncated IPv6 header passes", pkt{src: "2001:db8:2::1", dst: "2001:db8:ff::1", trunc: 18 + 8 + 10}, xdpPass, 4},
	} {
		ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: tc.p.bytes(t)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ret != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, ret, tc.want)
		}
		counts[tc.counter]++
	}
	// Truncated Ethernet frame.
	if ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: make([]byte, 14)[:10]}); err == nil && ret != xdpPass {
		t.Errorf("10-byte frame: verdict %d", ret)
	}
	for idx, want := range counts {
		var per []dosBPFStats
		if err := objs.NfhCounters.Lookup(uint32(idx), &per); err != nil {
			t.Fatal(err)
		}
		var got uint64
		for _, s := range per {
			got += s.Packets
		}
		if got != want {
			t.Errorf("counter %d = %d packets, want %d", idx, got, want)
		}
	}
}
