package firewall

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/owned"
)

// Layout of the table in a tenant namespace:
//
//	table inet nfhost {
//	    set l4_<list>, l6_<list>    the named lists: interval sets, or
//	    set l4h24_<list>, ...       hash sets of prefixes of one length (listSetOf)
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
// namespace's table, chains, sets and counters first. It remembers two
// things. The content hash of each list it wrote, so that an unchanged
// 100,000-entry list is not dumped on every apply (1.3 s); the first apply
// in a process verifies every list element by element, so a restart
// repairs hand-made edits. And the rules it left in each chain together
// with the namespace's nftables generation after its commit: while the
// generation is unchanged nobody has committed anything there since, so
// the chains' rules are not dumped again (one dump per chain, 300 chains
// for 200 merged rules); any other commit in the namespace (nft by hand,
// another table) moves the generation and the next apply reads every
// chain. Its own batches carry that generation (NFNL_BATCH_GENID), so a
// commit that slips in between the read and the write makes the kernel
// refuse the batch instead of applying a diff against a stale read; Apply
// then reads again and retries once. The zero value is ready to use. It is
// safe for concurrent use on different namespaces; calls on one namespace
// must not overlap.
type Reconciler struct {
	mu sync.Mutex
	// chains is what this process last left in each namespace's chains,
	// by netns cookie (never reused, unlike inode numbers).
	chains   map[uint64]*chainCache
	lists    map[listKey]string         // applied content hash
	contents map[listKey][]netip.Prefix // applied content (shared slices, not copies)
	// splits memoises a list's per-family prefixes and their hash by the
	// list's backing array: a shared list (one slice for every tenant)
	// or geo list is split and hashed once, not once per tenant.
	splits map[splitKey]splitVal
}

type splitKey struct {
	first *netip.Prefix
	n     int
	f     family
}

type splitVal struct {
	ps   []netip.Prefix
	hash string
}

// split returns the prefixes of family f in ps and their hash.
func split(ps []netip.Prefix, f family) ([]netip.Prefix, string) {
	n := 0
	for _, p := range ps {
		if p.Addr().Is4() == (f == fam4) {
			n++
		}
	}
	if n == len(ps) {
		return ps, listHash(ps) // all of one family: the slice itself
	}
	out := make([]netip.Prefix, 0, n)
	for _, p := range ps {
		if p.Addr().Is4() == (f == fam4) {
			out = append(out, p)
		}
	}
	return out, listHash(out)
}

func (r *Reconciler) split(ps []netip.Prefix, f family) ([]netip.Prefix, string) {
	if len(ps) < 4096 {
		return split(ps, f)
	}
	k := splitKey{&ps[0], len(ps), f}
	r.mu.Lock()
	v, ok := r.splits[k]
	r.mu.Unlock()
	if ok {
		return v.ps, v.hash
	}
	out, h := split(ps, f) // outside the lock: a million prefixes take a while
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.splits == nil || len(r.splits) >= 32 { // the memo keeps its lists alive: bounded
		r.splits = map[splitKey]splitVal{}
	}
	r.splits[k] = splitVal{out, h}
	return out, h
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

// listHash identifies a list's content (in memory only: what this process
// wrote). Binary, not text: a 100,000-prefix list is hashed on every apply
// of a re-parsed document.
func listHash(ps []netip.Prefix) string {
	h := sha256.New()
	buf := make([]byte, 0, 18*256)
	for i, p := range ps {
		a := p.Addr().As16()
		buf = append(buf, a[:]...)
		buf = append(buf, byte(p.Bits()), 0)
		if p.Addr().Is4() {
			buf[len(buf)-1] = 4
		}
		if len(buf) >= 18*255 || i == len(ps)-1 {
			h.Write(buf)
			buf = buf[:0]
		}
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
	// The lock guards the caches only: applies in different namespaces run
	// in parallel (the kernel's nftables commit lock is per namespace).
	st := &listState{
		known: func(set string) string {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.lists[listKey{dev: dev, ino: ino, set: set}]
		},
		prev: func(set string) []netip.Prefix {
			r.mu.Lock()
			defer r.mu.Unlock()
			return r.contents[listKey{dev: dev, ino: ino, set: set}]
		},
		written: map[string]string{}, content: map[string][]netip.Prefix{}, split: r.split,
	}
	cookie, cerr := namedns.Cookie(ns)
	if cerr != nil {
		cookie = 0 // no cookie (Linux < 5.14): no chain cache
	}
	r.mu.Lock()
	st.chains = r.chains[cookie]
	r.mu.Unlock()
	if cookie == 0 {
		st.chains = nil
	}
	ch, err := apply(c, spec, st)
	if errors.Is(err, unix.ERESTART) {
		// Someone committed in this namespace between our read and our
		// batch, which the kernel refused whole: read again, once.
		st.chains, st.written, st.content = nil, map[string]string{}, map[string][]netip.Prefix{}
		ch, err = apply(c, spec, st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if cookie != 0 {
		if r.chains == nil {
			r.chains = map[uint64]*chainCache{}
		}
		if err != nil || st.after == nil {
			delete(r.chains, cookie)
		} else {
			r.chains[cookie] = st.after
		}
	}
	if r.lists == nil {
		r.lists = map[listKey]string{}
	}
	if r.contents == nil {
		r.contents = map[listKey][]netip.Prefix{}
	}
	if err != nil {
		// The batch failed as a whole: forget what we thought was there.
		for set := range st.written {
			delete(r.lists, listKey{dev: dev, ino: ino, set: set})
			delete(r.contents, listKey{dev: dev, ino: ino, set: set})
		}
		return ch, err
	}
	for set, h := range st.written {
		k := listKey{dev: dev, ino: ino, set: set}
		if h == "" {
			delete(r.lists, k)
			delete(r.contents, k)
		} else {
			r.lists[k], r.contents[k] = h, st.content[set]
		}
	}
	return ch, nil
}

// listState is what apply knows and learns about a namespace's list sets:
// known returns the content hash this process last wrote or verified
// ("" if unknown), prev that content (nil if unknown: the set is then
// dumped and compared element by element); written and content collect
// what this batch leaves in place. split divides a list by family.
type listState struct {
	known   func(set string) string
	prev    func(set string) []netip.Prefix
	written map[string]string
	content map[string][]netip.Prefix
	split   func([]netip.Prefix, family) ([]netip.Prefix, string)
	// chains is what the kernel held at a generation (nil: unknown);
	// after is what apply leaves (nil: unknown, e.g. after an error).
	chains, after *chainCache
}

// chainCache is the rules (their tags) of each of nfhost's chains in one
// namespace as of an nftables generation.
type chainCache struct {
	gen  uint32
	tags map[string][][]byte
}

// testBeforeFlush runs between apply's reads and its batch (tests: a
// commit by someone else in that window).
var testBeforeFlush func()

// nextGen is the generation after one commit (the kernel skips 0).
func nextGen(g uint32) uint32 {
	if g+1 == 0 {
		return 1
	}
	return g + 1
}

// apply does the work of Apply on any connection (tests record its batch;
// a zero listState knows nothing).
//
// The steps run in the order the batch needs: lists and counters before
// the rules that refer to them, chains before the rules in them, and
// deletions of what nothing refers to any more last.
func apply(c *nftables.Conn, spec *fwspec.Spec, st *listState) ([]string, error) {
	if st.known == nil {
		st.known = func(string) string { return "" }
	}
	if st.prev == nil {
		st.prev = func(string) []netip.Prefix { return nil }
	}
	if st.written == nil {
		st.written = map[string]string{}
	}
	if st.content == nil {
		st.content = map[string][]netip.Prefix{}
	}
	if st.split == nil {
		st.split = split
	}
	t := table()
	// Without a generation (a recording test connection) nothing is
	// cached and batches go unconditioned.
	var gen uint32
	if g, err := c.GetGen(); err == nil {
		gen = g.ID
	}
	cached := st.chains
	if cached != nil && (gen == 0 || cached.gen != gen) {
		cached = nil // someone committed since: read the chains
	}
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
	wantSets, lists, ch, err := syncLists(c, t, spec.Lists, haveSets, st, ch)
	if err != nil {
		return nil, err
	}
	haveCtrs, err := listCounters(c, t, exists)
	if err != nil {
		return nil, err
	}
	wantCtrs, ch := addCounters(c, t, spec.Rules, haveCtrs, ch)
	var obsolete []*nftables.Chain
	lay := layout(spec, lists)
	if ch, err = syncChains(c, t, spec, lay, lists, exists, cached, ch, &obsolete); err != nil {
		return nil, err
	}
	ch = deleteLists(c, haveSets, wantSets, st.written, ch)
	ch = deleteCounters(c, t, haveCtrs, wantCtrs, ch)
	// What the chains hold once this apply is in: the layout.
	after := &chainCache{gen: gen, tags: make(map[string][][]byte, len(lay))}
	for _, lc := range lay {
		after.tags[lc.name] = lc.tags()
	}
	if gen == 0 {
		after = nil
	}
	if len(ch) == 0 {
		st.after = after
		return nil, nil
	}
	if testBeforeFlush != nil {
		testBeforeFlush()
	}
	if err := c.FlushWithGenID(gen); err != nil { // gen 0: unconditioned
		return nil, fmt.Errorf("apply firewall batch: %w", err)
	}
	gen = nextGen(gen)
	if len(obsolete) > 0 {
		for _, x := range obsolete {
			c.DelChain(x)
		}
		if err := c.FlushWithGenID(gen); err != nil {
			// The rules are in force; the empty chains go on the next apply.
			return ch, fmt.Errorf("delete emptied chains: %w", err)
		}
		gen = nextGen(gen)
	}
	if after != nil {
		after.gen = gen
	}
	st.after = after
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
// the spec wants and the set of each list and family (by listSetName).
func syncLists(c *nftables.Conn, t *nftables.Table, lists map[string][]netip.Prefix, have map[string]*nftables.Set,
	st *listState, ch []string) (map[string]bool, map[string]listSet, []string, error) {
	want := map[string]bool{}
	sets := map[string]listSet{}
	for _, name := range sortedListNames(lists) {
		for _, f := range []family{fam4, fam6} {
			ps, h := st.split(lists[name], f)
			ls := listSetOf(name, f, ps)
			sets[listSetName(name, f)] = ls
			sn := ls.name
			want[sn] = true
			st.written[sn], st.content[sn] = h, ps
			if have[sn] != nil && st.known(sn) == h {
				continue // unchanged since this process last wrote or verified it
			}
			var prev []netip.Prefix
			if have[sn] != nil && st.known(sn) != "" {
				prev = st.prev(sn)
			}
			n, err := syncList(c, t, have[sn], ls, f, ps, prev)
			if err != nil {
				return nil, nil, nil, err
			}
			if n > 0 {
				ch = append(ch, fmt.Sprintf("firewall: list %s: %d element changes", sn, n))
			}
		}
	}
	return want, sets, ch, nil
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
func syncChains(c *nftables.Conn, t *nftables.Table, spec *fwspec.Spec, lay []chainLayout, lists map[string]listSet, exists bool, cached *chainCache, ch []string, obsolete *[]*nftables.Chain) ([]string, error) {
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
	chains := map[string]*nftables.Chain{chainName: base}
	for _, lc := range lay {
		if lc.name != chainName {
			chains[lc.name] = &nftables.Chain{Name: lc.name, Table: t}
		}
	}
	stale, err := staleChains(c, t, lay, have, cached)
	if err != nil {
		return nil, err
	}
	if len(stale) == 0 {
		return ch, nil
	}
	n, err := rewriteChains(c, t, lay, stale, chains, have, lists)
	if err != nil {
		return nil, err
	}
	ch = append(ch, fmt.Sprintf("firewall: rewrite %d chains (%d nft rules)", len(stale), n))
	// Log and map chains that are gone: emptied here; deleted by apply in
	// a second batch once this one is in (a verdict map being replaced
	// still refers to its chains until the batch that replaces it ends).
	for name, x := range have {
		if (strings.HasPrefix(name, logChainPrefix) || strings.HasPrefix(name, mergeChainPrefix)) && chains[name] == nil {
			c.FlushChain(x)
			*obsolete = append(*obsolete, x)
			ch = append(ch, "firewall: delete chain "+name)
		}
	}
	return ch, nil
}

// staleChains returns the chains of lay that are missing or whose rules'
// tags differ from the layout's. A chain in cached (the kernel's state at
// this generation) is compared with that instead of being dumped.
func staleChains(c *nftables.Conn, t *nftables.Table, lay []chainLayout, have map[string]*nftables.Chain, cached *chainCache) ([]chainLayout, error) {
	var stale []chainLayout
	for _, lc := range lay {
		var curTags [][]byte
		x := have[lc.name]
		known, ok := [][]byte(nil), false
		if cached != nil {
			known, ok = cached.tags[lc.name]
		}
		if x != nil && ok {
			curTags = known
		} else if x != nil {
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
func rewriteChains(c *nftables.Conn, t *nftables.Table, lay, stale []chainLayout, chains, have map[string]*nftables.Chain, lists map[string]listSet) (int, error) {
	// Sub-chains first: the base chain's gotos need them to exist.
	for _, lc := range lay[1:] {
		if have[lc.name] == nil {
			c.AddChain(chains[lc.name])
		}
	}
	n := 0
	// Anonymous sets are only queued here: an unbound one would make
	// the kernel refuse the batch.
	b := &builder{conn: c, table: t, lists: lists}
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

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// syncList makes set cur (nil: missing) hold want, of kind ls, and returns
// the number of element changes queued. prev, when not nil, is what this
// process last wrote into it: the difference is computed from it instead
// of dumping the set (a 1,000,000-element dump per tenant).
func syncList(c *nftables.Conn, t *nftables.Table, cur *nftables.Set, ls listSet, f family, want, prev []netip.Prefix) (int, error) {
	name := ls.name
	kt := nftables.TypeIPAddr
	if f == fam6 {
		kt = nftables.TypeIP6Addr
	}
	if cur == nil {
		s := &nftables.Set{Table: t, Name: name, KeyType: kt, Interval: ls.bits < 0}
		if err := c.AddSet(s, nil); err != nil {
			return 0, fmt.Errorf("add set %s: %w", name, err)
		}
		return len(want) + 1, addElems(c, s, ls, want)
	}
	if prev != nil && slices.IsSortedFunc(prev, comparePrefix) && slices.IsSortedFunc(want, comparePrefix) {
		// Both sorted (MergePrefixes): one merge walk, no maps (a
		// 1,000,000-prefix list changes in milliseconds per tenant).
		var add, gone []netip.Prefix
		i, j := 0, 0
		for i < len(prev) || j < len(want) {
			switch {
			case j == len(want) || i < len(prev) && comparePrefix(prev[i], want[j]) < 0:
				gone = append(gone, prev[i])
				i++
			case i == len(prev) || comparePrefix(prev[i], want[j]) > 0:
				add = append(add, want[j])
				j++
			default:
				i, j = i+1, j+1
			}
		}
		if err := delElems(c, cur, elementsOf(ls, gone)); err != nil {
			return 0, err
		}
		return len(gone) + len(add), addElems(c, cur, ls, add)
	}
	have := map[netip.Prefix]bool{}
	var foreign []nftables.SetElement
	if prev != nil {
		for _, p := range prev {
			have[p] = true
		}
	} else {
		elems, err := c.GetSetElements(cur)
		if err != nil {
			return 0, fmt.Errorf("dump set %s: %w", name, err)
		}
		if have, foreign, err = readList(ls, elems); err != nil {
			return 0, fmt.Errorf("parse set %s: %w", name, err)
		}
	}
	wantSet := make(map[netip.Prefix]bool, len(want))
	var add []netip.Prefix
	for _, p := range want {
		wantSet[p] = true
		if !have[p] {
			add = append(add, p)
		}
	}
	var gone []netip.Prefix
	for p := range have {
		if !wantSet[p] {
			gone = append(gone, p)
		}
	}
	del := append(elementsOf(ls, gone), foreign...)
	if err := delElems(c, cur, del); err != nil {
		return 0, err
	}
	return len(gone) + len(foreign) + len(add), addElems(c, cur, ls, add)
}

// readList turns a list set's elements back into prefixes; foreign holds
// the elements no prefix of the set's kind accounts for (someone's edit),
// as elements to delete.
func readList(ls listSet, elems []nftables.SetElement) (map[netip.Prefix]bool, []nftables.SetElement, error) {
	have := make(map[netip.Prefix]bool, len(elems))
	var foreign []nftables.SetElement
	if ls.bits >= 0 {
		for _, e := range elems {
			a, ok := netip.AddrFromSlice(e.Key)
			if p := netip.PrefixFrom(a, ls.bits); ok && p.Masked() == p {
				have[p] = true
			} else {
				foreign = append(foreign, nftables.SetElement{Key: e.Key})
			}
		}
		return have, foreign, nil
	}
	ivs, err := nftset.Intervals(elems)
	if err != nil {
		return nil, nil, err
	}
	for _, iv := range ivs {
		if p, ok := iv.Prefix(); ok {
			have[p] = true
			continue
		}
		foreign = append(foreign, nftables.SetElement{Key: iv.Start.AsSlice()})
		if nx := iv.End.Next(); nx.IsValid() {
			foreign = append(foreign, nftables.SetElement{Key: nx.AsSlice(), IntervalEnd: true})
		}
	}
	return have, foreign, nil
}

// elementsOf returns the elements of ps in a set of kind ls: one masked
// address per prefix in a hash set, a start and an end in an interval set.
func elementsOf(ls listSet, ps []netip.Prefix) []nftables.SetElement {
	if ls.bits >= 0 {
		out := make([]nftables.SetElement, len(ps))
		if len(ps) == 0 {
			return out
		}
		// One backing array for the keys: 100,000 small allocations
		// were a quarter of a fresh apply's own time.
		n := ps[0].Addr().BitLen() / 8
		keys := make([]byte, n*len(ps))
		for i, p := range ps {
			k := keys[i*n : (i+1)*n : (i+1)*n]
			if n == 4 {
				a := p.Masked().Addr().As4()
				copy(k, a[:])
			} else {
				a := p.Masked().Addr().As16()
				copy(k, a[:])
			}
			out[i].Key = k
		}
		return out
	}
	out := make([]nftables.SetElement, 0, 2*len(ps))
	for _, p := range ps {
		out = append(out, nftset.Elements(p, nil)...)
	}
	return out
}

func addElems(c *nftables.Conn, s *nftables.Set, ls listSet, ps []netip.Prefix) error {
	elems := elementsOf(ls, ps)
	for i := 0; i < len(elems); i += elemChunk {
		if err := c.SetAddElements(s, elems[i:min(i+elemChunk, len(elems))]); err != nil {
			return fmt.Errorf("add elements to %s: %w", s.Name, err)
		}
	}
	return nil
}

func delElems(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	for i := 0; i < len(elems); i += elemChunk {
		if err := c.SetDeleteElements(s, elems[i:min(i+elemChunk, len(elems))]); err != nil {
			return fmt.Errorf("delete elements of %s: %w", s.Name, err)
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
func layout(spec *fwspec.Spec, lists map[string]listSet) []chainLayout {
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
	var logChains []chainLayout
	shadows := make([]shadowSet, len(dispatch))
	items := make([][]item, len(dispatch))
	for _, r := range spec.Rules {
		nrs := expand(r)
		hash := ""
		tag := func(i int) string {
			if hash == "" {
				hash = ruleHash(r, lists)
			}
			return ruleTagOf(r.ID, i, hash)
		}
		for j, d := range dispatch {
			var fit []int
			inChain := make([]nftRule, len(nrs))
			for i, nr := range nrs {
				if (nr.fam == famAny || nr.fam == d.fam) && protoFits(protoConstraint(nr.lits), d.proto, d.fam) {
					lits, ok, always := forChain(nr.lits, d.proto, d.fam)
					if !ok {
						continue
					}
					inChain[i] = nftRule{fam: nr.fam, lits: lits}
					if always {
						fit = []int{i} // always true here: the others add nothing
						break
					}
					fit = append(fit, i)
				}
			}
			// Alternatives an earlier allow or block alternative of this
			// chain covers never match first: they are left out (their
			// counter stays where first-match semantics put it, at 0 for
			// those packets).
			kept := fit[:0]
			lis := make([][]litInfo, len(inChain))
			for _, i := range fit {
				lis[i] = infos(inChain[i].lits)
				if !shadows[j].covers(lis[i]) {
					kept = append(kept, i)
				}
			}
			fit = kept
			if len(fit) == 0 {
				continue
			}
			if r.Action != fwspec.Log {
				for _, i := range fit {
					shadows[j].add(lis[i])
				}
			}
			nrs := inChain
			if r.Action == fwspec.Log && len(fit) > 1 {
				// A log rule whose alternatives overlap would count a packet
				// once per alternative: its alternatives go into a chain of
				// their own, each ending with return, so the first match
				// counts and the packet goes on to the next rule.
				name := logChainName(r.ID, d.name)
				lc := chainLayout{name: name}
				for _, i := range fit {
					lc.entries = append(lc.entries, ruleEntry(tag(i), r, nrs[i], d.fam, d.proto, &expr.Verdict{Kind: expr.VerdictReturn}))
				}
				logChains = append(logChains, lc)
				items[j] = append(items[j], item{e: entry{tagPrefix + "jump-" + name, fixed(&expr.Verdict{Kind: expr.VerdictJump, Chain: name})}})
				continue
			}
			for _, i := range fit {
				var v expr.Any
				switch r.Action {
				case fwspec.Allow:
					v = &expr.Verdict{Kind: expr.VerdictAccept}
				case fwspec.Block:
					v = &expr.Verdict{Kind: expr.VerdictDrop}
				}
				it := item{e: ruleEntry(tag(i), r, nrs[i], d.fam, d.proto, v)}
				if v != nil {
					it.key, it.ivs, it.keyed = groupKey(nrs[i].lits, d.fam, d.proto)
					it.rule, it.alt, it.verdict = r, i, v
				}
				items[j] = append(items[j], it)
			}
		}
	}
	var merged []chainLayout
	seen := map[string]bool{}
	for j, d := range dispatch {
		var extra []chainLayout
		subs[j].entries, extra = mergeChain(d.name, d.fam, d.proto, items[j])
		for _, lc := range extra {
			if !seen[lc.name] { // shared per-rule chains come once
				seen[lc.name] = true
				merged = append(merged, lc)
			}
		}
	}
	return append(append(append(out, subs...), logChains...), merged...)
}

// shadowSet holds the terminal alternatives of a chain so far, to find
// later alternatives they cover. Literals are kept as litInfo: their text
// and range computed once, not once per comparison (layout runs on every
// apply, and covers is quadratic in a chain's rules).
type shadowSet struct {
	bits  map[string]uint64 // field name -> bit
	alts  [][]litInfo
	masks []uint64
}

// litInfo is what implies needs of a literal.
type litInfo struct {
	neg   bool
	text  string      // the atom's text
	field *lang.Field // nil unless a field comparison
	r     [2]uint64   // the integer range it accepts, if hasR
	hasR  bool
}

func infos(lits []lang.Literal) []litInfo {
	out := make([]litInfo, len(lits))
	for i, l := range lits {
		out[i] = litInfo{neg: l.Neg, text: l.Atom.String(), field: atomField(l.Atom)}
		out[i].r, out[i].hasR = intRange(l)
	}
	return out
}

func (s *shadowSet) mask(lits []litInfo) (uint64, bool) {
	if s.bits == nil {
		s.bits = map[string]uint64{}
	}
	var m uint64
	for _, l := range lits {
		name := l.text // payload and others: their text
		if l.field != nil {
			name = l.field.Name
		}
		b, ok := s.bits[name]
		if !ok {
			if len(s.bits) == 64 {
				return 0, false
			}
			b = 1 << len(s.bits)
			s.bits[name] = b
		}
		m |= b
	}
	return m, true
}

func (s *shadowSet) add(li []litInfo) {
	if m, ok := s.mask(li); ok {
		s.alts, s.masks = append(s.alts, li), append(s.masks, m)
	}
}

// covers reports whether every packet matching li matches an earlier
// terminal alternative: one whose every literal is implied by one of lits.
func (s *shadowSet) covers(li []litInfo) bool {
	if len(s.alts) == 0 {
		return false
	}
	m, ok := s.mask(li)
	if !ok {
		return false
	}
	for k, y := range s.alts {
		if s.masks[k]&^m != 0 {
			continue // y tests a field lits does not
		}
		all := true
		for _, yl := range y {
			found := false
			for _, xl := range li {
				if implies(xl, yl) {
					found = true
					break
				}
			}
			if !found {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// implies reports whether literal x implies literal y: the same condition,
// or integer comparisons of one field whose ranges nest.
func implies(x, y litInfo) bool {
	if x.neg == y.neg && x.text == y.text {
		return true
	}
	return x.hasR && y.hasR && x.field == y.field && y.r[0] <= x.r[0] && x.r[1] <= y.r[1]
}

// intRange is the range of values an integer comparison accepts.
func intRange(l lang.Literal) ([2]uint64, bool) {
	x, ok := l.Atom.(*lang.Cmp)
	if !ok || x.Field.Type != lang.TypeInt {
		return [2]uint64{}, false
	}
	op, v, max := x.Op, x.Val.Int, x.Field.Max
	if l.Neg {
		op = op.Negate()
	}
	switch op {
	case lang.OpEq:
		return [2]uint64{v, v}, true
	case lang.OpLt:
		if v == 0 {
			return [2]uint64{}, false
		}
		return [2]uint64{0, v - 1}, true
	case lang.OpLe:
		return [2]uint64{0, v}, true
	case lang.OpGt:
		if v >= max {
			return [2]uint64{}, false
		}
		return [2]uint64{v + 1, max}, true
	case lang.OpGe:
		return [2]uint64{v, max}, true
	}
	return [2]uint64{}, false
}

// logChainPrefix starts the names of the per-rule chains of log rules.
const logChainPrefix = "log_"

func logChainName(id, sub string) string { return logChainPrefix + id + "_" + sub }

// ruleEntry is one alternative of a rule in a chain of family fam and L4
// protocol proto, counting into the rule's counter and ending with
// verdict (nil: none).
func ruleEntry(tag string, r fwspec.CompiledRule, nr nftRule, fam family, proto int, verdict expr.Any) entry {
	return entry{tag, func(b *builder) ([]expr.Any, error) {
		// The family test is redundant in a family chain but lets
		// `nft list` print ip saddr instead of @nh,96,32.
		exprs, err := b.exprs(nr, fam, proto)
		if err != nil {
			return nil, fmt.Errorf("compile rule %s: %w", r.ID, err)
		}
		exprs = append(exprs, &expr.Objref{Type: counterType, Name: counterName(r.ID)})
		if verdict != nil {
			exprs = append(exprs, verdict)
		}
		return exprs, nil
	}}
}

// forChain simplifies a conjunction for the dispatch chain of protocol
// proto (-1: the family's other protocols): tests of ip.proto and of
// fields of a protocol the chain's packets do not have are constant there
// (true literals are dropped, except a test of the chain's own protocol,
// which lets `nft list` print "udp sport" rather than "@th,0,16"; ok is
// false if one is false; always says every literal is true here).
func forChain(lits []lang.Literal, proto int, fam family) (out []lang.Literal, ok, always bool) {
	icmp := uint64(unix.IPPROTO_ICMP)
	if fam == fam6 {
		icmp = unix.IPPROTO_ICMPV6
	}
	known := map[uint64]bool{unix.IPPROTO_TCP: true, unix.IPPROTO_UDP: true, icmp: true}
	// has says whether the chain's packets are of protocol p: 1 yes, 0 no,
	// -1 unknown (the other chain, p not one of the dispatched protocols).
	has := func(p uint64) int {
		switch {
		case proto >= 0 && uint64(proto) == p:
			return 1
		case proto >= 0 || known[p]:
			return 0
		}
		return -1
	}
	always = true
	for _, l := range lits {
		val := -1 // the literal's constant value here, -1: not constant
		switch x := l.Atom.(type) {
		case *lang.Cmp:
			if x.Field.Name == "ip.proto" && (x.Op == lang.OpEq || x.Op == lang.OpNe) {
				if h := has(x.Val.Int); h >= 0 {
					val = h
					if x.Op == lang.OpNe {
						val = 1 - h
					}
				}
			}
		case *lang.In:
			if x.Field.Name == "ip.proto" && proto >= 0 {
				val = 0
				if inInts(uint64(proto), x.Set) {
					val = 1
				}
			}
		}
		if f := atomField(l.Atom); val < 0 && f != nil {
			if ps := lang.ImpliedProto(f); ps != nil {
				absent := true
				for _, p := range ps {
					if has(p) != 0 {
						absent = false
					}
				}
				if absent {
					val = 0 // a field these packets do not carry: false
				}
			}
		}
		if val >= 0 {
			if (val == 1) == l.Neg {
				return nil, false, false
			}
			if f := atomField(l.Atom); !l.Neg && f.Name == "ip.proto" && !isNe(l.Atom) {
				out = append(out, l)
			}
			continue
		}
		always = false
		out = append(out, l)
	}
	return out, true, always
}

func isNe(e lang.Expr) bool {
	x, ok := e.(*lang.Cmp)
	return ok && x.Op == lang.OpNe
}

func atomField(e lang.Expr) *lang.Field {
	switch x := e.(type) {
	case *lang.Cmp:
		return x.Field
	case *lang.In:
		return x.Field
	case *lang.Flag:
		return x.Field
	}
	return nil
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
