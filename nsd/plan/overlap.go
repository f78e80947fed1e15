package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// CheckOverlap rejects prefixes of tenant id that overlap a prefix another
// tenant already holds. holdings maps tenant ID to the prefixes it holds
// (applied, or accepted earlier in the same pass); id's own entry is ignored.
// The incumbent always keeps its prefix.
func CheckOverlap(id string, prefixes []netip.Prefix, holdings map[string][]netip.Prefix) error {
	return checkOverlaps(newPrefixIndex(holdings), id, prefixes)
}

// SlotFor returns id's existing slot or allocates a free one.
func SlotFor(id string, existing map[string]uint16) (uint16, error) {
	return NewSlots(existing).For(id)
}

// Slots is the slot table of one pass: each tenant's slot and the set in
// use, so that allocating a slot for a new tenant does not rebuild the set
// from every tenant's (a cold start of 10,000 tenants did, 10,000 times).
type Slots struct {
	of   map[string]uint16
	used map[uint16]bool
	// table, if set, holds the slots tenants had before the pass
	// (SlotTable.Pass); of and used then hold only the pass's own.
	table *SlotTable
}

// NewSlots takes the slots tenants hold now (0: none).
func NewSlots(existing map[string]uint16) *Slots {
	s := &Slots{of: make(map[string]uint16, len(existing)), used: make(map[uint16]bool, len(existing))}
	for id, slot := range existing {
		if slot != 0 {
			s.of[id], s.used[slot] = slot, true
		}
	}
	return s
}

// For returns id's slot, allocating and recording a free one if it has
// none.
func (s *Slots) For(id string) (uint16, error) {
	if slot, ok := s.of[id]; ok {
		return slot, nil
	}
	if s.table != nil {
		if slot, ok := s.table.of[id]; ok {
			return slot, nil
		}
	}
	slot, err := probe(id, func(slot uint16) bool { return s.used[slot] || s.table != nil && s.table.used[slot] > 0 })
	if err != nil {
		return 0, err
	}
	s.of[id], s.used[slot] = slot, true
	return slot, nil
}

// CheckTunnelPairs refuses a tunnel whose (anycast, customer) endpoint
// pair another tenant already uses: decapsulation finds the tunnel by
// that pair, so it must name one tunnel on the whole fleet. The tenant
// holding the pair keeps it.
func CheckTunnelPairs(id string, tunnels []tunspec.ValidTunnel, holdings map[string][]tunspec.ValidTunnel) error {
	return NewTunnelPairs(holdings).Check(id, tunnels)
}

// TunnelPairs indexes the tunnel endpoint pairs each tenant holds in a
// pass, so that checking one tenant's tunnels costs a lookup per tunnel
// rather than a sort of every tenant ID and a scan of every tunnel (a full
// pass over 10,000 tenants with tunnels did that 10,000 times).
type TunnelPairs struct {
	by  map[pairKey][]pairOwner
	of  map[string][]tunspec.ValidTunnel
	gen map[string]int
}

type pairKey struct{ anycast, customer netip.Addr }

type pairOwner struct {
	tenant, tunnel string
	pos, gen       int
}

// NewTunnelPairs indexes holdings (tenant → the tunnels it holds).
func NewTunnelPairs(holdings map[string][]tunspec.ValidTunnel) *TunnelPairs {
	x := &TunnelPairs{by: map[pairKey][]pairOwner{}, of: map[string][]tunspec.ValidTunnel{}, gen: map[string]int{}}
	for id, ts := range holdings {
		x.Set(id, ts)
	}
	return x
}

// Set records the tunnels tenant id holds now.
func (x *TunnelPairs) Set(id string, tunnels []tunspec.ValidTunnel) {
	x.gen[id]++
	x.of[id] = tunnels
	for i, t := range tunnels {
		k := pairKey{t.Anycast, t.Customer}
		x.by[k] = append(x.by[k], pairOwner{tenant: id, tunnel: t.Name, pos: i, gen: x.gen[id]})
	}
}

// Holding returns the tunnels tenant id holds.
func (x *TunnelPairs) Holding(id string) []tunspec.ValidTunnel { return x.of[id] }

// Check refuses a tunnel of id's whose endpoint pair another tenant holds,
// in a stable order (by tenant, then tunnel).
func (x *TunnelPairs) Check(id string, tunnels []tunspec.ValidTunnel) error {
	var errs doc.Errors
	for i, t := range tunnels {
		k := pairKey{t.Anycast, t.Customer}
		var live []pairOwner
		for _, o := range x.by[k] {
			if o.tenant != id && o.gen == x.gen[o.tenant] {
				live = append(live, o)
			}
		}
		if len(live) != len(x.by[k]) {
			x.compact(k)
		}
		slices.SortFunc(live, func(a, b pairOwner) int {
			if c := strings.Compare(a.tenant, b.tenant); c != 0 {
				return c
			}
			return a.pos - b.pos
		})
		for _, o := range live {
			errs = append(errs, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork,
				Path: fmt.Sprintf("tunnels[%d].customer_endpoint", i), Value: t.Customer.String(),
				Msg: fmt.Sprintf("the endpoint pair %s - %s is used by tenant %q (tunnel %s)", t.Anycast, t.Customer, o.tenant, o.tunnel)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// compact drops the entries of replaced holdings under k.
func (x *TunnelPairs) compact(k pairKey) {
	x.by[k] = slices.DeleteFunc(x.by[k], func(o pairOwner) bool { return o.gen != x.gen[o.tenant] })
	if len(x.by[k]) == 0 {
		delete(x.by, k)
	}
}

// Claim is the prefix list one tenant's new network config asks for.
type Claim struct {
	Tenant   string
	Prefixes []netip.Prefix
}

// AssignPrefixes decides which claims of one reconcile pass may take effect
// and returns the refused ones with their errors.
//
// held maps every tenant to the prefixes it holds now; claims are the valid
// new configs of the tenants that change in the pass, in priority order
// (older configs first). The whole pass is judged at once, against the
// state it leads to, not tenant by tenant against the state before it:
//   - a changing tenant keeps the prefixes it holds and still claims (the
//     incumbent keeps its prefix);
//   - what a changing tenant gives up is free for the others in the same
//     pass, so prefixes may move between tenants, or be swapped, in one
//     change (for example one Consul transaction);
//   - a claim that overlaps a prefix another tenant keeps, or an earlier
//     claim, is refused, and the refused tenant keeps all it held. That may
//     refuse other claims in turn: the result is the fixpoint.
func AssignPrefixes(held map[string][]netip.Prefix, claims []Claim) map[string]error {
	return assignPrefixes(held, claims, scanClaims)
}

// assignPrefixes is AssignPrefixes, scanning the holdings instead of
// indexing them for up to scanLimit claims.
func assignPrefixes(held map[string][]netip.Prefix, claims []Claim, scanLimit int) map[string]error {
	refused := map[string]error{}
	claimed := make(map[string][]netip.Prefix, len(claims))
	for _, c := range claims {
		claimed[c.Tenant] = c.Prefixes
	}
	for {
		holdings := make(map[string][]netip.Prefix, len(held)+len(claims))
		for id, ps := range held {
			if want, ok := claimed[id]; ok && refused[id] == nil {
				holdings[id] = Kept(ps, want)
			} else {
				holdings[id] = ps
			}
		}
		if !judge(newOverlapper(holdings, len(claims), scanLimit), claims, refused, holdings) {
			return refused
		}
	}
}

// judge is one round of AssignPrefixes: each claim not refused yet is
// checked against x, which holds holds (by tenant), and refused or, if
// accepted, takes effect in x and holds. It reports whether it refused any.
func judge(x overlapper, claims []Claim, refused map[string]error, holds map[string][]netip.Prefix) bool {
	more := false
	for _, c := range claims {
		if refused[c.Tenant] != nil {
			continue
		}
		if err := checkOverlaps(x, c.Tenant, c.Prefixes); err != nil {
			refused[c.Tenant] = err
			more = true
			continue
		}
		if !slices.Equal(holds[c.Tenant], c.Prefixes) {
			holds[c.Tenant] = c.Prefixes
			x.set(c.Tenant, c.Prefixes)
		}
	}
	return more
}

// Kept returns the prefixes of held that want still lists: what a tenant
// keeps through a change of its config.
func Kept(held, want []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range held {
		for _, q := range want {
			if p == q {
				out = append(out, p)
				break
			}
		}
	}
	return out
}
