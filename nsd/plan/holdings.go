package plan

import (
	"net/netip"
	"slices"
)

// Holdings is the prefixes every tenant on the host holds, kept from one
// pass to the next, so that judging a pass that changes a few tenants
// costs lookups in an index of the holdings instead of building one (or
// scanning every holding) from every tenant's: with 10,000 tenants that
// was most of an incremental pass.
//
// The index is the one AssignPrefixes builds, kept: a changed holding
// disables the tenant's entries and is appended to its short list, and
// the index is built again when that list grows past an eighth of the
// entries (so a change costs O(log n) amortised).
type Holdings struct {
	of  map[string][]netip.Prefix
	idx *prefixIndex
}

// NewHoldings returns empty holdings.
func NewHoldings() *Holdings {
	return &Holdings{of: map[string][]netip.Prefix{}, idx: newPrefixIndex(nil)}
}

// Set records that tenant id holds ps now (none: it holds nothing). ps is
// kept: the caller must not change it afterwards.
func (h *Holdings) Set(id string, ps []netip.Prefix) {
	old, had := h.of[id]
	if !had && len(ps) == 0 || had && slices.Equal(old, ps) {
		return
	}
	if len(ps) == 0 {
		delete(h.of, id)
	} else {
		h.of[id] = ps
	}
	h.idx.set(id, ps)
	if len(h.idx.recent) > max(64, len(h.idx.sorted)/8) {
		h.idx = newPrefixIndex(h.of)
	}
}

// Of returns the prefixes tenant id holds.
func (h *Holdings) Of(id string) []netip.Prefix { return h.of[id] }

// Map returns every holding by tenant (read-only).
func (h *Holdings) Map() map[string][]netip.Prefix { return h.of }

// layeredClaims is the most claims Assign judges against the kept index;
// a pass with more (a full pass) builds an index of its own, as
// AssignPrefixes does, since every claim's tenant would be an exception to
// the kept one.
const layeredClaims = 64

// Assign is AssignPrefixes(h.Map(), claims): the same decisions with the
// same messages, in O(claims × log n) for a pass with few claims.
func (h *Holdings) Assign(claims []Claim) map[string]error {
	if len(claims) > layeredClaims {
		return assignPrefixes(h.of, claims, scanClaims)
	}
	refused := map[string]error{}
	for {
		// The claiming tenants' holdings in this round: what they keep,
		// or all they held if refused.
		over := make(map[string][]netip.Prefix, len(claims))
		for _, c := range claims {
			ps := h.of[c.Tenant]
			if refused[c.Tenant] == nil {
				ps = Kept(ps, c.Prefixes)
			}
			over[c.Tenant] = ps
		}
		if !judge(layered{base: h.idx, over: over}, claims, refused, over) {
			return refused
		}
	}
}

// layered is the kept index with the holdings of a pass's claiming
// tenants (over) in place of what the index has for them.
type layered struct {
	base *prefixIndex
	over map[string][]netip.Prefix
}

func (l layered) set(id string, ps []netip.Prefix) { l.over[id] = ps }

func (l layered) overlapping(id string, p netip.Prefix) []indexEntry {
	out := slices.DeleteFunc(l.base.overlapping(id, p), func(e indexEntry) bool {
		_, replaced := l.over[e.tenant]
		return replaced
	})
	out = append(out, holdingScan(l.over).overlapping(id, p)...)
	slices.SortFunc(out, byTenantThenPos)
	return out
}

// SlotTable is the slots the tenants on the host hold, kept from one pass
// to the next (see Slots).
type SlotTable struct {
	of   map[string]uint16
	used map[uint16]int // tenants per slot (more than one only in a kernel state nsd did not make)
}

// NewSlotTable takes the slots tenants hold now (0: none).
func NewSlotTable(existing map[string]uint16) *SlotTable {
	t := &SlotTable{of: make(map[string]uint16, len(existing)), used: make(map[uint16]int, len(existing))}
	for id, slot := range existing {
		t.Set(id, slot)
	}
	return t
}

// Set records tenant id's slot (0: it has none).
func (t *SlotTable) Set(id string, slot uint16) {
	if old, ok := t.of[id]; ok {
		if old == slot {
			return
		}
		if t.used[old]--; t.used[old] <= 0 {
			delete(t.used, old)
		}
		delete(t.of, id)
	}
	if slot != 0 {
		t.of[id] = slot
		t.used[slot]++
	}
}

// Map returns every tenant's slot (read-only).
func (t *SlotTable) Map() map[string]uint16 { return t.of }

// Pass returns the slot allocator of one pass over the table: what it
// allocates is its own, and the table changes only through Set.
func (t *SlotTable) Pass() *Slots {
	return &Slots{of: map[string]uint16{}, used: map[uint16]bool{}, table: t}
}
