// Package tunspec is the tunnel part of a tenant's network document: the
// GRE tunnels to the tenant's routers and the routes over them, as written
// (Tunnel, Route) and as validated (ValidTunnel, ValidRoute), with the
// defaults filled in. It is pure: nsctl validates with it offline and the
// tunnels package turns its output into kernel state.
package tunspec

import (
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// Tunnel is one GRE tunnel of a tenant's network document, in Magic
// Transit's terms.
type Tunnel struct {
	Name             string       `json:"name"`
	AnycastEndpoint  string       `json:"anycast_endpoint"`
	CustomerEndpoint string       `json:"customer_endpoint"`
	InterfaceAddress string       `json:"interface_address"`
	MTU              int          `json:"mtu,omitempty"`
	TTL              int          `json:"ttl,omitempty"`
	MSSClamp         int          `json:"mss_clamp,omitempty"`
	HealthCheck      *HealthCheck `json:"health_check,omitempty"`
}

// HealthCheck configures a tunnel's probes.
type HealthCheck struct {
	Enabled *bool  `json:"enabled,omitempty"` // default true
	Type    string `json:"type,omitempty"`    // reply (default) | request
	// Direction: unidirectional (default: answers return over the
	// internet to nfhost's probe address) or bidirectional (answers return
	// through the tunnel, and nfhost answers the router's probes of its
	// tunnel interface address through it).
	Direction string `json:"direction,omitempty"`
	// Target: reply: the echo reply's inner source (default nfhost's own
	// interface address, or with bidirectional the probe address: never
	// the router's own address, which a Linux router drops); request: the
	// echo request's destination (default the router's side of the
	// tunnel interface, an address every router answers for; Cloudflare
	// defaults to the customer endpoint, which a separate GRE box may hold).
	Target string `json:"target,omitempty"`
	Rate   string `json:"rate,omitempty"` // low | mid (default) | high
}

// Route is a static route inside the tenant namespace over a tunnel.
type Route struct {
	Prefix   string `json:"prefix"`
	Nexthop  string `json:"nexthop"`
	Priority *int   `json:"priority,omitempty"` // default 100
	Weight   int    `json:"weight,omitempty"`   // default 1
}

// Tunnel and route defaults and bounds.
const (
	DefaultTunnelMTU = 1476 // 1500 - 20 (outer IPv4) - 4 (GRE)
	MinTunnelMTU     = 576
	DefaultTunnelTTL = 64
	DefaultPriority  = 100
	MaxPriority      = 1_000_000 // health penalties add up to 1,500,000 on top
	MaxWeight        = 256
	MaxTunnels       = 64
	MaxRoutes        = 1024
)

// ProbeIntervals are the health-check rates.
var ProbeIntervals = map[string]time.Duration{"low": 5 * time.Second, "mid": time.Second, "high": 250 * time.Millisecond}

// ValidTunnel is a validated tunnel with defaults filled in.
type ValidTunnel struct {
	Name     string
	Anycast  netip.Addr
	Customer netip.Addr
	// Addr is this side's interface address; Peer the far side of the /31
	// (or /30), the nexthop routes point at.
	Addr      netip.Prefix
	Peer      netip.Addr
	MTU       int
	TTL       uint8
	MSS       int
	Health    bool
	Type      string
	Direction string
	// Target is invalid when it defaults to nsd's probe address (reply,
	// bidirectional), which the document does not know.
	Target   netip.Addr
	Interval time.Duration
}

// ValidRoute is a validated route; Tunnel names the tunnel whose far side
// is the nexthop.
type ValidRoute struct {
	Prefix   netip.Prefix
	Nexthop  netip.Addr
	Tunnel   string
	Priority int
	Weight   int
}

var ifNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

func unicast4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("want an IPv4 address")
	}
	if a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("not a unicast address")
	}
	return a, nil
}

// Validate checks tunnels and routes; add records field errors (path, value
// as written, message).
func Validate(ts []Tunnel, rs []Route, add func(path, value, format string, args ...any)) ([]ValidTunnel, []ValidRoute) {
	if len(ts) > MaxTunnels {
		add("tunnels", "", "%d tunnels, at most %d", len(ts), MaxTunnels)
	}
	if len(rs) > MaxRoutes {
		add("routes", "", "%d routes, at most %d", len(rs), MaxRoutes)
	}
	tunnels := validTunnels(ts, add)
	// Routes see only the tunnels that passed: a route over a refused
	// tunnel is refused too (its nexthop is the far side of no tunnel).
	return tunnels, validRoutes(rs, tunnels, add)
}

// validTunnels returns the tunnels without errors. The checks against
// earlier tunnels (a name or a pair of endpoints used twice) sit between
// the checks of the tunnel's own fields so that its errors come in field
// order.
func validTunnels(ts []Tunnel, add func(path, value, format string, args ...any)) []ValidTunnel {
	var out []ValidTunnel
	names := map[string]int{}
	pairs := map[[2]netip.Addr]int{}
	for i, t := range ts {
		path := fmt.Sprintf("tunnels[%d]", i)
		ok := true
		bad := func(field, value, format string, args ...any) {
			add(path+"."+field, value, format, args...)
			ok = false
		}
		v := ValidTunnel{Name: t.Name}
		checkTunnelName(t.Name, bad)
		if j, dup := names[t.Name]; dup {
			bad("name", t.Name, "duplicate of tunnels[%d].name", j)
		}
		names[t.Name] = i
		var err error
		if v.Anycast, err = unicast4(t.AnycastEndpoint); err != nil {
			bad("anycast_endpoint", t.AnycastEndpoint, "%v", err)
		}
		if v.Customer, err = unicast4(t.CustomerEndpoint); err != nil {
			bad("customer_endpoint", t.CustomerEndpoint, "%v", err)
		}
		if v.Anycast.IsValid() && v.Customer.IsValid() {
			k := [2]netip.Addr{v.Anycast, v.Customer}
			if j, dup := pairs[k]; dup {
				bad("customer_endpoint", t.CustomerEndpoint, "tunnels[%d] already joins these endpoints", j)
			}
			pairs[k] = i
		}
		v.Addr, v.Peer = interfaceAddress(t.InterfaceAddress, bad)
		v.setLink(t, bad)
		v.setHealthCheck(t.HealthCheck, bad)
		if ok {
			out = append(out, v)
		}
	}
	return out
}

func checkTunnelName(name string, bad func(field, value, format string, args ...any)) {
	switch {
	case !ifNameRe.MatchString(name):
		bad("name", name, "an interface name: 1-15 bytes of letters, digits, _ . -")
	case name == "lo" || name == "host0":
		bad("name", name, "reserved interface name")
	}
}

// interfaceAddress parses this side's address of the tunnel's point-to-point
// subnet and returns it with the far side's (zero values if invalid).
func interfaceAddress(s string, bad func(field, value, format string, args ...any)) (netip.Prefix, netip.Addr) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !p.Addr().Is4():
		bad("interface_address", s, "want an IPv4 address with /31 or /30, e.g. 169.254.20.0/31")
	case p.Bits() == 31:
		return p, otherOf31(p.Addr())
	case p.Bits() == 30:
		host := p.Addr().As4()[3] & 3
		if host == 0 || host == 3 {
			bad("interface_address", s, "in a /30 use one of the two host addresses (.1 or .2 of the block)")
			break
		}
		b := p.Addr().As4()
		b[3] ^= 3 // .1 <-> .2
		return p, netip.AddrFrom4(b)
	default:
		bad("interface_address", s, "must be a /31 or /30")
	}
	return netip.Prefix{}, netip.Addr{}
}

// setLink fills in MTU, TTL and MSS clamp; the clamp's default and bound
// follow from the MTU.
func (v *ValidTunnel) setLink(t Tunnel, bad func(field, value, format string, args ...any)) {
	v.MTU = t.MTU
	if v.MTU == 0 {
		v.MTU = DefaultTunnelMTU
	}
	if v.MTU < MinTunnelMTU || v.MTU > DefaultTunnelMTU {
		bad("mtu", fmt.Sprint(t.MTU), "must be %d..%d (the uplink's 1500 minus 24 bytes of GRE over IPv4)", MinTunnelMTU, DefaultTunnelMTU)
	}
	switch {
	case t.TTL == 0:
		v.TTL = DefaultTunnelTTL
	case t.TTL < 1 || t.TTL > 255:
		bad("ttl", fmt.Sprint(t.TTL), "must be 1..255")
	default:
		v.TTL = uint8(t.TTL)
	}
	v.MSS = t.MSSClamp
	if v.MSS == 0 {
		v.MSS = v.MTU - 40
	}
	if v.MSS < 536 || v.MSS > v.MTU-40 {
		bad("mss_clamp", fmt.Sprint(t.MSSClamp), "must be 536..%d (mtu - 40)", v.MTU-40)
	}
}

// setHealthCheck fills in the probe settings (hc nil: all defaults); the
// target defaults to v.Customer, so the endpoints are set first.
func (v *ValidTunnel) setHealthCheck(hc *HealthCheck, bad func(field, value, format string, args ...any)) {
	if hc == nil {
		hc = &HealthCheck{}
	}
	v.Health = hc.Enabled == nil || *hc.Enabled
	v.Type = hc.Type
	if v.Type == "" {
		v.Type = "reply"
	}
	if v.Type != "reply" && v.Type != "request" {
		bad("health_check.type", hc.Type, "must be reply or request")
	}
	rate := hc.Rate
	if rate == "" {
		rate = "mid"
	}
	if v.Interval = ProbeIntervals[rate]; v.Interval == 0 {
		bad("health_check.rate", hc.Rate, "must be low, mid or high")
	}
	v.Direction = hc.Direction
	if v.Direction == "" {
		v.Direction = "unidirectional"
	}
	if v.Direction != "unidirectional" && v.Direction != "bidirectional" {
		bad("health_check.direction", hc.Direction, "must be unidirectional or bidirectional")
	}
	switch {
	case v.Type == "request":
		v.Target = v.Peer
	case v.Direction == "unidirectional" && v.Addr.IsValid():
		v.Target = v.Addr.Addr()
	}
	if hc.Target != "" {
		var err error
		if v.Target, err = unicast4(hc.Target); err != nil {
			bad("health_check.target", hc.Target, "%v", err)
		} else if v.Type == "reply" && v.Direction == "bidirectional" && v.Addr.IsValid() && v.Target == v.Addr.Addr() {
			bad("health_check.target", hc.Target, "bidirectional reply probes return to %s, the interface address: the target must be another address", v.Target)
		}
	}
}

// validRoutes returns the routes without errors. A route that repeats an
// earlier one's prefix and nexthop is reported after its own fields.
func validRoutes(rs []Route, tunnels []ValidTunnel, add func(path, value, format string, args ...any)) []ValidRoute {
	var routes []ValidRoute
	seen := map[[2]string]int{}
	for i, r := range rs {
		path := fmt.Sprintf("routes[%d]", i)
		v, ok := validRoute(path, r, tunnels, add)
		k := [2]string{r.Prefix, r.Nexthop}
		if j, dup := seen[k]; dup {
			add(path, "", "duplicate of routes[%d] (same prefix and nexthop)", j)
			ok = false
		}
		seen[k] = i
		if ok {
			routes = append(routes, v)
		}
	}
	return routes
}

// validRoute checks one route's fields and finds the tunnel whose far
// side is its nexthop; ok is false if it recorded an error.
func validRoute(path string, r Route, tunnels []ValidTunnel, add func(path, value, format string, args ...any)) (v ValidRoute, ok bool) {
	v = ValidRoute{Priority: DefaultPriority, Weight: r.Weight}
	ok = true
	p, err := netip.ParsePrefix(r.Prefix)
	switch {
	case err != nil:
		add(path+".prefix", r.Prefix, "invalid CIDR")
		ok = false
	case p.Masked() != p:
		add(path+".prefix", r.Prefix, "host bits set: did you mean %q?", p.Masked())
		ok = false
	}
	v.Prefix = p
	nh, err := netip.ParseAddr(r.Nexthop)
	if err != nil {
		add(path+".nexthop", r.Nexthop, "invalid IP address")
		ok = false
	} else {
		for _, t := range tunnels {
			if t.Peer == nh {
				v.Tunnel = t.Name
			}
		}
		if v.Tunnel == "" {
			add(path+".nexthop", r.Nexthop, "not the far side of any of the tenant's tunnels")
			ok = false
		}
	}
	v.Nexthop = nh
	if ok && p.Addr().Is4() != nh.Is4() {
		add(path+".nexthop", r.Nexthop, "address family differs from the prefix's")
		ok = false
	}
	if r.Priority != nil {
		v.Priority = *r.Priority
		if v.Priority < 0 || v.Priority > MaxPriority {
			add(path+".priority", fmt.Sprint(v.Priority), "must be 0..%d", MaxPriority)
			ok = false
		}
	}
	if v.Weight == 0 {
		v.Weight = 1
	}
	if v.Weight < 1 || v.Weight > MaxWeight {
		add(path+".weight", fmt.Sprint(r.Weight), "must be 1..%d", MaxWeight)
		ok = false
	}
	return v, ok
}

func otherOf31(a netip.Addr) netip.Addr {
	b := a.As4()
	b[3] ^= 1
	return netip.AddrFrom4(b)
}
