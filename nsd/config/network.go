// Package config reads the operator's network document,
// tenants/<tenant>/network, and validates it into the parts the routing and
// tunnel subsystems apply. Nothing here touches the kernel.
package config

import (
	"fmt"
	"net/netip"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// MaxPrefixes caps the prefixes of one tenant so that a typo cannot blow up
// the host's nft map.
const MaxPrefixes = 1024

// Network is the operator-owned document nfhost/tenants/<tenant>/network.
type Network struct {
	Prefixes []string         `json:"prefixes"`
	Tunnels  []tunspec.Tunnel `json:"tunnels"`
	Routes   []tunspec.Route  `json:"routes"`
	// Advertise announces the tenant's prefixes over BGP from every edge
	// that applied it (default true); false withdraws them fleet-wide
	// (on-demand), while the tenant stays applied and its tunnels up.
	Advertise *bool `json:"advertise,omitempty"`
}

// ValidNetwork is a Network that passed validation, with parsed prefixes in
// the order they were written.
type ValidNetwork struct {
	Prefixes []netip.Prefix
	Tunnels  []tunspec.ValidTunnel
	Routes   []tunspec.ValidRoute
	// Advertise is Network.Advertise with its default (true).
	Advertise bool
}

// ParseNetwork decodes and validates a network document.
func ParseNetwork(tenant string, data []byte) (ValidNetwork, error) {
	var n Network
	if err := doc.DecodeStrict(tenant, doc.KeyNetwork, data, &n); err != nil {
		return ValidNetwork{}, err
	}
	return n.Validate(tenant)
}

// Validate checks every field and returns all errors found, each with its path.
func (n Network) Validate(tenant string) (ValidNetwork, error) {
	var errs doc.Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &doc.FieldError{Tenant: tenant, Key: doc.KeyNetwork, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
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
		p, err := doc.ParsePrefix(s)
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
	out.Tunnels, out.Routes = tunspec.Validate(n.Tunnels, n.Routes, add)
	out.Advertise = n.Advertise == nil || *n.Advertise
	if len(errs) > 0 {
		return ValidNetwork{}, errs
	}
	return out, nil
}

// indexOf finds the written index of an already accepted prefix; fallback is
// returned if the text cannot be matched (it always can, but stay total).
func indexOf(written []string, p netip.Prefix, fallback int) int {
	for i, s := range written {
		if q, err := doc.ParsePrefix(s); err == nil && q == p {
			return i
		}
	}
	return fallback
}
