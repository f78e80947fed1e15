package bgpspec

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
)

// ExportFlowSpec is the value of a DoS signature's "export" field that
// asks for it to be announced as a FlowSpec rule.
const ExportFlowSpec = dosspec.ExportFlowSpec

// MaxFlowRules bounds the FlowSpec rules one host announces: a signature
// without ip.dst becomes one rule per tenant prefix.
const MaxFlowRules = 4096

// Tenant is one tenant as applied on this host (every subsystem applied:
// namespace, routing, tunnels, firewall, DoS). Tenants that failed to
// apply here are not given to Announce at all.
type Tenant struct {
	ID       string
	Prefixes []netip.Prefix
	// Advertise is the network document's "advertise" switch (default true).
	Advertise bool
	// Endpoints are the anycast GRE endpoints of the tenant's tunnels,
	// in force on this host's GRE datapath.
	Endpoints []netip.Addr
	// DoS is the tenant's DoS document in force here (nil: none).
	DoS *dosspec.Spec
}

// Input is everything Announce decides from.
type Input struct {
	// Drained: the operator drained this host; it announces nothing.
	Drained bool
	Tenants []Tenant
	// Global is nfhost/dos/global in force here (nil: none).
	Global *dosspec.Spec
	// Now decides which signatures have expired.
	Now time.Time
}

// Route is one prefix this host announces, and why.
type Route struct {
	Prefix netip.Prefix
	// Owners: the tenant whose prefix it is, or the tenants whose tunnels
	// end at this anycast endpoint.
	Owners []string
	// Endpoint: an anycast GRE endpoint (a /32 or /128).
	Endpoint bool
}

// FlowRule is one FlowSpec rule (RFC 8955) for IPv4: every set component
// must match; Rate 0 discards (traffic-rate 0), otherwise the matching
// traffic is limited to Rate bytes per second.
type FlowRule struct {
	// ID is "<tenant or _global>/<signature>", with "@<prefix>" when a
	// signature without ip.dst is exported once per tenant prefix.
	ID            string
	Dst           netip.Prefix
	Src           netip.Prefix // invalid: any
	Proto         dosspec.Range
	SrcPort       dosspec.Range
	DstPort       dosspec.Range
	Len           dosspec.Range // IP total length
	ICMPType      dosspec.Range
	ICMPCode      dosspec.Range
	TCPFlagsMask  uint8
	TCPFlagsValue uint8
	Rate          float32 // bytes per second; 0: discard
}

// String is a one-line rendering for status and tests.
func (r FlowRule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: dst %s", r.ID, r.Dst)
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %s", r.Src)
	}
	rng := func(name string, x dosspec.Range) {
		switch {
		case !x.Set:
		case x.Lo == x.Hi:
			fmt.Fprintf(&b, " %s %d", name, x.Lo)
		default:
			fmt.Fprintf(&b, " %s %d-%d", name, x.Lo, x.Hi)
		}
	}
	rng("proto", r.Proto)
	rng("sport", r.SrcPort)
	rng("dport", r.DstPort)
	rng("len", r.Len)
	rng("icmp-type", r.ICMPType)
	rng("icmp-code", r.ICMPCode)
	if r.TCPFlagsMask != 0 {
		fmt.Fprintf(&b, " tcp-flags 0x%02x/0x%02x", r.TCPFlagsValue, r.TCPFlagsMask)
	}
	if r.Rate == 0 {
		b.WriteString(" then discard")
	} else {
		fmt.Fprintf(&b, " then rate %.0f B/s", r.Rate)
	}
	return b.String()
}

// Desired is what this host announces.
type Desired struct {
	Routes   []Route    // sorted by prefix
	FlowSpec []FlowRule // sorted by ID
	// NotExported names the signatures marked for export that FlowSpec
	// cannot express, with the reason ("acme/ntp: payload bytes ...").
	NotExported []string
}

// Prefixes lists the announced prefixes.
func (d Desired) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, len(d.Routes))
	for i, r := range d.Routes {
		out[i] = r.Prefix
	}
	return out
}

// Announce decides what this host announces: every prefix of every tenant
// applied here whose advertise switch is on, every anycast GRE endpoint a
// tenant applied here uses (whatever its advertise switch: its tunnels
// stay up), and a FlowSpec rule for each signature in force that is
// marked for export and that FlowSpec can express. A drained host
// announces nothing. The result depends only on in, not on its order.
func Announce(in Input) Desired {
	var d Desired
	routes := map[netip.Prefix]*Route{}
	add := func(p netip.Prefix, owner string, endpoint bool) {
		r, ok := routes[p]
		if !ok {
			r = &Route{Prefix: p, Endpoint: endpoint}
			routes[p] = r
		}
		if !slices.Contains(r.Owners, owner) {
			r.Owners = append(r.Owners, owner)
		}
	}
	tenants := slices.Clone(in.Tenants)
	sort.Slice(tenants, func(i, j int) bool { return tenants[i].ID < tenants[j].ID })
	for _, t := range tenants {
		if in.Drained {
			break
		}
		if t.Advertise {
			for _, p := range t.Prefixes {
				add(p.Masked(), t.ID, false)
			}
		}
		for _, e := range t.Endpoints {
			add(netip.PrefixFrom(e, e.BitLen()), t.ID, true)
		}
	}
	for _, r := range routes {
		sort.Strings(r.Owners)
		d.Routes = append(d.Routes, *r)
	}
	sort.Slice(d.Routes, func(i, j int) bool { return prefixLess(d.Routes[i].Prefix, d.Routes[j].Prefix) })

	var rules []FlowRule
	for _, t := range tenants {
		if t.DoS != nil {
			rules = append(rules, exportSignatures(t.ID, t.Prefixes, t.DoS.Signatures, in.Now, &d.NotExported)...)
		}
	}
	if in.Global != nil {
		rules = append(rules, exportSignatures("", nil, in.Global.Signatures, in.Now, &d.NotExported)...)
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].ID < rules[j].ID })
	if len(rules) > MaxFlowRules {
		d.NotExported = append(d.NotExported, fmt.Sprintf("%d FlowSpec rules, at most %d are exported: the rest from %s on are not", len(rules), MaxFlowRules, rules[MaxFlowRules].ID))
		rules = rules[:MaxFlowRules]
	}
	if !in.Drained {
		d.FlowSpec = rules
	}
	sort.Strings(d.NotExported)
	return d
}

func prefixLess(a, b netip.Prefix) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}

// exportSignatures turns the signatures of one document (tenant "" for
// dos/global) marked for export into FlowSpec rules, and records why those
// FlowSpec cannot express are not exported.
func exportSignatures(tenant string, prefixes []netip.Prefix, sigs []dosspec.CompiledSignature, now time.Time, notExported *[]string) []FlowRule {
	owner := tenant
	if owner == "" {
		owner = "_global"
	}
	var out []FlowRule
	for _, s := range sigs {
		if !s.Export || !s.Expires.IsZero() && !now.Before(s.Expires) {
			continue
		}
		id := owner + "/" + s.ID
		rule, why := flowRule(s)
		if why != "" {
			*notExported = append(*notExported, id+": "+why)
			continue
		}
		rule.ID = id
		m := s.Match
		switch {
		case m.Dst.IsValid() && tenant != "" && !coveredBy(m.Dst, prefixes):
			*notExported = append(*notExported, id+": ip.dst "+m.Dst.String()+" is outside the tenant's prefixes")
		case m.Dst.IsValid():
			rule.Dst = m.Dst
			out = append(out, rule)
		case tenant == "":
			*notExported = append(*notExported, id+": a global signature needs ip.dst to be exported (an upstream router would apply it to every destination)")
		default:
			n := 0
			for _, p := range prefixes {
				if !p.Addr().Is4() {
					continue
				}
				r := rule
				r.ID, r.Dst = id+"@"+p.String(), p
				out = append(out, r)
				n++
			}
			if n == 0 {
				*notExported = append(*notExported, id+": the tenant has no IPv4 prefix to scope it to")
			}
		}
	}
	return out
}

// flowRule translates a signature's match and action, or says why FlowSpec
// cannot express it. Dst and ID are left to the caller.
func flowRule(s dosspec.CompiledSignature) (FlowRule, string) {
	m := s.Match
	switch {
	case m.Version == 6 || m.Dst.IsValid() && !m.Dst.Addr().Is4() || m.Src.IsValid() && !m.Src.Addr().Is4():
		return FlowRule{}, "IPv6 signatures are not exported (IPv4 FlowSpec only)"
	case m.PayloadLen > 0:
		return FlowRule{}, "payload bytes cannot be expressed in FlowSpec"
	case m.TTL.Set:
		return FlowRule{}, "ip.ttl cannot be expressed in FlowSpec"
	}
	r := FlowRule{Src: m.Src, Proto: m.Proto, SrcPort: m.SrcPort, DstPort: m.DstPort, Len: m.Len,
		ICMPType: m.ICMPType, ICMPCode: m.ICMPC, TCPFlagsMask: m.TCPFlagsMask, TCPFlagsValue: m.TCPFlagsValue}
	switch s.Action {
	case "drop":
	case "ratelimit":
		switch {
		case s.Limit.PerIP:
			return FlowRule{}, "a per-ip rate limit cannot be expressed in FlowSpec (traffic-rate limits the whole rule): use per rule"
		case s.Limit.BPS == 0:
			return FlowRule{}, "FlowSpec rate limits are in bytes per second: give bps"
		case s.Limit.PPS != 0:
			return FlowRule{}, "FlowSpec cannot limit packets and bytes at once: give bps only"
		}
		r.Rate = float32(s.Limit.BPS) / 8
	default:
		return FlowRule{}, "action " + s.Action + " is not exported (only drop and ratelimit)"
	}
	return r, ""
}

func coveredBy(p netip.Prefix, by []netip.Prefix) bool {
	for _, q := range by {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}
