package dos

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
)

// Sizes of the BPF maps (xdp_dos.c).
const (
	MaxTenants   = 8192 // tenant index 0 means "no tenant"
	MaxRateRules = 16384
	maxDst       = 65536
)

// Burst is the rate limiters' tolerance: a conforming sender may send this
// much of its rate back to back (plus one packet).
const Burst = 100 * time.Millisecond

// Global is the scope name of nfhost/dos/global in rule IDs and errors.
const Global = "global"

// TenantInput is one tenant as the DoS layer sees it.
type TenantInput struct {
	ID string
	// Index is the tenant's slot in the counters (1..MaxTenants-1); the
	// Reconciler keeps it stable.
	Index uint32
	// Prefixes are the tenant's destination prefixes (its network config).
	Prefixes []netip.Prefix
	// Spec is the tenant's DoS document; nil: none (counters only).
	Spec *dosspec.Spec
}

// Desired is everything the DoS maps should hold.
type Desired struct {
	Global  dosspec.Spec
	Tenants []TenantInput
	// Now: signatures that expired before it are left out.
	Now time.Time
	// InForce is the version of each document the maps hold, by tenant ID
	// and GlobalKey: the previous State's InForce. What is in force keeps
	// its slots (see the package documentation); nil: nothing is.
	InForce map[string]*dosspec.Spec
}

// TenantListKey is a tenant-scoped source-list entry.
type TenantListKey struct {
	Tenant uint32
	Prefix netip.Prefix // trie form (IPv4-mapped)
}

// SigState is what one signature index holds.
type SigState struct {
	ID      string // scope/id
	Meta    dosBPFSigMeta
	Expires time.Time
	Match   string // for change detection
	// bootExpires is set only in a State read back from the maps: the
	// expiry as written (CLOCK_BOOTTIME ns), Meta holding none.
	bootExpires uint64
}

// RateState is what one rate-limit rule index holds.
type RateState struct {
	ID   string // scope/rate:<prefix> or scope/sig:<id>
	Rule dosBPFRateRule
}

// State is the content of every DoS map as plain values. Build computes it
// without touching the kernel; Writer applies the difference between two
// States.
type State struct {
	Lists       map[netip.Prefix]Verdict // trie form
	TenantLists map[TenantListKey]Verdict
	Dst         map[netip.Prefix]dosBPFDstInfo // trie form
	Tables      *Tables
	Sigs        []SigState
	Rates       []RateState
	SampleRate  uint32
	// DstV4 and DstV6: signatures for destinations without an entry.
	DstV4, DstV6 bitmap
	// Tenants names the tenant indexes in use.
	Tenants map[uint32]string
	// InForce is the version of each document these maps hold, by tenant
	// ID and GlobalKey (absent: none): the current document, or for a
	// refused one the version placed before.
	InForce map[string]*dosspec.Spec
	// TCP is the TCP protection (tcp.go).
	TCP TCPState
}

// VerdictDenyMonitor is a deny entry of a scope in monitor mode: counted,
// not dropped.
const VerdictDenyMonitor Verdict = 3

type scopedSig struct {
	scope   string
	tenant  uint32 // 0: global
	sig     dosspec.CompiledSignature
	rate    int  // rate rule index for ratelimit
	monitor bool // the document's mode
}

type scopedRate struct {
	tenant uint32
	rule   int
}

// Build computes the desired map contents. Which version of each document
// the maps hold is decided first (place, see the package documentation):
// a document that cannot be placed (no free signature slot or rate-limit
// rule, a rate limit outside its tenant's prefixes) is reported in the
// returned map, under its tenant ID or GlobalKey, as a *PlacementError,
// and the version placed before (d.InForce) stays; it never makes the rest
// fail, and no document is ever placed in part. The rules are then laid
// out global first (they win ties in priority), then tenants by index,
// each in document order.
func Build(d Desired) (*State, map[string]error) {
	errs := map[string]error{}
	st := &State{
		Lists:       map[netip.Prefix]Verdict{},
		TenantLists: map[TenantListKey]Verdict{},
		Dst:         map[netip.Prefix]dosBPFDstInfo{},
		Tenants:     map[uint32]string{},
	}
	tenants := indexedTenants(d.Tenants, errs)
	placed, perrs := place(d, tenants)
	for k, err := range perrs {
		errs[k] = err
	}
	st.InForce = placed
	global := placed[dosspec.GlobalKey]
	if global == nil {
		global = &dosspec.Spec{}
	}
	st.SampleRate = global.SampleRate

	sigs, rates, rateAt := layOut(st, global, tenants, placed, d.Now)
	owner := map[netip.Prefix]int{} // trie-form tenant prefix -> tenants index
	for i, t := range tenants {
		st.Tenants[t.Index] = t.ID
		for _, p := range t.Prefixes {
			owner[mapped(p.Masked())] = i
		}
	}
	hasLists := map[uint32]bool{}
	for k := range st.TenantLists {
		hasLists[k.Tenant] = true
	}

	// Signature tables and metadata.
	tables, err := BuildTables(compiledSigs(sigs))
	if err != nil { // cannot happen: place keeps to the budget
		errs[dosspec.GlobalKey] = err
		tables, _ = BuildTables(nil)
		sigs = nil
	}
	st.Tables = tables
	for _, s := range sigs {
		st.Sigs = append(st.Sigs, SigState{ID: s.scope + "/" + s.sig.ID, Meta: sigMeta(s, s.monitor), Expires: s.sig.Expires, Match: s.sig.Match.String()})
	}
	st.Rates = rates

	// Destination trie: every prefix that decides something; each entry is
	// computed from all prefixes covering it. Addresses under none of them
	// use the global signatures of their family, kept in the settings.
	st.DstV4, st.DstV6 = globalDstSigs(sigs)
	for k := range dstKeys(owner, rateAt, sigs) {
		var di dosBPFDstInfo // di.Tenant 0: the prefix is no tenant's
		if i, ok := longestCovering(owner, k); ok {
			t := tenants[i]
			di.Tenant = t.Index
			if hasLists[t.Index] {
				di.Flags |= dstTenantLists
			}
			if s := placed[t.ID]; s != nil {
				di.SampleRate = s.SampleRate
			}
		}
		di.RateRule = dstRateRule(rateAt, k, di.Tenant)
		di.Sigs = dstSigs(sigs, k, di.Tenant)
		st.Dst[k] = di
	}
	buildTCP(st, global, tenants, placed, errs)
	if len(st.Dst) > maxDst && errs[dosspec.GlobalKey] == nil {
		errs[dosspec.GlobalKey] = fmt.Errorf("%d destination entries, at most %d", len(st.Dst), maxDst)
	}
	return st, errs
}

// indexedTenants returns the tenants with an index in range, sorted by
// index (the layout order); the others get an error in errs.
func indexedTenants(in []TenantInput, errs map[string]error) []TenantInput {
	var tenants []TenantInput
	for _, t := range in {
		if t.Index == 0 || t.Index >= MaxTenants {
			errs[t.ID] = fmt.Errorf("tenant index %d out of range 1..%d", t.Index, MaxTenants-1)
			continue
		}
		tenants = append(tenants, t)
	}
	sort.Slice(tenants, func(i, j int) bool { return tenants[i].Index < tenants[j].Index })
	return tenants
}

// layOut gives the placed documents' rules their indexes, global first,
// then tenants in the order given, and puts their allow and deny lists in
// st. It returns the signatures and rate rules by index and, by trie-form
// prefix, the rate rules on exactly that prefix (global first).
func layOut(st *State, global *dosspec.Spec, tenants []TenantInput, placed map[string]*dosspec.Spec, now time.Time) ([]scopedSig, []RateState, map[netip.Prefix][]scopedRate) {
	var sigs []scopedSig
	var rates []RateState
	rateAt := map[netip.Prefix][]scopedRate{}
	addScope := func(scope string, tenant uint32, s *dosspec.Spec) {
		for _, rl := range s.RateLimits {
			k := mapped(rl.Prefix)
			rateAt[k] = append(rateAt[k], scopedRate{tenant: tenant, rule: len(rates)})
			rates = append(rates, RateState{ID: scope + "/rate:" + rl.Prefix.String(), Rule: rateRule(rl.Limit, s.Monitor)})
		}
		for _, sg := range s.Signatures {
			if !live(sg, now) {
				continue
			}
			ss := scopedSig{scope: scope, tenant: tenant, sig: sg, rate: -1, monitor: s.Monitor}
			if sg.Action == "ratelimit" {
				ss.rate = len(rates)
				rates = append(rates, RateState{ID: scope + "/sig:" + sg.ID, Rule: rateRule(sg.Limit, s.Monitor)})
			}
			sigs = append(sigs, ss)
		}
		for _, e := range ResolveLists(s.Allow, s.Deny) {
			v := e.Verdict
			if v == VerdictDeny && s.Monitor {
				v = VerdictDenyMonitor
			}
			if tenant == 0 {
				st.Lists[mapped(e.Prefix)] = v
			} else {
				st.TenantLists[TenantListKey{Tenant: tenant, Prefix: mapped(e.Prefix)}] = v
			}
		}
	}
	addScope(Global, 0, global)
	for _, t := range tenants {
		if s := placed[t.ID]; s != nil {
			addScope(t.ID, t.Index, s)
		}
	}
	return sigs, rates, rateAt
}

func compiledSigs(sigs []scopedSig) []dosspec.CompiledSignature {
	compiled := make([]dosspec.CompiledSignature, len(sigs))
	for i, s := range sigs {
		compiled[i] = s.sig
	}
	return compiled
}

// globalDstSigs returns, per family, the global signatures without a
// destination that can match it.
func globalDstSigs(sigs []scopedSig) (v4, v6 bitmap) {
	for i, s := range sigs {
		if s.tenant == 0 && !s.sig.Match.Dst.IsValid() {
			if accepts(s.sig.Match, v4Root, netip.Prefix{}) {
				v4.set(i)
			}
			if accepts(s.sig.Match, v6Root, netip.Prefix{}) {
				v6.set(i)
			}
		}
	}
	return v4, v6
}

// dstKeys returns the prefixes that need a destination entry: the tenants'
// prefixes, the rate limits' and the signatures' destinations.
func dstKeys(owner map[netip.Prefix]int, rateAt map[netip.Prefix][]scopedRate, sigs []scopedSig) map[netip.Prefix]bool {
	keys := map[netip.Prefix]bool{}
	for k := range owner {
		keys[k] = true
	}
	for k := range rateAt {
		keys[k] = true
	}
	for _, s := range sigs {
		if s.sig.Match.Dst.IsValid() {
			keys[mapped(s.sig.Match.Dst)] = true
		}
	}
	return keys
}

// dstRateRule is the rate rule (index+1, 0: none) for destination k of
// tenant (0: none): the most specific rate limit of the global scope or
// that tenant; on the same prefix the tenant's wins.
func dstRateRule(rateAt map[netip.Prefix][]scopedRate, k netip.Prefix, tenant uint32) uint32 {
	var rule uint32
	for bits := k.Bits(); bits >= 0 && rule == 0; bits-- {
		p, _ := k.Addr().Prefix(bits)
		for _, r := range rateAt[p] {
			if r.tenant == 0 || r.tenant == tenant {
				rule = uint32(r.rule) + 1
			}
		}
	}
	return rule
}

// dstSigs is the signatures, of the global scope and of tenant (0: none),
// that can match a packet to destination k.
func dstSigs(sigs []scopedSig, k netip.Prefix, tenant uint32) bitmap {
	var b bitmap
	for i, s := range sigs {
		if s.tenant != 0 && s.tenant != tenant {
			continue
		}
		if accepts(s.sig.Match, k, s.sig.Match.Dst) {
			b.set(i)
		}
	}
	return b
}

const dstTenantLists = 1

// longestCovering finds the most specific prefix in m that covers k.
func longestCovering[V any](m map[netip.Prefix]V, k netip.Prefix) (V, bool) {
	for bits := k.Bits(); bits >= 0; bits-- {
		p, _ := k.Addr().Prefix(bits)
		if v, ok := m[p]; ok {
			return v, true
		}
	}
	var zero V
	return zero, false
}

func insideAny(p netip.Prefix, in []netip.Prefix) bool { return dosspec.InsideAny(p, in) }

func rateRule(l dosspec.Limit, monitor bool) dosBPFRateRule {
	var r dosBPFRateRule
	burst := uint64(Burst)
	if l.PPS > 0 {
		r.PktCostNs = uint64(time.Second) / l.PPS
		burst = max(burst, uint64(Burst)+r.PktCostNs)
	}
	if l.BPS > 0 {
		r.ByteCostFp = (8 * uint64(time.Second) << 16) / l.BPS
		burst = max(burst, uint64(Burst)+(1500*r.ByteCostFp)>>16)
	}
	r.BurstNs = burst
	if l.PerIP {
		r.PerIp = 1
	}
	if monitor {
		r.Monitor = 1
	}
	return r
}

func sigMeta(s scopedSig, monitor bool) dosBPFSigMeta {
	var m dosBPFSigMeta
	switch {
	case s.sig.Action == "monitor" || monitor && s.sig.Action == "drop":
		m.Action = sigMonitor
	case s.sig.Action == "drop":
		m.Action = sigDrop
	case s.sig.Action == "ratelimit":
		m.Action = sigRateLimit
		m.RateRule = uint32(s.rate)
	}
	if n := s.sig.Match.PayloadLen; n > 0 {
		m.PlOff, m.PlLen = s.sig.Match.PayloadOff, n
		if s.sig.Match.PayloadNeg {
			m.PlNeg = 1
		}
		var mask, val [16]byte
		copy(mask[:n], s.sig.Match.PayloadMask[:n])
		copy(val[:n], s.sig.Match.PayloadValue[:n])
		// The program loads the bytes into two little-endian words.
		m.PlMask = [2]uint64{binary.LittleEndian.Uint64(mask[:8]), binary.LittleEndian.Uint64(mask[8:])}
		m.PlValue = [2]uint64{binary.LittleEndian.Uint64(val[:8]), binary.LittleEndian.Uint64(val[8:])}
	}
	return m
}
