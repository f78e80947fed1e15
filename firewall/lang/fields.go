// Package lang is nfhost's rule expression language, in the style of
// Cloudflare's wirefilter: one parser and type checker producing a typed
// AST that two compilers consume (nftables in firewall/, XDP signatures in
// dos/).
//
//	tcp.dstport == 22 and not ip.src in $office
//	ip.proto == udp and udp.dstport in {53, 123, 1024..65535}
//	ip.src in {198.51.100.0/24, 2001:db8::/32} or tcp.flags.syn
//
// Operators: == != < <= > >= (also eq ne lt le gt ge), `in { ... }` with
// values, CIDRs and ranges (a..b), `in $list`, and/or/not (also && || !),
// parentheses. A boolean field stands alone as a condition. Errors carry a
// line:column position.
package lang

import "sort"

// Type is a field's value type.
type Type int

// Field types.
const (
	TypeInt  Type = iota // unsigned integer up to Field.Max
	TypeIP               // IPv4 or IPv6 address; compared with addresses, CIDRs and ranges
	TypeBool             // a flag, used bare
)

func (t Type) String() string {
	return [...]string{"integer", "IP address", "boolean"}[t]
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
}

// IP protocol numbers used by fields.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

var protoNames = map[string]uint64{
	"icmp": ProtoICMP, "igmp": 2, "ipip": 4, "tcp": ProtoTCP, "udp": ProtoUDP, "ipv6": 41,
	"gre": 47, "esp": 50, "ah": 51, "icmpv6": ProtoICMPv6, "sctp": 132,
}

// Fields is the field table. The DoS compiler supports a subset.
var Fields = map[string]*Field{}

func init() {
	for _, f := range []*Field{
		{Name: "ip.src", Type: TypeIP},
		{Name: "ip.dst", Type: TypeIP},
		{Name: "ip.proto", Type: TypeInt, Max: 255, Names: protoNames},
		{Name: "ip.len", Type: TypeInt, Max: 65535},
		{Name: "ip.ttl", Type: TypeInt, Max: 255},
		{Name: "ip.version", Type: TypeInt, Max: 6},
		{Name: "tcp.srcport", Type: TypeInt, Max: 65535, Proto: ProtoTCP},
		{Name: "tcp.dstport", Type: TypeInt, Max: 65535, Proto: ProtoTCP},
		{Name: "tcp.flags", Type: TypeInt, Max: 255, Proto: ProtoTCP},
		{Name: "tcp.flags.fin", Type: TypeBool, Proto: ProtoTCP, Mask: 0x01},
		{Name: "tcp.flags.syn", Type: TypeBool, Proto: ProtoTCP, Mask: 0x02},
		{Name: "tcp.flags.rst", Type: TypeBool, Proto: ProtoTCP, Mask: 0x04},
		{Name: "tcp.flags.psh", Type: TypeBool, Proto: ProtoTCP, Mask: 0x08},
		{Name: "tcp.flags.ack", Type: TypeBool, Proto: ProtoTCP, Mask: 0x10},
		{Name: "tcp.flags.urg", Type: TypeBool, Proto: ProtoTCP, Mask: 0x20},
		{Name: "udp.srcport", Type: TypeInt, Max: 65535, Proto: ProtoUDP},
		{Name: "udp.dstport", Type: TypeInt, Max: 65535, Proto: ProtoUDP},
		{Name: "icmp.type", Type: TypeInt, Max: 255},
		{Name: "icmp.code", Type: TypeInt, Max: 255},
	} {
		Fields[f.Name] = f
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
