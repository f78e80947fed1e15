// Package routing owns the per-tenant network plumbing on an edge server:
// the tenant's network namespace, the veth pair that joins it to the host
// namespace, and the policy routing that steers each tenant's prefixes into
// it (an nft interval map sets a mark, an ip rule sends the mark to a
// per-tenant table, the table routes into the veth).
//
// The package is driven by TenantSpec values computed by a pure plan step
// (nsd/plan); Reconciler.Apply makes the kernel match a spec with the fewest
// changes and is idempotent. Everything it creates carries nfhost's mark:
//
//   - network namespaces are named <ns-prefix><tenant> (default "nf-") and
//     their lo carries the alias "nfhost:tenant=<id>" (NSAlias), written
//     inside the new namespace before it is mounted under its name. A
//     namespace with the prefix but without the mark is someone else's and
//     is never adopted, modified or deleted; the one exception is a
//     namespace an older nsd made before the mark existed, recognised by
//     nfhost's host veth of the same tenant having its peer in it, which is
//     marked when found;
//   - host-side links are named "nfv" + 12 hex digits of a hash of the tenant
//     ID and carry the alias "nfhost:tenant=<id>,slot=<n>";
//   - the nft table is "inet nfhost" in the host namespace;
//   - ip rules use priority RulePriority and tables/marks in
//     [SlotBase+1, SlotBase+MaxSlot];
//   - the return path of the tenants' replies does not depend on the
//     host's routing tables: table ReturnTable holds each tenant's IPv4
//     prefixes via 169.254.100.2 on its host link, consulted by one rule
//     "lookup ReturnTable" at ReturnRulePriority by every lookup no tenant
//     mark answered (reverse-path checks among them), and both ends of each veth
//     hold permanent neighbour entries for the other end's 169.254.100.x,
//     so nothing resolves neighbours across the veth (an ARP request is
//     only answered if the reverse-path check finds its sender).
//
// Garbage collection only ever removes objects that carry these marks.
package routing
