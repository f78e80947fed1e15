package firewall

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/nftset"
)

// Rules of one shape become map lookups.
//
// A sub-chain's rules are a sequence of items in first-match order. An
// allow or block alternative whose only condition (besides the chain's
// own protocol) is one field compared with values, ranges or prefixes is
// keyed by that field. The largest group of items keyed by one field (A)
// and the largest of the rest (B) become verdict maps; the other items
// (S) stay rules. With a(k) the first A item whose values contain k:
//
//	sub-chain: A-field vmap { k: goto x_a }   (all A items)
//	           B-field vmap { k: goto y_b }   (all B items)
//	           S, in order
//	x_a:       B-field vmap { k: goto y_b }   (B items before a only)
//	           the S items before a, in order
//	           a: counter, verdict
//	y_b:       the S items before b, in order
//	           b: counter, verdict
//
// Every path evaluates each item at most once and in order, and stops at
// the first one that matches, so first-match order and per-rule counters
// are what the plain sequence gives; a packet matching no rule costs two
// lookups and the S items instead of every rule.

// mergeChainPrefix starts the names of the chains merging makes.
const mergeChainPrefix = "m_"

// minGroup is the smallest group worth a map.
const minGroup = 4

// bBlock is how many B members one shared block map holds (see bMap).
const bBlock = 8

// item is one entry of a sub-chain before merging.
type item struct {
	e       entry
	keyed   bool
	key     string      // the field (and family) the item is keyed by
	ivs     [][2][]byte // its values as inclusive big-endian ranges
	rule    fwspec.CompiledRule
	alt     int
	verdict expr.Any
}

// keyField describes how a key field is loaded and typed.
type keyField struct {
	f     *lang.Field
	width int
	typ   nftables.SetDatatype
}

// groupKey says whether an alternative (its literals as forChain left them
// for the chain of protocol proto) is a single keyed comparison and
// returns its field key and ranges.
func groupKey(lits []lang.Literal, fam family, proto int) (string, [][2][]byte, bool) {
	var one *lang.Literal
	for i := range lits {
		l := lits[i]
		// In a protocol's chain a positive ip.proto test left in is the
		// chain's own protocol, true there and kept only for nft list. In
		// the other-protocols chain it is a real test (ip.proto in {1, 58}
		// on IPv6: ICMP over IPv6 is not dispatched anywhere): an
		// alternative holding one is not a single comparison.
		if f := atomField(l.Atom); proto >= 0 && f != nil && f.Name == "ip.proto" && !l.Neg && !isNe(l.Atom) && len(lits) > 1 {
			continue
		}
		if one != nil {
			return "", nil, false
		}
		one = &lits[i]
	}
	if one == nil {
		return "", nil, false
	}
	f := atomField(one.Atom)
	if f == nil || f.Slice != nil || keyFieldOf(f, fam).width == 0 {
		return "", nil, false
	}
	kf := keyFieldOf(f, fam)
	var ivs [][2][]byte
	switch x := one.Atom.(type) {
	case *lang.Cmp:
		op := x.Op
		if one.Neg {
			op = op.Negate()
		}
		if f.Type == lang.TypeIP {
			if op != lang.OpEq || x.Val.Is4() != (fam == fam4) {
				return "", nil, false
			}
			ivs = append(ivs, [2][]byte{x.Val.Prefix.Masked().Addr().AsSlice(), nftset.LastAddr(x.Val.Prefix).AsSlice()})
			break
		}
		lo, hi, v := uint64(0), f.Max, x.Val.Int
		switch op {
		case lang.OpEq:
			lo, hi = v, v
		case lang.OpLt:
			if v == 0 {
				return "", nil, false
			}
			hi = v - 1
		case lang.OpLe:
			hi = v
		case lang.OpGt:
			if v >= f.Max {
				return "", nil, false
			}
			lo = v + 1
		case lang.OpGe:
			lo = v
		default:
			return "", nil, false
		}
		ivs = append(ivs, [2][]byte{beInt(lo, kf.width), beInt(hi, kf.width)})
	case *lang.In:
		if one.Neg || x.List != "" {
			return "", nil, false
		}
		for _, v := range x.Set {
			switch v.Kind {
			case lang.KindInt:
				ivs = append(ivs, [2][]byte{beInt(v.Int, kf.width), beInt(v.Int, kf.width)})
			case lang.KindIntRange:
				ivs = append(ivs, [2][]byte{beInt(v.Lo, kf.width), beInt(v.Hi, kf.width)})
			case lang.KindPrefix:
				if v.Is4() == (fam == fam4) {
					ivs = append(ivs, [2][]byte{v.Prefix.Masked().Addr().AsSlice(), nftset.LastAddr(v.Prefix).AsSlice()})
				}
			case lang.KindAddrRange:
				if v.Is4() == (fam == fam4) {
					ivs = append(ivs, [2][]byte{v.AddrLo.AsSlice(), v.AddrHi.AsSlice()})
				}
			}
		}
		if len(ivs) == 0 {
			return "", nil, false
		}
	default:
		return "", nil, false
	}
	return fmt.Sprintf("%s/%d", f.Name, fam), ivs, true
}

func keyFieldOf(f *lang.Field, fam family) keyField {
	switch f.Name {
	case "ip.src", "ip.dst":
		if fam == fam4 {
			return keyField{f, 4, nftables.TypeIPAddr}
		}
		return keyField{f, 16, nftables.TypeIP6Addr}
	case "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport":
		return keyField{f, 2, nftables.TypeInetService}
	case "ip.ttl", "icmp.type", "icmp.code", "tcp.flags":
		t := nftables.TypeInteger
		t.Bytes = 1
		return keyField{f, 1, t}
	}
	return keyField{}
}

// mergeChain turns a sub-chain's items into its entries and the chains the
// maps go to (see above); without a group worth a map, the items as they are.
func mergeChain(chain string, fam family, proto int, items []item) ([]entry, []chainLayout) {
	plain := func() []entry {
		out := make([]entry, len(items))
		for i, it := range items {
			out[i] = it.e
		}
		return out
	}
	groupOf := func(skip map[int]bool) (string, []int) {
		counts := map[string][]int{}
		for i, it := range items {
			if it.keyed && !skip[i] {
				counts[it.key] = append(counts[it.key], i)
			}
		}
		best, bestN := "", []int(nil)
		for k, idx := range counts {
			if len(idx) > len(bestN) || len(idx) == len(bestN) && k < best {
				best, bestN = k, idx
			}
		}
		if len(bestN) < minGroup {
			return "", nil
		}
		return best, bestN
	}
	keyA, a := groupOf(nil)
	if a == nil {
		return plain(), nil
	}
	inA := map[int]bool{}
	for _, i := range a {
		inA[i] = true
	}
	keyB, b := groupOf(inA)
	inB := map[int]bool{}
	for _, i := range b {
		inB[i] = true
	}
	var rest []int
	for i := range items {
		if !inA[i] && !inB[i] {
			rest = append(rest, i)
		}
	}
	// Copies of S items: bounded, or the maps cost more rules than they
	// save.
	copies := 0
	for _, g := range [][]int{a, b} {
		for _, i := range g {
			copies += sort.SearchInts(rest, i)
		}
	}
	if copies > 3*len(items)+256 {
		return plain(), nil
	}
	// Leftovers before every member come first in the sub-chain itself,
	// not in every member's chain.
	first := a[0]
	if len(b) > 0 {
		first = min(first, b[0])
	}
	var hoisted, after []int
	for _, i := range rest {
		if i < first {
			hoisted = append(hoisted, i)
		} else {
			after = append(after, i)
		}
	}
	name := func(i int) string {
		it := items[i]
		return fmt.Sprintf("%s%s_%s_%d", mergeChainPrefix, chain, it.rule.ID, it.alt)
	}
	before := func(limit int) []entry {
		var out []entry
		for _, i := range after {
			if i < limit {
				out = append(out, items[i].e)
			}
		}
		return out
	}
	var chains []chainLayout
	// memberChain is the chain a member's map value goes to: its own, or,
	// when it holds nothing but the member's counter and verdict, one
	// chain per rule alternative shared by every sub-chain.
	memberChain := func(i int, es []entry) string {
		it := items[i]
		if len(es) == 0 {
			n := fmt.Sprintf("%st_%s_%d", mergeChainPrefix, it.rule.ID, it.alt)
			chains = append(chains, chainLayout{name: n, entries: []entry{{it.e.tag + ">t",
				fixed(&expr.Objref{Type: counterType, Name: counterName(it.rule.ID)}, it.verdict)}}})
			return n
		}
		es = append(es, entry{it.e.tag + ">" + chain, fixed(&expr.Objref{Type: counterType, Name: counterName(it.rule.ID)}, it.verdict)})
		chains = append(chains, chainLayout{name: name(i), entries: es})
		return name(i)
	}
	var yNames = map[int]string{}
	for _, i := range b {
		yNames[i] = memberChain(i, before(i))
	}
	// bMap is the lookup of the B members before limit. b is in order,
	// so the members are a prefix of b. The prefix is cut into blocks of
	// bBlock members: each full block is a chain of its own holding its
	// map, shared by every prefix that covers it and entered by a jump
	// (a miss returns and the next block is looked at; a hit goes to the
	// member's chain, which ends in a verdict), and only the rest of the
	// prefix is a map of its own. A change of one B member then rewrites
	// its block's chain and the few prefixes that end inside that block,
	// not every chain whose prefix holds it. One entry list per prefix
	// length, built once however many A members share it.
	bMaps := map[int][]entry{}
	blocks := map[int]bool{}
	bMap := func(limit int) []entry {
		n := 0
		for n < len(b) && b[n] < limit {
			n++
		}
		if n == 0 {
			return nil
		}
		if es, ok := bMaps[n]; ok {
			return es
		}
		var es []entry
		full := n / bBlock
		for j := 0; j < full; j++ {
			bn := fmt.Sprintf("%sb_%s_%d", mergeChainPrefix, chain, j)
			if !blocks[j] {
				blocks[j] = true
				chains = append(chains, chainLayout{name: bn, entries: []entry{vmapEntry(keyB, fam, proto, items, b[j*bBlock:(j+1)*bBlock:(j+1)*bBlock], yNames)}})
			}
			es = append(es, entry{tagPrefix + "jump-" + bn, fixed(&expr.Verdict{Kind: expr.VerdictJump, Chain: bn})})
		}
		if full*bBlock < n {
			es = append(es, vmapEntry(keyB, fam, proto, items, b[full*bBlock:n:n], yNames))
		}
		bMaps[n] = es
		return es
	}
	var main []entry
	for _, i := range hoisted {
		main = append(main, items[i].e)
	}
	xNames := map[int]string{}
	for _, i := range a {
		es := slices.Clone(bMap(i))
		xNames[i] = memberChain(i, append(es, before(i)...))
	}
	main = append(main, vmapEntry(keyA, fam, proto, items, a, xNames))
	if len(b) > 0 {
		// Every packet of the sub-chain looks here: one map of all the
		// B members, not the blocks (one lookup instead of one per block).
		main = append(main, vmapEntry(keyB, fam, proto, items, b, yNames))
	}
	main = append(main, before(len(items))...)
	return main, chains
}

// vmapEntry is the rule looking the key field up in a map from the
// members' values to their chains; overlapping values go to the first
// member holding them.
func vmapEntry(key string, fam family, proto int, items []item, members []int, chains map[int]string) entry {
	f := lang.Fields[key[:len(key)-2]]
	kf := keyFieldOf(f, fam)
	// Elementary ranges: cut at every range start and end+1.
	var cuts [][]byte
	for _, i := range members {
		for _, iv := range items[i].ivs {
			cuts = append(cuts, iv[0])
			if next, ok := inc(iv[1]); ok {
				cuts = append(cuts, next)
			}
		}
	}
	sort.Slice(cuts, func(i, j int) bool { return bytes.Compare(cuts[i], cuts[j]) < 0 })
	cuts = compactBytes(cuts)
	type span struct {
		lo, end []byte // end: exclusive; nil: to the maximum
		to      string
	}
	// owner[k]: the chain of the first member whose values contain the
	// elementary range starting at cuts[k]. Members paint their ranges
	// last to first, so the first one's paint is what stays; each value
	// range covers a run of cuts found by binary search.
	owner := make([]string, len(cuts))
	for mi := len(members) - 1; mi >= 0; mi-- {
		i := members[mi]
		for _, iv := range items[i].ivs {
			k, _ := slices.BinarySearchFunc(cuts, iv[0], bytes.Compare)
			for ; k < len(cuts) && bytes.Compare(cuts[k], iv[1]) <= 0; k++ {
				owner[k] = chains[i]
			}
		}
	}
	var spans []span
	for k, lo := range cuts {
		var end []byte
		if k+1 < len(cuts) {
			end = cuts[k+1]
		}
		to := owner[k]
		if n := len(spans); n > 0 && spans[n-1].to == to && bytes.Equal(spans[n-1].end, lo) {
			spans[n-1].end = end // adjacent, same chain: one range
			continue
		}
		spans = append(spans, span{lo, end, to})
	}
	h := sha256.New()
	for _, sp := range spans {
		// "%x-%x:%s;" without fmt (this runs for every map on every apply)
		h.Write([]byte(hex.EncodeToString(sp.lo)))
		h.Write([]byte{'-'})
		h.Write([]byte(hex.EncodeToString(sp.end)))
		h.Write([]byte{':'})
		h.Write([]byte(sp.to))
		h.Write([]byte{';'})
	}
	// A map whose every range is one value (ports, host addresses, the
	// usual case) is a hash map: a hash probe per packet instead of a
	// tree walk. The kind is in the tag, so a chain written with the
	// other kind is rewritten.
	single := true
	for _, sp := range spans {
		if sp.to == "" {
			continue
		}
		if next, ok := inc(sp.lo); sp.end == nil || !ok || !bytes.Equal(next, sp.end) {
			single = false
			break
		}
	}
	kind := "i"
	if single {
		kind = "h"
	}
	tag := fmt.Sprintf("%smap-%s:%s%s", tagPrefix, key, kind, hex.EncodeToString(h.Sum(nil)[:8]))
	return entry{tag, func(b *builder) ([]expr.Any, error) {
		var elems []nftables.SetElement
		for _, sp := range spans {
			if sp.to == "" {
				continue // a gap: the previous range's end element closes it
			}
			elems = append(elems, nftables.SetElement{Key: sp.lo, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: sp.to}})
			switch {
			case single:
			case sp.end != nil:
				elems = append(elems, nftables.SetElement{Key: sp.end, IntervalEnd: true})
			default:
				elems[len(elems)-1].IntervalOpen = true
			}
		}
		set := &nftables.Set{Table: b.table, Name: "__map%d", Anonymous: true, Constant: true, Interval: !single,
			IsMap: true, KeyType: kf.typ, DataType: nftables.TypeVerdict}
		if err := b.conn.AddSet(set, elems); err != nil {
			return nil, fmt.Errorf("add verdict map: %w", err)
		}
		if b.sets != nil {
			b.sets[set.ID] = elems
		}
		// The family and protocol tests are redundant in the chain but let
		// `nft list` print "ip saddr" and "tcp dport" (and nft -f read it).
		nfproto := byte(unix.NFPROTO_IPV4)
		if fam == fam6 {
			nfproto = unix.NFPROTO_IPV6
		}
		out := []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}}}
		if proto >= 0 {
			out = append(out, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(proto)}})
		}
		ld, _ := load(f, fam)
		out = append(out, ld...)
		return append(out, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, IsDestRegSet: true, DestRegister: 0}), nil
	}}
}

// inc returns b+1 as a big-endian number of the same width; false on
// overflow.
func inc(b []byte) ([]byte, bool) {
	out := bytes.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

func compactBytes(bs [][]byte) [][]byte {
	out := bs[:0]
	for _, b := range bs {
		if len(out) == 0 || !bytes.Equal(out[len(out)-1], b) {
			out = append(out, b)
		}
	}
	return out
}
