package doc

import (
	"fmt"
	"net/netip"
)

// ParsePrefix parses a tenant prefix. It must be a valid CIDR in canonical
// form (no host bits set) and a routable unicast range.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR")
	}
	if p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR: zones are not allowed")
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("IPv4-mapped IPv6 prefix: write it as IPv4")
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("host bits set: did you mean %q?", m)
	}
	if p.Bits() == 0 {
		return netip.Prefix{}, fmt.Errorf("a default route cannot belong to a tenant")
	}
	a := p.Addr()
	switch {
	case a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsUnspecified(), a.IsInterfaceLocalMulticast():
		return netip.Prefix{}, fmt.Errorf("not a routable unicast prefix")
	case a.Is4() && p.Bits() < 8:
		return netip.Prefix{}, fmt.Errorf("IPv4 prefixes must be /8 or longer")
	case a.Is6() && p.Bits() < 16:
		return netip.Prefix{}, fmt.Errorf("IPv6 prefixes must be /16 or longer")
	}
	return p, nil
}

// ParseAddrOrPrefix parses a list entry: an address (taken as a /32 or
// /128) or a CIDR in canonical form.
func ParseAddrOrPrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP address or CIDR")
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("host bits set: did you mean %q?", p.Masked())
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("IPv4-mapped IPv6 prefix: write it as IPv4")
	}
	return p, nil
}
