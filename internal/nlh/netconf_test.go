package nlh_test

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/nstest"
)

// Netconf reads what sysctl wrote, in the namespace it is bound to.
func TestNetconfReadsSysctls(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "nfNc"+nstest.Unique())
	ns.MustExec(t, "ip", "link", "add", "nfNcd", "type", "veth", "peer", "name", "nfNce")
	ns.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=2",
		"net.ipv4.conf.nfNcd.rp_filter=1", "net.ipv6.conf.all.forwarding=1")
	nc, err := nlh.OpenNetconf(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	v4, err := nc.Dump(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	out := ns.MustExec(t, "ip", "-o", "link", "show", "nfNcd") // "N: nfNcd@nfNce: ..."
	idx, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(out, ":", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	dev := v4[int32(idx)]
	if all := v4[nlh.IfindexAll]; !all.HasForwarding || all.Forwarding != 1 || all.RPFilter != 2 {
		t.Fatalf("all: %+v", all)
	}
	if dev.RPFilter != 1 {
		t.Fatalf("nfNcd (ifindex %d): %+v in %+v", idx, dev, v4)
	}
	v6, err := nc.Get(unix.AF_INET6, nlh.IfindexAll)
	if err != nil || !v6.HasForwarding || v6.Forwarding != 1 {
		t.Fatalf("ipv6 all: %+v %v", v6, err)
	}
	ns.MustExec(t, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=0")
	if v6, err := nc.Get(unix.AF_INET6, nlh.IfindexAll); err != nil || v6.Forwarding != 0 {
		t.Fatalf("after the change: %+v %v", v6, err)
	}
}

// Neigh finds a permanent entry by a get, and reports a missing one as not
// found rather than an error.
func TestNeighGet(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t, "nfNg"+nstest.Unique())
	ns.MustExec(t, "ip", "link", "add", "nfNgd", "type", "veth", "peer", "name", "nfNge")
	ns.MustExec(t, "ip", "link", "set", "nfNgd", "up")
	ns.MustExec(t, "ip", "neigh", "replace", "192.0.2.7", "lladdr", "02:00:00:00:00:07", "dev", "nfNgd", "nud", "permanent")
	out := ns.MustExec(t, "ip", "-o", "link", "show", "nfNgd")
	idx, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(out, ":", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nlh.OpenNetconf(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e, found, err := nc.Neigh(int32(idx), netip.MustParseAddr("192.0.2.7"))
	if err != nil || !found {
		t.Fatalf("get 192.0.2.7: %+v %v %v", e, found, err)
	}
	if e.LLAddr.String() != "02:00:00:00:00:07" || e.State&unix.NUD_PERMANENT == 0 {
		t.Fatalf("got %+v", e)
	}
	if _, found, err := nc.Neigh(int32(idx), netip.MustParseAddr("192.0.2.8")); err != nil || found {
		t.Fatalf("missing entry: found %v, err %v", found, err)
	}
}

// LinkAlias reads a link's alias in another namespace by its id, from a
// socket in this one.
func TestLinkAliasByNetnsID(t *testing.T) {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	host := nstest.New(t, "nfNah"+u)
	peer := nstest.New(t, "nfNap"+u)
	host.MustExec(t, "ip", "link", "add", "nfNad", "type", "veth", "peer", "name", "nfNae", "netns", peer.Name)
	peer.MustExec(t, "ip", "link", "set", "lo", "alias", "nfhost-test-mark")
	h, err := nlh.New(host.Handle, false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nsid, err := h.GetNetNsIdByFd(int(peer.Handle))
	if err != nil || nsid < 0 {
		t.Fatalf("nsid of the peer namespace: %d %v", nsid, err)
	}
	nc, err := nlh.OpenNetconf(host.Handle)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if a, err := nc.LinkAlias(int32(nsid), "lo"); err != nil || a != "nfhost-test-mark" {
		t.Fatalf("alias of lo in the peer: %q %v", a, err)
	}
	if a, err := nc.LinkAlias(int32(nsid), "nfNae"); err != nil || a != "" {
		t.Fatalf("alias of nfNae: %q %v", a, err)
	}
	if _, err := nc.LinkAlias(int32(nsid), "nope"); !nlh.IsNotFound(err) {
		t.Fatalf("missing link: %v", err)
	}
}
