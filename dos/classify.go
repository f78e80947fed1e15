package dos

import (
	"net/netip"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

// PacketFields are the fields the XDP classifier reads from a packet, as
// the program extracts them (dos/bpf/xdp_dos.c, parse and classify).
type PacketFields struct {
	V4           bool
	Src, Dst     netip.Addr
	Proto, TTL   uint8
	Len          int
	SPort, DPort int    // noPort when the packet has none
	L4           int    // TCP flags byte, icmpBase + type<<8|code, or l4None
	Payload      []byte // from the L4 payload on; nil: none
}

// FieldsOf extracts a decoded packet's classifier fields the way the
// program does.
func FieldsOf(d lang.Decoded) PacketFields {
	p := PacketFields{V4: d.V4, Src: d.Src, Dst: d.Dst, Proto: d.Proto, TTL: d.TTL, Len: min(d.Len, 65535),
		SPort: noPort, DPort: noPort, L4: l4None}
	if d.L4 >= 0 {
		switch d.Proto {
		case lang.ProtoTCP:
			p.SPort, p.DPort, p.L4 = int(d.SPort), int(d.DPort), int(d.Flags)
		case lang.ProtoUDP:
			p.SPort, p.DPort = int(d.SPort), int(d.DPort)
		case lang.ProtoICMP, lang.ProtoICMPv6:
			p.L4 = icmpBase + int(d.ICMPType)<<8 | int(d.ICMPCode)
		}
	}
	if d.Payload >= 0 && d.Payload <= len(d.Raw) {
		p.Payload = d.Raw[d.Payload:]
	}
	return p
}

// Classify returns the index of the first signature that accepts the
// packet, or -1: the field tables ANDed, the source trie (longest match),
// then what Build places in the destination entries (family, destination
// prefix) and the payload comparison. It is the program's classify() in
// Go, for differential tests against the firewall compiler and the
// language's reference evaluator.
func (t *Tables) Classify(sigs []dosspec.CompiledSignature, p PacketFields) int {
	acc := t.Proto[p.Proto]
	and := func(b bitmap) {
		for i := range acc.W {
			acc.W[i] &= b.W[i]
		}
	}
	and(t.L4[p.L4])
	and(t.SPort[p.SPort])
	and(t.DPort[p.DPort])
	and(t.Len[p.Len])
	and(t.TTL[p.TTL])
	key := mapped(netip.PrefixFrom(p.Src, p.Src.BitLen()))
	best := -1
	var src bitmap
	for k, b := range t.Src {
		if k.Contains(key.Addr()) && k.Bits() > best {
			best, src = k.Bits(), b
		}
	}
	for i := 0; i < t.N; i++ {
		if !acc.has(i) || t.NeedsSrc.has(i) && !src.has(i) {
			continue
		}
		m := sigs[i].Match
		if m.Version == 4 && !p.V4 || m.Version == 6 && p.V4 || m.Dst.IsValid() && !m.Dst.Contains(p.Dst) {
			continue
		}
		if m.PayloadLen != 0 {
			n, off := int(m.PayloadLen), int(m.PayloadOff)
			if p.Payload == nil || off+n > len(p.Payload) {
				continue
			}
			eq := true
			for j := 0; j < n; j++ {
				if p.Payload[off+j]&m.PayloadMask[j] != m.PayloadValue[j] {
					eq = false
				}
			}
			if eq == m.PayloadNeg {
				continue
			}
		}
		return i
	}
	return -1
}
