package firewall

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/owned"
)

// Layout of the table in a tenant namespace:
//
//	table inet nfhost {
//	    set l4_<list>, l6_<list>    interval sets of the named lists
//	    counter c_<rule-id>         one per rule; survives rule replacement
//	    chain filter {              hook prerouting, priority filter, policy = default
//	        iifname != "host0" accept          traffic that does not come from the edge
//	        icmpv6 type 133-137 accept          neighbour discovery keeps working
//	        meta nfproto ipv4 meta l4proto tcp goto v4_tcp    ... one goto per sub-chain
//	    }
//	    chain v4_tcp { <the tenant rules that can match TCP over IPv4, in order> }
//	    ... v4_udp, v4_icmp, v6_tcp, v6_udp, v6_icmp, v4_other, v6_other
//	}
const (
	chainName   = "filter"
	elemChunk   = 4096 // set elements per netlink message
	builtinIIF  = tagPrefix + "builtin-iif"
	builtinND   = tagPrefix + "builtin-nd"
	counterType = 1 // NFT_OBJECT_COUNTER
)

// Reconciler applies Specs inside tenant namespaces. Every Apply reads the
// namespace's table, chains, rules, sets and counters first. The one thing
// it remembers is the content hash of each list it wrote, so that an
// unchanged 100,000-entry list is not dumped on every apply (1.3 s); the
// first apply in a process verifies every list element by element, so a
// restart repairs hand-made edits. The zero value is ready to use. It is
// safe for concurrent use on different namespaces; calls on one namespace
// must not overlap.
type Reconciler struct {
	mu    sync.Mutex
	lists map[listKey]string // applied content hash
}

type listKey struct {
	dev, ino uint64 // the namespace
	set      string
}

func nsKey(ns netns.NsHandle) (uint64, uint64) {
	var st unix.Stat_t
	if unix.Fstat(int(ns), &st) != nil {
		return 0, 0
	}
	return st.Dev, st.Ino
}

func listHash(ps []netip.Prefix) string {
	h := sha256.New()
	for _, p := range ps {
		h.Write([]byte(p.String()))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: owned.NFTTable}
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
func (r *Reconciler) Apply(ns netns.NsHandle, spec *fwspec.Spec) ([]string, error) {
	c, err := open(ns)
	if err != nil {
		return nil, err
	}
	defer closeLater(c)
	dev, ino := nsKey(ns)
	// The lock guards the cache only: applies in different namespaces run
	// in parallel (the kernel's nftables commit lock is per namespace).
	cache := func(set string) string {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.lists[listKey{dev: dev, ino: ino, set: set}]
	}
	written := map[string]string{}
	ch, err := apply(c, spec, cache, written)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lists == nil {
		r.lists = map[listKey]string{}
	}
	if err != nil {
		// The batch failed as a whole: forget what we thought was there.
		for set := range written {
			delete(r.lists, listKey{dev: dev, ino: ino, set: set})
		}
		return ch, err
	}
	for set, h := range written {
		if h == "" {
			delete(r.lists, listKey{dev: dev, ino: ino, set: set})
		} else {
			r.lists[listKey{dev: dev, ino: ino, set: set}] = h
		}
	}
	return ch, nil
}

// apply does the work of Apply on any connection (tests record its batch).
// known returns the cached content hash of a list set ("" if unknown);
// written collects the hashes of the lists this batch leaves in place.
//
// The steps run in the order the batch needs: lists and counters before
// the rules that refer to them, chains before the rules in them, and
// deletions of what nothing refers to any more last.
func apply(c *nftables.Conn, spec *fwspec.Spec, known func(set string) string, written map[string]string) ([]string, error) {
	t := table()
	exists, err := tableExists(c, t)
	if err != nil {
		return nil, err
	}
	if spec == nil {
		return deleteTable(c, t, exists)
	}
	var ch []string
	if !exists {
		c.AddTable(t)
		ch = append(ch, "firewall: add table")
	}
	haveSets, err := listSets(c, t, exists)
	if err != nil {
		return nil, err
	}
	wantSets, ch, err := syncLists(c, t, spec.Lists, haveSets, known, written, ch)
	if err != nil {
		return nil, err
	}
	haveCtrs, err := listCounters(c, t, exists)
	if err != nil {
		return nil, err
	}
	wantCtrs, ch := addCounters(c, t, spec.Rules, haveCtrs, ch)
	if ch, err = syncChains(c, t, spec, exists, ch); err != nil {
		return nil, err
	}
	ch = deleteLists(c, haveSets, wantSets, written, ch)
	ch = deleteCounters(c, t, haveCtrs, wantCtrs, ch)
	if len(ch) == 0 {
		return nil, nil
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("apply firewall batch: %w", err)
	}
	sort.Strings(ch)
	return ch, nil
}

func tableExists(c *nftables.Conn, t *nftables.Table) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nft tables: %w", err)
	}
	exists := false
	for _, x := range tables {
		exists = exists || x.Name == t.Name
	}
	return exists, nil
}

func deleteTable(c *nftables.Conn, t *nftables.Table, exists bool) ([]string, error) {
	if !exists {
		return nil, nil
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("delete firewall table: %w", err)
	}
	return []string{"firewall: delete table"}, nil
}

// The list* functions read what table t holds; a table that does not
// exist yet (it is added in this batch) holds nothing to ask for.

func listSets(c *nftables.Conn, t *nftables.Table, exists bool) (map[string]*nftables.Set, error) {
	have := map[string]*nftables.Set{}
	if !exists {
		return have, nil
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list nft sets: %w", err)
	}
	for _, s := range sets {
		have[s.Name] = s
	}
	return have, nil
}

func listCounters(c *nftables.Conn, t *nftables.Table, exists bool) (map[string]bool, error) {
	have := map[string]bool{}
	if !exists {
		return have, nil
	}
	objs, err := c.GetObjects(t)
	if err != nil {
		return nil, fmt.Errorf("list nft objects: %w", err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			have[co.Name] = true
		}
	}
	return have, nil
}

func listChains(c *nftables.Conn, t *nftables.Table, exists bool) (map[string]*nftables.Chain, error) {
	have := map[string]*nftables.Chain{}
	if !exists {
		return have, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nft chains: %w", err)
	}
	for _, x := range chains {
		if x.Table.Name == t.Name {
			have[x.Name] = x
		}
	}
	return have, nil
}

// syncLists queues the changes that make every named list's two sets (one
// per family) hold the spec's prefixes, and returns the names of the sets
// the spec wants.
func syncLists(c *nftables.Conn, t *nftables.Table, lists map[string][]netip.Prefix, have map[string]*nftables.Set,
	known func(set string) string, written map[string]string, ch []string) (map[string]bool, []string, error) {
	want := map[string]bool{}
	for _, name := range sortedListNames(lists) {
		for _, f := range []family{fam4, fam6} {
			sn := listSetName(name, f)
			want[sn] = true
			var ps []netip.Prefix
			for _, p := range lists[name] {
				if p.Addr().Is4() == (f == fam4) {
					ps = append(ps, p)
				}
			}
			h := listHash(ps)
			written[sn] = h
			if have[sn] != nil && known(sn) == h {
				continue // unchanged since this process last wrote or verified it
			}
			n, err := syncList(c, t, have[sn], sn, f, ps)
			if err != nil {
				return nil, nil, err
			}
			if n > 0 {
				ch = append(ch, fmt.Sprintf("firewall: list %s: %d element changes", sn, n))
			}
		}
	}
	return want, ch, nil
}

// addCounters queues a counter for every rule ID that has none and returns
// the names of the counters the rules want.
func addCounters(c *nftables.Conn, t *nftables.Table, rules []fwspec.CompiledRule, have map[string]bool, ch []string) (map[string]bool, []string) {
	want := map[string]bool{}
	for _, r := range rules {
		want[counterName(r.ID)] = true
		if !have[counterName(r.ID)] {
			c.AddObj(&nftables.CounterObj{Table: t, Name: counterName(r.ID)})
			ch = append(ch, "firewall: add counter "+counterName(r.ID))
		}
	}
	return want, ch
}

// syncChains queues the base chain when its policy differs and rewrites
// the chains whose rules differ from the spec's layout.
func syncChains(c *nftables.Conn, t *nftables.Table, spec *fwspec.Spec, exists bool, ch []string) ([]string, error) {
	policy := nftables.ChainPolicyAccept
	if spec.Default == fwspec.Block {
		policy = nftables.ChainPolicyDrop
	}
	base := &nftables.Chain{Name: chainName, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityFilter, Policy: &policy}
	have, err := listChains(c, t, exists)
	if err != nil {
		return nil, err
	}
	if cur := have[chainName]; cur == nil || cur.Policy == nil || *cur.Policy != policy {
		c.AddChain(base)
		ch = append(ch, fmt.Sprintf("firewall: chain policy %s", spec.Default))
	}
	// Rebuild only the chains whose rules differ: a one-rule change then
	// re-adds the few chains the rule sits in, not all of them.
	lay := layout(spec)
	chains := map[string]*nftables.Chain{chainName: base}
	for _, lc := range lay {
		if lc.name != chainName {
			chains[lc.name] = &nftables.Chain{Name: lc.name, Table: t}
		}
	}
	stale, err := staleChains(c, t, lay, have)
	if err != nil {
		return nil, err
	}
	if len(stale) == 0 {
		return ch, nil
	}
	n, err := rewriteChains(c, t, lay, stale, chains, have)
	if err != nil {
		return nil, err
	}
	return append(ch, fmt.Sprintf("firewall: rewrite %d chains (%d nft rules)", len(stale), n)), nil
}

// staleChains returns the chains of lay that are missing or whose rules'
// tags differ from the layout's.
func staleChains(c *nftables.Conn, t *nftables.Table, lay []chainLayout, have map[string]*nftables.Chain) ([]chainLayout, error) {
	var stale []chainLayout
	for _, lc := range lay {
		var curTags [][]byte
		x := have[lc.name]
		if x != nil {
			rs, err := c.GetRules(t, x)
			if err != nil {
				return nil, fmt.Errorf("list nft rules: %w", err)
			}
			for _, r := range rs {
				curTags = append(curTags, r.UserData)
			}
		}
		if x == nil || !sameTags(curTags, lc.tags()) {
			stale = append(stale, lc)
		}
	}
	return stale, nil
}

// rewriteChains queues the missing sub-chains, then empties and refills
// the stale ones; it returns the number of nft rules queued.
func rewriteChains(c *nftables.Conn, t *nftables.Table, lay, stale []chainLayout, chains, have map[string]*nftables.Chain) (int, error) {
	// Sub-chains first: the base chain's gotos need them to exist.
	for _, lc := range lay[1:] {
		if have[lc.name] == nil {
			c.AddChain(chains[lc.name])
		}
	}
	n := 0
	// Anonymous sets are only queued here: an unbound one would make
	// the kernel refuse the batch.
	b := &builder{conn: c, table: t}
	for _, lc := range stale {
		if have[lc.name] != nil {
			c.FlushChain(chains[lc.name])
		}
		for _, e := range lc.entries {
			exprs, err := e.exprs(b)
			if err != nil {
				return 0, err
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[lc.name], Exprs: exprs, UserData: []byte(e.tag)})
			n++
		}
	}
	return n, nil
}

// deleteLists and deleteCounters queue the deletion of what nothing refers
// to any more; apply calls them last, after the rules that used it.

func deleteLists(c *nftables.Conn, have map[string]*nftables.Set, want map[string]bool, written map[string]string, ch []string) []string {
	for name, s := range have {
		if !want[name] && !s.Anonymous && strings.HasPrefix(name, "l") {
			written[name] = ""
			c.DelSet(s)
			ch = append(ch, "firewall: delete list "+name)
		}
	}
	return ch
}

func deleteCounters(c *nftables.Conn, t *nftables.Table, have, want map[string]bool, ch []string) []string {
	for name := range have {
		if !want[name] {
			c.DeleteObject(&nftables.CounterObj{Table: t, Name: name})
			ch = append(ch, "firewall: delete counter "+name)
		}
	}
	return ch
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

// Dispatch: the base chain sends each packet to the sub-chain of its
// family and L4 protocol, which holds, in their original order, only the
// rules that can match such a packet. First match is preserved (a packet
// visits exactly one sub-chain) and a TCP/IPv4 packet skips every UDP,
// ICMP and IPv6-only rule. BenchmarkForwarding measures the effect.
var dispatch = []struct {
	name  string
	fam   family
	proto int // -1: any protocol not listed before it for the family
}{
	{"v4_tcp", fam4, unix.IPPROTO_TCP}, {"v4_udp", fam4, unix.IPPROTO_UDP}, {"v4_icmp", fam4, unix.IPPROTO_ICMP},
	{"v6_tcp", fam6, unix.IPPROTO_TCP}, {"v6_udp", fam6, unix.IPPROTO_UDP}, {"v6_icmp", fam6, unix.IPPROTO_ICMPV6},
	{"v4_other", fam4, -1}, {"v6_other", fam6, -1},
}

type entry struct {
	tag   string
	exprs func(*builder) ([]expr.Any, error)
}

type chainLayout struct {
	name    string
	entries []entry
}

func (lc chainLayout) tags() [][]byte {
	out := make([][]byte, len(lc.entries))
	for i, e := range lc.entries {
		out[i] = []byte(e.tag)
	}
	return out
}

func fixed(exprs ...expr.Any) func(*builder) ([]expr.Any, error) {
	return func(*builder) ([]expr.Any, error) { return exprs, nil }
}

// layout computes every chain's rules and tags from the spec; pure except
// that the entries' exprs functions queue anonymous sets when called.
func layout(spec *fwspec.Spec) []chainLayout {
	ifname := make([]byte, 16)
	copy(ifname, owned.NSIfName)
	baseEntries := []entry{
		{builtinIIF, fixed(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname}, &expr.Verdict{Kind: expr.VerdictAccept})},
		{builtinND, fixed(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: []byte{133}},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: []byte{137}},
			&expr.Verdict{Kind: expr.VerdictAccept})},
	}
	for _, d := range dispatch {
		nfproto := byte(unix.NFPROTO_IPV4)
		if d.fam == fam6 {
			nfproto = unix.NFPROTO_IPV6
		}
		exprs := []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}}}
		if d.proto >= 0 {
			exprs = append(exprs, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(d.proto)}})
		}
		// goto, not jump: a packet that falls off its sub-chain gets the
		// base chain's policy instead of running into the next dispatch rule.
		exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictGoto, Chain: d.name})
		baseEntries = append(baseEntries, entry{tagPrefix + "goto-" + d.name, fixed(exprs...)})
	}
	out := []chainLayout{{name: chainName, entries: baseEntries}}
	subs := make([]chainLayout, len(dispatch))
	for i, d := range dispatch {
		subs[i].name = d.name
	}
	for _, r := range spec.Rules {
		for i, nr := range expand(r) {
			protos := protoConstraint(nr.lits)
			for j, d := range dispatch {
				if nr.fam != famAny && nr.fam != d.fam || !protoFits(protos, d.proto, d.fam) {
					continue
				}
				nr, r := nr, r
				subs[j].entries = append(subs[j].entries, entry{ruleTag(r, i), func(b *builder) ([]expr.Any, error) {
					// The family test is redundant in a family chain but lets
					// `nft list` print ip saddr instead of @nh,96,32.
					exprs, err := b.exprs(nr, d.fam)
					if err != nil {
						return nil, fmt.Errorf("compile rule %s: %w", r.ID, err)
					}
					exprs = append(exprs, &expr.Objref{Type: counterType, Name: counterName(r.ID)})
					switch r.Action {
					case fwspec.Allow:
						exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})
					case fwspec.Block:
						exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
					}
					return exprs, nil
				}})
			}
		}
	}
	return append(out, subs...)
}

// protoConstraint returns the L4 protocols a conjunction requires (nil: any).
func protoConstraint(lits []lang.Literal) map[uint64]bool {
	var out map[uint64]bool
	for _, l := range lits {
		if l.Neg {
			continue
		}
		var vals map[uint64]bool
		switch x := l.Atom.(type) {
		case *lang.Cmp:
			if x.Field.Name == "ip.proto" && x.Op == lang.OpEq {
				vals = map[uint64]bool{x.Val.Int: true}
			}
		case *lang.In:
			if x.Field.Name == "ip.proto" {
				vals = map[uint64]bool{}
				for _, v := range x.Set {
					if v.Kind == lang.KindInt {
						vals[v.Int] = true
					} else {
						for p := v.Lo; p <= v.Hi; p++ {
							vals[p] = true
						}
					}
				}
			}
		}
		if vals == nil {
			continue
		}
		if out == nil {
			out = vals
			continue
		}
		for p := range out {
			if !vals[p] {
				delete(out, p)
			}
		}
	}
	return out
}

// protoFits reports whether a rule requiring protos can match in the
// dispatch chain for proto (-1: the family's "other" chain).
func protoFits(protos map[uint64]bool, proto int, fam family) bool {
	if protos == nil {
		return true
	}
	if proto >= 0 {
		return protos[uint64(proto)]
	}
	icmp := uint64(unix.IPPROTO_ICMP)
	if fam == fam6 {
		icmp = unix.IPPROTO_ICMPV6
	}
	for p := range protos {
		if p != unix.IPPROTO_TCP && p != unix.IPPROTO_UDP && p != icmp {
			return true
		}
	}
	return false
}

// Counters reads every rule's counter in ns, by rule ID.
func (*Reconciler) Counters(ns netns.NsHandle) (map[string]fwspec.Counter, error) {
	c, err := open(ns)
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	objs, err := c.GetObjects(table())
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return map[string]fwspec.Counter{}, nil
		}
		return nil, fmt.Errorf("read nft counters: %w", err)
	}
	out := map[string]fwspec.Counter{}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok && strings.HasPrefix(co.Name, "c_") {
			out[strings.TrimPrefix(co.Name, "c_")] = fwspec.Counter{Packets: co.Packets, Bytes: co.Bytes}
		}
	}
	return out, nil
}

// NSReconciler addresses tenant namespaces by name (in Dir, default
// /run/netns), for callers that do not hold namespace handles.
type NSReconciler struct {
	Dir string
	rec Reconciler
}

func (n *NSReconciler) open(name string) (netns.NsHandle, error) {
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
func (n *NSReconciler) Apply(namespace string, spec *fwspec.Spec) ([]string, error) {
	h, err := n.open(namespace)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return n.rec.Apply(h, spec)
}

// Counters is Reconciler.Counters on the named namespace.
func (n *NSReconciler) Counters(namespace string) (map[string]fwspec.Counter, error) {
	h, err := n.open(namespace)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return n.rec.Counters(h)
}
