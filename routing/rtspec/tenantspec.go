// Package rtspec is the routing subsystem's desired state of one tenant:
// its namespace, veth, slot (table and mark) and prefixes, all derived from
// the tenant ID, slot and namespace prefix. It is pure: nsd/plan computes
// it, routing.Reconciler makes the kernel match it.
package rtspec

import (
	"net/netip"

	"github.com/nfhost/nfhost/internal/owned"
)

// TenantSpec is the desired kernel state of one tenant's plumbing.
type TenantSpec struct {
	ID        string
	Namespace string // named network namespace, /run/netns/<Namespace>
	HostIf    string // host end of the veth
	NSIf      string // tenant end of the veth, inside Namespace
	Alias     string // alias of HostIf, identifies the tenant after restarts
	Slot      uint16
	Table     uint32 // per-tenant routing table in the host namespace
	Mark      uint32 // fwmark set by the nft map for the tenant's prefixes
	Prefixes  []netip.Prefix
}

// NewTenantSpec derives every name and number of a tenant from its ID, slot
// and the namespace prefix.
func NewTenantSpec(id string, slot uint16, nsPrefix string, prefixes []netip.Prefix) TenantSpec {
	return TenantSpec{
		ID:        id,
		Namespace: nsPrefix + id,
		HostIf:    owned.HostIfName(id),
		NSIf:      owned.NSIfName,
		Alias:     owned.FormatAlias(id, slot),
		Slot:      slot,
		Table:     owned.SlotBase + uint32(slot),
		Mark:      owned.SlotBase + uint32(slot),
		Prefixes:  prefixes,
	}
}
