// Package lang is nfhost's rule expression language: Cloudflare's Rules
// language as Magic Firewall (the magic_transit phase) documents it, with
// nfhost's older spellings kept. One parser and type checker produce a
// typed AST that two compilers consume (nftables in firewall/, XDP
// signatures in dos/); README.md ("Rule language") is the reference.
//
//	tcp.dstport == 22 and not ip.src in $office
//	ip.proto eq "udp" and udp.dstport in {53 123 1024..65535}
//	ip.src in {198.51.100.0/24, 2001:db8::/32} or tcp.flags.syn
//	ip.src.country in {"BR" "FR"} and cf.colo.region == "WEUR"
//	bit_slice(udp, 64, 72) == 0x17
//
// Operators: == != < <= > >= (also eq ne lt le gt ge), `in { ... }` with
// values, CIDRs and ranges (a..b) separated by spaces or commas, `in
// $list`, not/and/xor/or (also ! && ^^ ||, in that order of precedence),
// parentheses, true and false. A boolean field stands alone as a
// condition. Errors carry a line:column position.
//
// Semantics (Cloudflare's Unified Routing): a comparison on a field the
// packet does not carry is false, and != is the negation of ==, so
// tcp.dstport != 80 matches every UDP packet, and not tcp.flags.syn every
// non-TCP packet. A rule without an address literal matches both families.
package lang

import "sort"

// Type is a field's value type.
type Type int

// Field types.
const (
	TypeInt    Type = iota // unsigned integer up to Field.Max
	TypeIP                 // IPv4 or IPv6 address; compared with addresses, CIDRs and ranges
	TypeBool               // a flag, used bare
	TypeString             // a quoted string ("BR", "sfo06"); == != and in
	TypeBytes              // a raw header (ip, tcp, udp, icmp); only inside bit_slice(...)
)

func (t Type) String() string {
	return [...]string{"integer", "IP address", "boolean", "string", "raw header"}[t]
}

// Field describes one matchable packet field.
type Field struct {
	Name string
	Type Type
	Max  uint64 // for TypeInt
	// Proto is the L4 protocol the field implies (0: none), e.g. 6 for tcp.*.
	Proto uint8
	// Names maps symbolic values to numbers (ip.proto: tcp, udp, ...).
	Names map[string]uint64
	// Mask is the bit of tcp.flags a TCP flag field tests.
	Mask uint8
	// Slice is set on the pseudo-field bit_slice(base, start, end) makes.
	Slice *Slice
	// Unsupported, when set, says why no nfhost compiler accepts the field
	// (it parses, so documented Cloudflare expressions are recognised).
	Unsupported string
}

// Slice is a bit range of a raw header: bits [Start, End) counted from the
// first bit of Base's header (ip: the IP header, tcp/udp/icmp: the
// transport header), most significant bit first.
type Slice struct {
	Base       string
	Start, End int
}

// Bits is the slice's width.
func (s *Slice) Bits() int { return s.End - s.Start }

// IP protocol numbers used by fields.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// protoNames are the IANA keywords (as in /etc/protocols) Cloudflare's
// ip.proto takes as strings.
var protoNames = map[string]uint64{
	"hopopt": 0, "icmp": ProtoICMP, "igmp": 2, "ggp": 3, "ipip": 4, "ipencap": 4, "st": 5, "tcp": ProtoTCP,
	"egp": 8, "igp": 9, "udp": ProtoUDP, "ipv6": 41, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51,
	"icmpv6": ProtoICMPv6, "ipv6-icmp": ProtoICMPv6, "ospf": 89, "pim": 103, "vrrp": 112, "l2tp": 115,
	"sctp": 132, "udplite": 136,
}

// Fields is the field table, Cloudflare's names and nfhost's older names
// (aliases point to the same *Field, whose Name is the Cloudflare one).
// The DoS compiler supports a subset.
var Fields = map[string]*Field{}

// Aliases maps each older or alternative name to its canonical one.
var Aliases = map[string]string{
	"tcp.flags.psh": "tcp.flags.push",
	"tcp.flags.rst": "tcp.flags.reset",
	"tcp.flags.ece": "tcp.flags.ecn",
	"ip.proto.num":  "ip.proto",
	"ip.src.asn":    "ip.src.asnum",
	"ip.dst.asn":    "ip.dst.asnum",
}

// Raw headers for bit_slice and the L4 protocol each implies (0: none;
// icmp: ICMP or ICMPv6).
var rawHeaders = map[string]uint8{"ip": 0, "tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP}

func init() {
	for _, f := range []*Field{
		{Name: "ip.src", Type: TypeIP},
		{Name: "ip.dst", Type: TypeIP},
		{Name: "ip.proto", Type: TypeInt, Max: 255, Names: protoNames},
		{Name: "ip.len", Type: TypeInt, Max: 65535},
		{Name: "ip.ttl", Type: TypeInt, Max: 255},
		{Name: "ip.version", Type: TypeInt, Max: 6},
		{Name: "ip.hdr_len", Type: TypeInt, Max: 255, Unsupported: "ip.hdr_len is not supported by nfhost: use bit_slice(ip, 4, 8) (the IHL nibble, in 32-bit words)"},
		{Name: "ip.opt.type", Type: TypeInt, Max: 255, Unsupported: "ip.opt.type is not supported by nfhost: use bit_slice(ip, 160, 168) and ip.len"},
		{Name: "ip.src.country", Type: TypeString},
		{Name: "ip.dst.country", Type: TypeString},
		{Name: "ip.geoip.country", Type: TypeString},
		{Name: "ip.src.asnum", Type: TypeInt, Max: 1<<32 - 1},
		{Name: "ip.dst.asnum", Type: TypeInt, Max: 1<<32 - 1},
		{Name: "cf.colo.name", Type: TypeString},
		{Name: "cf.colo.region", Type: TypeString},
		{Name: "sip", Type: TypeBool, Unsupported: "sip (SIP validation) is not supported by nfhost"},
		{Name: "tcp.srcport", Type: TypeInt, Max: 65535, Proto: ProtoTCP},
		{Name: "tcp.dstport", Type: TypeInt, Max: 65535, Proto: ProtoTCP},
		{Name: "tcp.flags", Type: TypeInt, Max: 255, Proto: ProtoTCP},
		{Name: "tcp.flags.fin", Type: TypeBool, Proto: ProtoTCP, Mask: 0x01},
		{Name: "tcp.flags.syn", Type: TypeBool, Proto: ProtoTCP, Mask: 0x02},
		{Name: "tcp.flags.reset", Type: TypeBool, Proto: ProtoTCP, Mask: 0x04},
		{Name: "tcp.flags.push", Type: TypeBool, Proto: ProtoTCP, Mask: 0x08},
		{Name: "tcp.flags.ack", Type: TypeBool, Proto: ProtoTCP, Mask: 0x10},
		{Name: "tcp.flags.urg", Type: TypeBool, Proto: ProtoTCP, Mask: 0x20},
		{Name: "tcp.flags.ecn", Type: TypeBool, Proto: ProtoTCP, Mask: 0x40},
		{Name: "tcp.flags.cwr", Type: TypeBool, Proto: ProtoTCP, Mask: 0x80},
		{Name: "udp.srcport", Type: TypeInt, Max: 65535, Proto: ProtoUDP},
		{Name: "udp.dstport", Type: TypeInt, Max: 65535, Proto: ProtoUDP},
		{Name: "icmp.type", Type: TypeInt, Max: 255},
		{Name: "icmp.code", Type: TypeInt, Max: 255},
	} {
		Fields[f.Name] = f
	}
	for b := range rawHeaders {
		Fields[b] = &Field{Name: b, Type: TypeBytes}
	}
	for alias, name := range Aliases {
		Fields[alias] = Fields[name]
	}
}

// FieldNames lists the fields in sorted order.
func FieldNames() []string {
	out := make([]string, 0, len(Fields))
	for n := range Fields {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Suggest returns the closest candidate within an edit distance of
// max(2, len/3), or "".
func Suggest(name string, candidates []string) string {
	best, bestD := "", max(2, len(name)/3)+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
