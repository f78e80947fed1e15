// Package owned holds the names, marks and numeric ranges nfhost owns on a
// host, in one place so that every subsystem marks what it creates the same
// way and recognises the rest as someone else's. Contract: these values are
// documented in README.md ("Kernel objects nfhost owns") and are part of
// the on-host state a restarted or upgraded nsd adopts; change them only
// with a migration. Garbage collection anywhere in nfhost only ever removes
// objects that carry one of these marks.
package owned

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Owned numeric ranges. They are documented in README.md; change them only
// together with the docs.
const (
	// SlotBase is added to a tenant's slot to form its routing table ID and
	// its packet mark ("nf" in ASCII in the upper half).
	SlotBase = 0x6e660000
	// MaxSlot is the largest slot; slots start at 1.
	MaxSlot = 0xffff
	// RulePriority is the priority of every tenant fwmark rule. Marks are
	// disjoint, so one priority serves all tenants.
	RulePriority = 1600
	// ReturnTable is nfhost's return table: every tenant's IPv4 prefixes
	// via its veth. Slot 0 is never a tenant's, so SlotBase is free.
	ReturnTable = SlotBase
	// ReturnRulePriority is the priority of the one rule "lookup
	// ReturnTable", without selectors, right after the fwmark rules: it
	// answers only lookups no tenant mark selected. Those are the
	// kernel's reverse-path checks (fib_validate_source looks the source
	// up with mark 0, and with iif set to the output device of the
	// packet's forward route, so "iif lo" would miss forwarded packets)
	// and the host's own unmarked output lookups: the tenants' replies
	// pass strict or loose rp_filter whatever the host's tables hold, and
	// the host's own traffic to a tenant prefix goes into the tenant's veth
	// (with 169.254.100.1 as source unless bound), where the output
	// chain's mark sends it anyway.
	ReturnRulePriority = RulePriority + 1
	// NFTTable is the name of nfhost's nft table (family inet) in the host
	// namespace and, for the firewall, in each tenant namespace.
	NFTTable = "nfhost"
	// HostIfPrefix starts every host-side link name nfhost creates.
	HostIfPrefix = "nfv"
	// NSIfName is the tenant end of the host veth, inside the namespace.
	NSIfName = "host0"
	// AliasPrefix starts the alias of every host-side link nfhost creates.
	AliasPrefix = "nfhost:"
	// DefaultNSPrefix names tenant namespaces.
	DefaultNSPrefix = "nf-"
)

// Link-local addresses of the host veth. They are the same for every tenant:
// each pair lives in its own namespace on the tenant side, and on the host
// side the address is a /32 without a prefix route, so duplicates are fine.
var (
	HostAddr4 = netip.MustParsePrefix("169.254.100.1/32")
	NSAddr4   = netip.MustParsePrefix("169.254.100.2/32")
	HostAddr6 = netip.MustParsePrefix("fe80::1/64")
	NSAddr6   = netip.MustParsePrefix("fe80::2/64")
)

// HostIfName is "nfv" + the first 12 hex digits of sha256(tenant): 15 bytes,
// the kernel's limit.
func HostIfName(tenant string) string {
	sum := sha256.Sum256([]byte(tenant))
	return HostIfPrefix + hex.EncodeToString(sum[:6])
}

// NSAlias is the alias of lo inside a tenant namespace nfhost created: the
// namespace's ownership mark, set before the namespace is mounted under its
// name. ParseAlias rejects it (no slot).
func NSAlias(tenant string) string { return AliasPrefix + "tenant=" + tenant }

// FormatAlias is the alias written on a tenant's host link.
func FormatAlias(tenant string, slot uint16) string {
	return fmt.Sprintf("%stenant=%s,slot=%d", AliasPrefix, tenant, slot)
}

// ParseAlias recovers tenant ID and slot from an alias written by
// FormatAlias. ok is false for links nfhost did not create.
func ParseAlias(alias string) (tenant string, slot uint16, ok bool) {
	rest, found := strings.CutPrefix(alias, AliasPrefix)
	if !found {
		return "", 0, false
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "tenant":
			tenant = v
		case "slot":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return "", 0, false
			}
			slot = uint16(n)
		}
	}
	return tenant, slot, tenant != "" && slot != 0
}

// Names and numbers nfhost owns for tunnels.
const (
	// TunnelIfPrefix starts the host end of every tunnel veth.
	TunnelIfPrefix = "nft"
	// KernelTunnelTempPrefix starts a kernel GRE device's name while it is
	// in the host namespace (KernelTunnelTempName).
	KernelTunnelTempPrefix = "nfg"
	// TunnelAliasPrefix starts its alias: nfhost:tunnel=<tenant>/<name>.
	TunnelAliasPrefix = "nfhost:tunnel="
	// TunnelRouteProtocol marks the routes nfhost writes in tenant
	// namespaces.
	TunnelRouteProtocol = 110
	// TunnelNFTTable is the table (family inet) holding MSS clamping in a
	// tenant namespace; the tenant firewall owns "inet nfhost" there.
	TunnelNFTTable = "nfhost_tunnels"
	// SynproxyNFTTable is the table (family inet) in a tenant namespace
	// where nftables' synproxy completes the handshakes the XDP layer's
	// SYN cookies started (dos/synproxy).
	SynproxyNFTTable = "nfhost_synproxy"
)

// TunnelIfName names a tunnel's host-end veth: "nft" + 12 hex digits of a
// hash of tenant and tunnel name.
func TunnelIfName(tenant, tunnel string) string {
	h := sha256.Sum256([]byte(tenant + "/" + tunnel))
	return TunnelIfPrefix + hex.EncodeToString(h[:6])
}

// KernelTunnelTempName is the name a kernel GRE device has in the host
// namespace between its creation and its move into the tenant namespace
// (where it takes the tunnel's name): "nfg" + 12 hex digits of the same
// hash as TunnelIfName, never a host link's name.
func KernelTunnelTempName(tenant, tunnel string) string {
	return KernelTunnelTempPrefix + TunnelIfName(tenant, tunnel)[len(TunnelIfPrefix):]
}

// TunnelAlias is a tunnel host end's alias, which names its tenant and tunnel.
func TunnelAlias(tenant, tunnel string) string { return TunnelAliasPrefix + tenant + "/" + tunnel }

// ParseTunnelAlias returns the tenant and tunnel of an alias nfhost wrote.
func ParseTunnelAlias(a string) (tenant, tunnel string, ok bool) {
	rest, ok := strings.CutPrefix(a, TunnelAliasPrefix)
	if !ok {
		return "", "", false
	}
	tenant, tunnel, ok = strings.Cut(rest, "/")
	return tenant, tunnel, ok
}
