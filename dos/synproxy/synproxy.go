// Package synproxy keeps nftables' synproxy in force in a tenant
// namespace for the destinations the XDP layer protects with SYN cookies.
//
// The XDP program answers a SYN with a cookie SYN-ACK and lets through the
// client's ACK once its cookie checks out. That ACK belongs to no
// connection the tenant namespace knows (nf_conntrack_tcp_loose is 0
// there, so conntrack calls it invalid); the rule here hands it to
// synproxy, which checks the same kernel cookie again, reads the MSS
// from it and the client's window scale and SACK-permitted from the
// timestamp echo, and opens the connection to the server with a SYN of
// its own; the server sees an ordinary handshake. Window scale on our
// side must be the server's (synproxy does not rescale windows).
//
// Everything lives in one table, inet nfhost_synproxy; a change replaces
// the table in one batch. Rules carry a hash of the spec in their user
// data, so a converged namespace costs one dump.
package synproxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/owned"
)

// Spec is what the table holds: the protected destinations and ports and
// the options synproxy announces.
type Spec struct {
	Prefixes []netip.Prefix
	Ports    []dosspec.PortRange // empty: every port
	MSS      uint16
	WScale   uint8
}

func (s *Spec) hash() string {
	h := sha256.Sum256([]byte(fmt.Sprintf("v1 %v %v %d %d", s.Prefixes, s.Ports, s.MSS, s.WScale)))
	return hex.EncodeToString(h[:8])
}

// Sysctls are what synproxy needs in the namespace: conntrack must not
// pick up a connection from its ACK.
var Sysctls = []namedns.Sysctl{{Path: "net/netfilter/nf_conntrack_tcp_loose", Value: "0"}}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: owned.SynproxyNFTTable}
}

// Apply makes ns's table match s (nil: no table). It returns one line
// per change.
func Apply(ns netns.NsHandle, s *Spec) ([]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		return nil, fmt.Errorf("open nftables in tenant netns: %w", err)
	}
	defer c.CloseLasting()
	cur, err := current(c)
	if err != nil {
		return nil, err
	}
	want := ""
	if s != nil {
		want = s.hash()
	}
	var changes []string
	if s != nil {
		ch, err := namedns.EnsureSysctls(ns, Sysctls)
		if err != nil {
			return nil, fmt.Errorf("synproxy sysctls: %w", err)
		}
		changes = append(changes, ch...)
	}
	if cur == want {
		return changes, nil
	}
	if cur != "" { // ours in another version, or altered: replaced whole
		c.DelTable(table())
	}
	if s != nil {
		build(c, s, want)
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("write table inet %s: %w", owned.SynproxyNFTTable, err)
	}
	if s == nil {
		return append(changes, "synproxy table removed"), nil
	}
	return append(changes, fmt.Sprintf("synproxy for %v ports %v (mss %d, wscale %d)", s.Prefixes, s.Ports, s.MSS, s.WScale)), nil
}

// current returns the hash the table's rules carry: "" no table, "?" a
// table that is not what Apply writes.
func current(c *nftables.Conn) (string, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("list tables: %w", err)
	}
	found := false
	for _, t := range tables {
		if t.Name == owned.SynproxyNFTTable {
			found = true
		}
	}
	if !found {
		return "", nil
	}
	rules, err := c.GetRules(table(), &nftables.Chain{Name: "forward", Table: table()})
	if err != nil || len(rules) == 0 {
		return "?", nil
	}
	h := string(rules[0].UserData)
	for _, r := range rules {
		if string(r.UserData) != h {
			return "?", nil
		}
	}
	return h, nil
}

func build(c *nftables.Conn, s *Spec, tag string) {
	t := c.AddTable(table())
	prio := nftables.ChainPriority(-10) // before the tenant firewall (0)
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: &prio, Policy: &policy})
	var ports *nftables.Set
	if len(s.Ports) > 0 {
		ports = &nftables.Set{Table: t, Name: "ports", KeyType: nftables.TypeInetService, Interval: true}
		var el []nftables.SetElement
		for _, p := range s.Ports {
			el = append(el, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p.Lo)})
			if p.Hi < 65535 {
				el = append(el, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p.Hi + 1), IntervalEnd: true})
			}
		}
		c.AddSet(ports, el)
	}
	for _, fam := range []struct {
		v4          bool
		name        string
		keyType     nftables.SetDatatype
		nfproto     byte
		off, length uint32
	}{{true, "dst4", nftables.TypeIPAddr, unix.NFPROTO_IPV4, 16, 4}, {false, "dst6", nftables.TypeIP6Addr, unix.NFPROTO_IPV6, 24, 16}} {
		var el []nftables.SetElement
		for _, p := range s.Prefixes {
			if p.Addr().Is4() == fam.v4 {
				el = append(el, nftset.Elements(p, nil)...)
			}
		}
		if len(el) == 0 {
			continue
		}
		set := &nftables.Set{Table: t, Name: fam.name, KeyType: fam.keyType, Interval: true}
		c.AddSet(set, el)
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.nfproto}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			// ct state invalid: no connection; the ACK of a cookie.
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitINVALID), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			// tcp flags & (fin|syn|rst|ack) == ack
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x17}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x10}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.length},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		}
		if ports != nil {
			exprs = append(exprs,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID})
		}
		exprs = append(exprs, &expr.Counter{}, &expr.SynProxy{Mss: s.MSS, MssValueSet: true, Wscale: s.WScale, WscaleValueSet: true, Timestamp: true, SackPerm: true})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs, UserData: []byte(tag)})
	}
}

// NS applies specs to namespaces by name (in Dir, default /run/netns).
type NS struct{ Dir string }

// Apply is Apply on the named namespace.
func (n NS) Apply(namespace string, s *Spec) ([]string, error) {
	dir := n.Dir
	if dir == "" {
		dir = namedns.DefaultDir
	}
	h, err := namedns.Open(dir, namespace)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", namespace, err)
	}
	defer h.Close()
	return Apply(h, s)
}

// ForTenant is the synproxy spec a tenant's TCP protection needs (nil:
// none, the protection does not answer SYNs).
func ForTenant(p *dosspec.TCPProtection, tenantPrefixes []netip.Prefix) *Spec {
	if p == nil || !p.SYNCookies || p.Monitor {
		return nil
	}
	s := &Spec{Prefixes: p.Prefixes, Ports: p.Ports, MSS: p.MSS, WScale: p.WScale}
	if len(s.Prefixes) == 0 {
		s.Prefixes = tenantPrefixes
	}
	return s
}
