package tunnels

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/internal/veth"
)

// Backend makes a tenant's tunnel interfaces exist. The eBPF backend
// (veth pairs plus the tcx programs: this Reconciler with a Datapath) and
// the kernel GRE backend (KernelBackend: ip_gre devices moved into the
// tenant namespace) implement it.
type Backend interface {
	// EnsureTunnel makes the tunnel interface t exist in the tenant
	// namespace nsName (handle ns, netlink handle tn) with its address
	// and MTU, carrying traffic to and from t.Remote, and reports what it
	// changed.
	EnsureTunnel(tenant, nsName string, ns netns.NsHandle, tn *netlink.Handle, t Tunnel) ([]string, error)
	// RemoveStale removes the tenant's tunnels not named in keep.
	RemoveStale(tenant string, keep map[string]bool) ([]string, error)
	// ID returns a tunnel's index: its health probes' ICMP identifier and
	// the key of Stats.
	ID(tenant, tunnel string) (uint32, bool)
	// Stats reads a tunnel's counters. It must not wait for the
	// Reconciler's lock (the prober calls it holding its own).
	Stats(id uint32) (Stats, error)
	// Tenants lists the tenants that have tunnels in the kernel (found
	// at start, so that a restarted nsd can remove them).
	Tenants() []string
}

// Config is what a Reconciler works on.
type Config struct {
	HostNS   netns.NsHandle // not open: the caller's own
	NSDir    string         // named namespaces (namedns.DefaultDir)
	Datapath *Datapath
	Logger   *slog.Logger
	// Backend makes the tunnel interfaces; nil: the eBPF backend (this
	// Reconciler with Datapath). A KernelBackend needs no Datapath.
	Backend Backend
}

var _ Backend = (*Reconciler)(nil)

// Reconciler applies TenantSpecs: tunnel interfaces (through the eBPF
// backend), routes with health penalties, and MSS clamping. Safe for
// concurrent use (the prober re-routes from its own goroutine).
type Reconciler struct {
	cfg     Config
	log     *slog.Logger
	host    *netlink.Handle
	backend Backend

	mu  sync.Mutex
	ids map[string]uint32 // host-end name -> counter index
	// owners are tenants that have (or may have) tunnel links: Apply of
	// an empty spec for any other tenant costs nothing.
	owners  map[string]bool
	specs   map[string]TenantSpec
	penalty func(tenant, tunnel string) int
}

// NewReconciler opens the host namespace and recovers tunnel IDs from the
// pinned encap map, so counters stay with their tunnels across restarts.
func NewReconciler(cfg Config) (*Reconciler, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NSDir == "" {
		cfg.NSDir = namedns.DefaultDir
	}
	h, err := nlh.New(cfg.HostNS, false)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger, host: h, ids: map[string]uint32{}, specs: map[string]TenantSpec{}, owners: map[string]bool{},
		penalty: func(string, string) int { return 0 }}
	r.backend = cfg.Backend
	if r.backend != nil {
		for _, t := range r.backend.Tenants() {
			r.owners[t] = true
		}
		return r, nil
	}
	r.backend = r
	ents, err := cfg.Datapath.EncapEntries()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("read encap map: %w", err)
	}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if tenant, _, ok := owned.ParseTunnelAlias(l.Attrs().Alias); ok {
			r.owners[tenant] = true
			if e, ok := ents[l.Attrs().Index]; ok {
				r.ids[l.Attrs().Name] = e.ID
			}
		}
	}
	return r, nil
}

// Close releases the netlink handle.
func (r *Reconciler) Close() { r.host.Close() }

// SetPenalty installs the health penalty function (the prober's).
func (r *Reconciler) SetPenalty(f func(tenant, tunnel string) int) {
	r.mu.Lock()
	r.penalty = f
	r.mu.Unlock()
}

// Specs returns the tenant specs in force (for the prober).
func (r *Reconciler) Specs() []TenantSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TenantSpec, 0, len(r.specs))
	for _, s := range r.specs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Tenant < out[j].Tenant })
	return out
}

// Spec returns the spec in force for one tenant.
func (r *Reconciler) Spec(tenant string) (TenantSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.specs[tenant]
	return s, ok
}

// ebpf reports whether this Reconciler is its own (eBPF) backend.
func (r *Reconciler) ebpf() bool { return r.backend == Backend(r) }

// ID returns a tunnel's counter index (the backend's).
func (r *Reconciler) ID(tenant, tunnel string) (uint32, bool) {
	if !r.ebpf() {
		return r.backend.ID(tenant, tunnel)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ok := r.ids[owned.TunnelIfName(tenant, tunnel)]
	return id, ok
}

// Stats reads a tunnel's counters from the backend (the eBPF
// datapath's per-tunnel map, or the GRE device's statistics). It does
// not take the Reconciler's lock.
func (r *Reconciler) Stats(id uint32) (Stats, error) {
	if !r.ebpf() {
		return r.backend.Stats(id)
	}
	return r.cfg.Datapath.Stats(id)
}

// Tenants lists the tenants that may have tunnels (the eBPF backend's:
// recovered from the host ends' aliases).
func (r *Reconciler) Tenants() []string {
	if !r.ebpf() {
		return r.backend.Tenants()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for t := range r.owners {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Apply makes the kernel match spec and returns what it changed.
func (r *Reconciler) Apply(ctx context.Context, spec TenantSpec) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	empty := len(spec.Tunnels) == 0 && len(spec.Routes) == 0
	if empty && !r.owners[spec.Tenant] {
		return nil, nil // most tenants: no tunnels, nothing to read or write
	}
	r.owners[spec.Tenant] = true
	var ch []string
	err := withNS(r.cfg.NSDir, spec.Namespace, func(ns netns.NsHandle, tn *netlink.Handle) error {
		var err error
		ch, err = r.apply(spec, ns, tn)
		return err
	})
	if err == nil {
		r.specs[spec.Tenant] = spec
		if empty {
			delete(r.owners, spec.Tenant)
			delete(r.specs, spec.Tenant)
		}
	}
	return ch, err
}

// withNS opens a named namespace and a netlink handle in it for fn.
func withNS(dir, name string, fn func(netns.NsHandle, *netlink.Handle) error) error {
	ns, err := namedns.Open(dir, name)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", name, err)
	}
	defer ns.Close()
	tn, err := nlh.New(ns, false)
	if err != nil {
		return err
	}
	defer tn.Close()
	return fn(ns, tn)
}

func (r *Reconciler) apply(spec TenantSpec, ns netns.NsHandle, tn *netlink.Handle) ([]string, error) {
	var ch []string
	keep := map[string]bool{}
	for _, t := range spec.Tunnels {
		keep[t.Name] = true
		c, err := r.backend.EnsureTunnel(spec.Tenant, spec.Namespace, ns, tn, t)
		ch = append(ch, c...)
		if err != nil {
			return ch, err
		}
	}
	c, err := r.backend.RemoveStale(spec.Tenant, keep)
	ch = append(ch, c...)
	if err != nil {
		return ch, err
	}
	var hostIfs []namedns.Sysctl
	for _, t := range spec.Tunnels {
		if !r.ebpf() {
			break // no host end
		}
		hostIfs = append(hostIfs, namedns.Sysctl{Path: "net/ipv6/conf/" + owned.TunnelIfName(spec.Tenant, t.Name) + "/disable_ipv6", Value: "1"})
	}
	c, err = namedns.EnsureSysctls(r.cfg.HostNS, hostIfs)
	ch = append(ch, prefixed("sysctl: host ", c)...)
	if err != nil {
		return ch, err
	}
	tenantSys := []namedns.Sysctl{
		{Path: "net/ipv4/fib_multipath_hash_policy", Value: "1"},
		{Path: "net/ipv6/fib_multipath_hash_policy", Value: "1"},
	}
	for _, t := range spec.Tunnels {
		// A reply probe's default source is this tunnel interface's own
		// address; a router whose route to the probe address is the
		// tunnel sends it back here, where it would be a martian.
		tenantSys = append(tenantSys, namedns.Sysctl{Path: "net/ipv4/conf/" + t.Name + "/accept_local", Value: "1"})
	}
	c, err = namedns.EnsureSysctls(ns, tenantSys)
	ch = append(ch, prefixed("sysctl: tenant ", c)...)
	if err != nil {
		return ch, err
	}
	c, err = r.ensureRoutes(tn, spec)
	ch = append(ch, c...)
	if err != nil {
		return ch, err
	}
	c, err = ensureMSS(ns, spec.Tunnels)
	return append(ch, c...), err
}

// Reroute re-applies a tenant's routes (after a health change).
func (r *Reconciler) Reroute(tenant string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	spec, ok := r.specs[tenant]
	if !ok {
		return nil, nil
	}
	var ch []string
	err := withNS(r.cfg.NSDir, spec.Namespace, func(_ netns.NsHandle, tn *netlink.Handle) error {
		var err error
		ch, err = r.ensureRoutes(tn, spec)
		return err
	})
	return ch, err
}

// Remove deletes all of a tenant's tunnels (its namespace may be gone).
func (r *Reconciler) Remove(tenant string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.specs, tenant)
	if !r.owners[tenant] {
		return nil, nil
	}
	ch, err := r.backend.RemoveStale(tenant, nil)
	if err == nil {
		delete(r.owners, tenant)
	}
	return ch, err
}

func prefixed(p string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = p + x
	}
	return out
}

// EnsureTunnel is the eBPF backend: a veth pair whose tenant end is the
// tunnel interface (NOARP, no IPv6 link-local, the configured address and
// MTU) and whose host end runs the encap program; decap reaches it through
// the map entry for (local, remote).
func (r *Reconciler) EnsureTunnel(tenant, _ string, ns netns.NsHandle, tn *netlink.Handle, t Tunnel) ([]string, error) {
	hostIf := owned.TunnelIfName(tenant, t.Name)
	links, ch, err := veth.Ensure(r.host, tn, ns, veth.Pair{Host: hostIf, Peer: t.Name, Alias: owned.TunnelAlias(tenant, t.Name), MTU: t.MTU, What: "tunnel",
		Owned:  func(alias string) bool { _, _, ok := owned.ParseTunnelAlias(alias); return ok },
		Remove: r.removeLink,
		// Before it goes up: no IPv6 link-local, so the tunnel stays
		// quiet (no router solicitations or MLD towards the customer).
		Created: func(nl netlink.Link) error {
			if err := tn.LinkSetIP6AddrGenMode(nl, 1); err != nil {
				return fmt.Errorf("set addrgenmode none on %s: %w", t.Name, err)
			}
			return nil
		}})
	if err != nil {
		return ch, err
	}
	hl, nl := links.Host, links.Peer
	if nl.Attrs().RawFlags&unix.IFF_NOARP == 0 {
		if err := tn.LinkSetARPOff(nl); err != nil {
			return ch, fmt.Errorf("set %s noarp: %w", t.Name, err)
		}
		ch = append(ch, "tunnel: noarp "+t.Name)
	}
	c, err := ensureTunnelAddr(tn, nl, t)
	ch = append(ch, c...)
	if err != nil {
		return ch, err
	}
	id, ok := r.ids[hostIf]
	if !ok {
		if id, err = r.allocID(); err != nil {
			return ch, err
		}
		if err := r.cfg.Datapath.ResetStats(id); err != nil {
			return ch, fmt.Errorf("reset counters of %s: %w", t.Name, err)
		}
		r.ids[hostIf] = id
	}
	changed, err := r.cfg.Datapath.AttachEncap(Endpoint{ID: id, Local: t.Local, Remote: t.Remote, TTL: t.TTL,
		HostIf: hostIf, HostIndex: hl.Attrs().Index, HostMAC: hl.Attrs().HardwareAddr, NSMAC: nl.Attrs().HardwareAddr})
	if err != nil {
		return ch, err
	}
	if changed {
		ch = append(ch, fmt.Sprintf("tunnel: datapath %s %s -> %s (id %d)", t.Name, t.Local, t.Remote, id))
	}
	return ch, nil
}

func maskBits(m net.IPMask) int {
	n, _ := m.Size()
	return n
}

func (r *Reconciler) allocID() (uint32, error) {
	used := map[uint32]bool{}
	for _, id := range r.ids {
		used[id] = true
	}
	for id := uint32(1); id < MaxTunnels; id++ {
		if !used[id] {
			return id, nil
		}
	}
	return 0, fmt.Errorf("all %d tunnel IDs are in use", MaxTunnels-1)
}

// removeLink deletes a tunnel's host end (its peer goes with it) and its
// datapath entries.
func (r *Reconciler) removeLink(l netlink.Link) error {
	name := l.Attrs().Name
	ents, _ := r.cfg.Datapath.EncapEntries()
	e := ents[l.Attrs().Index]
	err := r.cfg.Datapath.RemoveEncap(name, l.Attrs().Index, e.Local, e.Remote)
	if derr := r.host.LinkDel(l); derr != nil && !nlh.IsNotFound(derr) {
		err = errors.Join(err, fmt.Errorf("delete %s: %w", name, derr))
	}
	delete(r.ids, name)
	return err
}

// RemoveStale deletes the tenant's tunnel links not in keep.
func (r *Reconciler) RemoveStale(tenant string, keep map[string]bool) ([]string, error) {
	links, err := r.host.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var ch []string
	var errs []error
	for _, l := range links {
		t, name, ok := owned.ParseTunnelAlias(l.Attrs().Alias)
		if !ok || t != tenant || keep[name] {
			continue
		}
		if err := r.removeLink(l); err != nil {
			errs = append(errs, err)
		}
		ch = append(ch, fmt.Sprintf("tunnel: delete %s (host end %s)", name, l.Attrs().Name))
	}
	return ch, errors.Join(errs...)
}

// ensureRoutes writes the planned routes (protocol owned.TunnelRouteProtocol, main
// table) in the tenant namespace and removes the ones no longer planned.
func (r *Reconciler) ensureRoutes(tn *netlink.Handle, spec TenantSpec) ([]string, error) {
	sets := PlanRoutes(spec.Routes, func(tun string) int { return r.penalty(spec.Tenant, tun) })
	index := map[string]int{}
	for _, t := range spec.Tunnels {
		l, err := tn.LinkByName(t.Name)
		if err != nil {
			return nil, fmt.Errorf("find tunnel %s: %w", t.Name, err)
		}
		index[t.Name] = l.Attrs().Index
	}
	have, err := tn.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: owned.TunnelRouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	haveBy := map[string]string{}
	for _, rt := range have {
		if rt.Dst != nil {
			haveBy[rt.Dst.String()] = routeKey(rt)
		}
	}
	var ch []string
	want := map[string]bool{}
	for _, s := range sets {
		rt := netlink.Route{Dst: &net.IPNet{IP: s.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(s.Prefix.Bits(), s.Prefix.Addr().BitLen())},
			Table: unix.RT_TABLE_MAIN, Protocol: owned.TunnelRouteProtocol}
		if len(s.Hops) == 1 {
			rt.Gw, rt.LinkIndex = s.Hops[0].Nexthop.AsSlice(), index[s.Hops[0].Tunnel]
		} else {
			for _, h := range s.Hops {
				rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{LinkIndex: index[h.Tunnel], Gw: h.Nexthop.AsSlice(), Hops: h.Weight - 1})
			}
		}
		dst := rt.Dst.String()
		want[dst] = true
		if haveBy[dst] == routeKey(rt) {
			continue
		}
		if err := tn.RouteReplace(&rt); err != nil {
			return ch, fmt.Errorf("route %s: %w", s.Prefix, err)
		}
		ch = append(ch, fmt.Sprintf("route: %s %s (priority %d)", s.Prefix, routeKey(rt), s.Priority))
	}
	for _, rt := range have {
		if rt.Dst == nil || want[rt.Dst.String()] {
			continue
		}
		if err := tn.RouteDel(&rt); err != nil {
			return ch, fmt.Errorf("delete route %s: %w", rt.Dst, err)
		}
		ch = append(ch, "route: delete "+rt.Dst.String())
	}
	return ch, nil
}

// routeKey renders a route's nexthops for comparison and logs.
func routeKey(rt netlink.Route) string {
	var hops []string
	if len(rt.MultiPath) == 0 {
		hops = append(hops, fmt.Sprintf("via %s dev %d weight 1", rt.Gw, rt.LinkIndex))
	}
	for _, h := range rt.MultiPath {
		hops = append(hops, fmt.Sprintf("via %s dev %d weight %d", h.Gw, h.LinkIndex, h.Hops+1))
	}
	slices.Sort(hops)
	return strings.Join(hops, ", ")
}
