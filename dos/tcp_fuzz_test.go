package dos

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// FuzzTCPProtect runs arbitrary TCP headers (flags, sequence numbers, data
// offset, option bytes, truncation) to a protected destination through
// the program: it must return PASS, DROP or TX, and a TX must be a
// well-formed SYN-ACK back to the sender with correct checksums.
func FuzzTCPProtect(f *testing.F) {
	objs := loadForTest(f)
	r, err := newReconciler(objs, nil)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := r.Apply(*mustSpec(f, "dos/global", `{}`), []Tenant{{ID: "acme",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:a::/48")},
		Spec:     mustSpec(f, "acme", `{"tcp_protection": {"engage_pps": 0, "out_of_state": true}}`)}}, time.Now()); err != nil {
		f.Fatal(err)
	}
	syn := tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 1, dport: 80, seq: 1, flags: "S", opts: linuxSYNOpts(5, 7)}.bytes(f)
	f.Add(syn[34:], false, 0)
	f.Add(tcpPkt{src: "2001:db8::7", dst: "2001:db8:a::5", sport: 1, dport: 80, seq: 1, flags: "S"}.bytes(f)[54:], true, 0)
	f.Add([]byte{0, 1, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0xf0, 0x02, 0, 0, 0, 0, 0, 0, 2, 4, 5}, false, 3)
	f.Fuzz(func(t *testing.T, tcp []byte, v6 bool, cut int) {
		if len(tcp) > 120 {
			tcp = tcp[:120]
		}
		eth := &layers.Ethernet{SrcMAC: []byte{2, 0, 0, 0, 0, 1}, DstMAC: []byte{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		var ip gopacket.SerializableLayer = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP,
			SrcIP: []byte{192, 0, 2, 7}, DstIP: []byte{203, 0, 113, 5}}
		if v6 {
			eth.EthernetType = layers.EthernetTypeIPv6
			ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
				SrcIP: netip.MustParseAddr("2001:db8::7").AsSlice(), DstIP: netip.MustParseAddr("2001:db8:a::5").AsSlice()}
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, ip, gopacket.Payload(tcp)); err != nil {
			t.Skip()
		}
		data := buf.Bytes()
		if cut > 0 && cut < len(data)-14 {
			data = data[:len(data)-cut]
		}
		opt := &ebpf.RunOptions{Data: data, DataOut: make([]byte, len(data)+256)}
		ret, err := objs.NfhostDos.Run(opt)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
		switch ret {
		case xdpPass, xdpDrop:
			return
		case xdpTX:
		default:
			t.Fatalf("verdict %d", ret)
		}
		p := gopacket.NewPacket(opt.DataOut, layers.LayerTypeEthernet, gopacket.Default)
		th, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || !th.SYN || !th.ACK || len(tcp) < 4 || uint16(th.DstPort) != binary.BigEndian.Uint16(tcp[0:2]) {
			t.Fatalf("TX is not a SYN-ACK to the sender: %v", p)
		}
		raw := append([]byte(nil), th.Contents...)
		th2 := *th
		th2.SetNetworkLayerForChecksum(p.NetworkLayer())
		out := gopacket.NewSerializeBuffer()
		th2.SerializeTo(out, gopacket.SerializeOptions{ComputeChecksums: true})
		if binary.BigEndian.Uint16(raw[16:]) != binary.BigEndian.Uint16(out.Bytes()[16:]) {
			t.Fatalf("SYN-ACK checksum wrong")
		}
	})
}
