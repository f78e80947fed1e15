package nlh

import (
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkAlias returns the alias of the link called name in the namespace
// the socket's namespace knows as nsid (IFLA_TARGET_NETNSID, Linux 4.20
// and later): reading a mark inside another namespace without opening a
// socket there, which costs a switch of the thread into it and back.
func (n *Netconf) LinkAlias(nsid int32, name string) (string, error) {
	req := n.newRequest(unix.RTM_GETLINK, 0)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	req.AddData(int32Attr(unix.IFLA_TARGET_NETNSID, nsid))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return "", fmt.Errorf("get link %s in netns id %d: %w", name, nsid, err)
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return "", fmt.Errorf("parse link %s: %w", name, err)
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.IFLA_IFALIAS {
				return string(trimNUL(a.Value)), nil
			}
		}
		return "", nil
	}
	return "", fmt.Errorf("get link %s in netns id %d: no reply", name, nsid)
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
