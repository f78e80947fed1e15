package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/internal/veth"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// ErrNotSupported wraps a missing kernel feature found at start.
var ErrNotSupported = errors.New("not supported by this kernel")

// ErrNotOwned is wrapped by Apply and Delete when a tenant's namespace name
// is taken by a namespace nfhost did not create: one without nfhost's mark
// (see NSAlias). Such a namespace is never adopted, modified or deleted.
var ErrNotOwned = errors.New("not nfhost's")

// Config configures a Reconciler.
type Config struct {
	// HostNS is the namespace that plays the host: the uplink and the host
	// ends of the tenant veths live there. The Reconciler duplicates it.
	HostNS netns.NsHandle
	// NetnsDir holds the named tenant namespaces (default /run/netns).
	NetnsDir string
	// NSPrefix starts every tenant namespace name (default "nf-").
	NSPrefix string
	Logger   *slog.Logger
}

// Reconciler makes the kernel match TenantSpecs. Apply and Delete for
// different tenants may not run concurrently with each other; the daemon
// serialises them.
type Reconciler struct {
	cfg    Config
	log    *slog.Logger
	hostNS netns.NsHandle
	host   *netlink.Handle // plain: links, addresses, rules
	routes *netlink.Handle // strict checking: per-table route dumps
	// hostConf reads the host links' sysctls through rtnetlink (nil if
	// the kernel cannot: /proc is read instead).
	hostConf *nlh.Netconf
	steer    *steering
	// rules mirrors the ip rules that point at tables in nfhost's range,
	// by table. Observe reloads it with one dump per family; Apply and
	// Delete consult and update it, so one tenant's change does not dump
	// every tenant's rules (the kernel does not filter rule dumps).
	rules map[uint32][]netlink.Rule
	// hostAddrs mirrors the addresses of host-side links by ifindex, for
	// the same reason: the library's AddrList dumps every address in the
	// namespace (three per tenant) and filters in user space.
	hostAddrs map[int][]netip.Prefix
	// foreign lists the namespaces with nfhost's prefix that the last
	// Observe found not to be nfhost's.
	foreign []string
	// The return path (see ReturnTable), mirrored like the rules:
	// retRoutes holds the return table's routes by the ifindex they route
	// into, retLink the ifindex of each prefix, retRules the rules pointing
	// at the table, hostNeigh the MAC of the permanent NSAddr4 neighbour on
	// each host link, linkSlots the slot of each nfhost host link.
	retRoutes map[int]map[netip.Prefix]netlink.Route
	retLink   map[netip.Prefix]int
	retRules  []netlink.Rule
	hostNeigh map[int]string
	linkSlots map[int]uint16
	observed  bool // linkSlots holds every nfhost host link (Observe ran)
	// dumped holds each tenant's host link as Observe's dump saw it,
	// until that tenant's next Apply takes it instead of asking the
	// kernel again, or GC (the end of the full pass after Observe) drops
	// it: the first pass after Observe (a restart, a resync) reads the
	// host side once for every tenant, not once per tenant. A change
	// someone makes to the link between Observe and the tenant's Apply
	// in that pass is repaired by the next resync.
	dumped map[string]netlink.Link
	// prefetch reads ahead what a full pass's Applies read inside the
	// tenants' namespaces (prefetch.go); nil when none runs.
	prefetch *prefetch
	// viewsTaken counts the prefetched views Applies took (tests).
	viewsTaken int
	// verified maps the inode of each tenant namespace whose mark this
	// Reconciler has read or written to the tenant's ID, so that a later
	// Observe need not enter it (see observeNS).
	verified map[uint64]string
}

// New opens handles on the host namespace, checks the kernel features
// nfhost needs, sets the host-wide sysctls and makes sure the nft table
// skeleton is in place.
func New(cfg Config) (*Reconciler, error) {
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = namedns.DefaultDir
	}
	if cfg.NSPrefix == "" {
		cfg.NSPrefix = owned.DefaultNSPrefix
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hostNS, err := dupNS(cfg.HostNS)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger.With("subsys", "routing"), hostNS: hostNS}
	if r.host, err = nlh.New(hostNS, false); err != nil {
		hostNS.Close()
		return nil, err
	}
	if r.routes, err = nlh.New(hostNS, true); err != nil {
		r.Close()
		return nil, err
	}
	if r.hostConf, err = nlh.OpenNetconf(hostNS); err != nil {
		r.log.Warn("cannot read sysctls through rtnetlink; reading /proc", "err", err)
		r.hostConf = nil
	}
	// A lasting connection: opening a netfilter socket inside another
	// namespace for every batch cost ~13 ms per change (measured by
	// BenchmarkApplyPrefixChange: 14 ms → 0.6 ms).
	conn, err := nftables.New(nftables.WithNetNSFd(int(hostNS)), nftables.AsLasting())
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open nftables: %w: %w", ErrNotSupported, err)
	}
	r.steer = newSteering(conn)
	rebuilt, rewritten, err := r.steer.ensure()
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("set up nft table %s (nf_tables inet): %w", owned.NFTTable, err)
	}
	if rebuilt {
		r.log.Info("wrote nft table skeleton", "table", "inet "+owned.NFTTable)
	}
	if rewritten > 0 {
		r.log.Info("rewrote nft map elements from host to network byte order", "elements", rewritten)
	}
	if err := r.loadRules(); err != nil {
		r.Close()
		return nil, err
	}
	rch, err := r.ensureReturnRule()
	if err != nil {
		r.Close()
		return nil, err
	}
	for _, c := range rch {
		r.log.Info("kernel change", "change", c)
	}
	changed, err := namedns.EnsureSysctls(hostNS, []namedns.Sysctl{
		{Path: "net/ipv4/ip_forward", Value: "1"},
		{Path: "net/ipv6/conf/all/forwarding", Value: "1"},
	})
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("set host sysctls: %w", err)
	}
	for _, c := range changed {
		r.log.Info("set host sysctl", "sysctl", c)
	}
	return r, nil
}

func dupNS(ns netns.NsHandle) (netns.NsHandle, error) {
	if !ns.IsOpen() {
		cur, err := netns.Get()
		if err != nil {
			return netns.None(), fmt.Errorf("get own netns: %w", err)
		}
		return cur, nil
	}
	fd, err := unix.Dup(int(ns))
	if err != nil {
		return netns.None(), fmt.Errorf("dup host netns: %w", err)
	}
	unix.CloseOnExec(fd)
	return netns.NsHandle(fd), nil
}

// Close releases the handles. It leaves the kernel state in place.
func (r *Reconciler) Close() {
	r.stopPrefetch()
	if r.host != nil {
		r.host.Close()
	}
	if r.routes != nil {
		r.routes.Close()
	}
	if r.hostConf != nil {
		r.hostConf.Close()
	}
	if r.steer != nil {
		r.steer.conn.CloseLasting()
	}
	r.hostNS.Close()
}

// Observed is what the kernel holds for one tenant, found by nfhost's marks.
type Observed struct {
	ID        string
	Slot      uint16 // 0 if only the namespace was found
	HostIf    string
	Namespace string
}

// Observe lists the tenants nfhost has plumbed on this host: host links with
// an nfhost alias and namespaces with the nfhost prefix that are nfhost's
// (see nsOwner). It marks namespaces an older nsd made without a mark, and
// leaves out and reports (Foreign) the other namespaces with the prefix. It
// also reloads the nft map mirror and repairs the table skeleton.
func (r *Reconciler) Observe(ctx context.Context) (map[string]Observed, error) {
	rebuilt, rewritten, err := r.steer.ensure()
	if err != nil {
		return nil, err
	}
	if rebuilt {
		r.log.Warn("nft table skeleton was missing or altered; rebuilt it", "table", "inet "+owned.NFTTable)
	}
	if rewritten > 0 {
		r.log.Warn("rewrote nft map elements from host to network byte order", "elements", rewritten)
	}
	if err := r.loadRules(); err != nil {
		return nil, err
	}
	rch, err := r.ensureReturnRule()
	if err != nil {
		return nil, err
	}
	for _, c := range rch {
		r.log.Warn("return rule was missing or altered; repaired it", "change", c)
	}
	out := map[string]Observed{}
	links, err := nlh.RetryDump("links", r.host.LinkList)
	if err != nil {
		return nil, err
	}
	hostLinks := map[string]netlink.Link{}
	r.linkSlots, r.observed = map[int]uint16{}, true
	for _, l := range links {
		id, slot, ok := owned.ParseAlias(l.Attrs().Alias)
		if !ok {
			continue
		}
		r.linkSlots[l.Attrs().Index] = slot
		o := out[id]
		o.ID, o.Slot, o.HostIf = id, slot, l.Attrs().Name
		out[id] = o
		hostLinks[id] = l
	}
	r.dumped = hostLinks // Observe only reads it; Apply takes from it
	names, err := namedns.List(r.cfg.NetnsDir, r.cfg.NSPrefix)
	if err != nil {
		return nil, err
	}
	var foreign []string
	verified := make(map[uint64]string, len(names))
	for _, n := range names {
		ino, ok := namedns.Inode(r.cfg.NetnsDir, n)
		if !ok {
			// Not a namespace (an interrupted create leaves an empty
			// file; ensureNS clears it).
			continue
		}
		id := n[len(r.cfg.NSPrefix):]
		ours, err := r.observeNS(id, n, ino, hostLinks[id])
		if err != nil {
			// Undecided is not ours: Apply and Delete check again.
			r.log.Warn("cannot tell whether netns is nfhost's; leaving it alone", "netns", n, "err", err)
		}
		if !ours {
			foreign = append(foreign, n)
			continue
		}
		verified[ino] = id
		o := out[id]
		o.ID, o.Namespace = id, n
		out[id] = o
	}
	r.verified = verified
	r.setForeign(foreign)
	return out, nil
}

// observeNS tells whether the namespace called name (inode ino) is tenant
// id's, and marks it if an older nsd made it. Entering a namespace to read
// its mark costs about 0.1 ms, so a namespace whose mark this Reconciler
// has already read or written is taken as unchanged while the tenant's
// host veth still has its peer inside: if the namespace was replaced under
// the same name (even with the same inode number, which the kernel
// reuses), the veth went with the old one. Otherwise (a restart) the mark
// is read from the host socket by the namespace's id, which needs no
// socket inside.
func (r *Reconciler) observeNS(id, name string, ino uint64, hostLink netlink.Link) (bool, error) {
	ns, err := namedns.Open(r.cfg.NetnsDir, name)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	if r.verified[ino] == id && hostLink != nil && hostLink.Attrs().NetNsID >= 0 {
		if nsid, err := r.host.GetNetNsIdByFd(int(ns)); err == nil && nsid == hostLink.Attrs().NetNsID {
			return true, nil
		}
	}
	// The mark, read from the host through the namespace's id there
	// (assigned when our veth's peer went in): no socket inside. Anything
	// but our mark is decided inside (ownerIn), as before.
	if r.hostConf != nil {
		if nsid, err := r.host.GetNetNsIdByFd(int(ns)); err == nil && nsid >= 0 {
			if alias, err := r.hostConf.LinkAlias(int32(nsid), "lo"); err == nil && alias == owned.NSAlias(id) {
				return true, nil
			}
		}
	}
	owner, err := r.ownerIn(ns, name, id, func() (netlink.Link, error) { return hostLink, nil }, true)
	if err != nil || owner == nsForeign {
		return false, err
	}
	return true, nil
}

// ownerIn reads whose the open namespace ns (called name) is, from the
// mark on its lo and tenant id's host veth (hostLink). With mark set, a
// namespace an older nsd made (unmarked, with the tenant's veth inside)
// gets the mark.
func (r *Reconciler) ownerIn(ns netns.NsHandle, name, id string, hostLink func() (netlink.Link, error), mark bool) (nsOwnership, error) {
	h, err := nlh.New(ns, false)
	if err != nil {
		return nsForeign, fmt.Errorf("open handle in %s: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return nsForeign, fmt.Errorf("get lo in %s: %w", name, err)
	}
	owner, err := r.nsOwner(id, ns, lo, hostLink)
	if err != nil {
		return nsForeign, fmt.Errorf("check owner of netns %s: %w", name, err)
	}
	if owner == nsUnmarked && mark {
		if err := markNS(h, lo, id); err != nil {
			return owner, fmt.Errorf("mark %s: %w", name, err)
		}
		r.log.Info("marked netns made by an older nsd", "netns", name, "tenant", id)
	}
	return owner, nil
}

// setForeign records the foreign namespaces of an Observe pass and warns
// about those not seen in the previous one.
func (r *Reconciler) setForeign(names []string) {
	sort.Strings(names)
	for _, n := range names {
		if !slices.Contains(r.foreign, n) {
			r.log.Warn("netns has nfhost's prefix but is not nfhost's; leaving it alone", "netns", n, "prefix", r.cfg.NSPrefix)
		}
	}
	r.foreign = names
}

// Foreign returns the namespaces with nfhost's prefix that the last
// Observe found not to be nfhost's, sorted. nfhost never adopts, modifies
// or deletes them.
func (r *Reconciler) Foreign() []string { return slices.Clone(r.foreign) }

type nsOwnership int

const (
	nsForeign  nsOwnership = iota
	nsMarked               // lo carries NSAlias(tenant)
	nsUnmarked             // no mark, but nfhost's host veth of the tenant has its peer inside: made by an older nsd
)

// nsOwner decides whether ns is tenant id's namespace. lo is ns's
// loopback; hostLink returns the tenant's host link (nil if there is
// none) and is only called for an unmarked namespace.
func (r *Reconciler) nsOwner(id string, ns netns.NsHandle, lo netlink.Link, hostLink func() (netlink.Link, error)) (nsOwnership, error) {
	switch lo.Attrs().Alias {
	case owned.NSAlias(id):
		return nsMarked, nil
	case "":
	default:
		// Someone else's mark, or another tenant's.
		return nsForeign, nil
	}
	l, err := hostLink()
	if err != nil || l == nil || l.Type() != "veth" || l.Attrs().NetNsID < 0 {
		return nsForeign, err
	}
	if lid, _, ok := owned.ParseAlias(l.Attrs().Alias); !ok || lid != id {
		return nsForeign, nil
	}
	// The host end reports its peer's namespace by its id in the host
	// namespace (IFLA_LINK_NETNSID).
	nsid, err := r.host.GetNetNsIdByFd(int(ns))
	if err != nil {
		return nsForeign, fmt.Errorf("get netns id: %w", err)
	}
	if nsid != l.Attrs().NetNsID {
		return nsForeign, nil
	}
	return nsUnmarked, nil
}

// markNS writes nfhost's ownership mark into a namespace through h, a
// handle bound to it.
func markNS(h *netlink.Handle, lo netlink.Link, id string) error {
	if err := h.LinkSetAlias(lo, owned.NSAlias(id)); err != nil {
		return fmt.Errorf("set alias of lo: %w", err)
	}
	return nil
}

// hostLinkByName returns the host link called name, nil if there is none.
func (r *Reconciler) hostLinkByName(name string) func() (netlink.Link, error) {
	return func() (netlink.Link, error) {
		l, err := r.host.LinkByName(name)
		if nlh.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("get link %s: %w", name, err)
		}
		return l, nil
	}
}

// Apply makes the kernel match spec and returns one line per change made.
// A converged tenant costs only reads and returns no changes.
func (r *Reconciler) Apply(ctx context.Context, spec rtspec.TenantSpec) ([]string, error) {
	var ch changes
	var (
		ns      netns.NsHandle
		tn      *netlink.Handle
		nc      *nlh.Netconf
		created bool
		links   []netlink.Link
		err     error
	)
	// What a full pass read ahead (prefetch.go), if it did.
	v := r.take(spec.ID)
	if v != nil {
		ns, tn, nc, links = v.ns, v.tn, v.nc, v.links
		defer v.close()
	} else {
		ns, created, err = r.ensureNS(spec)
		if err != nil {
			return nil, err
		}
		defer ns.Close()
		if created {
			ch.add("netns: create %s", spec.Namespace)
		}
		// A handle and a raw socket (netconf, a neighbour get) in the
		// namespace, opened in one switch into it.
		tn, nc, err = nlh.NewPair(ns)
		if err != nil {
			return ch, fmt.Errorf("open handles in %s: %w", spec.Namespace, err)
		}
		defer tn.Close()
		defer nc.Close()
	}
	// Ownership first: nothing in a namespace that is not ours is touched.
	// The namespace holds lo and the veth's end: one dump reads both.
	known, err := r.knownLinks(spec, tn, links)
	if err != nil {
		return ch, err
	}
	lo := known.lo
	owner, err := r.nsOwner(spec.ID, ns, lo, r.hostLinkByName(spec.HostIf))
	if err != nil {
		return ch, fmt.Errorf("check owner of netns %s: %w", spec.Namespace, err)
	}
	switch owner {
	case nsForeign:
		return ch, fmt.Errorf("netns %s exists and is %w", spec.Namespace, ErrNotOwned)
	case nsUnmarked:
		if err := markNS(tn, lo, spec.ID); err != nil {
			return ch, fmt.Errorf("mark netns %s: %w", spec.Namespace, err)
		}
		ch.add("netns: mark %s (made by an older nsd)", spec.Namespace)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		if err := tn.LinkSetUp(lo); err != nil {
			return ch, fmt.Errorf("set lo up in %s: %w", spec.Namespace, err)
		}
		ch.add("link: up lo@%s", spec.Namespace)
	}

	hostLink, nsLink, err := r.ensureVeth(spec, ns, tn, known.pair, &ch)
	if err != nil {
		return ch, err
	}
	if !v.valid(ch, nsLink) {
		v = nil // Apply changed something: read afresh from here
	}
	if err := r.ensureSysctls(spec, ns, nc, v, hostLink, nsLink, &ch); err != nil {
		return ch, err
	}
	hostIdx := hostLink.Attrs().Index
	added, err := ensureAddrs(r.host, hostLink, []netip.Prefix{owned.HostAddr4, owned.HostAddr6}, r.hostAddrs[hostIdx], "host", &ch)
	r.hostAddrs[hostIdx] = append(r.hostAddrs[hostIdx], added...)
	if err != nil {
		return ch, err
	}
	if !v.valid(ch, nsLink) {
		v = nil
	}
	var nsAddrs []netlink.Addr
	if v != nil {
		nsAddrs = v.addrs
	} else if nsAddrs, err = nlh.RetryDump("addresses", func() ([]netlink.Addr, error) { return tn.AddrList(nsLink, netlink.FAMILY_ALL) }); err != nil {
		return ch, err
	}
	var have []netip.Prefix
	for _, a := range nsAddrs {
		if p, ok := addrPrefix(a); ok {
			have = append(have, p)
		}
	}
	if _, err := ensureAddrs(tn, nsLink, []netip.Prefix{owned.NSAddr4, owned.NSAddr6}, have, "tenant", &ch); err != nil {
		return ch, err
	}
	// Inside the tenant namespace: default routes back to the host.
	if !v.valid(ch, nsLink) {
		v = nil
	}
	if v != nil {
		err = ensureDefaultsIn(tn, nsLink, unix.RT_TABLE_MAIN, owned.HostAddr4.Addr(), owned.HostAddr6.Addr(), "tenant", v.routes, &ch)
	} else {
		err = ensureDefaults(tn, nsLink, unix.RT_TABLE_MAIN, owned.HostAddr4.Addr(), owned.HostAddr6.Addr(), "tenant", &ch)
	}
	if err != nil {
		return ch, err
	}
	// In the host namespace: the tenant's table routes into the veth.
	if err := ensureDefaults(r.routes, hostLink, int(spec.Table), owned.NSAddr4.Addr(), owned.NSAddr6.Addr(), "host", &ch); err != nil {
		return ch, err
	}
	if err := r.ensureRules(spec, &ch); err != nil {
		return ch, err
	}
	r.linkSlots[hostIdx] = spec.Slot
	if !v.valid(ch, nsLink) {
		v = nil
	}
	if err := r.ensureNeighbours(tn, nc, v, hostLink, nsLink, &ch); err != nil {
		return ch, err
	}
	if err := r.ensureReturnRoutes(spec, hostLink, &ch); err != nil {
		return ch, err
	}
	nftCh, err := r.steer.sync(spec.Mark, spec.Prefixes)
	ch = append(ch, nftCh...)
	if err != nil {
		return ch, err
	}
	return ch, nil
}

type changes []string

func (c *changes) add(format string, args ...any) { *c = append(*c, fmt.Sprintf(format, args...)) }

func (r *Reconciler) ensureNS(spec rtspec.TenantSpec) (netns.NsHandle, bool, error) {
	if namedns.Exists(r.cfg.NetnsDir, spec.Namespace) {
		ns, err := namedns.Open(r.cfg.NetnsDir, spec.Namespace)
		return ns, false, err
	}
	// An empty file without a mount is what a crash mid-create leaves;
	// anything else under the name is not ours to replace.
	if err := namedns.RemoveStale(r.cfg.NetnsDir, spec.Namespace); err != nil {
		return netns.None(), false, fmt.Errorf("create netns %s: %w", spec.Namespace, err)
	}
	// The mark is in place before the namespace appears under its name.
	ns, err := namedns.CreateWith(r.cfg.NetnsDir, spec.Namespace, func(ns netns.NsHandle) error {
		h, err := nlh.New(ns, false)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("get lo: %w", err)
		}
		return markNS(h, lo, spec.ID)
	})
	if err != nil {
		return netns.None(), false, err
	}
	return ns, true, nil
}

// tenantLinks are lo and, when both ends are known, the veth pair as one
// dump of the tenant namespace and Observe's dump of the host saw them.
type tenantLinks struct {
	lo   netlink.Link
	pair *veth.Links // nil: veth.Ensure asks the kernel
}

// knownLinks lists the tenant namespace's links (lo and the veth's end),
// unless links holds them already (a prefetched view), and takes the
// tenant's host link from Observe's dump if no Apply has used it since.
func (r *Reconciler) knownLinks(spec rtspec.TenantSpec, tn *netlink.Handle, links []netlink.Link) (tenantLinks, error) {
	var out tenantLinks
	if links == nil {
		var err error
		if links, err = nlh.RetryDump("links", tn.LinkList); err != nil {
			return out, fmt.Errorf("list links in %s: %w", spec.Namespace, err)
		}
	}
	var peer netlink.Link
	for _, l := range links {
		switch l.Attrs().Name {
		case "lo":
			out.lo = l
		case spec.NSIf:
			peer = l
		}
	}
	if out.lo == nil {
		return out, fmt.Errorf("get lo in %s: not in the namespace's links", spec.Namespace)
	}
	host, ok := r.dumped[spec.ID]
	delete(r.dumped, spec.ID)
	if ok && peer != nil && host.Attrs().Name == spec.HostIf {
		out.pair = &veth.Links{Host: host, Peer: peer}
	}
	return out, nil
}

// ensureVeth makes sure the veth pair exists with one end in each namespace,
// carries the alias and is up (internal/veth).
func (r *Reconciler) ensureVeth(spec rtspec.TenantSpec, ns netns.NsHandle, tn *netlink.Handle, known *veth.Links, ch *changes) (netlink.Link, netlink.Link, error) {
	links, vch, err := veth.Ensure(r.host, tn, ns, veth.Pair{Host: spec.HostIf, Peer: spec.NSIf, Alias: spec.Alias, What: "link", Known: known,
		Owned: func(alias string) bool { _, _, ok := owned.ParseAlias(alias); return ok },
		Remove: func(l netlink.Link) error {
			if err := r.host.LinkDel(l); err != nil {
				return err
			}
			delete(r.hostAddrs, l.Attrs().Index)
			return nil
		}})
	*ch = append(*ch, vch...)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", spec.Namespace, err)
	}
	return links.Host, links.Peer, nil
}

// ensureSysctls: the host end does loose reverse-path filtering (replies
// from the tenant carry tenant addresses, which the main table routes
// elsewhere); the tenant namespace forwards (tunnels, later) and does not
// filter on the path back to the host.
func (r *Reconciler) ensureSysctls(spec rtspec.TenantSpec, ns netns.NsHandle, nc *nlh.Netconf, v *nsView, hostLink, nsLink netlink.Link, ch *changes) error {
	// Read through rtnetlink first (cheap); write through /proc only what
	// differs, or everything when the read fails.
	hostOK, nsOK := r.sysctlsMatch(nc, v, hostLink, nsLink)
	var hc, tc []string
	var err error
	if !hostOK {
		hc, err = namedns.EnsureSysctls(r.hostNS, []namedns.Sysctl{
			{Path: "net/ipv4/conf/" + spec.HostIf + "/rp_filter", Value: "2"},
		})
		if err != nil {
			return fmt.Errorf("set sysctls for %s: %w", spec.HostIf, err)
		}
	}
	if !nsOK {
		tc, err = namedns.EnsureSysctls(ns, []namedns.Sysctl{
			{Path: "net/ipv4/ip_forward", Value: "1"},
			{Path: "net/ipv6/conf/all/forwarding", Value: "1"},
			{Path: "net/ipv4/conf/all/rp_filter", Value: "0"},
			{Path: "net/ipv4/conf/" + spec.NSIf + "/rp_filter", Value: "0"},
		})
		if err != nil {
			return fmt.Errorf("set sysctls in %s: %w", spec.Namespace, err)
		}
	}
	for _, c := range append(hc, tc...) {
		ch.add("sysctl: %s", c)
	}
	return nil
}

// sysctlsMatch reads the sysctls ensureSysctls keeps through rtnetlink
// (RTM_GETNETCONF: ip_forward is conf/all/forwarding) and reports whether
// the host side and the tenant side already hold them.
func (r *Reconciler) sysctlsMatch(nc *nlh.Netconf, v *nsView, hostLink, nsLink netlink.Link) (host, tenant bool) {
	if r.hostConf != nil {
		c, err := r.hostConf.Get(unix.AF_INET, int32(hostLink.Attrs().Index))
		host = err == nil && c.HasRPFilter && c.RPFilter == 2
	}
	var (
		v4  map[int32]nlh.Conf
		v6  nlh.Conf
		err error
	)
	if v != nil {
		v4, v6 = v.v4, v.v6
	} else {
		if v4, err = nc.Dump(unix.AF_INET); err != nil {
			return host, false
		}
		if v6, err = nc.Get(unix.AF_INET6, nlh.IfindexAll); err != nil {
			return host, false
		}
	}
	all, dev := v4[nlh.IfindexAll], v4[int32(nsLink.Attrs().Index)]
	tenant = all.HasForwarding && all.Forwarding == 1 && v6.HasForwarding && v6.Forwarding == 1 &&
		all.HasRPFilter && all.RPFilter == 0 && dev.HasRPFilter && dev.RPFilter == 0
	return host, tenant
}

// ensureAddrs adds the addresses of want that are not in have and returns
// those it added.
func ensureAddrs(h *netlink.Handle, link netlink.Link, want, have []netip.Prefix, where string, ch *changes) ([]netip.Prefix, error) {
	var added []netip.Prefix
	for _, p := range want {
		if slices.Contains(have, p) {
			continue
		}
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		} else if p.Bits() == 32 {
			a.Flags = unix.IFA_F_NOPREFIXROUTE
		}
		if err := h.AddrReplace(link, a); err != nil {
			return added, fmt.Errorf("add address %s to %s: %w", p, link.Attrs().Name, err)
		}
		added = append(added, p)
		ch.add("addr: %s %s dev %s", where, p, link.Attrs().Name)
	}
	return added, nil
}

func addrPrefix(a netlink.Addr) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Mask == nil {
		return netip.Prefix{}, false
	}
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// ensureDefaults makes table hold the default routes via gw4 (onlink) and
// gw6 out of link, from one dump of both families. With strict checking
// the kernel answers ENOENT for a table a family does not hold yet, and
// then each family is dumped on its own.
func ensureDefaults(h *netlink.Handle, link netlink.Link, table int, gw4, gw6 netip.Addr, where string, ch *changes) error {
	routes, err := bothFamilies(h, table)
	if err != nil {
		return err
	}
	return ensureDefaultsIn(h, link, table, gw4, gw6, where, routes, ch)
}

// mainRoutes is the main table's routes of both families (a prefetched
// view's).
func mainRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	return bothFamilies(h, unix.RT_TABLE_MAIN)
}

// bothFamilies dumps table's routes of both families: one dump, or one per
// family where the kernel answers ENOENT for a family the table lacks.
func bothFamilies(h *netlink.Handle, table int) ([]netlink.Route, error) {
	routes, err := tableRoutes(h, netlink.FAMILY_ALL, table)
	if errors.Is(err, unix.ENOENT) {
		var v6 []netlink.Route
		routes, err = tableRoutes(h, netlink.FAMILY_V4, table)
		if err == nil {
			v6, err = tableRoutes(h, netlink.FAMILY_V6, table)
			routes = append(routes, v6...)
		}
	}
	return routes, err
}

// ensureDefaultsIn is ensureDefaults with table's routes already read.
func ensureDefaultsIn(h *netlink.Handle, link netlink.Link, table int, gw4, gw6 netip.Addr, where string, routes []netlink.Route, ch *changes) error {
	if err := ensureDefault(h, link, table, gw4, true, where, routes, ch); err != nil {
		return err
	}
	return ensureDefault(h, link, table, gw6, false, where, routes, ch)
}

// tableRoutes dumps table's routes of family. With strict checking the
// kernel answers ENOENT for a table that holds no routes of family yet:
// for one family that is an empty table, for FAMILY_ALL it is returned.
func tableRoutes(h *netlink.Handle, family, table int) ([]netlink.Route, error) {
	return nlh.RetryDump("routes", func() ([]netlink.Route, error) {
		rs, err := h.RouteListFiltered(family, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if errors.Is(err, unix.ENOENT) && family != netlink.FAMILY_ALL {
			return nil, nil
		}
		return rs, err
	})
}

// ensureDefault makes table hold exactly one default route for gw's family,
// via gw out of link; routes is what table holds.
func ensureDefault(h *netlink.Handle, link netlink.Link, table int, gw netip.Addr, onlink bool, where string, routes []netlink.Route, ch *changes) error {
	family := netlink.FAMILY_V6
	dst := &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	if gw.Is4() {
		family = netlink.FAMILY_V4
		dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	for _, rt := range routes {
		if rt.Family != family {
			continue
		}
		if rt.Table != table || (rt.Dst != nil && !isDefault(rt.Dst)) || rt.Type != unix.RTN_UNICAST {
			continue
		}
		if rt.LinkIndex == link.Attrs().Index && rt.Gw != nil && rt.Gw.Equal(gw.AsSlice()) {
			return nil
		}
	}
	rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Gw: gw.AsSlice(), Table: table, Protocol: unix.RTPROT_STATIC}
	if onlink {
		rt.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := h.RouteReplace(rt); err != nil {
		return fmt.Errorf("replace default route via %s dev %s table %d: %w", gw, link.Attrs().Name, table, err)
	}
	ch.add("route: %s table %d default via %s dev %s", where, table, gw, link.Attrs().Name)
	return nil
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0 && n.IP.IsUnspecified()
}

// loadRules refreshes the rule and host address mirrors from the kernel.
func (r *Reconciler) loadRules() error {
	addrs, err := nlh.RetryDump("addresses", func() ([]netlink.Addr, error) { return r.host.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		return err
	}
	r.hostAddrs = map[int][]netip.Prefix{}
	for _, a := range addrs {
		if p, ok := addrPrefix(a); ok {
			r.hostAddrs[a.LinkIndex] = append(r.hostAddrs[a.LinkIndex], p)
		}
	}
	m := map[uint32][]netlink.Rule{}
	var ret []netlink.Rule
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := nlh.RetryDump("rules", func() ([]netlink.Rule, error) { return r.host.RuleList(family) })
		if err != nil {
			return err
		}
		for _, ru := range rules {
			ru.Family = family
			if t := uint32(ru.Table); t > owned.SlotBase && t <= owned.SlotBase+owned.MaxSlot {
				m[t] = append(m[t], ru)
			} else if t == owned.ReturnTable {
				ret = append(ret, ru)
			}
		}
	}
	r.rules, r.retRules = m, ret
	routes, err := nlh.RetryDump("routes", func() ([]netlink.Route, error) {
		rs, err := r.routes.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: owned.ReturnTable}, netlink.RT_FILTER_TABLE)
		if errors.Is(err, unix.ENOENT) {
			return nil, nil // no routes in the table yet
		}
		return rs, err
	})
	if err != nil {
		return err
	}
	r.retRoutes, r.retLink = map[int]map[netip.Prefix]netlink.Route{}, map[netip.Prefix]int{}
	for _, rt := range routes {
		if rt.Table != owned.ReturnTable || rt.Dst == nil {
			continue
		}
		if p, ok := ipNetPrefix(rt.Dst); ok {
			r.setReturnRoute(p, rt)
		}
	}
	neighs, err := nlh.RetryDump("neighbours", func() ([]netlink.Neigh, error) { return neighDumpV4(r.host, false) })
	if err != nil {
		return err
	}
	r.hostNeigh = map[int]string{}
	for _, n := range neighs {
		if n.State&unix.NUD_PERMANENT != 0 && n.IP.Equal(owned.NSAddr4.Addr().AsSlice()) {
			r.hostNeigh[n.LinkIndex] = n.HardwareAddr.String()
		}
	}
	if r.linkSlots == nil {
		r.linkSlots = map[int]uint16{}
	}
	return nil
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

// forgetLink drops a deleted host link from the mirrors; the kernel took
// its addresses, neighbour entries and routes with it.
func (r *Reconciler) forgetLink(idx int) {
	delete(r.hostAddrs, idx)
	delete(r.hostNeigh, idx)
	delete(r.linkSlots, idx)
	for p := range r.retRoutes[idx] {
		delete(r.retLink, p)
	}
	delete(r.retRoutes, idx)
}

func (r *Reconciler) setReturnRoute(p netip.Prefix, rt netlink.Route) {
	if old, ok := r.retLink[p]; ok {
		delete(r.retRoutes[old], p)
	}
	if r.retRoutes[rt.LinkIndex] == nil {
		r.retRoutes[rt.LinkIndex] = map[netip.Prefix]netlink.Route{}
	}
	r.retRoutes[rt.LinkIndex][p] = rt
	r.retLink[p] = rt.LinkIndex
}

func (r *Reconciler) dropReturnRoute(p netip.Prefix) {
	if idx, ok := r.retLink[p]; ok {
		delete(r.retRoutes[idx], p)
		if len(r.retRoutes[idx]) == 0 {
			delete(r.retRoutes, idx)
		}
	}
	delete(r.retLink, p)
}

// ensureReturnRule keeps exactly one rule pointing at ReturnTable: IPv4,
// priority ReturnRulePriority, no selectors. (IPv6 forwarding does no
// reverse-path check.)
func (r *Reconciler) ensureReturnRule() ([]string, error) {
	var ch changes
	var keep []netlink.Rule
	for _, ru := range r.retRules {
		if len(keep) == 0 && ru.Family == netlink.FAMILY_V4 && ru.Priority == owned.ReturnRulePriority && ru.IifName == "" &&
			ru.Mark == 0 && (ru.Mask == nil || *ru.Mask == 0) && ru.Src == nil && ru.Dst == nil && ru.OifName == "" && !ru.Invert &&
			ru.Tos == 0 && ru.IPProto == 0 && ru.Sport == nil && ru.Dport == nil && ru.UIDRange == nil && ru.Goto < 0 {
			keep = append(keep, ru)
			continue
		}
		ru := ru
		if err := r.host.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			return ch, fmt.Errorf("delete rule %s: %w", ru, err)
		}
		ch.add("rule: delete %s", ru)
	}
	if len(keep) == 0 {
		ru := netlink.NewRule()
		ru.Family = netlink.FAMILY_V4
		ru.Priority = owned.ReturnRulePriority
		ru.Table = owned.ReturnTable
		if err := r.host.RuleAdd(ru); err != nil && !errors.Is(err, unix.EEXIST) {
			return ch, fmt.Errorf("add rule lookup %d: %w", owned.ReturnTable, err)
		}
		keep = append(keep, *ru)
		ch.add("rule: add lookup %d priority %d", owned.ReturnTable, owned.ReturnRulePriority)
	}
	r.retRules = keep
	return ch, nil
}

// ensureNeighbours makes both ends of the veth know each other's MAC for
// good (169.254.100.1 in the namespace, 169.254.100.2 on the host), so no
// ARP crosses the veth: the host answers an ARP request only if its
// reverse-path check finds the sender, which the host's tables need not.
func (r *Reconciler) ensureNeighbours(tn *netlink.Handle, nc *nlh.Netconf, v *nsView, hostLink, nsLink netlink.Link, ch *changes) error {
	hostIdx, nsIdx := hostLink.Attrs().Index, nsLink.Attrs().Index
	hostMAC, nsMAC := hostLink.Attrs().HardwareAddr, nsLink.Attrs().HardwareAddr
	// The tenant's entry is looked up (a dump walks the neighbours of
	// every namespace); the host's are mirrored (one dump per Observe,
	// not per tenant).
	var ok bool
	if v != nil {
		ok = neighOK(v.neigh, v.found, hostMAC)
	} else {
		var err error
		if ok, err = tenantNeighOK(nc, nsIdx, hostMAC); err != nil {
			return err
		}
	}
	if !ok {
		n := &netlink.Neigh{LinkIndex: nsIdx, Family: netlink.FAMILY_V4, State: unix.NUD_PERMANENT, IP: owned.HostAddr4.Addr().AsSlice(), HardwareAddr: hostMAC}
		if err := tn.NeighSet(n); err != nil {
			return fmt.Errorf("set neighbour %s lladdr %s dev %s: %w", owned.HostAddr4.Addr(), hostMAC, nsLink.Attrs().Name, err)
		}
		ch.add("neigh: tenant %s lladdr %s dev %s permanent", owned.HostAddr4.Addr(), hostMAC, nsLink.Attrs().Name)
	}
	if r.hostNeigh[hostIdx] != nsMAC.String() {
		n := &netlink.Neigh{LinkIndex: hostIdx, Family: netlink.FAMILY_V4, State: unix.NUD_PERMANENT, IP: owned.NSAddr4.Addr().AsSlice(), HardwareAddr: nsMAC}
		if err := r.host.NeighSet(n); err != nil {
			return fmt.Errorf("set neighbour %s lladdr %s dev %s: %w", owned.NSAddr4.Addr(), nsMAC, hostLink.Attrs().Name, err)
		}
		r.hostNeigh[hostIdx] = nsMAC.String()
		ch.add("neigh: host %s lladdr %s dev %s permanent", owned.NSAddr4.Addr(), nsMAC, hostLink.Attrs().Name)
	}
	return nil
}

// tenantNeighOK reports whether the tenant namespace holds the permanent
// entry of the host's address on its veth (nsIdx) with the host end's MAC.
func tenantNeighOK(nc *nlh.Netconf, nsIdx int, hostMAC net.HardwareAddr) (bool, error) {
	e, found, err := nc.Neigh(int32(nsIdx), owned.HostAddr4.Addr())
	if err != nil {
		return false, err
	}
	return neighOK(e, found, hostMAC), nil
}

// neighOK: the entry e (if found) is the permanent one with hostMAC.
func neighOK(e nlh.Neigh, found bool, hostMAC net.HardwareAddr) bool {
	return found && e.State&unix.NUD_PERMANENT != 0 && e.LLAddr.String() == hostMAC.String()
}

// neighDumpV4 lists the IPv4 neighbour entries through h. The library
// sends the ndmsg header of the request with uninitialised padding bytes,
// which the kernel's strict checking rejects (EINVAL), so a strict handle
// drops strict checking for the dump; without it the kernel reads only
// the family from the header.
func neighDumpV4(h *netlink.Handle, strict bool) ([]netlink.Neigh, error) {
	if strict {
		if err := h.SetStrictCheck(false); err != nil {
			return nil, fmt.Errorf("disable netlink strict check: %w", err)
		}
		defer h.SetStrictCheck(true)
	}
	return h.NeighListExecute(netlink.Ndmsg{Family: netlink.FAMILY_V4})
}

// ensureReturnRoutes makes the return table route exactly the tenant's
// IPv4 prefixes into its host link.
func (r *Reconciler) ensureReturnRoutes(spec rtspec.TenantSpec, hostLink netlink.Link, ch *changes) error {
	idx := hostLink.Attrs().Index
	want := map[netip.Prefix]bool{}
	for _, p := range spec.Prefixes {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		want[p] = true
		if rt, ok := r.retRoutes[idx][p]; ok && isReturnRoute(rt, idx) {
			continue
		}
		rt := netlink.Route{LinkIndex: idx, Dst: prefixToIPNet(p), Gw: owned.NSAddr4.Addr().AsSlice(), Table: owned.ReturnTable, Type: unix.RTN_UNICAST,
			Protocol: unix.RTPROT_STATIC, Flags: int(netlink.FLAG_ONLINK)}
		if err := r.routes.RouteReplace(&rt); err != nil {
			return fmt.Errorf("replace route %s via %s dev %s table %d: %w", p, owned.NSAddr4.Addr(), hostLink.Attrs().Name, owned.ReturnTable, err)
		}
		r.setReturnRoute(p, rt)
		ch.add("route: return table %s via %s dev %s", p, owned.NSAddr4.Addr(), hostLink.Attrs().Name)
	}
	for p, rt := range r.retRoutes[idx] {
		if want[p] {
			continue
		}
		if err := r.routes.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete route %s table %d: %w", p, owned.ReturnTable, err)
		}
		r.dropReturnRoute(p)
		ch.add("route: return table delete %s dev %s", p, hostLink.Attrs().Name)
	}
	return nil
}

func isReturnRoute(rt netlink.Route, idx int) bool {
	return rt.LinkIndex == idx && rt.Gw != nil && rt.Gw.Equal(owned.NSAddr4.Addr().AsSlice()) && rt.Type == unix.RTN_UNICAST &&
		rt.Flags&int(netlink.FLAG_ONLINK) != 0 && rt.Priority == 0 && len(rt.MultiPath) == 0
}

// deleteReturnRoutes removes the return routes into the host link idx.
func (r *Reconciler) deleteReturnRoutes(idx int, verb string, ch *changes) error {
	for p, rt := range r.retRoutes[idx] {
		if err := r.routes.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete route %s table %d: %w", p, owned.ReturnTable, err)
		}
		r.dropReturnRoute(p)
		ch.add("route: return table %s %s", verb, p)
	}
	return nil
}

// ensureRules keeps exactly one rule per family for the tenant's table:
// priority RulePriority, fwmark Mark/0xffffffff, lookup Table.
func (r *Reconciler) ensureRules(spec rtspec.TenantSpec, ch *changes) error {
	var keep []netlink.Rule
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		found := false
		for _, ru := range r.rules[spec.Table] {
			if ru.Family != family {
				continue
			}
			if !found && ruleMatches(ru, spec) {
				found = true
				keep = append(keep, ru)
				continue
			}
			// Duplicate or altered rule pointing at our table.
			ru := ru
			if err := r.host.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete rule %s: %w", ru, err)
			}
			ch.add("rule: delete %s", ru)
		}
		if found {
			continue
		}
		ru := ownedRule(family, spec.Mark, spec.Table)
		if err := r.host.RuleAdd(ru); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add rule fwmark %#x lookup %d: %w", spec.Mark, spec.Table, err)
		}
		keep = append(keep, *ru)
		ch.add("rule: add family %d fwmark %#x lookup %d", family, spec.Mark, spec.Table)
	}
	r.rules[spec.Table] = keep
	return nil
}

func ownedRule(family int, mark, table uint32) *netlink.Rule {
	ru := netlink.NewRule()
	ru.Family = family
	ru.Priority = owned.RulePriority
	ru.Mark = mark
	m := uint32(0xffffffff)
	ru.Mask = &m
	ru.Table = int(table)
	return ru
}

func ruleMatches(ru netlink.Rule, spec rtspec.TenantSpec) bool {
	return ru.Priority == owned.RulePriority && ru.Mark == spec.Mark && (ru.Mask == nil || *ru.Mask == 0xffffffff) &&
		ru.Src == nil && ru.Dst == nil && ru.IifName == "" && ru.OifName == "" && !ru.Invert
}

// Delete removes everything nfhost made for a tenant. It is idempotent and
// only touches objects that carry nfhost's marks: a namespace under the
// tenant's name that is not nfhost's stays, and Delete then returns an
// error wrapping ErrNotOwned after removing the rest.
func (r *Reconciler) Delete(ctx context.Context, o Observed) ([]string, error) {
	var ch changes
	hostIf := o.HostIf
	if hostIf == "" {
		hostIf = owned.HostIfName(o.ID)
	}
	name := o.Namespace
	if name == "" {
		name = r.cfg.NSPrefix + o.ID
	}
	// Ownership before anything goes: an unmarked namespace of an older
	// nsd is known by the host veth.
	ours, err := r.deletableNS(o.ID, name, hostIf)
	if err != nil {
		return ch, err
	}
	if o.Slot != 0 {
		mark := owned.SlotBase + uint32(o.Slot)
		nftCh, err := r.steer.sync(mark, nil)
		ch = append(ch, nftCh...)
		if err != nil {
			return ch, err
		}
		if err := r.deleteRules(uint32(mark), &ch); err != nil {
			return ch, err
		}
	}
	if l, err := r.host.LinkByName(hostIf); err == nil {
		if id, _, ok := owned.ParseAlias(l.Attrs().Alias); ok && id == o.ID {
			if err := r.deleteReturnRoutes(l.Attrs().Index, "delete", &ch); err != nil {
				return ch, err
			}
			// The link takes its neighbour entries and remaining routes along.
			if err := r.host.LinkDel(l); err != nil && !nlh.IsNotFound(err) {
				return ch, fmt.Errorf("delete link %s: %w", hostIf, err)
			}
			r.forgetLink(l.Attrs().Index)
			ch.add("link: delete %s", hostIf)
		}
	} else if !nlh.IsNotFound(err) {
		return ch, fmt.Errorf("get link %s: %w", hostIf, err)
	}
	switch {
	case !ours:
		return ch, fmt.Errorf("delete netns %s: it exists and is %w; left in place", name, ErrNotOwned)
	case namedns.Exists(r.cfg.NetnsDir, name):
		if err := namedns.Delete(r.cfg.NetnsDir, name); err != nil {
			return ch, err
		}
		ch.add("netns: delete %s", name)
	default:
		if err := namedns.RemoveStale(r.cfg.NetnsDir, name); err != nil && !errors.Is(err, os.ErrExist) {
			return ch, err
		}
	}
	return ch, nil
}

// deletableNS reports whether Delete may remove the namespace called name:
// it is tenant id's, or there is none.
func (r *Reconciler) deletableNS(id, name, hostIf string) (bool, error) {
	if !namedns.Exists(r.cfg.NetnsDir, name) {
		return true, nil
	}
	ns, err := namedns.Open(r.cfg.NetnsDir, name)
	if err != nil {
		return false, err
	}
	defer ns.Close()
	owner, err := r.ownerIn(ns, name, id, r.hostLinkByName(hostIf), false)
	if err != nil {
		return false, err
	}
	return owner != nsForeign, nil
}

// deleteRules removes the rules of one table in nfhost's range.
func (r *Reconciler) deleteRules(table uint32, ch *changes) error {
	for _, ru := range r.rules[table] {
		ru := ru
		if err := r.host.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete rule %s: %w", ru, err)
		}
		ch.add("rule: delete family %d lookup %d", ru.Family, table)
	}
	delete(r.rules, table)
	return nil
}

// GC removes state in nfhost's ranges that belongs to no live slot: nft map
// entries and ip rules (at nfhost's priority) whose mark/table is not in
// slots, and return-table routes that lead anywhere but a live slot's host
// link. It works from the mirrors that Observe loads; call it after
// Observe. Tenants themselves are deleted through Delete, which the daemon
// guards.
func (r *Reconciler) GC(ctx context.Context, slots map[uint16]bool) ([]string, error) {
	r.dumped = nil // GC ends the full pass that followed Observe
	keep := make(map[uint32]bool, len(slots))
	for s := range slots {
		keep[owned.SlotBase+uint32(s)] = true
	}
	ch, err := r.steer.gc(keep)
	if err != nil {
		return ch, err
	}
	for idx := range r.retRoutes {
		if !r.observed {
			break // which links are nfhost's is known after Observe only
		}
		if slot, ok := r.linkSlots[idx]; ok && slots[slot] {
			continue
		}
		var gc changes
		if err := r.deleteReturnRoutes(idx, "gc", &gc); err != nil {
			return ch, err
		}
		ch = append(ch, gc...)
	}
	for t, rules := range r.rules {
		if keep[t] {
			continue
		}
		for _, ru := range rules {
			if ru.Priority != owned.RulePriority {
				continue
			}
			ru := ru
			if err := r.host.RuleDel(&ru); err != nil && !errors.Is(err, unix.ENOENT) {
				return ch, fmt.Errorf("delete orphan rule %s: %w", ru, err)
			}
			ch = append(ch, fmt.Sprintf("rule: gc family %d lookup %d", ru.Family, t))
		}
		delete(r.rules, t)
	}
	sort.Strings(ch)
	return ch, nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
