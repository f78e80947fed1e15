package plan

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// Holdings kept over many changes (entries disabled, the short list
// growing, the index built again) decide every pass as the pairwise
// comparison over the same holdings does, with the same messages.
func TestHoldingsAssignMatchesPairwise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	h := NewHoldings()
	for round := 0; round < 3000; round++ {
		// A few tenants change what they hold, some to nothing.
		for k := r.IntN(4); k >= 0; k-- {
			id := fmt.Sprintf("t%d", r.IntN(40))
			var ps []netip.Prefix
			for n := r.IntN(3); n > 0; n-- {
				ps = append(ps, randPrefix(r))
			}
			h.Set(id, ps)
		}
		held := maps.Clone(h.Map())
		var claims []Claim
		seen := map[string]bool{}
		n := 1 + r.IntN(6)
		if round%100 == 0 {
			n = layeredClaims + 5 // a pass past the kept index's limit
		}
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("t%d", r.IntN(40))
			if seen[id] {
				continue
			}
			seen[id] = true
			claims = append(claims, randClaim(r, id, held[id]))
		}
		want := assignReference(held, claims)
		if got := h.Assign(claims); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: held %v claims %v\ngot  %v\nwant %v", round, held, claims, got, want)
		}
		// Accepted claims take effect, as the daemon's pass makes them.
		refused := h.Assign(claims)
		for _, c := range claims {
			if refused[c.Tenant] == nil && r.IntN(2) == 0 {
				h.Set(c.Tenant, c.Prefixes)
			}
		}
	}
	if len(h.idx.recent) > max(64, len(h.idx.sorted)/8) {
		t.Fatalf("the short list has %d entries against %d indexed: never rebuilt", len(h.idx.recent), len(h.idx.sorted))
	}
}

// A pass over a kept slot table allocates what a table built for the pass
// allocates, and leaves the table as it was.
func TestSlotTablePass(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	table := NewSlotTable(nil)
	for round := 0; round < 500; round++ {
		for k := r.IntN(5); k >= 0; k-- {
			table.Set(fmt.Sprintf("t%d", r.IntN(60)), uint16(r.IntN(80)))
		}
		before := maps.Clone(table.Map())
		fresh, kept := NewSlots(before), table.Pass()
		for k := 0; k < 10; k++ {
			id := fmt.Sprintf("t%d", r.IntN(90))
			a, errA := fresh.For(id)
			b, errB := kept.For(id)
			if a != b || fmt.Sprint(errA) != fmt.Sprint(errB) {
				t.Fatalf("round %d: slot of %s: fresh table %d (%v), kept table %d (%v)", round, id, a, errA, b, errB)
			}
		}
		if !maps.Equal(before, table.Map()) {
			t.Fatalf("round %d: a pass changed the table", round)
		}
	}
}
