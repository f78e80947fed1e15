package firewall

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/nftset"
)

// Family of an emitted nft rule: 0 matches both.
type family byte

const (
	famAny family = 0
	fam4   family = 4
	fam6   family = 6
)

// nftRule is one emitted rule before it is bound to a connection.
type nftRule struct {
	fam  family
	lits []lang.Literal
}

// expand turns a compiled rule's alternatives into nft rules, splitting by
// address family where a literal is family-specific and dropping
// alternatives that cannot match.
func expand(r fwspec.CompiledRule) []nftRule {
	var out []nftRule
	for _, alt := range r.Alts {
		specific := false
		for _, l := range alt {
			if familySpecific(l.Atom) {
				specific = true
			}
		}
		if !specific {
			out = append(out, nftRule{fam: famAny, lits: alt})
			continue
		}
		for _, f := range []family{fam4, fam6} {
			if lits, ok := forFamily(alt, f); ok {
				out = append(out, nftRule{fam: f, lits: lits})
			}
		}
	}
	return out
}

func familySpecific(e lang.Expr) bool {
	switch x := e.(type) {
	case *lang.Cmp:
		return x.Field.Type == lang.TypeIP || x.Field.Name == "ip.version" || x.Field.Name == "ip.ttl"
	case *lang.In:
		return x.Field.Type == lang.TypeIP || x.Field.Name == "ip.version" || x.Field.Name == "ip.ttl"
	}
	return false
}

// forFamily simplifies a conjunction for one family: literals that are
// constant for it are dropped (true) or kill the alternative (false).
func forFamily(alt []lang.Literal, f family) ([]lang.Literal, bool) {
	var out []lang.Literal
	for _, l := range alt {
		switch x := l.Atom.(type) {
		case *lang.Cmp:
			if x.Field.Name == "ip.version" {
				if cmpInt(uint64(f), x.Op, x.Val.Int) != l.Neg {
					continue
				}
				return nil, false
			}
			if x.Field.Type == lang.TypeIP && x.Val.Is4() != (f == fam4) {
				// An address of the other family: == is false, != true.
				if (x.Op == lang.OpNe) != l.Neg {
					continue
				}
				return nil, false
			}
		case *lang.In:
			if x.Field.Name == "ip.version" {
				if inInts(uint64(f), x.Set) != l.Neg {
					continue
				}
				return nil, false
			}
			if x.Field.Type == lang.TypeIP && x.List == "" {
				var keep []lang.Value
				for _, v := range x.Set {
					if v.Is4() == (f == fam4) {
						keep = append(keep, v)
					}
				}
				if len(keep) == 0 {
					if l.Neg {
						continue
					}
					return nil, false
				}
				l = lang.Literal{Atom: &lang.In{Field: x.Field, Set: keep, P: x.P}, Neg: l.Neg}
			}
		}
		out = append(out, l)
	}
	return out, true
}

func cmpInt(a uint64, op lang.Op, b uint64) bool {
	switch op {
	case lang.OpEq:
		return a == b
	case lang.OpNe:
		return a != b
	case lang.OpLt:
		return a < b
	case lang.OpLe:
		return a <= b
	case lang.OpGt:
		return a > b
	}
	return a >= b
}

func inInts(a uint64, set []lang.Value) bool {
	for _, v := range set {
		if v.Kind == lang.KindInt && v.Int == a || v.Kind == lang.KindIntRange && a >= v.Lo && a <= v.Hi {
			return true
		}
	}
	return false
}

// A rule's tag identifies its compiled form; it is stored in the nft
// rule's userdata so that an unchanged rule set is recognised without
// comparing expressions. ruleHash is the part of a rule's tags its
// alternatives share (layout computes it once per rule, not once per
// alternative and sub-chain).
func ruleHash(r fwspec.CompiledRule, lists map[string]listSet) string {
	// The alternatives are hashed too: the same source compiles
	// differently on another site (cf.colo.name) or after a language
	// change; and so is the set of each list a rule uses, whose kind
	// changes the lookup.
	h := sha256.New()
	for _, s := range []string{r.ID, string(r.Action), r.Source} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	for _, a := range r.Alts {
		for _, l := range a {
			h.Write([]byte(l.String()))
			h.Write([]byte{0})
			if x, ok := l.Atom.(*lang.In); ok && x.List != "" && lists != nil {
				for _, f := range []family{fam4, fam6} {
					if ls, ok := lists[listSetName(x.List, f)]; ok {
						h.Write([]byte(ls.name))
						h.Write([]byte{0})
					}
				}
			}
		}
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func ruleTagOf(id string, i int, hash string) string {
	return tagPrefix + id + "#" + strconv.Itoa(i) + ":" + hash
}

const tagPrefix = "nfhost-fw-v1:"

// builder binds literals to nft expressions for one batch.
type builder struct {
	conn  *nftables.Conn
	table *nftables.Table
	anon  int
	// sets, when not nil, receives every anonymous set's elements (the
	// differential tests interpret the rules).
	sets map[uint32][]nftables.SetElement // by set ID
	// lists: the set of each named list and family, by listSetName (absent:
	// an interval set of that name).
	lists map[string]listSet
}

func listSetName(list string, f family) string { return fmt.Sprintf("l%d_%s", f, list) }

// listSet is the nft set a named list's prefixes of one family go into.
// Prefixes all of one length are a hash set of their network addresses,
// looked up with the packet's address masked to that length: one element
// per prefix, where an interval set needs two, so the kernel's commit
// (about 2 µs an element, whatever the set type) takes half as long and
// the lookup is a hash probe instead of a tree walk. Any other list is an
// interval set. The kind is in the name (l4h24_<list> against l4_<list>),
// so a list that changes kind is a new set, and the rules that use it
// change tags and are rewritten in the same batch as the document edit
// that changed it. Only a tenant's own lists take a kind from their
// content: shared, country and ASN lists (names starting with "_") change
// under every tenant that uses them without a rule changing, so they
// stay interval sets whatever they hold.
type listSet struct {
	name string
	bits int // the prefixes' length; -1: an interval set
}

func listSetOf(list string, f family, ps []netip.Prefix) listSet {
	bits := -1
	if strings.HasPrefix(list, "_") {
		ps = nil
	}
	for i, p := range ps {
		if i == 0 {
			bits = p.Bits()
		} else if p.Bits() != bits {
			bits = -1
			break
		}
	}
	if bits < 0 {
		return listSet{listSetName(list, f), -1}
	}
	return listSet{fmt.Sprintf("l%dh%d_%s", f, bits, list), bits}
}

// mask is the bitwise mask of a prefix length over n bytes.
func mask(bits, n int) []byte {
	m := make([]byte, n)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

func counterName(id string) string { return "c_" + id }

// exprs compiles one nft rule's match part (register 1 throughout). fam
// is the family of the chain it goes into; a family-specific rule carries
// its own nfproto test only when placed in a family-neutral chain. proto
// is the chain's L4 protocol (-1: any other), which says where a
// payload[...] comparison's bytes start.
func (b *builder) exprs(r nftRule, fam family, proto int) ([]expr.Any, error) {
	var out []expr.Any
	switch r.fam {
	case fam4:
		out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
	case fam6:
		out = append(out, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}})
	}
	if fam == famAny {
		fam = r.fam
	}
	for _, l := range r.lits {
		e, err := b.literal(l, fam, proto)
		if err != nil {
			return nil, err
		}
		out = append(out, e...)
	}
	return out, nil
}

// load returns the expressions that put field f into register 1 and the
// width of the value.
func load(f *lang.Field, fam family) ([]expr.Any, int) {
	nh := func(off, l uint32) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l}}
	}
	th := func(off, l uint32) []expr.Any {
		return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: l}}
	}
	switch f.Name {
	case "ip.src":
		if fam == fam4 {
			return nh(12, 4), 4
		}
		return nh(8, 16), 16
	case "ip.dst":
		if fam == fam4 {
			return nh(16, 4), 4
		}
		return nh(24, 16), 16
	case "ip.proto":
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}}, 1
	case "ip.len":
		// skb length at the IP layer, converted to network byte order so
		// that cmp's bytewise order is numeric order.
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyLEN, Register: 1},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 4, Size: 4}}, 4
	case "ip.ttl":
		if fam == fam4 {
			return nh(8, 1), 1
		}
		return nh(7, 1), 1
	case "tcp.srcport", "udp.srcport":
		return th(0, 2), 2
	case "tcp.dstport", "udp.dstport":
		return th(2, 2), 2
	case "tcp.flags":
		return th(13, 1), 1
	case "icmp.type":
		return th(0, 1), 1
	case "icmp.code":
		return th(1, 1), 1
	}
	if f.Type == lang.TypeBool { // tcp.flags.*
		return th(13, 1), 1
	}
	return nil, 0
}

func beInt(v uint64, width int) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b[8-width:]
}

var cmpOps = map[lang.Op]expr.CmpOp{lang.OpEq: expr.CmpOpEq, lang.OpNe: expr.CmpOpNeq, lang.OpLt: expr.CmpOpLt,
	lang.OpLe: expr.CmpOpLte, lang.OpGt: expr.CmpOpGt, lang.OpGe: expr.CmpOpGte}

func (b *builder) literal(l lang.Literal, fam family, proto int) ([]expr.Any, error) {
	switch x := l.Atom.(type) {
	case *lang.Payload:
		return payloadExprs(x, l.Neg, proto), nil
	case *lang.Cmp:
		if x.Field.Slice != nil {
			ld, shift := sliceLoad(x.Field.Slice)
			op := x.Op
			if l.Neg {
				op = op.Negate()
			}
			return append(ld, &expr.Cmp{Op: cmpOps[op], Register: 1, Data: beInt(x.Val.Int<<shift, sliceBytes(x.Field.Slice))}), nil
		}
	case *lang.In:
		if x.Field.Slice != nil {
			ld, shift := sliceLoad(x.Field.Slice)
			shifted := *x
			shifted.Set = nil
			for _, v := range x.Set {
				v.Int, v.Lo, v.Hi = v.Int<<shift, v.Lo<<shift, v.Hi<<shift
				shifted.Set = append(shifted.Set, v)
			}
			set, err := b.anonSet(&shifted, fam, sliceBytes(x.Field.Slice))
			if err != nil {
				return nil, err
			}
			return append(ld, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: l.Neg}), nil
		}
	}
	switch x := l.Atom.(type) {
	case *lang.Flag:
		ld, _ := load(x.Field, fam)
		op := expr.CmpOpNeq
		if l.Neg {
			op = expr.CmpOpEq
		}
		return append(ld, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{x.Field.Mask}, Xor: []byte{0}},
			&expr.Cmp{Op: op, Register: 1, Data: []byte{0}}), nil
	case *lang.Cmp:
		ld, width := load(x.Field, fam)
		op := x.Op
		if l.Neg {
			op = op.Negate()
		}
		if x.Field.Type == lang.TypeIP {
			p := x.Val.Prefix
			data := p.Addr().AsSlice()
			if !p.IsSingleIP() {
				ld = append(ld, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(data)), Mask: mask(p.Bits(), len(data)), Xor: make([]byte, len(data))})
			}
			return append(ld, &expr.Cmp{Op: cmpOps[op], Register: 1, Data: data}), nil
		}
		return append(ld, &expr.Cmp{Op: cmpOps[op], Register: 1, Data: beInt(x.Val.Int, width)}), nil
	case *lang.In:
		ld, width := load(x.Field, fam)
		var name string
		var id uint32
		if x.List != "" {
			name = listSetName(x.List, fam)
			if ls, ok := b.lists[name]; ok {
				name = ls.name
				if ls.bits >= 0 && ls.bits < width*8 {
					ld = append(ld, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(width), Mask: mask(ls.bits, width), Xor: make([]byte, width)})
				}
			}
		} else {
			set, err := b.anonSet(x, fam, width)
			if err != nil {
				return nil, err
			}
			name, id = set.Name, set.ID
		}
		return append(ld, &expr.Lookup{SourceRegister: 1, SetName: name, SetID: id, Invert: l.Neg}), nil
	}
	return nil, fmt.Errorf("compile %s: unsupported condition", l)
}

// anonSet adds an anonymous interval set holding the literal's values.
func (b *builder) anonSet(x *lang.In, fam family, width int) (*nftables.Set, error) {
	b.anon++
	set := &nftables.Set{Table: b.table, Name: fmt.Sprintf("__set%d", b.anon), Anonymous: true, Constant: true, Interval: true}
	var elems []nftables.SetElement
	if x.Field.Type == lang.TypeIP {
		set.KeyType = nftables.TypeIPAddr
		if fam == fam6 {
			set.KeyType = nftables.TypeIP6Addr
		}
		var ps []netip.Prefix
		for _, v := range x.Set {
			if v.Kind == lang.KindPrefix {
				ps = append(ps, v.Prefix)
				continue
			}
			ps = append(ps, rangePrefixes(v.AddrLo, v.AddrHi)...)
		}
		for _, p := range fwspec.MergePrefixes(ps) {
			elems = append(elems, nftset.Elements(p, nil)...)
		}
	} else {
		set.KeyType = map[int]nftables.SetDatatype{1: nftables.TypeInetProto, 2: nftables.TypeInetService, 4: nftables.TypeInteger}[width]
		if x.Field.Slice != nil {
			// bit_slice: an integer of the slice's byte width.
			set.KeyType = nftables.TypeInteger
			set.KeyType.Bytes = uint32(width)
		}
		max := uint64(1)<<(8*width) - 1
		for _, iv := range mergeRanges(x.Set) {
			elems = append(elems, nftables.SetElement{Key: beInt(iv[0], width)})
			if iv[1] < max {
				elems = append(elems, nftables.SetElement{Key: beInt(iv[1]+1, width), IntervalEnd: true})
			} else {
				elems[len(elems)-1].IntervalOpen = true
			}
		}
	}
	if err := b.conn.AddSet(set, elems); err != nil {
		return nil, fmt.Errorf("add anonymous set: %w", err)
	}
	if b.sets != nil {
		b.sets[set.ID] = elems
	}
	return set, nil
}

// sliceBytes is how many bytes hold a bit slice.
func sliceBytes(s *lang.Slice) int { return (s.End+7)/8 - s.Start/8 }

// sliceLoad loads the bytes holding a bit slice and masks the slice's
// bits; shift is how far the slice's value sits from the low end, so a
// value v compares as v << shift (order and equality are preserved, the
// other bits being zero).
func sliceLoad(s *lang.Slice) ([]expr.Any, int) {
	n := sliceBytes(s)
	base := expr.PayloadBaseTransportHeader
	if s.Base == "ip" {
		base = expr.PayloadBaseNetworkHeader
	}
	first := s.Start / 8 * 8
	mask := make([]byte, n)
	for bit := s.Start; bit < s.End; bit++ {
		i := bit - first
		mask[i/8] |= 0x80 >> (i % 8)
	}
	shift := n*8 - (s.End - first)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: uint32(s.Start / 8), Len: uint32(n)},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: mask, Xor: make([]byte, n)},
	}, shift
}

// payloadExprs compiles payload[off:len] & mask == value for a chain of
// L4 protocol proto, with the DoS layer's definition of where the payload
// starts: TCP after the data offset (nft's inner header), UDP and ICMP 8
// bytes into the transport header, other protocols right after the IP
// header.
func payloadExprs(p *lang.Payload, neg bool, proto int) []expr.Any {
	base, off := expr.PayloadBaseTransportHeader, uint32(p.Off)
	switch proto {
	case unix.IPPROTO_TCP:
		base = expr.PayloadBase(unix.NFT_PAYLOAD_INNER_HEADER)
	case unix.IPPROTO_UDP, unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		off += 8
	}
	op := expr.CmpOpEq
	if p.Neg != neg {
		op = expr.CmpOpNeq
	}
	n := uint32(p.Len)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: p.Mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Value},
	}
}

// mergeRanges turns ints and ranges into sorted, disjoint, non-adjacent
// [lo, hi] pairs.
func mergeRanges(vs []lang.Value) [][2]uint64 {
	var rs [][2]uint64
	for _, v := range vs {
		if v.Kind == lang.KindInt {
			rs = append(rs, [2]uint64{v.Int, v.Int})
		} else {
			rs = append(rs, [2]uint64{v.Lo, v.Hi})
		}
	}
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j][0] < rs[j-1][0]; j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
	var out [][2]uint64
	for _, r := range rs {
		if n := len(out); n > 0 && r[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], r[1])
			continue
		}
		out = append(out, r)
	}
	return out
}

// rangePrefixes covers [lo, hi] with the fewest prefixes.
func rangePrefixes(lo, hi netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for lo.IsValid() && !hi.Less(lo) {
		bits := lo.BitLen()
		for bits > 0 {
			p := netip.PrefixFrom(lo, bits-1)
			if p.Masked().Addr() != lo || hi.Less(nftset.LastAddr(p)) {
				break
			}
			bits--
		}
		p := netip.PrefixFrom(lo, bits)
		out = append(out, p)
		lo = nftset.LastAddr(p).Next()
	}
	return out
}
