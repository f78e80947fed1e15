// Package fwspec is the tenant firewall document, tenants/<tenant>/firewall:
// its JSON form, its validation (rule expressions through firewall/lang, with
// positions), and the Spec it becomes (rules normalised to disjunctive
// form, lists merged). It is pure: nsctl validates with it offline, and the
// firewall package compiles a Spec to nftables.
package fwspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/doc"
)

// Limits. They are documented in README.md. They bound what one tenant's
// document costs nsd in one reconcile pass, in time and memory: a document
// over MaxDocumentBytes is refused before it is decoded, and one with too
// many rules or list entries is refused before any expression or entry is
// parsed, so a tenant cannot make a pass slow for everybody else.
const (
	// MaxDocumentBytes is the largest firewall document nsd decodes: room
	// for 100,000-entry lists once Consul's kv_max_value_size is raised to
	// 4 MiB as the README suggests (Consul's default is 512 KiB).
	MaxDocumentBytes = 4 << 20
	MaxRules         = 1000
	MaxListEntries   = 100000 // per list
	MaxListsEntries  = 200000 // in all lists together
	MaxLists         = 64
	MaxAlternatives  = 16 // nft rules one tenant rule may expand to (per family)
)

// Action is what a matching rule does.
type Action string

// Actions.
const (
	Allow Action = "allow"
	Block Action = "block"
	Log   Action = "log" // count and continue
)

// Rule is one tenant rule as written.
type Rule struct {
	ID          string `json:"id"`
	Expression  string `json:"expression"`
	Action      Action `json:"action"`
	Enabled     *bool  `json:"enabled,omitempty"`
	Description string `json:"description,omitempty"`
}

// Config is the document nfhost/tenants/<tenant>/firewall.
type Config struct {
	Default Action              `json:"default,omitempty"`
	Rules   []Rule              `json:"rules"`
	Lists   map[string][]string `json:"lists,omitempty"`
}

// CompiledRule is an enabled rule after parsing and normalisation.
type CompiledRule struct {
	ID     string
	Action Action
	Source string
	Alts   [][]lang.Literal // disjunction of conjunctions
}

// Spec is the desired firewall of one tenant.
type Spec struct {
	Default Action
	Rules   []CompiledRule
	Lists   map[string][]netip.Prefix // every list, referenced or not
}

var (
	ruleIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,47}$`)
	listRe   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,27}$`)
)

// Env is what this server gives rules beyond the packet: its site and
// region (cf.colo.name, cf.colo.region) and the geo databases
// (ip.src.country, ip.dst.country, ip.src.asnum, ip.dst.asnum). The zero
// Env has none: rules using them are refused.
type Env struct {
	lang.Env
	Geo Geo
	// Shared are the operator's shared lists (nfhost/lists/<name>): a
	// rule's $name that is not one of the tenant's own lists refers to
	// the shared list of that name.
	Shared map[string][]netip.Prefix
	// Version changes whenever Geo's or Shared's contents do (plans are
	// cached by it).
	Version string
}

// MaxSharedListEntries bounds one shared list.
const MaxSharedListEntries = 1_000_000

// SharedListPrefix starts the names shared lists have in a Spec (and
// their sets, l4__s_<name>): tenant lists cannot start with "_".
const SharedListPrefix = "_s_"

var sharedRe = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,47}$`)

// ParseSharedList validates a shared list: its name, and its parts (each
// a JSON array of addresses and CIDRs), merged into one sorted list.
func ParseSharedList(name string, parts [][]byte) ([]netip.Prefix, error) {
	if !sharedRe.MatchString(name) {
		return nil, fmt.Errorf("lists/%s: invalid shared list name: must match %s", name, sharedRe)
	}
	var ps []netip.Prefix
	for i, b := range parts {
		var entries []string
		if err := json.Unmarshal(b, &entries); err != nil {
			return nil, fmt.Errorf("lists/%s: part %d: want a JSON array of addresses and CIDRs: %w", name, i, err)
		}
		if len(ps)+len(entries) > MaxSharedListEntries {
			return nil, fmt.Errorf("lists/%s: more than %d entries", name, MaxSharedListEntries)
		}
		for j, e := range entries {
			p, err := doc.ParseAddrOrPrefix(e)
			if err != nil {
				return nil, fmt.Errorf("lists/%s: part %d entry %d %q: %w", name, i, j, e, err)
			}
			ps = append(ps, p)
		}
	}
	return MergePrefixes(ps), nil
}

// Geo answers which prefixes a country or an AS holds. A nil Geo, or one
// whose HasCountries/HasASNs is false, has no such database.
type Geo interface {
	HasCountries() bool
	HasASNs() bool
	Country(code string) []netip.Prefix
	ASN(asn uint32) []netip.Prefix
}

// OfflineEnv is the environment for checking a document away from any
// server (nsctl): every site, region and database is assumed present, so
// only what is wrong everywhere is refused. The geo lists it produces are
// empty.
func OfflineEnv() Env {
	return Env{Env: lang.Env{Site: "-", Region: "-"}, Geo: offlineGeo{}}
}

type offlineGeo struct{}

func (offlineGeo) HasCountries() bool            { return true }
func (offlineGeo) HasASNs() bool                 { return true }
func (offlineGeo) Country(string) []netip.Prefix { return nil }
func (offlineGeo) ASN(uint32) []netip.Prefix     { return nil }

// GeoListPrefix starts the names of the lists the geo fields compile to;
// tenant lists cannot start with it.
const GeoListPrefix = "_"

// Parse decodes and validates a firewall document for tenant on a server
// without site, region or geo databases.
func Parse(tenant string, data []byte) (Spec, error) { return ParseEnv(tenant, data, Env{}) }

// ParseEnv decodes and validates a firewall document for tenant on a
// server with env.
func ParseEnv(tenant string, data []byte, env Env) (Spec, error) {
	if len(data) > MaxDocumentBytes {
		return Spec{}, &doc.FieldError{Tenant: tenant, Key: doc.KeyFirewall,
			Msg: fmt.Sprintf("document is %d bytes, at most %d (4 MiB)", len(data), MaxDocumentBytes)}
	}
	var c Config
	if err := doc.DecodeStrict(tenant, doc.KeyFirewall, data, &c); err != nil {
		return Spec{}, err
	}
	return c.ValidateEnv(tenant, env)
}

// Validate checks every field and compiles the expressions for a server
// without site, region or geo databases.
func (c Config) Validate(tenant string) (Spec, error) { return c.ValidateEnv(tenant, Env{}) }

// ValidateEnv checks every field and compiles the expressions for a
// server with env.
func (c Config) ValidateEnv(tenant string, env Env) (Spec, error) {
	var errs doc.Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &doc.FieldError{Tenant: tenant, Key: doc.KeyFirewall, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	spec := Spec{Default: Allow, Lists: map[string][]netip.Prefix{}}
	switch c.Default {
	case "", Allow:
	case Block:
		spec.Default = Block
	default:
		add("default", string(c.Default), "must be allow or block")
	}
	if c.Rules == nil {
		add("rules", "", "required: a list of rules (may be empty)")
	}
	// Over a count limit, say so and stop: validating 10,000 rules or
	// parsing millions of entries only to refuse them would cost the pass
	// what the limits are there to bound.
	if len(c.Rules) > MaxRules {
		add("rules", "", "%d rules, at most %d", len(c.Rules), MaxRules)
	}
	if len(c.Lists) > MaxLists {
		add("lists", "", "%d lists, at most %d", len(c.Lists), MaxLists)
	}
	total := 0
	for _, entries := range c.Lists {
		total += len(entries)
	}
	if total > MaxListsEntries {
		add("lists", "", "%d entries in all lists, at most %d", total, MaxListsEntries)
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	// Sorted, so that errors come in the same order every time.
	names := make([]string, 0, len(c.Lists))
	for n := range c.Lists {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if ps, ok := validList(n, c.Lists[n], add); ok {
			spec.Lists[n] = ps
		}
	}
	ids := doc.NewIDs("rules", ruleIDRe)
	for i, r := range c.Rules {
		path := fmt.Sprintf("rules[%d]", i)
		ids.Check(i, r.ID, add)
		cr, ok := compileRule(path, r, c.Lists, names, env, spec.Lists, add)
		if ok && (r.Enabled == nil || *r.Enabled) {
			spec.Rules = append(spec.Rules, cr)
		}
	}
	if len(errs) > 0 {
		return Spec{}, errs
	}
	return spec, nil
}

// validList parses and merges one named list; ok is false if its name or
// length is refused (its entries are then not looked at).
func validList(name string, entries []string, add func(path, value, format string, args ...any)) (ps []netip.Prefix, ok bool) {
	path := "lists." + name
	if !listRe.MatchString(name) {
		add(path, "", "invalid list name: must match %s", listRe)
		return nil, false
	}
	if len(entries) > MaxListEntries {
		add(path, "", "%d entries, at most %d", len(entries), MaxListEntries)
		return nil, false
	}
	ps = make([]netip.Prefix, 0, len(entries))
	for i, s := range entries {
		p, err := doc.ParseAddrOrPrefix(s)
		if err != nil {
			add(fmt.Sprintf("%s[%d]", path, i), s, "%v", err)
			continue
		}
		ps = append(ps, p)
	}
	return MergePrefixes(ps), true
}

// compileRule checks a rule's action and expression (every list it refers
// to must exist in lists; names, sorted, feed the suggestions), folds it
// for env and normalises it; ok is false if the expression is refused.
// Geo conditions become lists added to out.
func compileRule(path string, r Rule, lists map[string][]string, names []string, env Env, out map[string][]netip.Prefix, add func(path, value, format string, args ...any)) (CompiledRule, bool) {
	switch r.Action {
	case Allow, Block, Log:
	default:
		add(path+".action", string(r.Action), "must be allow, block or log")
	}
	e, err := lang.Parse(r.Expression)
	if err != nil {
		add(path+".expression", "", "%v", err)
		return CompiledRule{}, false
	}
	var unsupported error
	lang.Walk(e, func(x lang.Expr) {
		if f := atomField(x); f != nil && f.Unsupported != "" && unsupported == nil {
			unsupported = &lang.Error{Pos: x.Pos(), Msg: f.Unsupported}
		}
	})
	if unsupported != nil {
		add(path+".expression", "", "%v", unsupported)
		return CompiledRule{}, false
	}
	for _, ref := range lang.ListRefs(e) {
		_, shared := env.Shared[ref.List]
		if _, ok := lists[ref.List]; !ok && !shared {
			msg := fmt.Sprintf("%s: unknown list $%s", ref.Pos(), ref.List)
			if s := lang.Suggest(ref.List, names); s != "" {
				msg += fmt.Sprintf("; did you mean $%s?", s)
			}
			add(path+".expression", "", "%s", msg)
		}
	}
	if e, err = lang.Fold(e, env.Env); err == nil {
		e, err = resolveGeo(e, env.Geo, out)
	}
	if err == nil {
		e = resolveShared(e, lists, env.Shared, out)
	}
	if err != nil {
		add(path+".expression", "", "%v", err)
		return CompiledRule{}, false
	}
	alts, err := lang.DNF(e, MaxAlternatives)
	if err != nil {
		add(path+".expression", "", "%v", err)
		return CompiledRule{}, false
	}
	return CompiledRule{ID: r.ID, Action: r.Action, Source: r.Expression, Alts: alts}, true
}

func atomField(e lang.Expr) *lang.Field {
	switch x := e.(type) {
	case *lang.Cmp:
		return x.Field
	case *lang.In:
		return x.Field
	case *lang.Flag:
		return x.Field
	}
	return nil
}

// resolveGeo rewrites country and AS conditions into address list
// lookups: ip.src.country in {"BR" "FR"} becomes ip.src in $_cc_br_fr, a
// list of the prefixes the database places in those countries, shared by
// every rule (and both directions) that names the same set. != is the
// negation of ==.
func resolveGeo(e lang.Expr, geo Geo, out map[string][]netip.Prefix) (lang.Expr, error) {
	var err error
	res := lang.MapAtoms(e, func(e lang.Expr) lang.Expr {
		f := atomField(e)
		if f == nil {
			return e
		}
		var vals []lang.Value
		ne := false
		switch x := e.(type) {
		case *lang.Cmp:
			vals, ne = []lang.Value{x.Val}, x.Op == lang.OpNe
			if x.Op != lang.OpEq && x.Op != lang.OpNe && (f.Name == "ip.src.asnum" || f.Name == "ip.dst.asnum") {
				if err == nil {
					err = &lang.Error{Pos: e.Pos(), Msg: fmt.Sprintf("%s takes ==, != or in {...}", f.Name)}
				}
				return e
			}
		case *lang.In:
			vals = x.Set
		}
		var addr string
		var name string
		var ps []netip.Prefix
		switch f.Name {
		case "ip.src.country", "ip.dst.country":
			if geo == nil || !geo.HasCountries() {
				if err == nil {
					err = &lang.Error{Pos: e.Pos(), Msg: fmt.Sprintf("%s needs a country database: this server has none (nsd --geoip-db)", f.Name)}
				}
				return e
			}
			addr = strings.TrimSuffix(f.Name, ".country")
			var codes []string
			for _, v := range vals {
				codes = append(codes, strings.ToLower(v.Str))
				ps = append(ps, geo.Country(v.Str)...)
			}
			name = geoListName("cc", codes)
		case "ip.src.asnum", "ip.dst.asnum":
			if geo == nil || !geo.HasASNs() {
				if err == nil {
					err = &lang.Error{Pos: e.Pos(), Msg: fmt.Sprintf("%s needs an ASN database: this server has none (nsd --asn-db)", f.Name)}
				}
				return e
			}
			addr = strings.TrimSuffix(f.Name, ".asnum")
			var nums []string
			for _, v := range vals {
				lo, hi := v.Int, v.Int
				if v.Kind == lang.KindIntRange {
					lo, hi = v.Lo, v.Hi
				}
				if hi-lo > 4096 {
					if err == nil {
						err = &lang.Error{Pos: v.P, Msg: "an AS number range covers at most 4096 numbers"}
					}
					return e
				}
				for n := lo; n <= hi; n++ {
					ps = append(ps, geo.ASN(uint32(n))...)
				}
				nums = append(nums, v.String())
			}
			name = geoListName("as", nums)
		default:
			return e
		}
		if _, ok := out[name]; !ok {
			out[name] = MergePrefixes(ps)
		}
		var in lang.Expr = &lang.In{Field: lang.Fields[addr], List: name, P: e.Pos()}
		if ne {
			in = &lang.Not{X: in, P: e.Pos()}
		}
		return in
	})
	return res, err
}

// resolveShared points list references that are not the tenant's own
// lists at the shared list of that name (added to out as _s_<name>, the
// shared slice itself: no copy per tenant).
func resolveShared(e lang.Expr, own map[string][]string, shared map[string][]netip.Prefix, out map[string][]netip.Prefix) lang.Expr {
	return lang.MapAtoms(e, func(e lang.Expr) lang.Expr {
		if x, ok := e.(*lang.In); ok {
			if _, mine := own[x.List]; x.List != "" && !mine {
				if ps, ok := shared[x.List]; ok {
					in := *x
					in.List = SharedListPrefix + x.List
					out[in.List] = ps
					return &in
				}
			}
		}
		return e
	})
}

// geoListName names the list for a set of countries or AS numbers: sorted
// and joined, or hashed when long.
func geoListName(kind string, vals []string) string {
	sort.Strings(vals)
	vals = slices.Compact(vals)
	n := GeoListPrefix + kind + "_" + strings.ReplaceAll(strings.Join(vals, "_"), "..", "-")
	if len(n) > 40 {
		h := sha256.Sum256([]byte(n))
		n = GeoListPrefix + kind + "_" + hex.EncodeToString(h[:8])
	}
	return n
}

// MergePrefixes sorts and removes prefixes covered by others, so the
// interval set never receives overlapping intervals.
func MergePrefixes(ps []netip.Prefix) []netip.Prefix {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
	out := ps[:0]
	for _, p := range ps {
		if n := len(out); n > 0 && out[n-1].Addr().BitLen() == p.Addr().BitLen() && out[n-1].Contains(p.Addr()) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Counter is a rule's hit count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}
