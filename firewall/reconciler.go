package firewall

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/nftset"
)

// Layout of the table in a tenant namespace:
//
//	table inet nfhost {
//	    set l4_<list>, l6_<list>    interval sets of the named lists
//	    counter c_<rule-id>         one per rule; survives rule replacement
//	    chain filter {              hook prerouting, priority filter, policy = default
//	        iifname != "host0" accept          traffic that does not come from the edge
//	        icmpv6 type 133-137 accept          neighbour discovery keeps working
//	        <tenant rules, in order>
//	    }
//	}
const (
	chainName   = "filter"
	elemChunk   = 4096 // set elements per netlink message
	builtinIIF  = tagPrefix + "builtin-iif"
	builtinND   = tagPrefix + "builtin-nd"
	counterType = 1 // NFT_OBJECT_COUNTER
)

// Reconciler applies Specs inside tenant namespaces. It holds no state:
// every Apply reads the namespace's table first.
type Reconciler struct{}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: routing.NFTTable}
}

func open(ns netns.NsHandle) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open nftables in tenant netns: %w", err)
	}
	return c, nil
}

// closeLater closes a connection off the caller's path: after a batch that
// changed an interval set, closing the socket waits for an RCU grace period
// in the kernel (about 12 ms here).
func closeLater(c *nftables.Conn) { go c.CloseLasting() }

// Apply makes the firewall in ns match spec (nil: no firewall, remove
// nfhost's table). Everything is one batch: no packet sees half a ruleset.
// It returns one line per change.
func (Reconciler) Apply(ns netns.NsHandle, spec *Spec) ([]string, error) {
	c, err := open(ns)
	if err != nil {
		return nil, err
	}
	defer closeLater(c)
	return apply(c, spec)
}

// apply does the work of Apply on any connection (tests record its batch).
func apply(c *nftables.Conn, spec *Spec) ([]string, error) {
	t := table()
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	exists := false
	for _, x := range tables {
		exists = exists || x.Name == t.Name
	}
	if spec == nil {
		if !exists {
			return nil, nil
		}
		c.DelTable(t)
		if err := c.Flush(); err != nil {
			return nil, fmt.Errorf("delete firewall table: %w", err)
		}
		return []string{"firewall: delete table"}, nil
	}
	var ch []string
	if !exists {
		c.AddTable(t)
		ch = append(ch, "firewall: add table")
	}

	// Named lists.
	have := map[string]*nftables.Set{}
	if exists {
		sets, err := c.GetSets(t)
		if err != nil {
			return nil, fmt.Errorf("list nft sets: %w", err)
		}
		for _, s := range sets {
			have[s.Name] = s
		}
	}
	want := map[string]bool{}
	for _, name := range sortedListNames(spec.Lists) {
		for _, f := range []family{fam4, fam6} {
			sn := listSetName(name, f)
			want[sn] = true
			var ps []netip.Prefix
			for _, p := range spec.Lists[name] {
				if p.Addr().Is4() == (f == fam4) {
					ps = append(ps, p)
				}
			}
			n, err := syncList(c, t, have[sn], sn, f, ps)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				ch = append(ch, fmt.Sprintf("firewall: list %s: %d element changes", sn, n))
			}
		}
	}

	// Counters, one per rule ID.
	haveCtr := map[string]bool{}
	if exists {
		objs, err := c.GetObjects(t)
		if err != nil {
			return nil, fmt.Errorf("list nft objects: %w", err)
		}
		for _, o := range objs {
			if co, ok := o.(*nftables.CounterObj); ok {
				haveCtr[co.Name] = true
			}
		}
	}
	wantCtr := map[string]bool{}
	for _, r := range spec.Rules {
		wantCtr[counterName(r.ID)] = true
		if !haveCtr[counterName(r.ID)] {
			c.AddObj(&nftables.CounterObj{Table: t, Name: counterName(r.ID)})
			ch = append(ch, "firewall: add counter "+counterName(r.ID))
		}
	}

	// The chain and its rules.
	policy := nftables.ChainPolicyAccept
	if spec.Default == Block {
		policy = nftables.ChainPolicyDrop
	}
	chain := &nftables.Chain{Name: chainName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy}
	var cur *nftables.Chain
	if exists {
		chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return nil, fmt.Errorf("list nft chains: %w", err)
		}
		for _, x := range chains {
			if x.Table.Name == t.Name && x.Name == chainName {
				cur = x
			}
		}
	}
	if cur == nil || cur.Policy == nil || *cur.Policy != policy {
		c.AddChain(chain)
		ch = append(ch, fmt.Sprintf("firewall: chain policy %s", spec.Default))
	}
	tags := ruleTags(spec)
	var curTags [][]byte
	if cur != nil {
		rs, err := c.GetRules(t, cur)
		if err != nil {
			return nil, fmt.Errorf("list nft rules: %w", err)
		}
		for _, r := range rs {
			curTags = append(curTags, r.UserData)
		}
	}
	if !sameTags(curTags, tags) {
		// Anonymous sets are only queued here: an unbound one would make
		// the kernel refuse the batch.
		rules, err := build(c, t, chain, spec)
		if err != nil {
			return nil, err
		}
		if cur != nil {
			c.FlushChain(chain)
		}
		for _, r := range rules {
			c.AddRule(r)
		}
		ch = append(ch, fmt.Sprintf("firewall: replace %d nft rules for %d tenant rules", len(rules), len(spec.Rules)))
	}

	// What nothing refers to any more goes last, after the rules that used it.
	for name, s := range have {
		if !want[name] && !s.Anonymous && strings.HasPrefix(name, "l") {
			c.DelSet(s)
			ch = append(ch, "firewall: delete list "+name)
		}
	}
	for name := range haveCtr {
		if !wantCtr[name] {
			c.DeleteObject(&nftables.CounterObj{Table: t, Name: name})
			ch = append(ch, "firewall: delete counter "+name)
		}
	}
	if len(ch) == 0 {
		return nil, nil
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("apply firewall batch: %w", err)
	}
	sort.Strings(ch)
	return ch, nil
}

func sortedListNames(m map[string][]netip.Prefix) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func sameTags(a [][]byte, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// syncList creates a list set or diffs its elements; it returns the number
// of element changes queued.
func syncList(c *nftables.Conn, t *nftables.Table, cur *nftables.Set, name string, f family, want []netip.Prefix) (int, error) {
	kt := nftables.TypeIPAddr
	if f == fam6 {
		kt = nftables.TypeIP6Addr
	}
	if cur == nil {
		s := &nftables.Set{Table: t, Name: name, KeyType: kt, Interval: true}
		if err := c.AddSet(s, nil); err != nil {
			return 0, fmt.Errorf("add set %s: %w", name, err)
		}
		return len(want) + 1, addElems(c, s, want)
	}
	elems, err := c.GetSetElements(cur)
	if err != nil {
		return 0, fmt.Errorf("dump set %s: %w", name, err)
	}
	ivs, err := nftset.Intervals(elems)
	if err != nil {
		return 0, fmt.Errorf("parse set %s: %w", name, err)
	}
	have := map[netip.Prefix]bool{}
	var foreign []nftset.Interval
	for _, iv := range ivs {
		if p, ok := iv.Prefix(); ok {
			have[p] = true
		} else {
			foreign = append(foreign, iv)
		}
	}
	wantSet := map[netip.Prefix]bool{}
	var add []netip.Prefix
	for _, p := range want {
		wantSet[p] = true
		if !have[p] {
			add = append(add, p)
		}
	}
	var del []nftables.SetElement
	n := 0
	for p := range have {
		if !wantSet[p] {
			del = append(del, nftset.Elements(p, nil)...)
			n++
		}
	}
	for _, iv := range foreign {
		del = append(del, nftables.SetElement{Key: iv.Start.AsSlice()})
		if nx := iv.End.Next(); nx.IsValid() {
			del = append(del, nftables.SetElement{Key: nx.AsSlice(), IntervalEnd: true})
		}
		n++
	}
	for i := 0; i < len(del); i += elemChunk {
		if err := c.SetDeleteElements(cur, del[i:min(i+elemChunk, len(del))]); err != nil {
			return 0, fmt.Errorf("delete elements of %s: %w", name, err)
		}
	}
	return n + len(add), addElems(c, cur, add)
}

func addElems(c *nftables.Conn, s *nftables.Set, ps []netip.Prefix) error {
	elems := make([]nftables.SetElement, 0, 2*len(ps))
	for _, p := range ps {
		elems = append(elems, nftset.Elements(p, nil)...)
	}
	for i := 0; i < len(elems); i += elemChunk {
		if err := c.SetAddElements(s, elems[i:min(i+elemChunk, len(elems))]); err != nil {
			return fmt.Errorf("add elements to %s: %w", s.Name, err)
		}
	}
	return nil
}

// ruleTags lists the userdata tags of the chain's rules, in order; equal
// tags mean an equal compiled ruleset.
func ruleTags(spec *Spec) [][]byte {
	tags := [][]byte{[]byte(builtinIIF), []byte(builtinND)}
	for _, r := range spec.Rules {
		for i := range expand(r) {
			tags = append(tags, []byte(r.tag(i)))
		}
	}
	return tags
}

// build compiles the chain's rules, tagged as ruleTags says. Anonymous sets
// are queued on c as a side effect.
func build(c *nftables.Conn, t *nftables.Table, chain *nftables.Chain, spec *Spec) ([]*nftables.Rule, error) {
	var rules []*nftables.Rule
	add := func(tag string, exprs []expr.Any) {
		rules = append(rules, &nftables.Rule{Table: t, Chain: chain, Exprs: exprs, UserData: []byte(tag)})
	}
	ifname := make([]byte, 16)
	copy(ifname, routing.NSIfName)
	add(builtinIIF, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Verdict{Kind: expr.VerdictAccept},
	})
	add(builtinND, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{133}},
		&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{137}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	})
	b := &builder{conn: c, table: t}
	for _, r := range spec.Rules {
		for i, nr := range expand(r) {
			exprs, err := b.exprs(nr)
			if err != nil {
				return nil, fmt.Errorf("compile rule %s: %w", r.ID, err)
			}
			exprs = append(exprs, &expr.Objref{Type: counterType, Name: counterName(r.ID)})
			switch r.Action {
			case Allow:
				exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})
			case Block:
				exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
			}
			add(r.tag(i), exprs)
		}
	}
	return rules, nil
}

// Counter is a rule's hit count.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters reads every rule's counter in ns, by rule ID.
func (Reconciler) Counters(ns netns.NsHandle) (map[string]Counter, error) {
	c, err := open(ns)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	objs, err := c.GetObjects(table())
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return map[string]Counter{}, nil
		}
		return nil, fmt.Errorf("read nft counters: %w", err)
	}
	out := map[string]Counter{}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok && strings.HasPrefix(co.Name, "c_") {
			out[strings.TrimPrefix(co.Name, "c_")] = Counter{Packets: co.Packets, Bytes: co.Bytes}
		}
	}
	return out, nil
}

// NSReconciler addresses tenant namespaces by name (in Dir, default
// /run/netns), for callers that do not hold namespace handles.
type NSReconciler struct {
	Dir string
}

func (n NSReconciler) open(name string) (netns.NsHandle, error) {
	dir := n.Dir
	if dir == "" {
		dir = "/run/netns"
	}
	h, err := netns.GetFromPath(dir + "/" + name)
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %s: %w", name, err)
	}
	return h, nil
}

// Apply is Reconciler.Apply on the named namespace.
func (n NSReconciler) Apply(namespace string, spec *Spec) ([]string, error) {
	h, err := n.open(namespace)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return Reconciler{}.Apply(h, spec)
}

// Counters is Reconciler.Counters on the named namespace.
func (n NSReconciler) Counters(namespace string) (map[string]Counter, error) {
	h, err := n.open(namespace)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return Reconciler{}.Counters(h)
}
