package config

import (
	"fmt"
	"net/netip"
)

// MaxPrefixes caps the prefixes of one tenant so that a typo cannot blow up
// the host's nft map.
const MaxPrefixes = 1024

// Network is the operator-owned document nfhost/tenants/<tenant>/network.
type Network struct {
	Prefixes []string `json:"prefixes"`
	Tunnels  []Tunnel `json:"tunnels"`
	Routes   []Route  `json:"routes"`
}

// ValidNetwork is a Network that passed validation, with parsed prefixes in
// the order they were written.
type ValidNetwork struct {
	Prefixes []netip.Prefix
	Tunnels  []ValidTunnel
	Routes   []ValidRoute
}

// ParseNetwork decodes and validates a network document.
func ParseNetwork(tenant string, data []byte) (ValidNetwork, error) {
	var n Network
	if err := DecodeStrict(tenant, KeyNetwork, data, &n); err != nil {
		return ValidNetwork{}, err
	}
	return n.Validate(tenant)
}

// Validate checks every field and returns all errors found, each with its path.
func (n Network) Validate(tenant string) (ValidNetwork, error) {
	var errs Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &FieldError{Tenant: tenant, Key: KeyNetwork, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	if n.Prefixes == nil {
		add("prefixes", "", "required: list the tenant's prefixes")
	}
	if len(n.Prefixes) > MaxPrefixes {
		add("prefixes", "", "%d prefixes, at most %d allowed", len(n.Prefixes), MaxPrefixes)
	}
	var out ValidNetwork
	for i, s := range n.Prefixes {
		path := fmt.Sprintf("prefixes[%d]", i)
		p, err := ParsePrefix(s)
		if err != nil {
			add(path, s, "%s", err)
			continue
		}
		for j, q := range out.Prefixes {
			if q.Overlaps(p) {
				add(path, s, "overlaps prefixes[%d] %q", indexOf(n.Prefixes, q, j), q)
			}
		}
		out.Prefixes = append(out.Prefixes, p)
	}
	out.Tunnels, out.Routes = validateTunnels(n.Tunnels, n.Routes, add)
	if len(errs) > 0 {
		return ValidNetwork{}, errs
	}
	return out, nil
}

// indexOf finds the written index of an already accepted prefix; fallback is
// returned if the text cannot be matched (it always can, but stay total).
func indexOf(written []string, p netip.Prefix, fallback int) int {
	for i, s := range written {
		if q, err := ParsePrefix(s); err == nil && q == p {
			return i
		}
	}
	return fallback
}

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
