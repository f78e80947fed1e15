package tunnels

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
)

// The kernel GRE backend.
//
// Linux ip tunnels are cross-namespace: a gre device created in the host
// namespace ("local <anycast> remote <customer>") and then moved into the
// tenant namespace keeps its underlay in the host namespace. ip_gre
// finds the device of a received packet by (local, remote) in the host,
// and the inner packet appears on the device in the tenant namespace;
// encapsulated packets are routed in the host. Several tenants share the
// anycast address; the remote tells them apart, as with eBPF.
//
// ip_gre only receives GRE addressed to a local address, and the kernel
// only sends from one (the output route's source check falls back to the
// local table): for each anycast endpoint in use, nsd adds the route
// "local <anycast> dev lo table local proto 110" in the host namespace,
// unless the address is already local there (someone else's: it is left
// alone), and removes its own routes whose address no tunnel uses.

// KernelConfig is what a KernelBackend works on.
type KernelConfig struct {
	HostNS netns.NsHandle // not open: the caller's own
	NSDir  string         // named namespaces (namedns.DefaultDir)
	// NSPrefix names the tenant namespaces searched for devices at start
	// (owned.DefaultNSPrefix if empty).
	NSPrefix string
	Logger   *slog.Logger
}

// KernelBackend makes each tunnel a kernel GRE device (ip_gre) in the
// tenant namespace: the tunnel's name, address and MTU, NOARP, no IPv6
// link-local, plain 4-byte GRE (no key, checksum or sequence numbers, as
// the eBPF datapath), the tunnel's TTL. Its alias owned.TunnelAlias marks
// it. Safe for concurrent use; the Reconciler serialises changes.
type KernelBackend struct {
	cfg  KernelConfig
	log  *slog.Logger
	host *netlink.Handle

	mu   sync.Mutex
	tuns map[tunKey]*kernelTunnel
	byID map[uint32]tunKey
	// stats caches each device's counters for statsTTL: the prober
	// reads every tunnel's five times a second, and each read opens the
	// tenant namespace (a handle kept open would keep a deleted
	// namespace, and its devices, alive).
	stats map[uint32]cachedStats
}

type cachedStats struct {
	at time.Time
	s  Stats
}

const statsTTL = time.Second

type tunKey struct{ tenant, tunnel string }

type kernelTunnel struct {
	id    uint32
	ns    string // the tenant namespace's name
	local netip.Addr
}

// anycastTable is the routing table of the anycast endpoints' local routes.
const anycastTable = unix.RT_TABLE_LOCAL

var _ Backend = (*KernelBackend)(nil)

// ErrNoKernelGRE says the kernel cannot make GRE devices.
var ErrNoKernelGRE = errors.New("kernel GRE backend: the kernel has no ip_gre (modprobe ip_gre or use --gre-backend ebpf)")

// NewKernelBackend opens the host namespace and finds the devices an
// earlier nsd made: in the tenant namespaces (NSPrefix), by their alias,
// so that a restarted nsd removes the tunnels of tenants that lost them
// and keeps the anycast routes of the others. A device left in the host
// namespace under its temporary name (an apply interrupted between
// creation and the move) is deleted.
func NewKernelBackend(cfg KernelConfig) (*KernelBackend, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.NSDir == "" {
		cfg.NSDir = namedns.DefaultDir
	}
	if cfg.NSPrefix == "" {
		cfg.NSPrefix = owned.DefaultNSPrefix
	}
	h, err := nlh.New(cfg.HostNS, false)
	if err != nil {
		return nil, err
	}
	b := &KernelBackend{cfg: cfg, log: cfg.Logger, host: h, tuns: map[tunKey]*kernelTunnel{}, byID: map[uint32]tunKey{}, stats: map[uint32]cachedStats{}}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if _, _, ok := owned.ParseTunnelAlias(l.Attrs().Alias); ok && l.Type() == "gre" {
			if err := h.LinkDel(l); err != nil && !nlh.IsNotFound(err) {
				h.Close()
				return nil, fmt.Errorf("delete half-made tunnel device %s: %w", l.Attrs().Name, err)
			}
			b.log.Info("deleted a half-made GRE device", "link", l.Attrs().Name, "alias", l.Attrs().Alias)
		}
	}
	names, err := namedns.List(cfg.NSDir, cfg.NSPrefix)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("list namespaces in %s: %w", cfg.NSDir, err)
	}
	for _, nsName := range names {
		if err := withNS(cfg.NSDir, nsName, func(_ netns.NsHandle, tn *netlink.Handle) error {
			ls, err := tn.LinkList()
			if err != nil {
				return fmt.Errorf("list links: %w", err)
			}
			for _, l := range ls {
				g, ok := l.(*netlink.Gretun)
				tenant, name, owns := owned.ParseTunnelAlias(l.Attrs().Alias)
				if !ok || !owns {
					continue
				}
				local, _ := netip.AddrFromSlice(g.Local.To4())
				b.add(tunKey{tenant, name}, nsName, local)
			}
			return nil
		}); err != nil {
			b.log.Warn("look for GRE devices in a tenant namespace", "netns", nsName, "err", err)
		}
	}
	return b, nil
}

// Close releases the netlink handle.
func (b *KernelBackend) Close() { b.host.Close() }

// add records a tunnel (with b.mu held, or before b is shared) and gives
// it the lowest free ID.
func (b *KernelBackend) add(k tunKey, ns string, local netip.Addr) *kernelTunnel {
	if kt := b.tuns[k]; kt != nil {
		kt.ns, kt.local = ns, local
		return kt
	}
	id := uint32(1)
	for ; b.byID[id] != (tunKey{}); id++ {
	}
	kt := &kernelTunnel{id: id, ns: ns, local: local}
	b.tuns[k], b.byID[id] = kt, k
	return kt
}

func (b *KernelBackend) forget(k tunKey) {
	if kt := b.tuns[k]; kt != nil {
		delete(b.byID, kt.id)
		delete(b.stats, kt.id)
		delete(b.tuns, k)
	}
}

// Tenants lists the tenants that have tunnel devices.
func (b *KernelBackend) Tenants() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for k := range b.tuns {
		if !seen[k.tenant] {
			seen[k.tenant] = true
			out = append(out, k.tenant)
		}
	}
	sort.Strings(out)
	return out
}

// ID is a tunnel's index: its health probes' ICMP identifier and the key
// of Stats. IDs are per process (the counters are the device's own).
func (b *KernelBackend) ID(tenant, tunnel string) (uint32, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	kt := b.tuns[tunKey{tenant, tunnel}]
	if kt == nil {
		return 0, false
	}
	return kt.id, true
}

// Stats reads the counters of tunnel id from its device: rx are the
// decapsulated packets, tx the encapsulated ones, drops the device's
// receive and transmit drops and errors (no route to the customer
// endpoint counts as a transmit error), at most statsTTL old.
func (b *KernelBackend) Stats(id uint32) (Stats, error) {
	b.mu.Lock()
	k, ok := b.byID[id]
	var ns string
	if ok {
		ns = b.tuns[k].ns
	}
	c, cached := b.stats[id]
	b.mu.Unlock()
	if !ok {
		return Stats{}, fmt.Errorf("tunnel id %d: %w", id, os.ErrNotExist)
	}
	if cached && time.Since(c.at) < statsTTL {
		return c.s, nil
	}
	var s Stats
	err := withNS(b.cfg.NSDir, ns, func(_ netns.NsHandle, tn *netlink.Handle) error {
		l, err := tn.LinkByName(k.tunnel)
		if err != nil {
			return fmt.Errorf("find tunnel %s: %w", k.tunnel, err)
		}
		st := l.Attrs().Statistics
		if st == nil {
			return fmt.Errorf("tunnel %s: no statistics", k.tunnel)
		}
		s = Stats{RxPackets: st.RxPackets, RxBytes: st.RxBytes, TxPackets: st.TxPackets, TxBytes: st.TxBytes,
			Drops: st.RxDropped + st.RxErrors + st.TxDropped + st.TxErrors}
		return nil
	})
	if err == nil {
		b.mu.Lock()
		if b.byID[id] == k {
			b.stats[id] = cachedStats{at: time.Now(), s: s}
		}
		b.mu.Unlock()
	}
	return s, err
}

// GRESpec is the device a tunnel wants (pure, for tests and comparison).
func GRESpec(tenant string, t Tunnel) *netlink.Gretun {
	return &netlink.Gretun{
		LinkAttrs: netlink.LinkAttrs{Name: owned.KernelTunnelTempName(tenant, t.Name), Alias: owned.TunnelAlias(tenant, t.Name), MTU: t.MTU},
		Local:     t.Local.AsSlice(), Remote: t.Remote.AsSlice(), Ttl: t.TTL,
		// Path MTU discovery on (DF set on the outer header): the kernel
		// refuses a fixed TTL without it, and the tunnel MTU and MSS
		// clamping keep packets under the path MTU.
		PMtuDisc: 1,
	}
}

// greMismatch says how an existing device differs from want ("" if it
// does not, MTU aside: that is changed in place).
func greMismatch(have *netlink.Gretun, want *netlink.Gretun) string {
	var d []string
	if !have.Local.Equal(want.Local) {
		d = append(d, fmt.Sprintf("local %s (want %s)", have.Local, want.Local))
	}
	if !have.Remote.Equal(want.Remote) {
		d = append(d, fmt.Sprintf("remote %s (want %s)", have.Remote, want.Remote))
	}
	if have.Ttl != want.Ttl {
		d = append(d, fmt.Sprintf("ttl %d (want %d)", have.Ttl, want.Ttl))
	}
	if have.PMtuDisc != want.PMtuDisc {
		d = append(d, fmt.Sprintf("pmtudisc %d (want %d)", have.PMtuDisc, want.PMtuDisc))
	}
	if have.IKey != 0 || have.OKey != 0 || have.IFlags != 0 || have.OFlags != 0 || have.EncapType != 0 {
		d = append(d, "keys, flags or encapsulation set")
	}
	if have.Link != 0 {
		d = append(d, "bound to an underlay device")
	}
	return strings.Join(d, ", ")
}

// EnsureTunnel makes t's GRE device exist in the tenant namespace nsName
// (handle tn) with its address, MTU and flags, and the anycast endpoint
// local in the host.
func (b *KernelBackend) EnsureTunnel(tenant, nsName string, ns netns.NsHandle, tn *netlink.Handle, t Tunnel) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ch []string
	want := GRESpec(tenant, t)
	alias := want.Alias
	var dev netlink.Link
	l, err := tn.LinkByName(t.Name)
	switch {
	case err != nil && !nlh.IsNotFound(err):
		return nil, fmt.Errorf("get link %s in the tenant namespace: %w", t.Name, err)
	case err == nil:
		g, isGRE := l.(*netlink.Gretun)
		switch {
		case isGRE && l.Attrs().Alias == alias:
			if d := greMismatch(g, want); d != "" {
				if err := tn.LinkDel(l); err != nil {
					return nil, fmt.Errorf("delete GRE device %s to replace it: %w", t.Name, err)
				}
				ch = append(ch, fmt.Sprintf("tunnel: replace %s: %s", t.Name, d))
			} else {
				dev = l
			}
		case l.Type() == "veth":
			// An eBPF backend's tunnel (this host changed backends):
			// its host end carries the alias; deleting it takes the
			// tenant end too.
			hostIf := owned.TunnelIfName(tenant, t.Name)
			hl, herr := b.host.LinkByName(hostIf)
			if herr != nil || hl.Attrs().Alias != alias {
				return nil, fmt.Errorf("link %s in the tenant namespace exists and is not nfhost's", t.Name)
			}
			if err := b.host.LinkDel(hl); err != nil && !nlh.IsNotFound(err) {
				return nil, fmt.Errorf("delete the eBPF backend's tunnel %s (%s): %w", t.Name, hostIf, err)
			}
			ch = append(ch, fmt.Sprintf("tunnel: delete eBPF veth %s (host end %s) for a GRE device", t.Name, hostIf))
		default:
			return nil, fmt.Errorf("link %s in the tenant namespace exists and is not nfhost's (type %s, alias %q)", t.Name, l.Type(), l.Attrs().Alias)
		}
	}
	if dev == nil {
		c, err := b.create(tn, ns, t, want)
		ch = append(ch, c...)
		if err != nil {
			return ch, err
		}
		if dev, err = tn.LinkByName(t.Name); err != nil {
			return ch, fmt.Errorf("get new GRE device %s: %w", t.Name, err)
		}
	}
	b.add(tunKey{tenant, t.Name}, nsName, t.Local)
	if t.MTU != 0 && dev.Attrs().MTU != t.MTU {
		if err := tn.LinkSetMTU(dev, t.MTU); err != nil {
			return ch, fmt.Errorf("set MTU of %s: %w", t.Name, err)
		}
		ch = append(ch, fmt.Sprintf("tunnel: mtu %s %d", t.Name, t.MTU))
	}
	c, err := ensureTunnelAddr(tn, dev, t)
	ch = append(ch, c...)
	if err != nil {
		return ch, err
	}
	if dev.Attrs().Flags&net.FlagUp == 0 {
		if err := tn.LinkSetUp(dev); err != nil {
			return ch, fmt.Errorf("set %s up: %w", t.Name, err)
		}
		ch = append(ch, "tunnel: up "+t.Name)
	}
	c, err = b.ensureLocal(t.Local)
	return append(ch, c...), err
}

// create makes the device in the host namespace under its temporary name
// (an nfhost name: never a host link's), moves it into the tenant
// namespace (its underlay stays in the host) and renames it there; IPv6
// address generation is off before it first goes up.
func (b *KernelBackend) create(tn *netlink.Handle, ns netns.NsHandle, t Tunnel, want *netlink.Gretun) ([]string, error) {
	tmp := want.Name
	for _, h := range []*netlink.Handle{b.host, tn} {
		if l, err := h.LinkByName(tmp); err == nil {
			if l.Attrs().Alias != want.Alias {
				return nil, fmt.Errorf("link %s exists and is not nfhost's (alias %q)", tmp, l.Attrs().Alias)
			}
			if err := h.LinkDel(l); err != nil && !nlh.IsNotFound(err) {
				return nil, fmt.Errorf("delete half-made GRE device %s: %w", tmp, err)
			}
		}
	}
	if err := b.host.LinkAdd(want); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, ErrNoKernelGRE
		}
		return nil, fmt.Errorf("create GRE device %s (%s -> %s): %w", tmp, t.Local, t.Remote, err)
	}
	hl, err := b.host.LinkByName(tmp)
	if err != nil {
		return nil, fmt.Errorf("get new GRE device %s: %w", tmp, err)
	}
	// The alias marks a half-made device here; the move drops it, so it
	// is set again in the tenant namespace.
	if err := b.host.LinkSetAlias(hl, want.Alias); err != nil {
		b.host.LinkDel(hl)
		return nil, fmt.Errorf("set alias on %s: %w", tmp, err)
	}
	if err := b.host.LinkSetNsFd(hl, int(ns)); err != nil {
		b.host.LinkDel(hl)
		return nil, fmt.Errorf("move GRE device %s into the tenant namespace: %w", tmp, err)
	}
	nl, err := tn.LinkByName(tmp)
	if err != nil {
		return nil, fmt.Errorf("get GRE device %s in the tenant namespace: %w", tmp, err)
	}
	if err := tn.LinkSetName(nl, t.Name); err != nil {
		tn.LinkDel(nl)
		return nil, fmt.Errorf("rename GRE device %s to %s: %w", tmp, t.Name, err)
	}
	if err := tn.LinkSetAlias(nl, want.Alias); err != nil {
		tn.LinkDel(nl)
		return nil, fmt.Errorf("set alias on %s: %w", t.Name, err)
	}
	if err := tn.LinkSetIP6AddrGenMode(nl, 1); err != nil {
		return nil, fmt.Errorf("set addrgenmode none on %s: %w", t.Name, err)
	}
	return []string{fmt.Sprintf("tunnel: create GRE device %s %s -> %s ttl %d", t.Name, t.Local, t.Remote, t.TTL)}, nil
}

// RemoveStale deletes the tenant's GRE devices not in keep, and the
// anycast routes no tunnel uses any more.
func (b *KernelBackend) RemoveStale(tenant string, keep map[string]bool) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ch []string
	var errs []error
	byNS := map[string][]string{}
	for k, kt := range b.tuns {
		if k.tenant == tenant && !keep[k.tunnel] {
			byNS[kt.ns] = append(byNS[kt.ns], k.tunnel)
		}
	}
	for ns, names := range byNS {
		sort.Strings(names)
		err := withNS(b.cfg.NSDir, ns, func(_ netns.NsHandle, tn *netlink.Handle) error {
			for _, name := range names {
				l, err := tn.LinkByName(name)
				if err == nil && l.Attrs().Alias == owned.TunnelAlias(tenant, name) {
					if err := tn.LinkDel(l); err != nil && !nlh.IsNotFound(err) {
						return fmt.Errorf("delete GRE device %s: %w", name, err)
					}
					ch = append(ch, "tunnel: delete GRE device "+name)
				} else if err != nil && !nlh.IsNotFound(err) {
					return fmt.Errorf("get link %s: %w", name, err)
				}
				b.forget(tunKey{tenant, name})
			}
			return nil
		})
		if err != nil && namedns.Exists(b.cfg.NSDir, ns) {
			errs = append(errs, err)
			continue
		}
		// The namespace is gone: its devices went with it.
		for _, name := range names {
			b.forget(tunKey{tenant, name})
		}
	}
	c, err := b.gcLocals()
	ch = append(ch, c...)
	if err != nil {
		errs = append(errs, err)
	}
	return ch, errors.Join(errs...)
}

// localRoutes lists the host's local table: ours (protocol
// owned.TunnelRouteProtocol) and whether another local route holds each
// address.
func (b *KernelBackend) localRoutes() (ours map[netip.Addr]netlink.Route, others map[netip.Addr]bool, err error) {
	rs, err := b.host.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: anycastTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, fmt.Errorf("list the host's local routes: %w", err)
	}
	ours, others = map[netip.Addr]netlink.Route{}, map[netip.Addr]bool{}
	for _, r := range rs {
		if r.Dst == nil || r.Type != unix.RTN_LOCAL {
			continue
		}
		if n, _ := r.Dst.Mask.Size(); n != 32 {
			continue
		}
		a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		if r.Protocol == owned.TunnelRouteProtocol {
			ours[a] = r
		} else {
			others[a] = true
		}
	}
	return ours, others, nil
}

// ensureLocal makes the anycast address local in the host namespace.
func (b *KernelBackend) ensureLocal(a netip.Addr) ([]string, error) {
	ours, others, err := b.localRoutes()
	if err != nil {
		return nil, err
	}
	if _, ok := ours[a]; ok || others[a] {
		return nil, nil
	}
	lo, err := b.host.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("find lo: %w", err)
	}
	r := AnycastRoute(a, lo.Attrs().Index)
	if err := b.host.RouteAdd(&r); err != nil {
		return nil, fmt.Errorf("add local route for the anycast endpoint %s: %w", a, err)
	}
	return []string{fmt.Sprintf("tunnel: anycast endpoint %s local (table local, proto %d)", a, owned.TunnelRouteProtocol)}, nil
}

// AnycastRoute is the host's route that makes an anycast endpoint local.
func AnycastRoute(a netip.Addr, lo int) netlink.Route {
	return netlink.Route{Table: anycastTable, Type: unix.RTN_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: owned.TunnelRouteProtocol,
		Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}, LinkIndex: lo}
}

// gcLocals removes nfhost's local routes whose address no tunnel uses.
func (b *KernelBackend) gcLocals() ([]string, error) {
	used := map[netip.Addr]bool{}
	for _, kt := range b.tuns {
		used[kt.local] = true
	}
	ours, _, err := b.localRoutes()
	if err != nil {
		return nil, err
	}
	var ch []string
	for a, r := range ours {
		if used[a] {
			continue
		}
		if err := b.host.RouteDel(&r); err != nil && !nlh.IsNotFound(err) {
			return ch, fmt.Errorf("delete local route for %s: %w", a, err)
		}
		ch = append(ch, fmt.Sprintf("tunnel: anycast endpoint %s no longer local", a))
	}
	return ch, nil
}

// RemoveAnycastRoutes deletes every local route the kernel backend made
// in the host namespace (for a host that now runs the eBPF backend, whose
// decap takes GRE before routing).
func RemoveAnycastRoutes(hostNS netns.NsHandle) ([]string, error) {
	h, err := nlh.New(hostNS, false)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	b := &KernelBackend{host: h}
	return b.gcLocals()
}

// ensureTunnelAddr gives a tunnel interface exactly its configured IPv4
// address (either backend).
func ensureTunnelAddr(tn *netlink.Handle, nl netlink.Link, t Tunnel) ([]string, error) {
	var ch []string
	addrs, err := tn.AddrList(nl, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", t.Name, err)
	}
	have := false
	for _, a := range addrs {
		p, _ := netip.AddrFromSlice(a.IP.To4())
		if pp := netip.PrefixFrom(p, maskBits(a.Mask)); pp == t.Addr && (a.Peer == nil) {
			have = true
			continue
		}
		if err := tn.AddrDel(nl, &a); err != nil {
			return ch, fmt.Errorf("delete address %s from %s: %w", a.IPNet, t.Name, err)
		}
		ch = append(ch, fmt.Sprintf("tunnel: delete address %s from %s", a.IPNet, t.Name))
	}
	if !have {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: t.Addr.Addr().AsSlice(), Mask: net.CIDRMask(t.Addr.Bits(), 32)}}
		if err := tn.AddrAdd(nl, a); err != nil {
			return ch, fmt.Errorf("add address %s to %s: %w", t.Addr, t.Name, err)
		}
		ch = append(ch, fmt.Sprintf("tunnel: address %s on %s", t.Addr, t.Name))
	}
	return ch, nil
}
