package routing

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/owned"
)

// skeletonVersion tags nfhost's rules (rule userdata). A different or
// missing tag means the table was written by another version or edited by
// hand, and the skeleton is rebuilt in one transaction.
//
// v2: map values are in network byte order and the rules convert them to
// host order for meta mark (v1 stored host order; see markBytes).
const skeletonVersion = "nfhost-routing-v2"

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
	// hostOrder holds the prefixes whose values load() found in v1's host
	// byte order; ensure() rewrites them.
	hostOrder []netip.Prefix
}

func newSteering(conn *nftables.Conn) *steering {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: owned.NFTTable}
	return &steering{
		conn:  conn,
		table: t,
		m4:    &nftables.Set{Table: t, Name: map4, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark, IsMap: true, Interval: true},
		m6:    &nftables.Set{Table: t, Name: map6, KeyType: nftables.TypeIP6Addr, DataType: nftables.TypeMark, IsMap: true, Interval: true},
		marks: map[netip.Prefix]uint32{},
	}
}

// markBytes encodes a mark as a map value: in network byte order.
//
// meta mark takes the register in host byte order, and the kernel never
// looks at the map's declared types. nft, however, prints a map's values in
// the byte order recorded in the set's userdata (NFTNL_UDATA_SET_DATABYTEORDER)
// and, without that record, as big-endian; google/nftables cannot write the
// record (google/nftables#355), so host-order values showed byte-swapped
// (0x01f2666e for fwmark 0x6e66f201). So the values are stored as nft reads
// them, an element added with the nft CLI is encoded the same way, and each
// rule converts the looked-up value with one ntoh before setting the mark.
func markBytes(m uint32) []byte { return binaryutil.BigEndian.PutUint32(m) }

// decodeMark reads a map value. Marks in nfhost's range have "nf" in the
// upper half, which tells the two encodings apart: a value that is in
// range only when read in host byte order was written by v1 (or by an
// older nsd since) and must be rewritten. Values in neither form are
// returned as read (they belong to no slot and are garbage-collected).
func decodeMark(b []byte) (mark uint32, hostOrder bool) {
	if be := binaryutil.BigEndian.Uint32(b); ownedMark(be) {
		return be, false
	}
	if he := binaryutil.NativeEndian.Uint32(b); ownedMark(he) {
		// On a big-endian host he == be and this is not reached.
		return he, true
	}
	return binaryutil.BigEndian.Uint32(b), false
}

func ownedMark(m uint32) bool { return m&^owned.MaxSlot == owned.SlotBase && m&owned.MaxSlot != 0 }

func (s *steering) set(p netip.Prefix) *nftables.Set {
	if p.Addr().Is4() {
		return s.m4
	}
	return s.m6
}

// ensure checks the table skeleton and rebuilds it atomically when it is
// missing or not ours; existing map elements are carried over (values in
// v1's byte order converted on the way). It then loads the map contents
// into s.marks and rewrites, in one batch, any element still in v1's byte
// order. It reports whether it rebuilt and how many elements it rewrote.
func (s *steering) ensure() (rebuilt bool, rewritten int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok, exists, err := s.skeletonOK()
	if err != nil {
		return false, 0, err
	}
	if !ok {
		var keep4, keep6 []nftables.SetElement
		if exists {
			// Carry the elements over. A map that is gone has none; any
			// other failed read stops the rebuild, which would otherwise
			// recreate the maps empty and cut every tenant off.
			for _, m := range []struct {
				set  *nftables.Set
				keep *[]nftables.SetElement
			}{{s.m4, &keep4}, {s.m6, &keep6}} {
				els, err := s.conn.GetSetElements(m.set)
				if err != nil && !errors.Is(err, unix.ENOENT) {
					return false, 0, fmt.Errorf("read %s before rebuilding table %s: %w", m.set.Name, owned.NFTTable, err)
				}
				*m.keep = els
			}
			s.conn.DelTable(s.table)
		}
		s.addSkeleton()
		for _, c := range []struct {
			set  *nftables.Set
			keep []nftables.SetElement
		}{{s.m4, keep4}, {s.m6, keep6}} {
			if len(c.keep) == 0 {
				continue
			}
			for i, e := range c.keep {
				if len(e.Val) == 4 {
					m, _ := decodeMark(e.Val)
					c.keep[i].Val = markBytes(m)
				}
			}
			if err := s.conn.SetAddElements(c.set, c.keep); err != nil {
				return false, 0, fmt.Errorf("carry over %s elements: %w", c.set.Name, err)
			}
		}
		if err := s.conn.Flush(); err != nil {
			return false, 0, fmt.Errorf("write nft table %s: %w", owned.NFTTable, err)
		}
		rebuilt = true
	}
	if err := s.load(); err != nil {
		return rebuilt, 0, err
	}
	if len(s.hostOrder) == 0 {
		return rebuilt, 0, nil
	}
	// Delete and re-add in one transaction: the element is never missing.
	for _, p := range s.hostOrder {
		if err := s.conn.SetDeleteElements(s.set(p), nftset.Elements(p, nil)); err != nil {
			return rebuilt, 0, fmt.Errorf("delete map element %s: %w", p, err)
		}
		if err := s.conn.SetAddElements(s.set(p), nftset.Elements(p, markBytes(s.marks[p]))); err != nil {
			return rebuilt, 0, fmt.Errorf("add map element %s: %w", p, err)
		}
	}
	if err := s.conn.Flush(); err != nil {
		lerr := s.load()
		return rebuilt, 0, fmt.Errorf("rewrite nft map elements in network byte order: %w (reload: %v)", err, lerr)
	}
	rewritten, s.hostOrder = len(s.hostOrder), nil
	return rebuilt, rewritten, nil
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

// rules: meta mark set ip daddr map @tenant_marks4 / ip6 daddr map @tenant_marks6,
// with the value converted from network to host byte order (markBytes).
// A lookup miss ends the rule, so packets to other destinations keep their mark.
func (s *steering) rules(ch *nftables.Chain) []*nftables.Rule {
	mk := func(proto byte, set *nftables.Set, off, l uint32, tag string) *nftables.Rule {
		return &nftables.Rule{Table: s.table, Chain: ch, UserData: []byte(skeletonVersion + ":" + tag), Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: set.Name, SetID: set.ID},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderNtoh, Len: 4, Size: 4},
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
		if t.Name == owned.NFTTable {
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
		if ch.Table.Name != owned.NFTTable {
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
	var hostOrder []netip.Prefix
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
			m, old := decodeMark(iv.Val)
			marks[p] = m
			if old {
				hostOrder = append(hostOrder, p)
			}
		}
	}
	s.marks, s.foreign, s.hostOrder = marks, foreign, hostOrder
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
