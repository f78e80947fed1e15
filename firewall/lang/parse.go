package lang

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxLen bounds an expression's length; MaxDepth its nesting.
const (
	MaxLen   = 16384
	MaxDepth = 64
	MaxSet   = 4096 // literal values in one { ... }
)

type tokKind int

const (
	tEOF tokKind = iota
	tWord
	tList // $name
	tOp   // == != < <= > >=
	tAnd
	tOr
	tNot
	tIn
	tLParen
	tRParen
	tLBrace
	tRBrace
	tComma
	tLBracket
	tRBracket
	tAmp
	tXor
	tString // "..." (text without the quotes)
)

type token struct {
	kind tokKind
	text string
	pos  Pos
}

type lexer struct {
	src  string
	off  int
	line int
	col  int
}

func (l *lexer) pos() Pos { return Pos{Offset: l.off, Line: l.line, Col: l.col} }

func (l *lexer) advance(n int) {
	for i := 0; i < n && l.off < len(l.src); i++ {
		if l.src[l.off] == '\n' {
			l.line++
			l.col = 1
		} else {
			l.col++
		}
		l.off++
	}
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '/' || c == '-'
}

func (l *lexer) next() (token, error) {
	for l.off < len(l.src) && strings.IndexByte(" \t\r\n", l.src[l.off]) >= 0 {
		l.advance(1)
	}
	p := l.pos()
	if l.off >= len(l.src) {
		return token{kind: tEOF, pos: p}, nil
	}
	rest := l.src[l.off:]
	for _, op := range []struct {
		s string
		k tokKind
	}{{"==", tOp}, {"!=", tOp}, {"<=", tOp}, {">=", tOp}, {"&&", tAnd}, {"||", tOr}, {"^^", tXor}, {"<", tOp}, {">", tOp},
		{"!", tNot}, {"&", tAmp}, {"[", tLBracket}, {"]", tRBracket}, {"(", tLParen}, {")", tRParen}, {"{", tLBrace}, {"}", tRBrace}, {",", tComma}} {
		if strings.HasPrefix(rest, op.s) {
			l.advance(len(op.s))
			return token{kind: op.k, text: op.s, pos: p}, nil
		}
	}
	// Strings: "..." with \" and \\ escapes; typographic quotes too, as
	// they come in text pasted from documents.
	for _, q := range [][2]string{{`"`, `"`}, {"\u201c", "\u201d"}} {
		if !strings.HasPrefix(rest, q[0]) {
			continue
		}
		var b strings.Builder
		i := len(q[0])
		for {
			if i >= len(rest) {
				return token{}, &Error{Pos: p, Msg: "unterminated string"}
			}
			if strings.HasPrefix(rest[i:], q[1]) {
				i += len(q[1])
				break
			}
			if rest[i] == '\\' && i+1 < len(rest) && (rest[i+1] == '"' || rest[i+1] == '\\') {
				i++
			}
			if rest[i] == '\n' {
				return token{}, &Error{Pos: p, Msg: "unterminated string"}
			}
			b.WriteByte(rest[i])
			i++
		}
		l.advance(i)
		return token{kind: tString, text: b.String(), pos: p}, nil
	}
	if rest[0] == '$' {
		n := 1
		for n < len(rest) && (isWordByte(rest[n]) && rest[n] != ':' && rest[n] != '/') {
			n++
		}
		if n == 1 {
			return token{}, &Error{Pos: p, Msg: "expected a list name after $"}
		}
		l.advance(n)
		return token{kind: tList, text: rest[1:n], pos: p}, nil
	}
	if isWordByte(rest[0]) {
		n := 0
		for n < len(rest) && isWordByte(rest[n]) {
			n++
		}
		w := rest[:n]
		l.advance(n)
		switch strings.ToLower(w) {
		case "and":
			return token{kind: tAnd, text: w, pos: p}, nil
		case "or":
			return token{kind: tOr, text: w, pos: p}, nil
		case "xor":
			return token{kind: tXor, text: w, pos: p}, nil
		case "not":
			return token{kind: tNot, text: w, pos: p}, nil
		case "in":
			return token{kind: tIn, text: w, pos: p}, nil
		case "eq", "ne", "lt", "le", "gt", "ge":
			return token{kind: tOp, text: map[string]string{"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[strings.ToLower(w)], pos: p}, nil
		}
		return token{kind: tWord, text: w, pos: p}, nil
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return token{}, &Error{Pos: p, Msg: fmt.Sprintf("unexpected character %q", r)}
}

type parser struct {
	lex   lexer
	tok   token
	depth int
}

// Parse parses and type-checks an expression.
func Parse(src string) (Expr, error) {
	if len(src) > MaxLen {
		return nil, &Error{Pos: Pos{Line: 1, Col: 1}, Msg: fmt.Sprintf("expression longer than %d bytes", MaxLen)}
	}
	p := &parser{lex: lexer{src: src, line: 1, col: 1}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tEOF {
		return nil, &Error{Pos: p.tok.pos, Msg: "empty expression"}
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.unexpected("and, or, xor or the end of the expression")
	}
	return e, nil
}

func (p *parser) advance() error {
	t, err := p.lex.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) unexpected(want string) error {
	got := fmt.Sprintf("%q", p.tok.text)
	if p.tok.kind == tEOF {
		got = "end of expression"
	}
	return &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("expected %s, found %s", want, got)}
}

func (p *parser) or() (Expr, error) {
	l, err := p.xor()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tOr {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.xor()
		if err != nil {
			return nil, err
		}
		l = &Or{L: l, R: r, P: pos}
	}
	return l, nil
}

// xor binds tighter than or and looser than and, as in Cloudflare's
// Rules language.
func (p *parser) xor() (Expr, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tXor {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = &Xor{L: l, R: r, P: pos}
	}
	return l, nil
}

func (p *parser) and() (Expr, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tAnd {
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &And{L: l, R: r, P: pos}
	}
	return l, nil
}

func (p *parser) unary() (Expr, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > MaxDepth {
		return nil, &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("expression nested deeper than %d", MaxDepth)}
	}
	switch p.tok.kind {
	case tNot:
		pos := p.tok.pos
		if err := p.advance(); err != nil {
			return nil, err
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &Not{X: x, P: pos}, nil
	case tLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.unexpected(`")"`)
		}
		return e, p.advance()
	case tWord:
		switch p.tok.text {
		case "true", "false":
			c := &Const{Val: p.tok.text == "true", P: p.tok.pos}
			return c, p.advance()
		}
		return p.condition()
	}
	return nil, p.unexpected("a field, not or (")
}

func (p *parser) condition() (Expr, error) {
	ft := p.tok
	if ft.text == "payload" {
		return p.payload()
	}
	if ft.text == "bit_slice" {
		f, err := p.bitSlice()
		if err != nil {
			return nil, err
		}
		return p.comparison(f, ft)
	}
	f, ok := Fields[ft.text]
	if !ok {
		msg := fmt.Sprintf("unknown field %q", ft.text)
		if s := Suggest(ft.text, FieldNames()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return nil, &Error{Pos: ft.pos, Msg: msg}
	}
	if f.Type == TypeBytes {
		return nil, &Error{Pos: ft.pos, Msg: fmt.Sprintf("%s is the raw header: compare bits of it with bit_slice(%s, start, end)", f.Name, f.Name)}
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return p.comparison(f, ft)
}

// MaxSliceOffset and MaxSliceBits bound bit_slice, as Cloudflare does.
const (
	MaxSliceOffset = 2040
	MaxSliceBits   = 32
)

// bitSlice parses bit_slice(base, start, end): bits [start, end) of a raw
// header, end exclusive, as Cloudflare documents the arguments
// (offset_start, offset_end; the slice end - start at most 32 bits).
func (p *parser) bitSlice() (*Field, error) {
	start := p.tok.pos
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tLParen {
		return nil, p.unexpected(`"(" after bit_slice (bit_slice(header, start, end))`)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	bt := p.tok
	proto, ok := rawHeaders[bt.text]
	if bt.kind != tWord || !ok {
		return nil, &Error{Pos: bt.pos, Msg: fmt.Sprintf("bit_slice reads ip, tcp, udp or icmp, not %q", bt.text)}
	}
	var nums [2]int
	var numPos [2]Pos
	for i := range nums {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind != tComma {
			return nil, p.unexpected(`","`)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := strconv.ParseUint(p.tok.text, 0, 16)
		if p.tok.kind != tWord || err != nil {
			return nil, &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("expected a bit offset, found %q", p.tok.text)}
		}
		nums[i], numPos[i] = int(n), p.tok.pos
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tRParen {
		return nil, p.unexpected(`")"`)
	}
	s, e := nums[0], nums[1]
	switch {
	case e <= s:
		return nil, &Error{Pos: numPos[1], Msg: fmt.Sprintf("bit_slice(%s, %d, %d): the end offset must be past the start (the arguments are start and end bits, end exclusive; bits %d to %d+n are bit_slice(%s, %d, %d+n))", bt.text, s, e, s, s, bt.text, s, s)}
	case e-s > MaxSliceBits:
		return nil, &Error{Pos: numPos[1], Msg: fmt.Sprintf("bit_slice is at most %d bits, this one %d", MaxSliceBits, e-s)}
	case e > MaxSliceOffset:
		return nil, &Error{Pos: numPos[1], Msg: fmt.Sprintf("bit_slice offsets end at %d bits", MaxSliceOffset)}
	}
	f := &Field{Name: fmt.Sprintf("bit_slice(%s, %d, %d)", bt.text, s, e), Type: TypeInt, Max: 1<<(e-s) - 1,
		Proto: proto, Slice: &Slice{Base: bt.text, Start: s, End: e}}
	if bt.text == "icmp" {
		f.Proto = 0 // ICMP or ICMPv6: made explicit by explicitProto
	}
	_ = start
	return f, p.advance()
}

// comparison parses what follows a field: an operator and a value, in and
// a set or list, or nothing for a flag.
func (p *parser) comparison(f *Field, ft token) (Expr, error) {
	switch p.tok.kind {
	case tOp:
		if f.Type == TypeBool {
			return nil, &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("%s is a flag: write %q or %q, without an operator", f.Name, f.Name, "not "+f.Name)}
		}
		op := map[string]Op{"==": OpEq, "!=": OpNe, "<": OpLt, "<=": OpLe, ">": OpGt, ">=": OpGe}[p.tok.text]
		opPos := p.tok.pos
		if (f.Type == TypeIP || f.Type == TypeString) && op != OpEq && op != OpNe {
			return nil, &Error{Pos: opPos, Msg: fmt.Sprintf("%s cannot be compared with %s; use ==, != or in", f.Name, op)}
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		v, err := p.value(f)
		if err != nil {
			return nil, err
		}
		if v.Kind == KindIntRange || v.Kind == KindAddrRange {
			return nil, &Error{Pos: v.P, Msg: fmt.Sprintf("a range needs in: %s in {%s}", f.Name, v)}
		}
		return &Cmp{Field: f, Op: op, Val: v, P: ft.pos}, nil
	case tIn:
		if f.Type == TypeBool {
			return nil, &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("%s is a flag and takes no operator", f.Name)}
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok.kind == tList {
			if f.Type != TypeIP {
				return nil, &Error{Pos: p.tok.pos, Msg: fmt.Sprintf("named lists hold IP prefixes; %s is an %s", f.Name, f.Type)}
			}
			name := p.tok.text
			return &In{Field: f, List: name, P: ft.pos}, p.advance()
		}
		if p.tok.kind != tLBrace {
			return nil, p.unexpected(`"{" or $list`)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		var set []Value
		for {
			v, err := p.value(f)
			if err != nil {
				return nil, err
			}
			set = append(set, v)
			if len(set) > MaxSet {
				return nil, &Error{Pos: v.P, Msg: fmt.Sprintf("more than %d values in one set; use a named list", MaxSet)}
			}
			// Values are separated by commas or spaces, as in Cloudflare's
			// {80 443}.
			switch p.tok.kind {
			case tComma:
				if err := p.advance(); err != nil {
					return nil, err
				}
				continue
			case tWord, tString:
				continue
			case tRBrace:
				return &In{Field: f, Set: set, P: ft.pos}, p.advance()
			}
			return nil, p.unexpected(`"," or "}"`)
		}
	}
	if f.Type == TypeBool {
		return &Flag{Field: f, P: ft.pos}, nil
	}
	return nil, p.unexpected(fmt.Sprintf("an operator after %s", f.Name))
}

// value parses one literal for field f.
func (p *parser) value(f *Field) (Value, error) {
	t := p.tok
	if t.kind == tString && f.Type == TypeString {
		return p.stringValue(f)
	}
	if f.Type == TypeString {
		return Value{}, p.unexpected(fmt.Sprintf("a string in double quotes for %s", f.Name))
	}
	if t.kind == tString && f.Names != nil {
		// ip.proto eq "tcp": Cloudflare's ip.proto is a string field.
		if _, ok := f.Names[strings.ToLower(t.text)]; !ok {
			return Value{}, &Error{Pos: t.pos, Msg: fmt.Sprintf("%q is not a known name for %s", t.text, f.Name)}
		}
		t.kind = tWord
	} else if t.kind != tWord {
		return Value{}, p.unexpected(fmt.Sprintf("a value for %s (%s)", f.Name, f.Type))
	}
	if err := p.advance(); err != nil {
		return Value{}, err
	}
	bad := func(format string, args ...any) (Value, error) {
		return Value{}, &Error{Pos: t.pos, Msg: fmt.Sprintf(format, args...)}
	}
	lo, hi, isRange := strings.Cut(t.text, "..")
	switch f.Type {
	case TypeInt:
		parse := func(s string) (uint64, bool) {
			if n, ok := f.Names[strings.ToLower(s)]; ok {
				return n, true
			}
			n, err := strconv.ParseUint(s, 0, 64)
			return n, err == nil
		}
		a, ok := parse(lo)
		if !ok {
			if f.Names != nil {
				return bad("%q is not a number or a known name for %s", lo, f.Name)
			}
			return bad("%q is not a number (%s is an integer field)", lo, f.Name)
		}
		b := a
		if isRange {
			if b, ok = parse(hi); !ok {
				return bad("%q is not a number", hi)
			}
			if b < a {
				return bad("empty range %s: the end is below the start", t.text)
			}
		}
		if b > f.Max {
			return bad("%d is out of range for %s (0..%d)", b, f.Name, f.Max)
		}
		if f.Name == "ip.version" && !isRange && a != 4 && a != 6 {
			return bad("ip.version is 4 or 6")
		}
		if isRange {
			return Value{Kind: KindIntRange, Lo: a, Hi: b, P: t.pos}, nil
		}
		return Value{Kind: KindInt, Int: a, P: t.pos}, nil
	case TypeIP:
		if isRange {
			a, err1 := netip.ParseAddr(lo)
			b, err2 := netip.ParseAddr(hi)
			if err1 != nil || err2 != nil || a.Zone() != "" || b.Zone() != "" {
				return bad("invalid address range")
			}
			if a.Is4() != b.Is4() {
				return bad("address range mixes IPv4 and IPv6")
			}
			if b.Less(a) {
				return bad("empty range %s: the end is below the start", t.text)
			}
			return Value{Kind: KindAddrRange, AddrLo: a.Unmap(), AddrHi: b.Unmap(), P: t.pos}, nil
		}
		if strings.Contains(t.text, "/") {
			pf, err := netip.ParsePrefix(t.text)
			if err != nil || pf.Addr().Zone() != "" {
				return bad("invalid CIDR")
			}
			if pf.Masked() != pf {
				return bad("host bits set: did you mean %s?", pf.Masked())
			}
			if pf.Addr().Is4In6() {
				return bad("IPv4-mapped IPv6 prefix: write it as IPv4")
			}
			return Value{Kind: KindPrefix, Prefix: pf, P: t.pos}, nil
		}
		a, err := netip.ParseAddr(t.text)
		if err != nil || a.Zone() != "" {
			return bad("%q is not an IP address or CIDR", t.text)
		}
		a = a.Unmap()
		return Value{Kind: KindPrefix, Prefix: netip.PrefixFrom(a, a.BitLen()), P: t.pos}, nil
	}
	return bad("%s takes no value", f.Name)
}

// stringValue parses a quoted string for a string field: a country is an
// ISO 3166-1 alpha-2 code (upper-cased), a site or region a name.
func (p *parser) stringValue(f *Field) (Value, error) {
	t := p.tok
	s := t.text
	switch f.Name {
	case "ip.src.country", "ip.dst.country", "ip.geoip.country":
		s = strings.ToUpper(s)
		if len(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' {
			return Value{}, &Error{Pos: t.pos, Msg: fmt.Sprintf("%q is not a 2-letter country code (ISO 3166-1 alpha-2, e.g. \"BR\")", t.text)}
		}
	default:
		if s == "" || len(s) > 64 || strings.ContainsFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) {
			return Value{}, &Error{Pos: t.pos, Msg: fmt.Sprintf("%q is not a site or region name (letters, digits, - _ .)", t.text)}
		}
	}
	return Value{Kind: KindString, Str: s, P: t.pos}, p.advance()
}

// MaxPayload is the longest payload comparison; MaxPayloadOffset the
// furthest first byte.
const (
	MaxPayload       = 16
	MaxPayloadOffset = 1500
)

// payload parses payload[OFF:LEN] (& MASK) (==|!=) VALUE, where MASK and
// VALUE are hex byte strings of exactly LEN bytes (0x...).
func (p *parser) payload() (Expr, error) {
	start := p.tok.pos
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tLBracket {
		return nil, p.unexpected(`"[" after payload (payload[offset:length])`)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	rt := p.tok
	offS, lenS, ok := strings.Cut(rt.text, ":")
	off, err1 := strconv.ParseUint(offS, 10, 16)
	n, err2 := strconv.ParseUint(lenS, 10, 8)
	if rt.kind != tWord || !ok || err1 != nil || err2 != nil {
		return nil, &Error{Pos: rt.pos, Msg: "expected offset:length in bytes, e.g. payload[0:4]"}
	}
	if n < 1 || n > MaxPayload {
		return nil, &Error{Pos: rt.pos, Msg: fmt.Sprintf("payload length %d: must be 1..%d bytes", n, MaxPayload)}
	}
	if off > MaxPayloadOffset {
		return nil, &Error{Pos: rt.pos, Msg: fmt.Sprintf("payload offset %d: at most %d", off, MaxPayloadOffset)}
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tRBracket {
		return nil, p.unexpected(`"]"`)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	pl := &Payload{Off: int(off), Len: int(n), P: start}
	hexBytes := func(what string) ([]byte, error) {
		t := p.tok
		if t.kind != tWord {
			return nil, p.unexpected(fmt.Sprintf("a %d-byte hex %s (0x...)", n, what))
		}
		h, ok := strings.CutPrefix(strings.ToLower(t.text), "0x")
		b, err := hex.DecodeString(h)
		if !ok || err != nil {
			return nil, &Error{Pos: t.pos, Msg: fmt.Sprintf("%q is not a hex byte string (0x...)", t.text)}
		}
		if len(b) != int(n) {
			return nil, &Error{Pos: t.pos, Msg: fmt.Sprintf("%s has %d bytes, payload[%d:%d] has %d", what, len(b), off, n, n)}
		}
		return b, p.advance()
	}
	if p.tok.kind == tAmp {
		if err := p.advance(); err != nil {
			return nil, err
		}
		m, err := hexBytes("mask")
		if err != nil {
			return nil, err
		}
		pl.Mask = m
	} else {
		pl.Mask = bytes.Repeat([]byte{0xff}, int(n))
	}
	if p.tok.kind != tOp || (p.tok.text != "==" && p.tok.text != "!=") {
		return nil, p.unexpected("== or != after payload[...]")
	}
	pl.Neg = p.tok.text == "!="
	if err := p.advance(); err != nil {
		return nil, err
	}
	v, err := hexBytes("value")
	if err != nil {
		return nil, err
	}
	for i := range v {
		if v[i]&^pl.Mask[i] != 0 {
			return nil, &Error{Pos: start, Msg: fmt.Sprintf("value byte %d (%#02x) has bits outside the mask (%#02x): it never matches", i, v[i], pl.Mask[i])}
		}
	}
	pl.Value = v
	return pl, nil
}
