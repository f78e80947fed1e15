package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/nfhost/nfhost/internal/doc"
)

// prefixIndex finds the held prefixes that overlap a given one without
// comparing it with every tenant's: AssignPrefixes over 10,000 tenants
// took 57 s per full pass comparing each claim with every holding (and
// sorting every tenant ID for each claim), 0.3 s at 1,000.
//
// Two prefixes overlap when one contains the other. The prefixes that
// contain p are found by looking up p's own masked forms at every shorter
// length in a map; those inside p by a binary search of the entries
// sorted by address. Entries of a tenant whose holding changed are
// disabled through a generation number and its new holding appended to a
// short list scanned in full (only tenants that take new prefixes land
// there).
type prefixIndex struct {
	exact  map[netip.Prefix][]indexEntry
	sorted []indexEntry // by masked address, then length
	recent []indexEntry
	gen    map[string]int
}

type indexEntry struct {
	p      netip.Prefix // masked
	orig   netip.Prefix // as held (for the message)
	tenant string
	pos    int // position in the tenant's holding (error order)
	gen    int
}

// overlapper answers AssignPrefixes' questions: which held prefixes of
// other tenants overlap a claim, with holdings replaced as claims are
// accepted.
type overlapper interface {
	overlapping(id string, p netip.Prefix) []indexEntry
	set(id string, ps []netip.Prefix)
}

// scanClaims is how many claims a pass may judge by scanning every holding
// instead of building the index: building it sorts every held prefix (9 ms
// with 10,000 tenants, the larger part of an incremental pass), while one
// scan compares a claim with each held prefix (about 0.1 ms).
const scanClaims = 8

// newOverlapper returns the index, or a scan of holdings for a pass with
// few claims. Both report the same overlaps in the same order.
func newOverlapper(holdings map[string][]netip.Prefix, claims, scanLimit int) overlapper {
	if claims <= scanLimit {
		return holdingScan(holdings)
	}
	return newPrefixIndex(holdings)
}

// holdingScan checks a claim against every holding. AssignPrefixes
// updates the holdings it was made from as it accepts claims, so set has
// nothing to do.
type holdingScan map[string][]netip.Prefix

func (h holdingScan) set(string, []netip.Prefix) {}

func (h holdingScan) overlapping(id string, p netip.Prefix) []indexEntry {
	var out []indexEntry
	for t, ps := range h {
		if t == id {
			continue
		}
		for j, q := range ps {
			if q.Overlaps(p) {
				out = append(out, indexEntry{orig: q, tenant: t, pos: j})
			}
		}
	}
	slices.SortFunc(out, byTenantThenPos)
	return out
}

func byTenantThenPos(a, b indexEntry) int {
	if c := cmp.Compare(a.tenant, b.tenant); c != 0 {
		return c
	}
	return cmp.Compare(a.pos, b.pos)
}

func newPrefixIndex(holdings map[string][]netip.Prefix) *prefixIndex {
	x := &prefixIndex{exact: map[netip.Prefix][]indexEntry{}, gen: map[string]int{}}
	for id, ps := range holdings {
		for i, p := range ps {
			e := indexEntry{p: p.Masked(), orig: p, tenant: id, pos: i}
			x.exact[e.p] = append(x.exact[e.p], e)
			x.sorted = append(x.sorted, e)
		}
	}
	slices.SortFunc(x.sorted, func(a, b indexEntry) int {
		if c := a.p.Addr().Compare(b.p.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(a.p.Bits(), b.p.Bits())
	})
	return x
}

func (x *prefixIndex) live(e indexEntry) bool { return e.gen == x.gen[e.tenant] }

// set replaces tenant id's holding.
func (x *prefixIndex) set(id string, ps []netip.Prefix) {
	x.gen[id]++
	for i, p := range ps {
		x.recent = append(x.recent, indexEntry{p: p.Masked(), orig: p, tenant: id, pos: i, gen: x.gen[id]})
	}
}

// overlapping returns the live entries of tenants other than id that
// overlap p, in the order CheckOverlap reports them: by tenant, then by
// position in its holding.
func (x *prefixIndex) overlapping(id string, p netip.Prefix) []indexEntry {
	p = p.Masked()
	var out []indexEntry
	add := func(e indexEntry) {
		if e.tenant != id && x.live(e) {
			out = append(out, e)
		}
	}
	// Prefixes that contain p (p itself included).
	for bits := 0; bits <= p.Bits(); bits++ {
		q, _ := p.Addr().Prefix(bits)
		for _, e := range x.exact[q] {
			add(e)
		}
	}
	// Prefixes inside p, longer than it.
	i, _ := slices.BinarySearchFunc(x.sorted, p.Addr(), func(e indexEntry, a netip.Addr) int { return e.p.Addr().Compare(a) })
	for ; i < len(x.sorted) && p.Contains(x.sorted[i].p.Addr()); i++ {
		if x.sorted[i].p.Bits() > p.Bits() {
			add(x.sorted[i])
		}
	}
	for _, e := range x.recent {
		if e.p.Overlaps(p) {
			add(e)
		}
	}
	slices.SortFunc(out, byTenantThenPos)
	return slices.CompactFunc(out, func(a, b indexEntry) bool { return a.tenant == b.tenant && a.pos == b.pos })
}

// checkOverlaps is CheckOverlap against x.
func checkOverlaps(x overlapper, id string, prefixes []netip.Prefix) error {
	var errs doc.Errors
	for i, p := range prefixes {
		for _, e := range x.overlapping(id, p) {
			errs = append(errs, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork,
				Path: fmt.Sprintf("prefixes[%d]", i), Value: p.String(),
				Msg: fmt.Sprintf("overlaps %s held by tenant %q", e.orig, e.tenant)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}
