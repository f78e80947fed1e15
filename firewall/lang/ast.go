package lang

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Pos is a position in the expression text (1-based line and column).
type Pos struct {
	Offset, Line, Col int
}

func (p Pos) String() string { return fmt.Sprintf("%d:%d", p.Line, p.Col) }

// Error is a parse or type error at a position.
type Error struct {
	Pos Pos
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Expr is a typed boolean expression.
type Expr interface {
	Pos() Pos
	String() string
}

// And, Or and Not combine expressions.
type (
	And struct {
		L, R Expr
		P    Pos
	}
	Or struct {
		L, R Expr
		P    Pos
	}
	Not struct {
		X Expr
		P Pos
	}
	// Xor is true when exactly one side is.
	Xor struct {
		L, R Expr
		P    Pos
	}
)

// Const is true or false, written or the result of folding a condition
// that is constant on this server (cf.colo.name).
type Const struct {
	Val bool
	P   Pos
}

// Op is a comparison operator.
type Op int

// Comparison operators.
const (
	OpEq Op = iota
	OpNe
	OpLt
	OpLe
	OpGt
	OpGe
)

func (o Op) String() string { return [...]string{"==", "!=", "<", "<=", ">", ">="}[o] }

// Negate returns the operator of the negated comparison.
func (o Op) Negate() Op { return [...]Op{OpNe, OpEq, OpGe, OpGt, OpLe, OpLt}[o] }

// Cmp compares a field with one value.
type Cmp struct {
	Field *Field
	Op    Op
	Val   Value
	P     Pos
}

// In tests membership in a literal set or a named list ($name).
type In struct {
	Field *Field
	Set   []Value
	List  string // set when the right-hand side is $List
	P     Pos
}

// Flag is a boolean field used as a condition.
type Flag struct {
	Field *Field
	P     Pos
}

// Payload compares bytes after the transport header (UDP: 8 bytes, TCP:
// the data offset, ICMP: 8 bytes, other protocols: after the IP header):
// payload[Off:Len] & Mask == Value (!= when Neg). Both compilers
// support it (the firewall as nft payload expressions).
type Payload struct {
	Off, Len    int
	Mask, Value []byte
	Neg         bool
	P           Pos
}

// Kind is a value's kind.
type Kind int

// Value kinds.
const (
	KindInt       Kind = iota // Int
	KindIntRange              // Lo..Hi
	KindPrefix                // Prefix (a bare address is a /32 or /128)
	KindAddrRange             // AddrLo..AddrHi
	KindString                // Str (quoted in the source)
)

// Value is a literal.
type Value struct {
	Kind           Kind
	Int, Lo, Hi    uint64
	Prefix         netip.Prefix
	AddrLo, AddrHi netip.Addr
	Str            string
	P              Pos
}

func (v Value) String() string {
	switch v.Kind {
	case KindInt:
		return fmt.Sprint(v.Int)
	case KindIntRange:
		return fmt.Sprintf("%d..%d", v.Lo, v.Hi)
	case KindString:
		return strconv.Quote(v.Str)
	case KindPrefix:
		if v.Prefix.IsSingleIP() {
			return v.Prefix.Addr().String()
		}
		return v.Prefix.String()
	default:
		return v.AddrLo.String() + ".." + v.AddrHi.String()
	}
}

// Is4 and Is6 tell an address value's family.
func (v Value) Is4() bool {
	return (v.Kind == KindPrefix && v.Prefix.Addr().Is4()) || (v.Kind == KindAddrRange && v.AddrLo.Is4())
}

func (e *And) Pos() Pos     { return e.P }
func (e *Or) Pos() Pos      { return e.P }
func (e *Not) Pos() Pos     { return e.P }
func (e *Cmp) Pos() Pos     { return e.P }
func (e *In) Pos() Pos      { return e.P }
func (e *Flag) Pos() Pos    { return e.P }
func (e *Payload) Pos() Pos { return e.P }
func (e *Xor) Pos() Pos     { return e.P }
func (e *Const) Pos() Pos   { return e.P }

func (e *Xor) String() string { return "(" + e.L.String() + " xor " + e.R.String() + ")" }
func (e *Const) String() string {
	if e.Val {
		return "true"
	}
	return "false"
}

func (e *Payload) String() string {
	op := "=="
	if e.Neg {
		op = "!="
	}
	return fmt.Sprintf("payload[%d:%d] & 0x%x %s 0x%x", e.Off, e.Len, e.Mask, op, e.Value)
}

func (e *And) String() string { return "(" + e.L.String() + " and " + e.R.String() + ")" }
func (e *Or) String() string  { return "(" + e.L.String() + " or " + e.R.String() + ")" }
func (e *Not) String() string { return "not " + e.X.String() }
func (e *Cmp) String() string { return e.Field.Name + " " + e.Op.String() + " " + e.Val.String() }
func (e *Flag) String() string {
	return e.Field.Name
}
func (e *In) String() string {
	if e.List != "" {
		return e.Field.Name + " in $" + e.List
	}
	vs := make([]string, len(e.Set))
	for i, v := range e.Set {
		vs[i] = v.String()
	}
	return e.Field.Name + " in {" + strings.Join(vs, ", ") + "}"
}

// Lists returns the named lists an expression refers to, in order of first use.
func Lists(e Expr) []string {
	var out []string
	seen := map[string]bool{}
	Walk(e, func(x Expr) {
		if in, ok := x.(*In); ok && in.List != "" && !seen[in.List] {
			seen[in.List] = true
			out = append(out, in.List)
		}
	})
	return out
}

// ListRefs returns each reference to a named list with its position.
func ListRefs(e Expr) []*In {
	var out []*In
	Walk(e, func(x Expr) {
		if in, ok := x.(*In); ok && in.List != "" {
			out = append(out, in)
		}
	})
	return out
}

// Walk calls f for every node, parents first.
func Walk(e Expr, f func(Expr)) {
	f(e)
	switch x := e.(type) {
	case *And:
		Walk(x.L, f)
		Walk(x.R, f)
	case *Or:
		Walk(x.L, f)
		Walk(x.R, f)
	case *Xor:
		Walk(x.L, f)
		Walk(x.R, f)
	case *Not:
		Walk(x.X, f)
	}
}

// MapAtoms rebuilds e with f applied to every node that is not a
// connective (and, or, xor, not): the one walk for rewrites that replace
// conditions and keep the structure (site folding, implied protocols,
// geo and shared-list resolution).
func MapAtoms(e Expr, f func(Expr) Expr) Expr {
	switch x := e.(type) {
	case *And:
		return &And{L: MapAtoms(x.L, f), R: MapAtoms(x.R, f), P: x.P}
	case *Or:
		return &Or{L: MapAtoms(x.L, f), R: MapAtoms(x.R, f), P: x.P}
	case *Xor:
		return &Xor{L: MapAtoms(x.L, f), R: MapAtoms(x.R, f), P: x.P}
	case *Not:
		return &Not{X: MapAtoms(x.X, f), P: x.P}
	}
	return f(e)
}
