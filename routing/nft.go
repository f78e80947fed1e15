package routing

import (
	"bytes"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/routing/nftset"
)

// skeletonVersion tags nfhost's rules (rule userdata). A different or
// missing tag means the table was written by another version or edited by
// hand, and the skeleton is rebuilt in one transaction.
const skeletonVersion = "nfhost-routing-v1"

const (
	map4 = "tenant_marks4"
	map6 = "tenant_marks6"
)

// steering owns the "inet nfhost" table in the host namespace: two interval
// maps from destination address to mark, consulted in prerouting (forwarded
// traffic) and output (traffic the host itself sends).
type steering struct {
	mu    sync.Mutex
	conn  *nftables.Conn
	table *nftables.Table
	m4    *nftables.Set
	m6    *nftables.Set
	// marks mirrors the map contents: prefix → mark. It is loaded by load()
	// and updated after every successful batch, so a single tenant's change
	// is diffed without dumping the whole map.
	marks map[netip.Prefix]uint32
	// foreign holds intervals that are not a single prefix (written by
	// someone else); load() reports them and sync removes them.
	foreign []nftset.Interval
}

func newSteering(conn *nftables.Conn) *steering {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: NFTTable}
	return &steering{
		conn:  conn,
		table: t,
		m4:    &nftables.Set{Table: t, Name: map4, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark, IsMap: true, Interval: true},
		m6:    &nftables.Set{Table: t, Name: map6, KeyType: nftables.TypeIP6Addr, DataType: nftables.TypeMark, IsMap: true, Interval: true},
		marks: map[netip.Prefix]uint32{},
	}
}

func markBytes(m uint32) []byte { return binaryutil.NativeEndian.PutUint32(m) }

func (s *steering) set(p netip.Prefix) *nftables.Set {
	if p.Addr().Is4() {
		return s.m4
	}
	return s.m6
}

// ensure checks the table skeleton and rebuilds it atomically when it is
// missing or not ours; existing map elements are carried over. It then loads
// the map contents into s.marks. It reports whether it rebuilt.
func (s *steering) ensure() (rebuilt bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, exists, err := s.skeletonOK()
	if err != nil {
		return false, err
	}
	if !ok {
		var keep4, keep6 []nftables.SetElement
		if exists {
			// Carry elements over if the maps still have our types.
			keep4, _ = s.conn.GetSetElements(s.m4)
			keep6, _ = s.conn.GetSetElements(s.m6)
			s.conn.DelTable(s.table)
		}
		s.addSkeleton()
		if len(keep4) > 0 {
			if err := s.conn.SetAddElements(s.m4, keep4); err != nil {
				return false, fmt.Errorf("carry over ipv4 map elements: %w", err)
			}
		}
		if len(keep6) > 0 {
			if err := s.conn.SetAddElements(s.m6, keep6); err != nil {
				return false, fmt.Errorf("carry over ipv6 map elements: %w", err)
			}
		}
		if err := s.conn.Flush(); err != nil {
			return false, fmt.Errorf("write nft table %s: %w", NFTTable, err)
		}
		rebuilt = true
	}
	return rebuilt, s.load()
}

func (s *steering) addSkeleton() {
	s.conn.AddTable(s.table)
	s.conn.AddSet(s.m4, nil)
	s.conn.AddSet(s.m6, nil)
	pre := s.conn.AddChain(&nftables.Chain{Name: "prerouting", Table: s.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
	out := s.conn.AddChain(&nftables.Chain{Name: "output", Table: s.table, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle})
	for _, ch := range []*nftables.Chain{pre, out} {
		for _, r := range s.rules(ch) {
			s.conn.AddRule(r)
		}
	}
}

// rules: meta mark set ip daddr map @tenant_marks4 / ip6 daddr map @tenant_marks6.
// A lookup miss ends the rule, so packets to other destinations keep their mark.
func (s *steering) rules(ch *nftables.Chain) []*nftables.Rule {
	mk := func(proto byte, set *nftables.Set, off, l uint32, tag string) *nftables.Rule {
		return &nftables.Rule{Table: s.table, Chain: ch, UserData: []byte(skeletonVersion + ":" + tag), Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		}}
	}
	return []*nftables.Rule{
		mk(unix.NFPROTO_IPV4, s.m4, 16, 4, "mark4"),
		mk(unix.NFPROTO_IPV6, s.m6, 24, 16, "mark6"),
	}
}

// skeletonOK compares chains and rule tags with what addSkeleton writes.
func (s *steering) skeletonOK() (ok, exists bool, err error) {
	tables, err := s.conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, false, fmt.Errorf("list nft tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == NFTTable {
			exists = true
		}
	}
	if !exists {
		return false, false, nil
	}
	sets, err := s.conn.GetSets(s.table)
	if err != nil {
		return false, true, fmt.Errorf("list nft sets: %w", err)
	}
	setOK := map[string]bool{}
	for _, st := range sets {
		if st.IsMap && st.Interval && (st.Name == map4 && st.KeyType.Name == nftables.TypeIPAddr.Name ||
			st.Name == map6 && st.KeyType.Name == nftables.TypeIP6Addr.Name) && st.DataType.Name == nftables.TypeMark.Name {
			setOK[st.Name] = true
		}
	}
	if len(sets) != 2 || !setOK[map4] || !setOK[map6] {
		return false, true, nil
	}
	chains, err := s.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, true, fmt.Errorf("list nft chains: %w", err)
	}
	want := map[string]bool{"prerouting": true, "output": true}
	n := 0
	for _, ch := range chains {
		if ch.Table.Name != NFTTable {
			continue
		}
		n++
		if !want[ch.Name] {
			return false, true, nil
		}
		rules, err := s.conn.GetRules(s.table, ch)
		if err != nil {
			return false, true, fmt.Errorf("list nft rules: %w", err)
		}
		exp := s.rules(ch)
		if len(rules) != len(exp) {
			return false, true, nil
		}
		for i := range rules {
			if !bytes.Equal(rules[i].UserData, exp[i].UserData) {
				return false, true, nil
			}
		}
	}
	return n == len(want), true, nil
}

// load dumps both maps into s.marks. Caller holds s.mu.
func (s *steering) load() error {
	marks := map[netip.Prefix]uint32{}
	var foreign []nftset.Interval
	for _, set := range []*nftables.Set{s.m4, s.m6} {
		elems, err := s.conn.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("dump nft map %s: %w", set.Name, err)
		}
		ivs, err := nftset.Intervals(elems)
		if err != nil {
			return fmt.Errorf("parse nft map %s: %w", set.Name, err)
		}
		for _, iv := range ivs {
			p, ok := iv.Prefix()
			if !ok || len(iv.Val) != 4 {
				foreign = append(foreign, iv)
				continue
			}
			marks[p] = binaryutil.NativeEndian.Uint32(iv.Val)
		}
	}
	s.marks, s.foreign = marks, foreign
	return nil
}

// sync makes the map entries carrying mark equal want, in one batch.
// It returns a description of each change.
func (s *steering) sync(mark uint32, want []netip.Prefix) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wantSet := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wantSet[p] = true
	}
	var changes []string
	var del, add []netip.Prefix
	for p, m := range s.marks {
		if m == mark && !wantSet[p] {
			del = append(del, p)
		}
	}
	for _, p := range want {
		if m, ok := s.marks[p]; !ok || m != mark {
			if ok {
				del = append(del, p) // held by another mark: replace
			}
			add = append(add, p)
		}
	}
	if len(del) == 0 && len(add) == 0 {
		return nil, nil
	}
	for _, p := range del {
		if err := s.conn.SetDeleteElements(s.set(p), nftset.Elements(p, nil)); err != nil {
			return nil, fmt.Errorf("delete map element %s: %w", p, err)
		}
		changes = append(changes, fmt.Sprintf("nft: del %s", p))
	}
	for _, p := range add {
		if err := s.conn.SetAddElements(s.set(p), nftset.Elements(p, markBytes(mark))); err != nil {
			return nil, fmt.Errorf("add map element %s: %w", p, err)
		}
		changes = append(changes, fmt.Sprintf("nft: add %s -> %#x", p, mark))
	}
	if err := s.conn.Flush(); err != nil {
		// The batch failed as a whole; reload so the mirror matches the kernel.
		lerr := s.load()
		return nil, fmt.Errorf("update nft maps: %w (reload: %v)", err, lerr)
	}
	for _, p := range del {
		delete(s.marks, p)
	}
	for _, p := range add {
		s.marks[p] = mark
	}
	return changes, nil
}

// gc deletes entries whose mark is not in keep, and foreign intervals.
func (s *steering) gc(keep map[uint32]bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var changes []string
	var del []netip.Prefix
	for p, m := range s.marks {
		if !keep[m] {
			del = append(del, p)
		}
	}
	for _, p := range del {
		if err := s.conn.SetDeleteElements(s.set(p), nftset.Elements(p, nil)); err != nil {
			return nil, fmt.Errorf("delete map element %s: %w", p, err)
		}
		changes = append(changes, fmt.Sprintf("nft: gc %s", p))
	}
	for _, iv := range s.foreign {
		set := s.m6
		if iv.Start.Is4() {
			set = s.m4
		}
		els := []nftables.SetElement{{Key: iv.Start.AsSlice()}}
		if n := iv.End.Next(); n.IsValid() {
			els = append(els, nftables.SetElement{Key: n.AsSlice(), IntervalEnd: true})
		}
		if err := s.conn.SetDeleteElements(set, els); err != nil {
			return nil, fmt.Errorf("delete foreign interval %s-%s: %w", iv.Start, iv.End, err)
		}
		changes = append(changes, fmt.Sprintf("nft: gc interval %s-%s", iv.Start, iv.End))
	}
	if len(changes) == 0 {
		return nil, nil
	}
	if err := s.conn.Flush(); err != nil {
		lerr := s.load()
		return nil, fmt.Errorf("gc nft maps: %w (reload: %v)", err, lerr)
	}
	for _, p := range del {
		delete(s.marks, p)
	}
	s.foreign = nil
	return changes, nil
}
