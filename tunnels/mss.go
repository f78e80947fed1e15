package tunnels

import (
	"bytes"
	"crypto/sha256"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureMSS clamps the MSS of TCP SYNs through each tunnel, both ways, to
// the tunnel's mss_clamp: a redirect never produces "fragmentation
// needed", so without it full-size TCP stalls. One table in the tenant
// namespace, "inet nfhost_tunnels", rewritten in one atomic batch when the
// wanted rules (tagged with their hash) differ from what is there.
func ensureMSS(ns netns.NsHandle, ts []Tunnel) ([]string, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open nftables in the tenant namespace: %w", err)
	}
	defer c.CloseLasting()
	tag := mssTag(ts)
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	var have *nftables.Table
	for _, t := range tables {
		if t.Name == owned.TunnelNFTTable {
			have = t
		}
	}
	if have != nil {
		if ok, err := mssCurrent(c, have, tag, len(ts)); err != nil {
			return nil, err
		} else if ok {
			return nil, nil
		}
		c.DelTable(have)
	}
	if len(ts) == 0 {
		if have == nil {
			return nil, nil
		}
		if err := c.Flush(); err != nil {
			return nil, fmt.Errorf("delete table inet %s: %w", owned.TunnelNFTTable, err)
		}
		return []string{"nft: delete table inet " + owned.TunnelNFTTable}, nil
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: owned.TunnelNFTTable})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: tbl, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle})
	for _, t := range ts {
		c.AddRule(&nftables.Rule{Table: tbl, Chain: fwd, Exprs: clampExprs(expr.MetaKeyOIFNAME, t.Name, t.MSS), UserData: tag})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: fwd, Exprs: clampExprs(expr.MetaKeyIIFNAME, t.Name, t.MSS), UserData: tag})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: out, Exprs: clampExprs(expr.MetaKeyOIFNAME, t.Name, t.MSS), UserData: tag})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("write table inet %s: %w", owned.TunnelNFTTable, err)
	}
	return []string{fmt.Sprintf("nft: MSS clamping for %d tunnels", len(ts))}, nil
}

func mssTag(ts []Tunnel) []byte {
	h := sha256.New()
	for _, t := range ts {
		fmt.Fprintf(h, "%s=%d;", t.Name, t.MSS)
	}
	return []byte(fmt.Sprintf("nfhost-mss-%x", h.Sum(nil)[:8]))
}

// mssCurrent: both chains exist and every rule carries the wanted tag.
func mssCurrent(c *nftables.Conn, t *nftables.Table, tag []byte, n int) (bool, error) {
	count := 0
	for _, name := range []string{"forward", "output"} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			return false, nil // chain missing: rewrite
		}
		for _, r := range rules {
			if !bytes.Equal(r.UserData, tag) {
				return false, nil
			}
		}
		count += len(rules)
	}
	return count == 3*n, nil
}

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

// clampExprs: <iif|oif>name NAME meta l4proto tcp tcp flags & (syn|rst) ==
// syn tcp option maxseg size > MSS tcp option maxseg size set MSS.
func clampExprs(key expr.MetaKey, name string, mss int) []expr.Any {
	v := []byte{byte(mss >> 8), byte(mss)}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Exthdr{DestRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
		&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: v},
		&expr.Immediate{Register: 1, Data: v},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt},
	}
}
