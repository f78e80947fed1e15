// Package veth keeps a veth pair in place between the host namespace and a
// tenant namespace: the one implementation behind the tenant veth (routing)
// and the tunnel veths (tunnels).
//
// Contract: Ensure is idempotent and touches only what is nfhost's. A host
// end that exists under the pair's name but whose alias Owned does not
// accept is someone else's: Ensure fails and changes nothing. An existing
// pair that is not paired as asked (one end missing, ends not each other's
// peers) is replaced: the stale host end goes through Remove (so its
// owner can drop state tied to it), the stale tenant end is deleted. The pair
// is created in one request with each end already in its namespace
// (containernetworking/plugins makeVethPair); alias, MTU and "up" are then
// repaired on every call, and each change is reported as one line.
package veth

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/nlh"
)

// Pair is the desired veth pair.
type Pair struct {
	Host  string // name of the host end, in the host namespace
	Peer  string // name of the tenant end, inside PeerNS
	Alias string // alias of the host end: nfhost's mark
	MTU   int    // of both ends; 0 leaves the kernel's default
	// Owned reports whether an existing host end with this alias is
	// nfhost's, and so may be replaced.
	Owned func(alias string) bool
	// What starts each change line ("link", "tunnel").
	What string
	// Remove deletes a stale host end; nil means a plain link delete.
	Remove func(netlink.Link) error
	// Created is called with a new tenant end before it goes up (to set
	// options that must precede the first up). May be nil.
	Created func(peer netlink.Link) error
	// Known, if set, is both ends as a dump the caller just took found
	// them: Ensure checks them instead of looking them up.
	Known *Links
}

// Links are the two ends as the kernel reports them after Ensure.
type Links struct {
	Host, Peer netlink.Link
}

// Ensure makes the pair exist, paired, with the alias and MTU, and both
// ends up. host and peer are handles bound to the host namespace and to
// peerNS.
func Ensure(host, peer *netlink.Handle, peerNS netns.NsHandle, p Pair) (Links, []string, error) {
	var ch []string
	add := func(format string, args ...any) { ch = append(ch, p.What+": "+fmt.Sprintf(format, args...)) }
	var (
		hl, pl     netlink.Link
		herr, perr error
	)
	if p.Known != nil {
		hl, pl = p.Known.Host, p.Known.Peer
	} else {
		hl, herr = host.LinkByName(p.Host)
		pl, perr = peer.LinkByName(p.Peer)
	}
	if herr != nil && !nlh.IsNotFound(herr) {
		return Links{}, nil, fmt.Errorf("get link %s: %w", p.Host, herr)
	}
	if perr != nil && !nlh.IsNotFound(perr) {
		return Links{}, nil, fmt.Errorf("get link %s in the tenant namespace: %w", p.Peer, perr)
	}
	paired := herr == nil && perr == nil && hl.Type() == "veth" &&
		hl.Attrs().ParentIndex == pl.Attrs().Index && pl.Attrs().ParentIndex == hl.Attrs().Index
	if !paired {
		if herr == nil {
			if !p.Owned(hl.Attrs().Alias) {
				return Links{}, nil, fmt.Errorf("link %s exists and is not nfhost's (alias %q)", p.Host, hl.Attrs().Alias)
			}
			remove := p.Remove
			if remove == nil {
				remove = host.LinkDel
			}
			if err := remove(hl); err != nil {
				return Links{}, ch, fmt.Errorf("delete stale link %s: %w", p.Host, err)
			}
			add("delete stale %s", p.Host)
		}
		if perr == nil {
			if err := peer.LinkDel(pl); err != nil {
				return Links{}, ch, fmt.Errorf("delete stale link %s in the tenant namespace: %w", p.Peer, err)
			}
		}
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.Host, Alias: p.Alias, MTU: p.MTU},
			PeerName:      p.Peer,
			PeerNamespace: netlink.NsFd(int(peerNS)),
			PeerMTU:       uint32(p.MTU),
		}
		if err := host.LinkAdd(v); err != nil {
			return Links{}, ch, fmt.Errorf("create veth %s <-> %s: %w", p.Host, p.Peer, err)
		}
		add("create veth %s <-> %s", p.Host, p.Peer)
		var err error
		if hl, err = host.LinkByName(p.Host); err != nil {
			return Links{}, ch, fmt.Errorf("get new link %s: %w", p.Host, err)
		}
		if pl, err = peer.LinkByName(p.Peer); err != nil {
			host.LinkDel(hl)
			return Links{}, ch, fmt.Errorf("get new link %s in the tenant namespace: %w", p.Peer, err)
		}
		if p.Created != nil {
			if err := p.Created(pl); err != nil {
				return Links{}, ch, err
			}
		}
	}
	if hl.Attrs().Alias != p.Alias {
		if err := host.LinkSetAlias(hl, p.Alias); err != nil {
			return Links{}, ch, fmt.Errorf("set alias on %s: %w", p.Host, err)
		}
		add("alias %s %q", p.Host, p.Alias)
	}
	for _, e := range []struct {
		h    *netlink.Handle
		link netlink.Link
	}{{host, hl}, {peer, pl}} {
		name := e.link.Attrs().Name
		if p.MTU != 0 && e.link.Attrs().MTU != p.MTU {
			if err := e.h.LinkSetMTU(e.link, p.MTU); err != nil {
				return Links{}, ch, fmt.Errorf("set MTU of %s: %w", name, err)
			}
			add("mtu %s %d", name, p.MTU)
		}
		if e.link.Attrs().Flags&net.FlagUp == 0 {
			if err := e.h.LinkSetUp(e.link); err != nil {
				return Links{}, ch, fmt.Errorf("set %s up: %w", name, err)
			}
			add("up %s", name)
		}
	}
	return Links{Host: hl, Peer: pl}, ch, nil
}
