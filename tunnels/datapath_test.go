package tunnels

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

const (
	tcxNext     = ^uint32(0) // -1
	tcxDrop     = 2
	tcxRedirect = 7
)

func loadForTest(t testing.TB) *greBPFObjects {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root): BPF program tests; run `sudo make test`")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	spec, err := loadGreBPF()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	var objs greBPFObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	return &objs
}

var (
	anycast  = netip.MustParseAddr("192.0.2.10")
	customer = netip.MustParseAddr("198.51.100.130")
	hostMAC  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	nsMAC    = net.HardwareAddr{2, 0, 0, 0, 0, 2}
)

// inner builds an IPv4 or IPv6 UDP packet (no Ethernet header).
func inner(t testing.TB, v6 bool, payload int) ([]gopacket.SerializableLayer, layers.EthernetType) {
	udp := &layers.UDP{SrcPort: 4000, DstPort: 53}
	pl := gopacket.Payload(make([]byte, payload))
	if v6 {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP,
			SrcIP: net.ParseIP("2001:db8:1::1"), DstIP: net.ParseIP("2001:db8:2::1")}
		udp.SetNetworkLayerForChecksum(ip)
		return []gopacket.SerializableLayer{ip, udp, pl}, layers.EthernetTypeIPv6
	}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP,
		SrcIP: net.ParseIP("203.0.113.7"), DstIP: net.ParseIP("10.1.2.3")}
	udp.SetNetworkLayerForChecksum(ip)
	return []gopacket.SerializableLayer{ip, udp, pl}, layers.EthernetTypeIPv4
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// greFrame wraps an inner packet: Ethernet, outer IPv4 src -> dst, GRE.
func greFrame(t testing.TB, src, dst netip.Addr, gre *layers.GRE, in []gopacket.SerializableLayer, mod func(*layers.IPv4)) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 9, 9, 9, 9, 9}, DstMAC: net.HardwareAddr{2, 8, 8, 8, 8, 8}, EthernetType: layers.EthernetTypeIPv4}
	outer := &layers.IPv4{Version: 4, IHL: 5, TTL: 60, Protocol: layers.IPProtocolGRE, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	if mod != nil {
		mod(outer)
	}
	return serialize(t, append([]gopacket.SerializableLayer{eth, outer, gre}, in...)...)
}

func TestDecap(t *testing.T) {
	objs := loadForTest(t)
	key := greBPFEpKey{Local: be32(anycast), Remote: be32(customer)}
	val := greBPFDecapVal{Ifindex: 1, Id: 7}
	copy(val.Dmac[:], nsMAC)
	copy(val.Smac[:], hostMAC)
	if err := objs.NftDecap.Put(key, val); err != nil {
		t.Fatal(err)
	}
	in4, _ := inner(t, false, 100)
	in6, _ := inner(t, true, 100)
	plain := func(p layers.EthernetType) *layers.GRE { return &layers.GRE{Protocol: p} }
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
		inner []gopacket.SerializableLayer
		proto layers.EthernetType
	}{
		{"IPv4 inner", greFrame(t, customer, anycast, plain(layers.EthernetTypeIPv4), in4, nil), tcxRedirect, in4, layers.EthernetTypeIPv4},
		{"IPv6 inner", greFrame(t, customer, anycast, plain(layers.EthernetTypeIPv6), in6, nil), tcxRedirect, in6, layers.EthernetTypeIPv6},
		{"GRE with a key: not ours", greFrame(t, customer, anycast, &layers.GRE{Protocol: layers.EthernetTypeIPv4, KeyPresent: true, Key: 5}, in4, nil), tcxNext, nil, 0},
		{"GRE with checksum: not ours", greFrame(t, customer, anycast, &layers.GRE{Protocol: layers.EthernetTypeIPv4, ChecksumPresent: true}, in4, nil), tcxNext, nil, 0},
		{"unknown tunnel", greFrame(t, netip.MustParseAddr("198.51.100.99"), anycast, plain(layers.EthernetTypeIPv4), in4, nil), tcxNext, nil, 0},
		{"other anycast", greFrame(t, customer, netip.MustParseAddr("192.0.2.11"), plain(layers.EthernetTypeIPv4), in4, nil), tcxNext, nil, 0},
		{"fragment", greFrame(t, customer, anycast, plain(layers.EthernetTypeIPv4), in4, func(ip *layers.IPv4) { ip.Flags = layers.IPv4MoreFragments }), tcxNext, nil, 0},
		{"outer options", greFrame(t, customer, anycast, plain(layers.EthernetTypeIPv4), in4, func(ip *layers.IPv4) {
			ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}}
		}), tcxNext, nil, 0},
		{"GRE carrying ARP: not ours", greFrame(t, customer, anycast, plain(layers.EthernetTypeARP), in4, nil), tcxNext, nil, 0},
		{"plain UDP", serialize(t, append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: hostMAC, DstMAC: nsMAC, EthernetType: layers.EthernetTypeIPv4}}, in4...)...), tcxNext, nil, 0},
	} {
		out := make([]byte, len(tc.frame)+64)
		ret, err := objs.NfhostGreDecap.Run(&ebpf.RunOptions{Data: tc.frame, DataOut: out})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ret != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, int32(ret), int32(tc.want))
			continue
		}
		if tc.inner == nil {
			continue
		}
		want := serialize(t, append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: hostMAC, DstMAC: nsMAC, EthernetType: tc.proto}}, tc.inner...)...)
		got := out[:len(want)]
		if len(tc.frame)-24 != len(want) || string(got) != string(want) {
			t.Errorf("%s: decapsulated\n got %x\nwant %x", tc.name, got, want)
		}
	}
	var per []greBPFTunStats
	if err := objs.NftTunStats.Lookup(uint32(7), &per); err != nil {
		t.Fatal(err)
	}
	var rx, bytes uint64
	for _, p := range per {
		rx += p.RxPackets
		bytes += p.RxBytes
	}
	if rx != 2 || bytes != 128+148 {
		t.Errorf("counters: %d packets %d bytes, want 2 and %d", rx, bytes, 128+148)
	}
}

func TestEncap(t *testing.T) {
	objs := loadForTest(t)
	// BPF_PROG_TEST_RUN runs the program as if on lo (ifindex 1).
	if err := objs.NftEncap.Put(uint32(1), greBPFEncapVal{Local: be32(anycast), Remote: be32(customer), Uplink: 1, Id: 3, Ttl: 42}); err != nil {
		t.Fatal(err)
	}
	for _, v6 := range []bool{false, true} {
		in, proto := inner(t, v6, 200)
		frame := serialize(t, append([]gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: nsMAC, DstMAC: hostMAC, EthernetType: proto}}, in...)...)
		out := make([]byte, len(frame)+64)
		ctx := make([]byte, 192) // struct __sk_buff, ifindex at offset 40
		binary.NativeEndian.PutUint32(ctx[40:], 1)
		ret, err := objs.NfhostGreEncap.Run(&ebpf.RunOptions{Data: frame, DataOut: out, Context: ctx})
		if err != nil {
			t.Fatal(err)
		}
		if ret != tcxRedirect {
			t.Fatalf("v6=%v: verdict %d, want redirect", v6, int32(ret))
		}
		p := gopacket.NewPacket(out[:len(frame)+24], layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		gre, _ := p.Layer(layers.LayerTypeGRE).(*layers.GRE)
		if ip == nil || gre == nil {
			t.Fatalf("v6=%v: not GRE over IPv4: %v", v6, p)
		}
		if ip.SrcIP.String() != anycast.String() || ip.DstIP.String() != customer.String() || ip.TTL != 42 ||
			int(ip.Length) != len(frame)-14+24 || gre.Protocol != proto || gre.Flags != 0 {
			t.Errorf("v6=%v: outer header %+v gre %+v", v6, ip, gre)
		}
		// The header checksum verifies: the one's complement sum is 0xffff.
		var sum uint32
		hdr := out[14:34]
		for i := 0; i < 20; i += 2 {
			sum += uint32(hdr[i])<<8 | uint32(hdr[i+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		if sum != 0xffff {
			t.Errorf("v6=%v: outer checksum wrong (sum %#x)", v6, sum)
		}
		if string(out[38:len(frame)+24]) != string(frame[14:]) {
			t.Errorf("v6=%v: inner packet changed", v6)
		}
	}
	// ARP (or anything but IP) from the NOARP tunnel interface is dropped.
	arp := serialize(t, &layers.Ethernet{SrcMAC: nsMAC, DstMAC: hostMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			SourceHwAddress: nsMAC, SourceProtAddress: []byte{1, 2, 3, 4}, DstHwAddress: hostMAC, DstProtAddress: []byte{1, 2, 3, 5}})
	ctx := make([]byte, 192)
	binary.NativeEndian.PutUint32(ctx[40:], 1)
	if ret, err := objs.NfhostGreEncap.Run(&ebpf.RunOptions{Data: arp, Context: ctx}); err != nil || ret != tcxDrop {
		t.Errorf("ARP: verdict %d (%v), want drop", int32(ret), err)
	}
	var per []greBPFTunStats
	objs.NftTunStats.Lookup(uint32(3), &per)
	var tx, drops uint64
	for _, p := range per {
		tx += p.TxPackets
		drops += p.Drops
	}
	if tx != 2 || drops != 1 {
		t.Errorf("counters: %d sent, %d dropped; want 2 and 1", tx, drops)
	}
}
