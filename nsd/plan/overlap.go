package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// CheckOverlap rejects prefixes of tenant id that overlap a prefix another
// tenant already holds. holdings maps tenant ID to the prefixes it holds
// (applied, or accepted earlier in the same pass); id's own entry is ignored.
// The incumbent always keeps its prefix.
func CheckOverlap(id string, prefixes []netip.Prefix, holdings map[string][]netip.Prefix) error {
	return newPrefixIndex(holdings).check(id, prefixes)
}

// SlotFor returns id's existing slot or allocates a free one.
func SlotFor(id string, existing map[string]uint16) (uint16, error) {
	if s, ok := existing[id]; ok && s != 0 {
		return s, nil
	}
	used := make(map[uint16]bool, len(existing))
	for _, s := range existing {
		used[s] = true
	}
	return probe(id, used)
}

// CheckTunnelPairs refuses a tunnel whose (anycast, customer) endpoint
// pair another tenant already uses: decapsulation finds the tunnel by
// that pair, so it must name one tunnel on the whole fleet. The tenant
// holding the pair keeps it.
func CheckTunnelPairs(id string, tunnels []tunspec.ValidTunnel, holdings map[string][]tunspec.ValidTunnel) error {
	if len(tunnels) == 0 {
		return nil
	}
	others := othersSorted(id, holdings)
	var errs doc.Errors
	for i, t := range tunnels {
		for _, o := range others {
			for _, u := range holdings[o] {
				if t.Anycast == u.Anycast && t.Customer == u.Customer {
					errs = append(errs, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork,
						Path: fmt.Sprintf("tunnels[%d].customer_endpoint", i), Value: t.Customer.String(),
						Msg: fmt.Sprintf("the endpoint pair %s - %s is used by tenant %q (tunnel %s)", t.Anycast, t.Customer, o, u.Name)})
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// othersSorted lists the tenants of holdings other than id, sorted, so
// errors come out in a stable order.
func othersSorted[T any](id string, holdings map[string]T) []string {
	others := make([]string, 0, len(holdings))
	for o := range holdings {
		if o != id {
			others = append(others, o)
		}
	}
	sort.Strings(others)
	return others
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
		x := newPrefixIndex(holdings)
		more := false
		for _, c := range claims {
			if refused[c.Tenant] != nil {
				continue
			}
			if err := x.check(c.Tenant, c.Prefixes); err != nil {
				refused[c.Tenant] = err
				more = true
				continue
			}
			if !slices.Equal(holdings[c.Tenant], c.Prefixes) {
				holdings[c.Tenant] = c.Prefixes
				x.set(c.Tenant, c.Prefixes)
			}
		}
		if !more {
			return refused
		}
	}
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
