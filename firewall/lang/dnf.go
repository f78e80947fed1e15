package lang

import (
	"fmt"
	"slices"
	"strings"
)

// Literal is an atomic condition (*Cmp, *In or *Flag), possibly negated.
type Literal struct {
	Atom Expr
	Neg  bool
}

func (l Literal) String() string {
	if l.Neg {
		return "not " + l.Atom.String()
	}
	return l.Atom.String()
}

// ErrTooManyAlternatives is returned by DNF past its cap.
type ErrTooManyAlternatives struct{ N, Max int }

func (e *ErrTooManyAlternatives) Error() string {
	return fmt.Sprintf("expression expands to more than %d alternatives (or-ed conditions multiply under and); use sets (in {...}) or split it into several rules", e.Max)
}

// DNF rewrites e as a disjunction of conjunctions of literals, pushing
// negations inward (De Morgan). Fields that imply an L4 protocol are made
// explicit first (tcp.dstport == 22 becomes ip.proto == tcp and
// tcp.dstport == 22), so that a negated port test also matches packets of
// other protocols, as the expression says. More than max conjunctions is
// an error.
func DNF(e Expr, max int) ([][]Literal, error) {
	alts, err := dnf(explicitProto(e), false, max)
	if err != nil {
		return nil, err
	}
	out := alts[:0]
	seen := map[string]bool{}
	for _, c := range alts {
		c, ok := simplify(c)
		if !ok {
			continue
		}
		var key strings.Builder
		for _, l := range c {
			key.WriteString(l.String())
			key.WriteByte(0)
		}
		if seen[key.String()] {
			continue
		}
		seen[key.String()] = true
		out = append(out, c)
	}
	return out, nil
}

// simplify removes duplicate literals from a conjunction and reports false
// when it contradicts itself on an integer field's equality (x == a and
// x != a, or x == a and x == b), as the implied protocol tests often do.
func simplify(c []Literal) ([]Literal, bool) {
	eq := map[string]uint64{}
	ne := map[string]map[uint64]bool{}
	seen := map[string]bool{}
	var out []Literal
	for _, l := range c {
		k := l.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, l)
		x, ok := l.Atom.(*Cmp)
		if !ok || x.Field.Type != TypeInt || (x.Op != OpEq && x.Op != OpNe) {
			continue
		}
		isEq := (x.Op == OpEq) != l.Neg
		name := x.Field.Name
		if isEq {
			if v, ok := eq[name]; ok && v != x.Val.Int {
				return nil, false
			}
			eq[name] = x.Val.Int
		} else {
			if ne[name] == nil {
				ne[name] = map[uint64]bool{}
			}
			ne[name][x.Val.Int] = true
		}
		if v, ok := eq[name]; ok && ne[name][v] {
			return nil, false
		}
	}
	// With the protocol fixed, a test of another protocol's field is
	// false, and its negation true: drop it rather than let it read the
	// wrong header.
	if p, ok := eq["ip.proto"]; ok {
		kept := out[:0]
		for _, l := range out {
			f := literalField(l.Atom)
			if x, ok := l.Atom.(*Cmp); ok && f.Name == "ip.proto" && (x.Op == OpEq) == l.Neg && x.Val.Int != p {
				continue // ip.proto != q, q != p
			}
			if protos := impliedProto(f); protos != nil && !slices.Contains(protos, p) {
				if !l.Neg {
					return nil, false
				}
				continue
			}
			kept = append(kept, l)
		}
		out = kept
	}
	return out, true
}

// literalField is the field an atom tests (nil for payload and constants).
func literalField(e Expr) *Field {
	switch x := e.(type) {
	case *Cmp:
		return x.Field
	case *In:
		return x.Field
	case *Flag:
		return x.Field
	}
	return &Field{}
}

// explicitProto adds to every condition on a field of one L4 protocol the
// protocol test that Cloudflare's Unified Routing semantics imply: a
// comparison on a field the packet lacks is false, and f != v is not
// (f == v), so it holds for packets of any other protocol.
func explicitProto(e Expr) Expr { return MapAtoms(e, explicitProtoAtom) }

func explicitProtoAtom(e Expr) Expr {
	if x, ok := e.(*Cmp); ok && x.Op == OpNe && impliedProto(x.Field) != nil {
		eq := *x
		eq.Op = OpEq
		return &Not{X: explicitProtoAtom(&eq), P: x.P}
	}
	var f *Field
	switch x := e.(type) {
	case *Cmp:
		f = x.Field
	case *In:
		f = x.Field
	case *Flag:
		f = x.Field
	default:
		return e
	}
	if protos := impliedProto(f); protos != nil {
		var test Expr
		proto := Fields["ip.proto"]
		if len(protos) == 1 {
			test = &Cmp{Field: proto, Op: OpEq, Val: Value{Kind: KindInt, Int: protos[0], P: e.Pos()}, P: e.Pos()}
		} else {
			var vs []Value
			for _, n := range protos {
				vs = append(vs, Value{Kind: KindInt, Int: n, P: e.Pos()})
			}
			test = &In{Field: proto, Set: vs, P: e.Pos()}
		}
		return &And{L: test, R: e, P: e.Pos()}
	}
	return e
}

// ImpliedProto returns the L4 protocols a field exists in (nil: all).
func ImpliedProto(f *Field) []uint64 { return impliedProto(f) }

func impliedProto(f *Field) []uint64 {
	switch {
	case f.Proto != 0:
		return []uint64{uint64(f.Proto)}
	case f.Name == "icmp.type" || f.Name == "icmp.code" || f.Slice != nil && f.Slice.Base == "icmp":
		return []uint64{ProtoICMP, ProtoICMPv6}
	}
	return nil
}

func dnf(e Expr, neg bool, max int) ([][]Literal, error) {
	switch x := e.(type) {
	case *Const:
		if x.Val != neg {
			return [][]Literal{{}}, nil // one alternative without conditions
		}
		return nil, nil
	case *Xor:
		// l xor r = (l and not r) or (not l and r)
		return dnf(&Or{L: &And{L: x.L, R: &Not{X: x.R, P: x.P}, P: x.P}, R: &And{L: &Not{X: x.L, P: x.P}, R: x.R, P: x.P}, P: x.P}, neg, max)
	case *Not:
		return dnf(x.X, !neg, max)
	case *And, *Or:
		var l, r Expr
		isAnd := false
		if a, ok := x.(*And); ok {
			l, r, isAnd = a.L, a.R, true
		} else {
			o := x.(*Or)
			l, r = o.L, o.R
		}
		if neg {
			isAnd = !isAnd // De Morgan
		}
		dl, err := dnf(l, neg, max)
		if err != nil {
			return nil, err
		}
		dr, err := dnf(r, neg, max)
		if err != nil {
			return nil, err
		}
		if !isAnd {
			if len(dl)+len(dr) > max {
				return nil, &ErrTooManyAlternatives{N: len(dl) + len(dr), Max: max}
			}
			return append(dl, dr...), nil
		}
		if len(dl)*len(dr) > max {
			return nil, &ErrTooManyAlternatives{N: len(dl) * len(dr), Max: max}
		}
		var out [][]Literal
		for _, a := range dl {
			for _, b := range dr {
				c := make([]Literal, 0, len(a)+len(b))
				out = append(out, append(append(c, a...), b...))
			}
		}
		return out, nil
	}
	return [][]Literal{{{Atom: e, Neg: neg}}}, nil
}
