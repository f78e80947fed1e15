// Package plan turns validated tenant configuration into the desired kernel
// state of each subsystem. It is a pure function of its inputs: no kernel, no
// Consul, no clock. Its output is golden-tested (testdata/*.golden).
package plan

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// Tenant is one tenant's validated configuration.
type Tenant struct {
	ID      string
	Network config.ValidNetwork
}

// Options are the host-wide settings the plan depends on.
type Options struct {
	NSPrefix string
	// Firewall is what firewall rules may refer to on this server (site,
	// region, geo databases); the zero Env refuses rules that need them.
	Firewall fwspec.Env
	// Reuse is an earlier plan of the same tenant under the same Firewall
	// environment, or nil: ForTenant takes a part from it whose document
	// kept its (non-zero) index instead of parsing it again, so that an
	// edit of the network document does not parse the firewall's rules.
	Reuse *TenantPlan
}

// Desired is the planned state of every tenant on this host.
type Desired struct {
	Tenants map[string]rtspec.TenantSpec
}

// Plan computes the desired state. slots holds the slots tenants already
// have in the kernel (recovered from link aliases); they are kept so that a
// restart never renumbers tables or marks. New tenants get a slot from
// AllocateSlot.
func Plan(opts Options, tenants []Tenant, slots map[string]uint16) (Desired, error) {
	ids := make([]string, 0, len(tenants))
	for _, t := range tenants {
		ids = append(ids, t.ID)
	}
	alloc, err := AllocateSlots(ids, slots)
	if err != nil {
		return Desired{}, err
	}
	d := Desired{Tenants: make(map[string]rtspec.TenantSpec, len(tenants))}
	for _, t := range tenants {
		d.Tenants[t.ID] = rtspec.NewTenantSpec(t.ID, alloc[t.ID], opts.NSPrefix, t.Network.Prefixes)
	}
	return d, nil
}

// AllocateSlots returns a slot for every ID. Existing slots are kept (if two
// tenants claim one slot, the lexically first keeps it); new IDs are placed
// at a hash of their ID with linear probing, in sorted order, so the result
// does not depend on input order.
func AllocateSlots(ids []string, existing map[string]uint16) (map[string]uint16, error) {
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	out := make(map[string]uint16, len(ids))
	used := make(map[uint16]bool, len(ids))
	for _, id := range sorted {
		if s, ok := existing[id]; ok && s != 0 && !used[s] {
			out[id] = s
			used[s] = true
		}
	}
	for _, id := range sorted {
		if _, ok := out[id]; ok {
			continue
		}
		s, err := probe(id, func(s uint16) bool { return used[s] })
		if err != nil {
			return nil, err
		}
		out[id] = s
		used[s] = true
	}
	return out, nil
}

func probe(id string, used func(uint16) bool) (uint16, error) {
	h := fnv.New32a()
	h.Write([]byte(id))
	start := h.Sum32() % owned.MaxSlot
	for i := uint32(0); i < owned.MaxSlot; i++ {
		s := uint16((start+i)%owned.MaxSlot + 1)
		if !used(s) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("allocate slot for tenant %q: all %d slots in use", id, owned.MaxSlot)
}

// Render writes the desired state as stable text, for golden files and for
// `nsd --once --dry-run`.
func (d Desired) Render() string {
	ids := make([]string, 0, len(d.Tenants))
	for id := range d.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		s := d.Tenants[id]
		fmt.Fprintf(&b, "tenant %s\n", s.ID)
		fmt.Fprintf(&b, "  netns %s\n", s.Namespace)
		fmt.Fprintf(&b, "  veth %s <-> %s@%s alias %q\n", s.HostIf, s.NSIf, s.Namespace, s.Alias)
		fmt.Fprintf(&b, "  addr host %s %s, tenant %s %s\n", owned.HostAddr4, owned.HostAddr6, owned.NSAddr4, owned.NSAddr6)
		fmt.Fprintf(&b, "  rule priority %d fwmark %#x lookup %d\n", owned.RulePriority, s.Mark, s.Table)
		fmt.Fprintf(&b, "  table %d: default via %s dev %s onlink; default via %s dev %s\n",
			s.Table, owned.NSAddr4.Addr(), s.HostIf, owned.NSAddr6.Addr(), s.HostIf)
		fmt.Fprintf(&b, "  tenant ns: default via %s dev %s onlink; default via %s dev %s\n",
			owned.HostAddr4.Addr(), s.NSIf, owned.HostAddr6.Addr(), s.NSIf)
		for _, p := range sortedPrefixes(s.Prefixes) {
			fmt.Fprintf(&b, "  nft map element %s : %#x\n", p, s.Mark)
		}
	}
	return b.String()
}

func sortedPrefixes(ps []netip.Prefix) []netip.Prefix {
	out := append([]netip.Prefix(nil), ps...)
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Addr().Compare(out[j].Addr()); c != 0 {
			return c < 0
		}
		return out[i].Bits() < out[j].Bits()
	})
	return out
}
