package dos

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

const xdpTX = 3

// tcpPkt is a TCP segment for the SYN-cookie tests.
type tcpPkt struct {
	src, dst     string
	sport, dport uint16
	seq, ack     uint32
	flags        string // letters: S A R F
	opts         []layers.TCPOption
	payload      []byte
}

func (p tcpPkt) bytes(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: p.seq, Ack: p.ack, Window: 64240, Options: p.opts}
	for _, f := range p.flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'R':
			tcp.RST = true
		case 'F':
			tcp.FIN = true
		}
	}
	src, dst := net.ParseIP(p.src), net.ParseIP(p.dst)
	var ip gopacket.NetworkLayer
	if src.To4() != nil {
		eth.EthernetType = layers.EthernetTypeIPv4
		ip = &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
	} else {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src, DstIP: dst}
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), tcp, gopacket.Payload(p.payload)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// linuxSYNOpts are the options Linux puts in a SYN.
func linuxSYNOpts(tsval uint32, ws uint8) []layers.TCPOption {
	ts := make([]byte, 8)
	binary.BigEndian.PutUint32(ts, tsval)
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
		{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: ts},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{ws}},
	}
}

type runResult struct {
	ret uint32
	out gopacket.Packet
}

func runTCP(t *testing.T, objs *dosBPFObjects, p tcpPkt) runResult {
	t.Helper()
	in := p.bytes(t)
	out := make([]byte, len(in)+256)
	opts := &ebpf.RunOptions{Data: in, DataOut: out}
	ret, err := objs.NfhostDos.Run(opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return runResult{ret: ret, out: gopacket.NewPacket(opts.DataOut, layers.LayerTypeEthernet, gopacket.Default)}
}

// synack checks the program's answer to syn and returns its TCP layer.
func synack(t *testing.T, r runResult, syn tcpPkt) *layers.TCP {
	t.Helper()
	if r.ret != xdpTX {
		t.Fatalf("SYN %s -> %s: verdict %d, want XDP_TX", syn.src, syn.dst, r.ret)
	}
	if e := r.out.ErrorLayer(); e != nil {
		t.Fatalf("SYN-ACK does not parse: %v", e.Error())
	}
	eth := r.out.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth.DstMAC.String() != "02:00:00:00:00:01" || eth.SrcMAC.String() != "02:00:00:00:00:02" {
		t.Errorf("MACs not swapped: %v -> %v", eth.SrcMAC, eth.DstMAC)
	}
	net := r.out.NetworkLayer()
	if net.NetworkFlow().Src().String() != netip.MustParseAddr(syn.dst).String() || net.NetworkFlow().Dst().String() != netip.MustParseAddr(syn.src).String() {
		t.Errorf("addresses: %v", net.NetworkFlow())
	}
	tcp := r.out.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !tcp.SYN || !tcp.ACK || tcp.RST || tcp.FIN || uint16(tcp.SrcPort) != syn.dport || uint16(tcp.DstPort) != syn.sport || tcp.Ack != syn.seq+1 {
		t.Errorf("SYN-ACK header: %+v", tcp)
	}
	// Checksums: serialise the parsed layers again with fresh checksums.
	raw := append([]byte(nil), tcp.Contents...)
	tcp2 := *tcp
	tcp2.SetNetworkLayerForChecksum(net)
	buf := gopacket.NewSerializeBuffer()
	if err := tcp2.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
		t.Fatal(err)
	}
	if got, want := binary.BigEndian.Uint16(raw[16:]), binary.BigEndian.Uint16(buf.Bytes()[16:]); got != want {
		t.Errorf("TCP checksum %#x, want %#x", got, want)
	}
	if ip4, ok := net.(*layers.IPv4); ok {
		c := ip4.Checksum
		ip4b := gopacket.NewSerializeBuffer()
		ip4.SerializeTo(ip4b, gopacket.SerializeOptions{ComputeChecksums: true})
		if binary.BigEndian.Uint16(ip4b.Bytes()[10:]) != c {
			t.Errorf("IPv4 checksum %#x wrong", c)
		}
	}
	return tcp
}

func tcpOpt(tcp *layers.TCP, kind layers.TCPOptionKind) (layers.TCPOption, bool) {
	for _, o := range tcp.Options {
		if o.OptionType == kind {
			return o, true
		}
	}
	return layers.TCPOption{}, false
}

func tcpCounters(t *testing.T, r *Reconciler, tenant string) TCPStats {
	t.Helper()
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c.TCP[tenant]
}

// TestSYNCookies: with the protection always engaged, SYNs to a protected
// port are answered in XDP with a cookie SYN-ACK carrying the client's
// options as far as the cookie can (IPv4 and IPv6); the ACK that returns
// the cookie passes and starts a flow; bad cookies and ACKs of no flow
// are dropped; a replayed ACK of a known flow passes without counting a
// new cookie; another port and another tenant are untouched.
func TestSYNCookies(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	acme := Tenant{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:a::/48")},
		Spec: mustSpec(t, "acme", `{"tcp_protection": {"ports": ["80", "8000-8010"], "engage_pps": 0, "mss": 1400, "wscale": 7}}`)}
	beta := Tenant{ID: "beta", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}
	if errs, err := r.Apply(*mustSpec(t, "dos/global", `{}`), []Tenant{acme, beta}, time.Now()); err != nil || len(errs) > 0 {
		t.Fatal(err, errs)
	}

	for _, fam := range []struct{ client, server string }{{"192.0.2.7", "203.0.113.5"}, {"2001:db8:ff::7", "2001:db8:a::5"}} {
		syn := tcpPkt{src: fam.client, dst: fam.server, sport: 40000, dport: 80, seq: 1000, flags: "S", opts: linuxSYNOpts(0x11223344, 9)}
		sa := synack(t, runTCP(t, objs, syn), syn)
		if o, ok := tcpOpt(sa, layers.TCPOptionKindMSS); !ok || binary.BigEndian.Uint16(o.OptionData) > 1400 {
			t.Errorf("%s: MSS option %v", fam.client, o)
		}
		if o, ok := tcpOpt(sa, layers.TCPOptionKindWindowScale); !ok || o.OptionData[0] != 7 {
			t.Errorf("%s: window scale option %v", fam.client, o)
		}
		if _, ok := tcpOpt(sa, layers.TCPOptionKindSACKPermitted); !ok {
			t.Errorf("%s: no SACK-permitted", fam.client)
		}
		o, ok := tcpOpt(sa, layers.TCPOptionKindTimestamps)
		if !ok {
			t.Fatalf("%s: no timestamps", fam.client)
		}
		tsval, tsecr := binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:])
		// The client's window scale (9) and SACK in the low bits, the
		// kernel's encoding that synproxy decodes.
		if tsecr != 0x11223344 || tsval&0xf != 9 || tsval&0x10 == 0 {
			t.Errorf("%s: timestamps %#x %#x", fam.client, tsval, tsecr)
		}
		ack := tcpPkt{src: fam.client, dst: fam.server, sport: 40000, dport: 80, seq: 1001, ack: sa.Seq + 1, flags: "A"}
		before := tcpCounters(t, r, "acme")
		if got := runTCP(t, objs, ack).ret; got != xdpPass {
			t.Fatalf("%s: ACK with the cookie: verdict %d", fam.client, got)
		}
		if got := runTCP(t, objs, ack).ret; got != xdpPass {
			t.Errorf("%s: replayed ACK of the known flow: verdict %d", fam.client, got)
		}
		data := ack
		data.payload, data.flags = []byte("GET / HTTP/1.1\r\n"), "A"
		if got := runTCP(t, objs, data).ret; got != xdpPass {
			t.Errorf("%s: data of the flow: verdict %d", fam.client, got)
		}
		after := tcpCounters(t, r, "acme")
		if after.CookiesValid-before.CookiesValid != 1 || after.Flows-before.Flows != 1 {
			t.Errorf("%s: a replay counted as a new connection: %+v -> %+v", fam.client, before, after)
		}
		for name, bad := range map[string]tcpPkt{
			"wrong cookie":               {src: fam.client, dst: fam.server, sport: 40001, dport: 80, seq: 1001, ack: sa.Seq + 2, flags: "A"},
			"cookie for another port":    {src: fam.client, dst: fam.server, sport: 40002, dport: 80, seq: 1001, ack: sa.Seq + 1, flags: "A"},
			"cookie replayed from other": {src: netip.MustParseAddr(fam.client).Next().String(), dst: fam.server, sport: 40000, dport: 80, seq: 1001, ack: sa.Seq + 1, flags: "A"},
			"random ACK":                 {src: fam.client, dst: fam.server, sport: 40003, dport: 8005, seq: 77, ack: 12345, flags: "A"},
		} {
			if got := runTCP(t, objs, bad).ret; got != xdpDrop {
				t.Errorf("%s %s: verdict %d, want drop", fam.client, name, got)
			}
		}
	}

	// A SYN without options: the cookie carries the smallest MSS, and
	// no option the ACK could not bring back is offered.
	bare := tcpPkt{src: "192.0.2.8", dst: "203.0.113.5", sport: 41000, dport: 8010, seq: 5, flags: "S"}
	sa := synack(t, runTCP(t, objs, bare), bare)
	for _, k := range []layers.TCPOptionKind{layers.TCPOptionKindTimestamps, layers.TCPOptionKindWindowScale, layers.TCPOptionKindSACKPermitted} {
		if _, ok := tcpOpt(sa, k); ok {
			t.Errorf("bare SYN: option %v offered", k)
		}
	}
	if o, _ := tcpOpt(sa, layers.TCPOptionKindMSS); binary.BigEndian.Uint16(o.OptionData) != 536 {
		t.Errorf("bare SYN: MSS %v", o)
	}
	// Timestamps without window scale: 0xf in the low bits says none.
	nows := tcpPkt{src: "192.0.2.9", dst: "203.0.113.5", sport: 41001, dport: 80, seq: 5, flags: "S", opts: linuxSYNOpts(7, 0)[:3]}
	sa = synack(t, runTCP(t, objs, nows), nows)
	if o, _ := tcpOpt(sa, layers.TCPOptionKindTimestamps); binary.BigEndian.Uint32(o.OptionData)&0xf != 0xf {
		t.Errorf("no window scale: tsval %x", o.OptionData)
	}
	if _, ok := tcpOpt(sa, layers.TCPOptionKindWindowScale); ok {
		t.Error("window scale offered to a client without it")
	}

	// In order: the last case needs the flow the one before it starts.
	for _, c := range []struct {
		name string
		p    tcpPkt
		want uint32
	}{
		{"SYN to an unprotected port", tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 40000, dport: 22, seq: 1, flags: "S"}, xdpPass},
		{"ACK to an unprotected port", tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 40000, dport: 22, seq: 1, ack: 1, flags: "A"}, xdpPass},
		{"SYN to another tenant", tcpPkt{src: "192.0.2.7", dst: "198.51.100.5", sport: 40000, dport: 80, seq: 1, flags: "S"}, xdpPass},
		{"SYN-ACK (the tenant's connect)", tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 80, dport: 8001, seq: 1, ack: 1, flags: "SA"}, xdpPass},
		{"...and its ACKs then pass", tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 80, dport: 8001, seq: 2, ack: 1, flags: "A"}, xdpPass},
	} {
		if got := runTCP(t, objs, c.p).ret; got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
	c, _ := r.Counters()
	if c.Reasons["syn_cookie"].Packets != 4 || c.Reasons["cookie_invalid"].Packets != 8 {
		t.Errorf("reasons: syn_cookie %d, cookie_invalid %d", c.Reasons["syn_cookie"].Packets, c.Reasons["cookie_invalid"].Packets)
	}
	if _, ok := c.TCP["beta"]; ok {
		t.Error("beta has TCP counters without a rule")
	}

	// Re-applying writes nothing; a new reconciler (restart) neither.
	if _, err := r.Apply(*mustSpec(t, "dos/global", `{}`), []Tenant{acme, beta}, time.Now()); err != nil || r.Writes() != 0 {
		t.Fatalf("re-apply: %d writes, %v", r.Writes(), err)
	}
	r2, _ := newReconciler(objs, nil)
	if _, err := r2.Apply(*mustSpec(t, "dos/global", `{}`), []Tenant{acme, beta}, time.Now()); err != nil || r2.Writes() != 0 {
		t.Fatalf("apply after restart: %d writes, %v", r2.Writes(), err)
	}
	// Removing the protection removes the stage.
	acme.Spec = mustSpec(t, "acme", `{}`)
	if _, err := r2.Apply(*mustSpec(t, "dos/global", `{}`), []Tenant{acme, beta}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 40000, dport: 80, seq: 1, flags: "S"}).ret; got != xdpPass {
		t.Errorf("SYN after the protection was removed: verdict %d", got)
	}
}

// TestSYNCookieEngage: below the threshold SYNs pass (and start flows);
// above it cookies engage; monitor mode counts and passes; out_of_state
// drops what belongs to no flow even when not engaged.
func TestSYNCookieEngage(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	tenants := []Tenant{
		{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
			Spec: mustSpec(t, "acme", `{"tcp_protection": {"engage_pps": 100, "out_of_state": true}}`)},
		{ID: "mon", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")},
			Spec: mustSpec(t, "mon", `{"tcp_protection": {"mode": "monitor", "engage_pps": 0}}`)},
	}
	if _, err := r.Apply(*mustSpec(t, "dos/global", `{}`), tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	// 100 SYN/s is 10 per 100 ms window: at least the first 10 pass; SYNs
	// sent back to back then engage cookies. (A window may close between
	// two SYNs on a loaded machine, so more may pass before that.)
	passed, first := 0, -1
	for i := 0; i < 200 && first < 0; i++ {
		switch v := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: uint16(30000 + i), dport: 443, seq: 1, flags: "S"}).ret; v {
		case xdpPass:
			passed++
		case xdpTX:
			first = i
		default:
			t.Fatalf("SYN %d: verdict %d", i, v)
		}
	}
	if passed < 10 || first < 0 {
		t.Fatalf("%d SYNs passed, first answered with a cookie: %d", passed, first)
	}
	// The flows those SYNs started pass; a stranger's ACK is out of state.
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 30000, dport: 443, seq: 2, ack: 1, flags: "A"}).ret; got != xdpPass {
		t.Errorf("ACK of a flow started before engaging: %d", got)
	}
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.99", dst: "203.0.113.6", sport: 1, dport: 443, seq: 2, ack: 1, flags: "A"}).ret; got != xdpDrop {
		t.Errorf("out-of-state ACK: %d", got)
	}
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.99", dst: "203.0.113.6", sport: 1, dport: 443, seq: 2, flags: "R"}).ret; got != xdpDrop {
		t.Errorf("out-of-state RST: %d", got)
	}
	// A RST of a known flow ends it.
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 30001, dport: 443, seq: 2, flags: "R"}).ret; got != xdpPass {
		t.Errorf("RST of a flow: %d", got)
	}
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 30001, dport: 443, seq: 2, ack: 1, flags: "A"}).ret; got != xdpDrop {
		t.Errorf("ACK after the RST: %d", got)
	}
	// Monitor: counted, passed.
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.7", dst: "198.51.100.5", sport: 1, dport: 80, seq: 1, flags: "S"}).ret; got != xdpPass {
		t.Errorf("monitor SYN: %d", got)
	}
	c, _ := r.Counters()
	if m := c.TCP["mon"]; m.CookiesSent != 1 || m.Dropped != 0 {
		t.Errorf("monitor counters %+v", m)
	}
	if a := c.TCP["acme"]; a.OutOfState != 1 || a.CookiesInvalid != 2 || a.SYN != uint64(first+1) {
		t.Errorf("acme counters %+v", a)
	}
}

// TestTCPProtectionOutsidePrefixes: tcp_protection prefixes outside the
// tenant's refuse the whole document (its other rules are not placed
// either), naming the field.
func TestTCPProtectionOutsidePrefixes(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	acme := Tenant{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Spec: mustSpec(t, "acme", `{"deny": ["192.0.2.9"], "tcp_protection": {"prefixes": ["198.51.100.0/24"]}}`)}
	errs, err := r.Apply(*mustSpec(t, "dos/global", `{}`), []Tenant{acme}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e := errs["acme"]; e == nil || !strings.Contains(e.Error(), `tcp_protection.prefixes[0]: "198.51.100.0/24": not inside the tenant's prefixes`) {
		t.Fatalf("errs %v", errs)
	}
	if got := runTCP(t, objs, tcpPkt{src: "192.0.2.9", dst: "203.0.113.5", sport: 1, dport: 80, seq: 1, flags: "S"}).ret; got != xdpPass {
		t.Errorf("the refused document's deny entry is in force: verdict %d", got)
	}
	// The global default's engage_pps does not leak a release_pps above a
	// tenant's own engage_pps.
	g := mustSpec(t, "dos/global", `{"tcp_protection": {"engage_pps": 10000, "release_pps": 8000}}`)
	p, err := ResolveTCP(g, mustSpec(t, "acme", `{"tcp_protection": {"engage_pps": 100}}`), "acme")
	if err != nil || p.ReleasePPS != 50 {
		t.Errorf("merged: %+v %v", p, err)
	}
}
