package dos

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/doc"
)

// PlacementError is a document Build could not place: the host's
// signature slots or rate-limit rules ran out, or a tenant's rate limit
// lies outside its prefixes. Err names the document and the field
// (a *config.FieldError). Kept says whether the version of the document
// placed before stays in force; when false the document has no rules in
// the maps (it never had any placed, or the one it had no longer fits its
// tenant's prefixes).
type PlacementError struct {
	Err  error
	Kept bool
}

func (e *PlacementError) Error() string { return e.Err.Error() }

func (e *PlacementError) Unwrap() error { return e.Err }

// cost is what a document takes from the host's budgets.
type cost struct{ sigs, rates int }

func (c cost) add(o cost) cost { return cost{c.sigs + o.sigs, c.rates + o.rates} }

func (c cost) sub(o cost) cost { return cost{c.sigs - o.sigs, c.rates - o.rates} }

func (c cost) within(o cost) bool { return c.sigs <= o.sigs && c.rates <= o.rates }

var budget = cost{dosspec.MaxSignatures, MaxRateRules}

// live says whether a signature is still to be written at now.
func live(sg dosspec.CompiledSignature, now time.Time) bool {
	return now.IsZero() || sg.Expires.IsZero() || sg.Expires.After(now)
}

func specCost(s *dosspec.Spec, now time.Time) cost {
	if s == nil {
		return cost{}
	}
	c := cost{rates: len(s.RateLimits)}
	for _, sg := range s.Signatures {
		if live(sg, now) {
			c.sigs++
			if sg.Action == "ratelimit" {
				c.rates++
			}
		}
	}
	return c
}

// candidate is one document competing for the budgets.
type candidate struct {
	key      string // GlobalKey or the tenant ID
	tenant   string // "": the global document
	prefixes []netip.Prefix
	want     *dosspec.Spec // the current document (nil: the tenant has none)
	held     *dosspec.Spec // the version in force (nil: none)
	reserved cost          // what held takes
}

func (c *candidate) fieldErr(path, value, format string, args ...any) error {
	key := doc.KeyDoS
	if c.tenant == "" {
		key = dosspec.GlobalKey
	}
	return &doc.FieldError{Tenant: c.tenant, Key: key, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// check is what a document must satisfy whatever else is placed: a
// tenant's rate limits lie inside its prefixes.
func (c *candidate) check(s *dosspec.Spec) error {
	if c.tenant == "" {
		return nil
	}
	return s.CheckPrefixes(c.tenant, c.prefixes)
}

// fit reports the first signature or rate limit of c.want that finds no
// free slot when the other documents take others (of which global is the
// global document's share).
func (c *candidate) fit(others, global cost, now time.Time) error {
	if c.tenant == "" {
		global = cost{}
	}
	// in use when the item at hand does not fit: global's share, the other
	// tenants' and the part of this document that fitted.
	full := func(kind string, max, other, glob, free int) string {
		g, t := glob, other-glob
		if c.tenant == "" {
			g += free
		} else {
			t += free
		}
		return fmt.Sprintf("no free %s (%d in use: %d global, %d tenant)", kind, max, g, t)
	}
	free := dosspec.MaxSignatures - others.sigs
	n := 0
	for i, sg := range c.want.Signatures {
		if !live(sg, now) {
			continue
		}
		if n++; n > free {
			return c.fieldErr(fmt.Sprintf("signatures[%d]", i), "", "%s", full("signature slot", dosspec.MaxSignatures, others.sigs, global.sigs, free))
		}
	}
	free = MaxRateRules - others.rates
	msg := func() string { return full("rate-limit rule", MaxRateRules, others.rates, global.rates, free) }
	if len(c.want.RateLimits) > free {
		return c.fieldErr(fmt.Sprintf("rate_limits[%d]", free), "", "%s", msg())
	}
	n = len(c.want.RateLimits)
	for i, sg := range c.want.Signatures {
		if live(sg, now) && sg.Action == "ratelimit" {
			if n++; n > free {
				return c.fieldErr(fmt.Sprintf("signatures[%d]", i), "", "%s", msg())
			}
		}
	}
	return nil
}

// place decides which version of every document the maps hold (see the
// package documentation for the policy). tenants must have valid
// indexes. It returns the version placed per GlobalKey and tenant ID (nil:
// none) and the documents refused.
func place(d Desired, tenants []TenantInput) (map[string]*dosspec.Spec, map[string]error) {
	global := d.Global
	cands := []*candidate{{key: dosspec.GlobalKey, want: &global, held: d.InForce[dosspec.GlobalKey]}}
	byID := append([]TenantInput(nil), tenants...)
	sort.Slice(byID, func(i, j int) bool { return byID[i].ID < byID[j].ID })
	for _, t := range byID {
		cands = append(cands, &candidate{key: t.ID, tenant: t.ID, prefixes: t.Prefixes, want: t.Spec, held: d.InForce[t.ID]})
	}
	// What is in force keeps its slots. It fitted together when it was
	// placed; only after a restart, when the in-force versions are
	// inferred from the maps, can they exceed the budget, and then the
	// later ones in this order are treated as new.
	var used cost
	for _, c := range cands {
		if c.held == nil || c.check(c.held) != nil {
			c.held = nil
			continue
		}
		k := specCost(c.held, d.Now)
		if !used.add(k).within(budget) {
			c.held = nil
			continue
		}
		c.reserved, used = k, used.add(k)
	}
	// Documents that need no more than they hold always fit, and what they
	// free is there for the others: they go first. Each group keeps the
	// order above (global, then tenants by ID).
	order := make([]*candidate, 0, len(cands))
	for _, grows := range []bool{false, true} {
		for _, c := range cands {
			if fits := specCost(c.want, d.Now).within(c.reserved); fits != grows {
				order = append(order, c)
			}
		}
	}
	placed := map[string]*dosspec.Spec{}
	errs := map[string]error{}
	for _, c := range order {
		if c.want == nil {
			used, c.reserved = used.sub(c.reserved), cost{}
			continue
		}
		others := used.sub(c.reserved)
		err := c.check(c.want)
		if err == nil {
			err = c.fit(others, cands[0].reserved, d.Now)
		}
		if err != nil {
			errs[c.key] = &PlacementError{Err: err, Kept: c.held != nil}
			if c.held != nil {
				placed[c.key] = c.held
			}
			continue
		}
		c.reserved = specCost(c.want, d.Now)
		used = others.add(c.reserved)
		placed[c.key] = c.want
	}
	return placed, errs
}
