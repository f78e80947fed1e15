package tunnels

import (
	"net/netip"
	"time"

	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// Health penalties added to a route's priority.
const (
	PenaltyDegraded = 500_000
	PenaltyDown     = 1_000_000
)

// TenantSpec is the desired tunnel state of one tenant.
type TenantSpec struct {
	Tenant    string
	Namespace string // /run/netns/<Namespace>
	Tunnels   []Tunnel
	Routes    []Route
}

// Tunnel is one GRE tunnel.
type Tunnel struct {
	Name          string
	Local, Remote netip.Addr   // anycast endpoint, customer endpoint
	Addr          netip.Prefix // this side's /31 or /30
	Peer          netip.Addr   // the far side: routes' nexthop
	MTU           int
	TTL           uint8
	MSS           int
	Health        HealthSpec
}

// HealthSpec configures probes.
type HealthSpec struct {
	Enabled   bool
	Type      string // reply | request
	Direction string // Unidirectional ("" too) | Bidirectional
	// Target is the echo reply's source (reply) or the echo request's
	// destination (request); invalid: the default (Prober.addresses).
	Target   netip.Addr
	Interval time.Duration
}

// Route is a static route in the tenant namespace over a tunnel.
type Route struct {
	Prefix   netip.Prefix
	Nexthop  netip.Addr
	Tunnel   string
	Priority int
	Weight   int
}

// RouteSet is the routes one prefix gets: the nexthops of the lowest
// effective priority, with their weights.
type RouteSet struct {
	Prefix   netip.Prefix
	Priority int // effective
	Hops     []Hop
}

// Hop is one nexthop of a (multipath) route.
type Hop struct {
	Tunnel  string
	Nexthop netip.Addr
	Weight  int
}

// PlanRoutes is pure: for each prefix the routes with the lowest effective
// priority (priority + the health penalty of their tunnel) form one
// multipath route; the others are standby.
func PlanRoutes(routes []Route, penalty func(tunnel string) int) []RouteSet {
	byPrefix := map[netip.Prefix]*RouteSet{}
	var order []netip.Prefix
	for _, r := range routes {
		eff := r.Priority + penalty(r.Tunnel)
		s := byPrefix[r.Prefix]
		if s == nil {
			s = &RouteSet{Prefix: r.Prefix, Priority: eff}
			byPrefix[r.Prefix] = s
			order = append(order, r.Prefix)
		}
		switch {
		case eff < s.Priority:
			s.Priority, s.Hops = eff, []Hop{{r.Tunnel, r.Nexthop, r.Weight}}
		case eff == s.Priority:
			s.Hops = append(s.Hops, Hop{r.Tunnel, r.Nexthop, r.Weight})
		}
	}
	out := make([]RouteSet, 0, len(order))
	for _, p := range order {
		out = append(out, *byPrefix[p])
	}
	return out
}

// SpecFrom is the tunnel spec of a tenant's validated network document
// (its tunnels and routes) for the tenant's namespace.
func SpecFrom(tenant, namespace string, ts []tunspec.ValidTunnel, rs []tunspec.ValidRoute) TenantSpec {
	s := TenantSpec{Tenant: tenant, Namespace: namespace}
	for _, t := range ts {
		s.Tunnels = append(s.Tunnels, Tunnel{Name: t.Name, Local: t.Anycast, Remote: t.Customer, Addr: t.Addr, Peer: t.Peer,
			MTU: t.MTU, TTL: t.TTL, MSS: t.MSS,
			Health: HealthSpec{Enabled: t.Health, Type: t.Type, Direction: t.Direction, Target: t.Target, Interval: t.Interval}})
	}
	for _, r := range rs {
		s.Routes = append(s.Routes, Route{Prefix: r.Prefix, Nexthop: r.Nexthop, Tunnel: r.Tunnel, Priority: r.Priority, Weight: r.Weight})
	}
	return s
}
