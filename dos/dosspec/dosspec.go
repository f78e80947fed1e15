// Package dosspec is the DoS document, tenants/<tenant>/dos and
// dos/global: allow and deny lists, signatures (expressions in the
// firewall/lang subset the XDP classifier runs), rate limits, sampling and
// automatic mitigation settings, as written and as the validated Spec the
// dos package places in the XDP maps. It is pure: nsctl validates and edits
// documents with it offline.
package dosspec

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/doc"
)

// Limits (README). Like the firewall's (fwspec), they bound what one
// document costs a reconcile pass: a document over MaxDocumentBytes is
// refused before it is decoded, and one over a count limit before its
// entries are parsed.
const (
	// MaxDocumentBytes is the largest DoS document nsd decodes: room for
	// both lists at MaxListLen IPv4 CIDRs and the rate limits.
	MaxDocumentBytes = 8 << 20
	MaxSignatures    = 256
	MaxListLen       = 200000
	MaxRateLimits    = 10000
)

// Config is nfhost/tenants/<tenant>/dos and nfhost/dos/global.
type Config struct {
	Mode       string      `json:"mode,omitempty"` // mitigate (default) | monitor
	Allow      []string    `json:"allow,omitempty"`
	Deny       []string    `json:"deny,omitempty"`
	Signatures []Signature `json:"signatures,omitempty"`
	RateLimits []RateLimit `json:"rate_limits,omitempty"`
	SampleRate uint32      `json:"sample_rate,omitempty"`
	// AutoMitigation turns on detection from the samples (tenant
	// documents only).
	AutoMitigation *AutoMitigation `json:"auto_mitigation,omitempty"`
	// TCPProtection: SYN cookies and out-of-state TCP (tcp.go).
	TCPProtection *TCPProtectionConfig `json:"tcp_protection,omitempty"`
}

// AutoMitigation: when the sampled rate towards one of the tenant's
// addresses exceeds PPS, nsd derives a signature from the samples and
// drops the attack with it until it has been quiet for Duration.
type AutoMitigation struct {
	PPS      uint64 `json:"pps"`
	Duration string `json:"duration,omitempty"` // Go duration, default 5m
	// Export "flowspec" also announces the derived signatures as BGP
	// FlowSpec rules (those FlowSpec can express).
	Export string `json:"export,omitempty"`
}

// Signature is an attack signature in the rule language.
type Signature struct {
	ID         string     `json:"id"`
	Expression string     `json:"expression"`
	Action     string     `json:"action"` // drop | ratelimit | monitor
	Expires    *time.Time `json:"expires,omitempty"`
	// For action ratelimit: the limit on matching packets, per destination
	// IP (per "ip", the default) or for all of them ("rule").
	PPS uint64 `json:"pps,omitempty"`
	BPS uint64 `json:"bps,omitempty"`
	Per string `json:"per,omitempty"`
	// Export "flowspec" announces the signature as a BGP FlowSpec rule to
	// the peers that negotiate it (routing/bgp), if FlowSpec can express
	// it; "" (the default) keeps it on this host's XDP layer only.
	Export string `json:"export,omitempty"`
}

// ExportFlowSpec is Signature.Export's one value.
const ExportFlowSpec = "flowspec"

// RateLimit caps traffic to a prefix, per destination IP or for the prefix.
type RateLimit struct {
	Prefix string `json:"prefix"`
	PPS    uint64 `json:"pps,omitempty"`
	BPS    uint64 `json:"bps,omitempty"`
	Per    string `json:"per"` // ip | prefix
}

// Range is an inclusive range; the zero Range with Set false matches all.
type Range struct {
	Set    bool
	Lo, Hi uint64
}

// Match is a compiled signature: every set field must match.
type Match struct {
	Version         uint8 // 0: both
	Proto           Range
	Src, Dst        netip.Prefix // invalid: any
	SrcPort         Range
	DstPort         Range
	Len             Range
	TTL             Range
	TCPFlagsMask    uint8
	TCPFlagsValue   uint8
	ICMPType, ICMPC Range
	// Payload: bytes after the transport header; PayloadLen 0: none.
	PayloadOff   uint16
	PayloadLen   uint8
	PayloadNeg   bool
	PayloadMask  [16]byte
	PayloadValue [16]byte
}

// CompiledSignature is a validated signature.
type CompiledSignature struct {
	ID      string
	Action  string
	Expires time.Time // zero: never
	Match   Match
	Limit   Limit // action ratelimit
	// Export: announce as a FlowSpec rule (Signature.Export "flowspec").
	Export bool
}

// Limit is a compiled rate limit: packets and/or bits per second, one
// bucket per destination address (PerIP) or one for the whole rule.
type Limit struct {
	PPS, BPS uint64
	PerIP    bool
}

// CompiledRateLimit is a validated rate_limits entry.
type CompiledRateLimit struct {
	Prefix netip.Prefix
	Limit  Limit
}

// Spec is a validated DoS document.
type Spec struct {
	Monitor    bool
	Allow      []netip.Prefix
	Deny       []netip.Prefix
	Signatures []CompiledSignature
	RateLimits []CompiledRateLimit
	SampleRate uint32
	// AutoPPS > 0 turns on automatic mitigation above that rate per
	// destination address; mitigations last AutoDuration after the
	// attack was last seen.
	AutoPPS      uint64
	AutoDuration time.Duration
	// AutoExport: the automatic mitigations are exported as FlowSpec.
	AutoExport bool
	// TCP is tcp_protection as written, defaults not yet filled in: the
	// dos package resolves a tenant's against the global one (tcp.go).
	TCP *TCPProtectionConfig
}

// DefaultAutoDuration is how long an automatic mitigation outlives the
// attack by default.
const DefaultAutoDuration = 5 * time.Minute

var sigIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,47}$`)

// GlobalKey is the fleet-wide document's key under the KV prefix.
const GlobalKey = "dos/global"

// Parse decodes and validates a tenant's DoS document
// (tenants/<tenant>/dos).
func Parse(tenant string, data []byte) (Spec, error) { return parse(tenant, doc.KeyDoS, data) }

// ParseGlobal decodes and validates nfhost/dos/global.
func ParseGlobal(data []byte) (Spec, error) { return parse("", GlobalKey, data) }

func parse(tenant, key string, data []byte) (Spec, error) {
	if len(data) > MaxDocumentBytes {
		return Spec{}, &doc.FieldError{Tenant: tenant, Key: key,
			Msg: fmt.Sprintf("document is %d bytes, at most %d (8 MiB)", len(data), MaxDocumentBytes)}
	}
	var c Config
	if err := doc.DecodeStrict(tenant, key, data, &c); err != nil {
		return Spec{}, err
	}
	return c.validate(tenant, key)
}

// Validate checks every field of a tenant's document and compiles the
// signatures.
func (c Config) Validate(tenant string) (Spec, error) { return c.validate(tenant, doc.KeyDoS) }

func (c Config) validate(tenant, key string) (Spec, error) {
	var errs doc.Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &doc.FieldError{Tenant: tenant, Key: key, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	var s Spec
	switch c.Mode {
	case "", "mitigate":
	case "monitor":
		s.Monitor = true
	default:
		add("mode", c.Mode, "must be mitigate or monitor")
	}
	// Over a count limit, say so and stop before parsing the entries.
	if n := len(c.Allow); n > MaxListLen {
		add("allow", "", "%d entries, at most %d", n, MaxListLen)
	}
	if n := len(c.Deny); n > MaxListLen {
		add("deny", "", "%d entries, at most %d", n, MaxListLen)
	}
	if len(c.Signatures) > MaxSignatures {
		add("signatures", "", "%d signatures, at most %d", len(c.Signatures), MaxSignatures)
	}
	if len(c.RateLimits) > MaxRateLimits {
		add("rate_limits", "", "%d rate limits, at most %d", len(c.RateLimits), MaxRateLimits)
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	s.Allow, s.Deny = validLists(c.Allow, c.Deny, add)
	s.Signatures = validSignatures(c.Signatures, add)
	s.RateLimits = validRateLimits(c.RateLimits, add)
	if c.SampleRate > MaxSampleRate {
		add("sample_rate", fmt.Sprint(c.SampleRate), "at most %d (1 in N packets; 0: off)", MaxSampleRate)
	}
	s.SampleRate = c.SampleRate
	if am := c.AutoMitigation; am != nil {
		s.AutoPPS, s.AutoDuration = validAutoMitigation(am, key == GlobalKey, c.SampleRate, add)
		s.AutoExport = am.Export == ExportFlowSpec
		if am.Export != "" && am.Export != ExportFlowSpec {
			add("auto_mitigation.export", am.Export, "must be flowspec or absent")
		}
	}
	if tp := c.TCPProtection; tp != nil {
		// Checked on its own here; against the global default in dos.
		if _, err := tp.Resolve(nil, tenant, key); err != nil {
			errs = append(errs, err.(doc.Errors)...)
		}
		s.TCP = tp
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	return s, nil
}

// validLists parses the allow and deny lists (validate has checked their
// lengths).
func validLists(allowList, denyList []string, add func(path, value, format string, args ...any)) (allow, deny []netip.Prefix) {
	for name, list := range map[string][]string{"allow": allowList, "deny": denyList} {
		for i, e := range list {
			p, err := doc.ParseAddrOrPrefix(e)
			if err != nil {
				add(fmt.Sprintf("%s[%d]", name, i), e, "%v", err)
				continue
			}
			if name == "allow" {
				allow = append(allow, p)
			} else {
				deny = append(deny, p)
			}
		}
	}
	return allow, deny
}

// validSignatures compiles the signatures. The duplicate-ID check against
// earlier signatures stays in the loop, before the signature's other
// fields, so that its errors come in field order.
func validSignatures(sigs []Signature, add func(path, value, format string, args ...any)) []CompiledSignature {
	var out []CompiledSignature
	ids := doc.NewIDs("signatures", sigIDRe)
	for i, sig := range sigs {
		path := fmt.Sprintf("signatures[%d]", i)
		ids.Check(i, sig.ID, add)
		if cs, ok := compileSignature(path, sig, add); ok {
			out = append(out, cs)
		}
	}
	return out
}

// compileSignature checks a signature's action, expression and limit; ok
// is false only if the expression does not compile (the other errors are
// recorded and the document is refused as a whole anyway).
func compileSignature(path string, sig Signature, add func(path, value, format string, args ...any)) (cs CompiledSignature, ok bool) {
	switch sig.Action {
	case "drop", "ratelimit", "monitor":
	default:
		add(path+".action", sig.Action, "must be drop, ratelimit or monitor")
	}
	e, err := lang.Parse(sig.Expression)
	if err != nil {
		add(path+".expression", "", "%v", err)
		return CompiledSignature{}, false
	}
	m, err := CompileMatch(e)
	if err != nil {
		add(path+".expression", "", "%v", err)
		return CompiledSignature{}, false
	}
	cs = CompiledSignature{ID: sig.ID, Action: sig.Action, Match: m, Export: sig.Export == ExportFlowSpec}
	if sig.Export != "" && sig.Export != ExportFlowSpec {
		add(path+".export", sig.Export, "must be flowspec or absent")
	}
	if sig.Action == "ratelimit" {
		per := sig.Per
		if per == "" {
			per = "ip"
		}
		if per != "ip" && per != "rule" {
			add(path+".per", sig.Per, "must be ip or rule")
		}
		cs.Limit = Limit{PPS: sig.PPS, BPS: sig.BPS, PerIP: per == "ip"}
		checkLimit(add, path, sig.PPS, sig.BPS)
	} else if sig.PPS != 0 || sig.BPS != 0 || sig.Per != "" {
		add(path, "", "pps, bps and per are only for action ratelimit")
	}
	if sig.Expires != nil {
		cs.Expires = *sig.Expires
	}
	return cs, true
}

func validRateLimits(rls []RateLimit, add func(path, value, format string, args ...any)) []CompiledRateLimit {
	var out []CompiledRateLimit
	seen := map[netip.Prefix]int{}
	for i, rl := range rls {
		path := fmt.Sprintf("rate_limits[%d]", i)
		p, err := doc.ParsePrefix(rl.Prefix)
		if err != nil {
			add(path+".prefix", rl.Prefix, "%v", err)
		} else if j, dup := seen[p]; dup {
			add(path+".prefix", rl.Prefix, "duplicate of rate_limits[%d].prefix", j)
		}
		seen[p] = i
		checkLimit(add, path, rl.PPS, rl.BPS)
		if rl.Per != "ip" && rl.Per != "prefix" {
			add(path+".per", rl.Per, "must be ip or prefix")
		}
		out = append(out, CompiledRateLimit{Prefix: p, Limit: Limit{PPS: rl.PPS, BPS: rl.BPS, PerIP: rl.Per == "ip"}})
	}
	return out
}

// validAutoMitigation returns the detection threshold and duration.
// Detection works on the samples towards the tenant's addresses, hence
// the checks on tenant and sampleRate.
func validAutoMitigation(am *AutoMitigation, global bool, sampleRate uint32, add func(path, value, format string, args ...any)) (uint64, time.Duration) {
	switch {
	case global:
		add("auto_mitigation", "", "only in a tenant's document (detection needs the tenant's addresses)")
	case am.PPS == 0 || am.PPS > MaxPPS:
		add("auto_mitigation.pps", fmt.Sprint(am.PPS), "must be 1..%d packets/s towards one address", MaxPPS)
	case sampleRate == 0:
		add("auto_mitigation", "", "needs sample_rate in the same document (detection reads the samples)")
	}
	d := DefaultAutoDuration
	if am.Duration != "" {
		var err error
		d, err = time.ParseDuration(am.Duration)
		if err != nil || d < time.Second || d > 24*time.Hour {
			add("auto_mitigation.duration", am.Duration, "a duration from 1s to 24h, e.g. \"5m\"")
		}
	}
	return am.PPS, d
}

// Rate-limit bounds: the BPF program's fixed-point byte cost needs
// bps >= MinBPS.
const (
	MinBPS        = 1000
	MaxPPS        = 1_000_000_000
	MaxSampleRate = 1 << 24
)

func checkLimit(add func(path, value, format string, args ...any), path string, pps, bps uint64) {
	if pps == 0 && bps == 0 {
		add(path, "", "set pps, bps or both")
	}
	if pps > MaxPPS {
		add(path+".pps", fmt.Sprint(pps), "at most %d", MaxPPS)
	}
	if bps != 0 && bps < MinBPS {
		add(path+".bps", fmt.Sprint(bps), "at least %d (or 0: no bit rate limit)", MinBPS)
	}
}

func subsetErr(e lang.Expr, format string, args ...any) error {
	return &lang.Error{Pos: e.Pos(), Msg: fmt.Sprintf(format, args...) + " (XDP signatures are a conjunction of one value or range per field)"}
}

// CompileMatch compiles an expression to an XDP signature match. The
// subset: conditions joined by and; per field one comparison (== < <= > >=)
// or one range (in {a..b}) or, for addresses, one CIDR; flags bare or
// negated; true. Anything else is refused at its position.
//
// The meaning is the firewall's (Cloudflare's Unified Routing semantics,
// see lang.DNF): not tcp.flags.syn also matches packets that are not TCP,
// which one signature cannot express, so a negated flag is accepted only
// where another condition of the signature already requires TCP.
func CompileMatch(e lang.Expr) (Match, error) {
	var m Match
	var negFlags []*lang.Flag
	tcpRequired := false
	var walk func(lang.Expr) error
	walk = func(e lang.Expr) error {
		switch x := e.(type) {
		case *lang.And:
			if err := walk(x.L); err != nil {
				return err
			}
			return walk(x.R)
		case *lang.Or:
			return subsetErr(x, "or is not supported: write one signature per alternative")
		case *lang.Xor:
			return subsetErr(x, "xor is not supported: write one signature per alternative")
		case *lang.Const:
			if !x.Val {
				return subsetErr(x, "false never matches")
			}
			return nil
		case *lang.Not:
			if c, ok := x.X.(*lang.Const); ok {
				return walk(&lang.Const{Val: !c.Val, P: c.P})
			}
			if f, ok := x.X.(*lang.Flag); ok {
				if err := supported(f, f.Field); err != nil {
					return err
				}
				negFlags = append(negFlags, f)
				return nil
			}
			if p, ok := x.X.(*lang.Payload); ok {
				neg := *p
				neg.Neg = !neg.Neg
				return m.payload(&neg)
			}
			return subsetErr(x, "not is only supported before a flag or a payload comparison")
		case *lang.Payload:
			return m.payload(x)
		case *lang.Flag:
			if err := supported(x, x.Field); err != nil {
				return err
			}
			tcpRequired = true
			return m.flag(x, true)
		case *lang.Cmp:
			if err := supported(x, x.Field); err != nil {
				return err
			}
			if x.Field.Proto == lang.ProtoTCP || x.Field.Name == "ip.proto" && x.Op == lang.OpEq && x.Val.Int == lang.ProtoTCP {
				tcpRequired = true
			}
			return m.cmp(x)
		case *lang.In:
			if err := supported(x, x.Field); err != nil {
				return err
			}
			if x.List != "" {
				return subsetErr(x, "named lists are not supported in signatures: use the allow and deny lists")
			}
			if len(x.Set) != 1 {
				return subsetErr(x, "in takes one value or range here")
			}
			v := x.Set[0]
			if x.Field.Proto == lang.ProtoTCP || x.Field.Name == "ip.proto" && v.Kind == lang.KindInt && v.Int == lang.ProtoTCP {
				tcpRequired = true
			}
			switch v.Kind {
			case lang.KindIntRange:
				return m.setRange(x, x.Field, v.Lo, v.Hi)
			case lang.KindInt:
				return m.setRange(x, x.Field, v.Int, v.Int)
			case lang.KindPrefix:
				return m.setPrefix(x, x.Field, v.Prefix)
			}
			return subsetErr(x, "address ranges are not supported: use a CIDR")
		}
		return subsetErr(e, "unsupported condition")
	}
	if err := walk(e); err != nil {
		return Match{}, err
	}
	for _, f := range negFlags {
		if !tcpRequired {
			return Match{}, subsetErr(f, "not %s also matches packets that are not TCP, which a signature cannot express: add ip.proto == \"tcp\" (or another TCP condition)", f.Field.Name)
		}
		if err := m.flag(f, false); err != nil {
			return Match{}, err
		}
	}
	return m, nil
}

// supported refuses the fields signatures do not compile, at the
// condition's position.
func supported(at lang.Expr, f *lang.Field) error {
	switch {
	case f.Unsupported != "":
		return &lang.Error{Pos: at.Pos(), Msg: f.Unsupported}
	case f.Slice != nil:
		return subsetErr(at, "bit_slice is not supported in signatures: use payload[offset:length] or the header fields")
	case f.Type == lang.TypeString || f.Name == "ip.src.asnum" || f.Name == "ip.dst.asnum":
		return subsetErr(at, "%s is not supported in signatures (the firewall supports it)", f.Name)
	}
	return nil
}

func (m *Match) flag(f *lang.Flag, set bool) error {
	if m.TCPFlagsMask&f.Field.Mask != 0 {
		return subsetErr(f, "%s is tested twice", f.Field.Name)
	}
	m.TCPFlagsMask |= f.Field.Mask
	if set {
		m.TCPFlagsValue |= f.Field.Mask
	}
	return m.setRange(f, lang.Fields["ip.proto"], lang.ProtoTCP, lang.ProtoTCP)
}

func (m *Match) payload(p *lang.Payload) error {
	if m.PayloadLen != 0 {
		return subsetErr(p, "one payload comparison per signature (up to %d bytes)", lang.MaxPayload)
	}
	m.PayloadOff, m.PayloadLen, m.PayloadNeg = uint16(p.Off), uint8(p.Len), p.Neg
	copy(m.PayloadMask[:], p.Mask)
	copy(m.PayloadValue[:], p.Value)
	return nil
}

func (m *Match) cmp(x *lang.Cmp) error {
	if x.Field.Type == lang.TypeIP {
		if x.Op != lang.OpEq {
			return subsetErr(x, "only == is supported for %s", x.Field.Name)
		}
		return m.setPrefix(x, x.Field, x.Val.Prefix)
	}
	if x.Field.Name == "tcp.flags" {
		if x.Op != lang.OpEq {
			return subsetErr(x, "tcp.flags takes ==; test single flags with tcp.flags.syn etc.")
		}
		if m.TCPFlagsMask != 0 {
			return subsetErr(x, "tcp.flags is tested twice")
		}
		m.TCPFlagsMask, m.TCPFlagsValue = 0xff, uint8(x.Val.Int)
		return m.setRange(x, lang.Fields["ip.proto"], lang.ProtoTCP, lang.ProtoTCP)
	}
	v, max := x.Val.Int, x.Field.Max
	switch x.Op {
	case lang.OpEq:
		return m.setRange(x, x.Field, v, v)
	case lang.OpLt:
		if v == 0 {
			return subsetErr(x, "%s < 0 never matches", x.Field.Name)
		}
		return m.setRange(x, x.Field, 0, v-1)
	case lang.OpLe:
		return m.setRange(x, x.Field, 0, v)
	case lang.OpGt:
		if v >= max {
			return subsetErr(x, "%s > %d never matches", x.Field.Name, v)
		}
		return m.setRange(x, x.Field, v+1, max)
	case lang.OpGe:
		return m.setRange(x, x.Field, v, max)
	}
	return subsetErr(x, "!= is not supported in signatures")
}

// setRange intersects the field's range with [lo, hi] and sets the L4
// protocol a port field implies.
func (m *Match) setRange(at lang.Expr, f *lang.Field, lo, hi uint64) error {
	var r *Range
	switch f.Name {
	case "ip.proto":
		r = &m.Proto
	case "ip.len":
		r = &m.Len
	case "ip.ttl":
		r = &m.TTL
	case "ip.version":
		if lo != hi || m.Version != 0 && uint64(m.Version) != lo {
			return subsetErr(at, "ip.version takes one value")
		}
		m.Version = uint8(lo)
		return nil
	case "tcp.srcport", "udp.srcport":
		r = &m.SrcPort
	case "tcp.dstport", "udp.dstport":
		r = &m.DstPort
	case "icmp.type":
		r = &m.ICMPType
	case "icmp.code":
		r = &m.ICMPC
	default:
		return subsetErr(at, "%s is not supported in signatures", f.Name)
	}
	if r.Set {
		lo, hi = max(lo, r.Lo), min(hi, r.Hi)
		if lo > hi {
			return subsetErr(at, "%s: the conditions on it never match together", f.Name)
		}
	}
	*r = Range{Set: true, Lo: lo, Hi: hi}
	if f.Proto != 0 && f != lang.Fields["ip.proto"] {
		return m.setRange(at, lang.Fields["ip.proto"], uint64(f.Proto), uint64(f.Proto))
	}
	return nil
}

func (m *Match) setPrefix(at lang.Expr, f *lang.Field, p netip.Prefix) error {
	dst := &m.Src
	if f.Name == "ip.dst" {
		dst = &m.Dst
	}
	if dst.IsValid() {
		return subsetErr(at, "%s is tested twice", f.Name)
	}
	*dst = p
	v := uint8(6)
	if p.Addr().Is4() {
		v = 4
	}
	if m.Version != 0 && m.Version != v {
		return subsetErr(at, "mixes IPv4 and IPv6")
	}
	m.Version = v
	return nil
}

// String renders a match compactly (tests, logs).
func (m Match) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d", m.Version)
	r := func(name string, x Range) {
		if x.Set {
			fmt.Fprintf(&b, " %s[%d-%d]", name, x.Lo, x.Hi)
		}
	}
	r("proto", m.Proto)
	if m.Src.IsValid() {
		fmt.Fprintf(&b, " src=%s", m.Src)
	}
	if m.Dst.IsValid() {
		fmt.Fprintf(&b, " dst=%s", m.Dst)
	}
	r("sport", m.SrcPort)
	r("dport", m.DstPort)
	r("len", m.Len)
	r("ttl", m.TTL)
	r("itype", m.ICMPType)
	r("icode", m.ICMPC)
	if m.TCPFlagsMask != 0 {
		fmt.Fprintf(&b, " flags&%#x=%#x", m.TCPFlagsMask, m.TCPFlagsValue)
	}
	if n := m.PayloadLen; n != 0 {
		op := "=="
		if m.PayloadNeg {
			op = "!="
		}
		fmt.Fprintf(&b, " payload[%d:%d]&%x%s%x", m.PayloadOff, n, m.PayloadMask[:n], op, m.PayloadValue[:n])
	}
	return b.String()
}
