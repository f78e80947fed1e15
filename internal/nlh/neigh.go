package nlh

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Neigh is one neighbour entry as RTM_GETNEIGH reports it.
type Neigh struct {
	LLAddr net.HardwareAddr
	State  uint16 // NUD_*
}

// ndmsg is struct ndmsg (linux/neighbour.h): family, two pad fields,
// ifindex, state, flags, type; the kernel refuses a get whose padding,
// state or type is not zero.
type ndmsg struct {
	family  uint8
	ifindex int32
}

func (m ndmsg) Len() int { return 12 }
func (m ndmsg) Serialize() []byte {
	b := make([]byte, 12)
	b[0] = m.family
	binary.NativeEndian.PutUint32(b[4:8], uint32(m.ifindex))
	return b
}

// Neigh looks up the neighbour entry of ip on ifindex with one
// RTM_GETNEIGH request (Linux 5.0 and later). A dump would do too, but
// the kernel walks one neighbour table shared by every namespace to
// answer it, so with a thousand tenant namespaces on the host a dump
// inside any of them costs in proportion to all of them; a get is a hash
// lookup. found is false when there is no entry.
func (n *Netconf) Neigh(ifindex int32, ip netip.Addr) (e Neigh, found bool, err error) {
	family := unix.AF_INET6
	if ip.Is4() {
		family = unix.AF_INET
	}
	req := n.newRequest(unix.RTM_GETNEIGH, 0)
	req.AddData(ndmsg{family: uint8(family), ifindex: ifindex})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, ip.AsSlice()))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWNEIGH)
	if IsNotFound(err) {
		return Neigh{}, false, nil
	}
	if err != nil {
		return Neigh{}, false, fmt.Errorf("get neighbour %s on ifindex %d: %w", ip, ifindex, err)
	}
	for _, m := range msgs {
		if len(m) < 12 {
			continue
		}
		e.State = binary.NativeEndian.Uint16(m[8:10])
		attrs, err := nl.ParseRouteAttr(m[12:])
		if err != nil {
			return Neigh{}, false, fmt.Errorf("parse neighbour %s: %w", ip, err)
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.NDA_LLADDR {
				e.LLAddr = net.HardwareAddr(append([]byte(nil), a.Value...))
			}
		}
		return e, true, nil
	}
	return Neigh{}, false, nil
}
