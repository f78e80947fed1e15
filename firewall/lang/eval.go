package lang

import (
	"encoding/binary"
	"net/netip"
	"strings"
)

// EvalEnv is what Eval needs besides the packet: named lists, this
// server's site and region, and geo lookups (nil: unknown).
type EvalEnv struct {
	Lists        map[string][]netip.Prefix
	Site, Region string
	Country      func(netip.Addr) string
	ASN          func(netip.Addr) uint32
}

// Decoded is a packet's fields as the language sees them.
type Decoded struct {
	Raw                []byte // the IP packet
	V4                 bool
	Src, Dst           netip.Addr
	Proto, TTL         uint8
	Len                int
	L4                 int // offset of the transport header in Raw; -1: none (fragment, truncated)
	Payload            int // offset of the L4 payload in Raw; -1: none
	SPort, DPort       uint16
	Flags              uint8
	ICMPType, ICMPCode uint8
}

// Decode reads an IPv4 or IPv6 packet (no extension headers walked; a
// non-first fragment has no transport header). ok is false if it is not
// one.
func Decode(raw []byte) (d Decoded, ok bool) {
	d.Raw, d.L4, d.Payload, d.Len = raw, -1, -1, len(raw)
	if len(raw) < 1 {
		return d, false
	}
	switch raw[0] >> 4 {
	case 4:
		if len(raw) < 20 {
			return d, false
		}
		d.V4 = true
		d.Src, d.Dst = netip.AddrFrom4([4]byte(raw[12:16])), netip.AddrFrom4([4]byte(raw[16:20]))
		d.Proto, d.TTL = raw[9], raw[8]
		if binary.BigEndian.Uint16(raw[6:8])&0x1fff == 0 {
			d.L4 = int(raw[0]&0x0f) * 4
		}
	case 6:
		if len(raw) < 40 {
			return d, false
		}
		d.Src, d.Dst = netip.AddrFrom16([16]byte(raw[8:24])), netip.AddrFrom16([16]byte(raw[24:40]))
		d.Proto, d.TTL = raw[6], raw[7]
		d.L4 = 40
	default:
		return d, false
	}
	l4 := d.L4
	switch {
	case l4 < 0:
	case d.Proto == ProtoTCP && len(raw) >= l4+20:
		d.SPort, d.DPort = binary.BigEndian.Uint16(raw[l4:]), binary.BigEndian.Uint16(raw[l4+2:])
		d.Flags = raw[l4+13]
		d.Payload = l4 + int(raw[l4+12]>>4)*4
	case d.Proto == ProtoUDP && len(raw) >= l4+8:
		d.SPort, d.DPort = binary.BigEndian.Uint16(raw[l4:]), binary.BigEndian.Uint16(raw[l4+2:])
		d.Payload = l4 + 8
	case (d.Proto == ProtoICMP || d.Proto == ProtoICMPv6) && len(raw) >= l4+8:
		d.ICMPType, d.ICMPCode = raw[l4], raw[l4+1]
		d.Payload = l4 + 8
	case d.Proto != ProtoTCP && d.Proto != ProtoUDP && d.Proto != ProtoICMP && d.Proto != ProtoICMPv6:
		d.Payload = l4
	default:
		d.L4 = -1 // truncated transport header
	}
	return d, true
}

// Eval decides an expression on a decoded packet by the language's
// definition, independently of either compiler: the reference the
// differential tests compare the nftables rules and the XDP tables with.
// A condition on a field the packet does not carry is false; != is not
// ==. A payload or bit_slice beyond the packet is false, negated or not
// (what both datapaths do).
func Eval(e Expr, d Decoded, env EvalEnv) bool { return eval(e, d, env, false) }

// eval decides e (its negation when neg), pushing negations down to the
// conditions as DNF does, so that a condition that reads beyond the packet
// is false in either polarity.
func eval(e Expr, d Decoded, env EvalEnv, neg bool) bool {
	switch x := e.(type) {
	case *And:
		if neg {
			return eval(x.L, d, env, true) || eval(x.R, d, env, true)
		}
		return eval(x.L, d, env, false) && eval(x.R, d, env, false)
	case *Or:
		if neg {
			return eval(x.L, d, env, true) && eval(x.R, d, env, true)
		}
		return eval(x.L, d, env, false) || eval(x.R, d, env, false)
	case *Xor:
		// (l and not r) or (not l and r), negated: (l and r) or (not l and not r)
		if neg {
			return eval(x.L, d, env, false) && eval(x.R, d, env, false) || eval(x.L, d, env, true) && eval(x.R, d, env, true)
		}
		return eval(x.L, d, env, false) && eval(x.R, d, env, true) || eval(x.L, d, env, true) && eval(x.R, d, env, false)
	case *Not:
		return eval(x.X, d, env, !neg)
	}
	v, short := atom(e, d, env)
	if short {
		return false
	}
	return v != neg
}

// atom decides one condition; short reports that it reads beyond the
// packet (or a transport header the packet does not have), where both
// datapaths stop evaluating the rule.
func atom(e Expr, d Decoded, env EvalEnv) (v, short bool) {
	switch x := e.(type) {
	case *Const:
		return x.Val, false
	case *Payload:
		if d.Payload < 0 || d.Payload+x.Off+x.Len > len(d.Raw) {
			return false, true
		}
		b := d.Raw[d.Payload+x.Off : d.Payload+x.Off+x.Len]
		eq := true
		for i := range b {
			if b[i]&x.Mask[i] != x.Value[i] {
				eq = false
			}
		}
		return eq != x.Neg, false
	case *Flag:
		if d.Proto != ProtoTCP || d.L4 < 0 {
			return false, false
		}
		return d.Flags&x.Field.Mask != 0, false
	case *Cmp:
		if x.Field.Type == TypeIP {
			a, ok := addr(x.Field, d)
			in := ok && x.Val.Prefix.Contains(a)
			return in != (x.Op == OpNe), false
		}
		if x.Field.Type == TypeString {
			s, ok := str(x.Field, d, env)
			eq := ok && strings.EqualFold(s, x.Val.Str)
			return eq != (x.Op == OpNe), false
		}
		v, ok, short := intField(x.Field, d, env)
		if short {
			return false, true
		}
		if !ok {
			return x.Op == OpNe, false
		}
		return cmpU(v, x.Op, x.Val.Int), false
	case *In:
		if x.Field.Type == TypeIP {
			a, ok := addr(x.Field, d)
			if !ok {
				return false, false
			}
			if x.List != "" {
				for _, p := range env.Lists[x.List] {
					if p.Contains(a) {
						return true, false
					}
				}
				return false, false
			}
			for _, v := range x.Set {
				if v.Kind == KindPrefix && v.Prefix.Contains(a) || v.Kind == KindAddrRange && a.Is4() == v.AddrLo.Is4() && !a.Less(v.AddrLo) && !v.AddrHi.Less(a) {
					return true, false
				}
			}
			return false, false
		}
		if x.Field.Type == TypeString {
			s, ok := str(x.Field, d, env)
			for _, v := range x.Set {
				if ok && strings.EqualFold(s, v.Str) {
					return true, false
				}
			}
			return false, false
		}
		n, ok, short := intField(x.Field, d, env)
		if short {
			return false, true
		}
		if !ok {
			return false, false
		}
		for _, v := range x.Set {
			if v.Kind == KindInt && v.Int == n || v.Kind == KindIntRange && n >= v.Lo && n <= v.Hi {
				return true, false
			}
		}
		return false, false
	}
	return false, false
}

func cmpU(a uint64, op Op, b uint64) bool {
	switch op {
	case OpEq:
		return a == b
	case OpNe:
		return a != b
	case OpLt:
		return a < b
	case OpLe:
		return a <= b
	case OpGt:
		return a > b
	}
	return a >= b
}

func addr(f *Field, d Decoded) (netip.Addr, bool) {
	if f.Name == "ip.src" {
		return d.Src, true
	}
	return d.Dst, true
}

func str(f *Field, d Decoded, env EvalEnv) (string, bool) {
	switch f.Name {
	case "cf.colo.name":
		return env.Site, env.Site != ""
	case "cf.colo.region":
		return env.Region, env.Region != ""
	case "ip.src.country", "ip.dst.country":
		if env.Country == nil {
			return "", false
		}
		a := d.Src
		if f.Name == "ip.dst.country" {
			a = d.Dst
		}
		c := env.Country(a)
		return c, c != ""
	case "ip.geoip.country":
		// Either address: Eval is called on the folded form; unfolded,
		// report the source's (tests fold first).
		if env.Country == nil {
			return "", false
		}
		c := env.Country(d.Src)
		return c, c != ""
	}
	return "", false
}

// intField reads an integer field; ok is false if the packet does not
// carry it, short if reading it goes beyond the packet.
func intField(f *Field, d Decoded, env EvalEnv) (v uint64, ok, short bool) {
	if protos := impliedProto(f); protos != nil {
		ok := d.L4 >= 0
		if ok {
			ok = false
			for _, p := range protos {
				if uint64(d.Proto) == p {
					ok = true
				}
			}
		}
		if !ok {
			return 0, false, false
		}
	}
	if s := f.Slice; s != nil {
		base := 0
		if s.Base != "ip" {
			base = d.L4
		}
		if base+(s.End+7)/8 > len(d.Raw) {
			return 0, false, true
		}
		var v uint64
		for bit := s.Start; bit < s.End; bit++ {
			byt := d.Raw[base+bit/8]
			v = v<<1 | uint64(byt>>(7-bit%8)&1)
		}
		return v, true, false
	}
	switch f.Name {
	case "ip.proto":
		return uint64(d.Proto), true, false
	case "ip.len":
		return uint64(d.Len), true, false
	case "ip.ttl":
		return uint64(d.TTL), true, false
	case "ip.version":
		if d.V4 {
			return 4, true, false
		}
		return 6, true, false
	case "tcp.srcport", "udp.srcport":
		return uint64(d.SPort), true, false
	case "tcp.dstport", "udp.dstport":
		return uint64(d.DPort), true, false
	case "tcp.flags":
		return uint64(d.Flags), true, false
	case "icmp.type":
		return uint64(d.ICMPType), true, false
	case "icmp.code":
		return uint64(d.ICMPCode), true, false
	case "ip.src.asnum", "ip.dst.asnum":
		if env.ASN == nil {
			return 0, false, false
		}
		a := d.Src
		if f.Name == "ip.dst.asnum" {
			a = d.Dst
		}
		n := env.ASN(a)
		return uint64(n), n != 0, false
	}
	return 0, false, false
}
