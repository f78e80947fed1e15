package dos

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// Writer applies States to the maps, writing only what differs from the
// State it wrote last. Its first write compares with what the pinned maps
// already hold (a restarted nsd changes nothing that is right).
//
// Order matters because the program reads the maps while they change: a
// signature whose index changes meaning is first switched off in every
// destination entry (the classifier starts from that bitmap), then its
// field bits, metadata and counters are written, and the final
// destination entries come last. A packet therefore sees a signature
// either whole or not at all.
type Writer struct {
	o    *dosBPFObjects
	last *State
	// src24 is the /24 table last written (nil: read it from the map).
	src24 []uint64
	// Writes counts the map entries written or deleted by the last Write.
	Writes int
}

// NewWriter returns a Writer for loaded objects.
func NewWriter(o *dosBPFObjects) *Writer { return &Writer{o: o} }

// Last is the State most recently written (nil before the first Write).
func (w *Writer) Last() *State { return w.last }

// Write applies s, in the order the type's documentation explains.
func (w *Writer) Write(s *State) error {
	o := w.o
	w.Writes = 0
	old := w.last
	if old == nil {
		var err error
		if old, err = w.observe(); err != nil {
			return err
		}
	}
	if changed := w.changedSigs(old, s); changed != (bitmap{}) {
		if err := w.switchOff(old, changed); err != nil {
			return err
		}
	}
	if err := w.keepCounters(old, s); err != nil {
		return err
	}
	if err := w.writeSigs(old, s); err != nil {
		return err
	}
	if err := w.writeRates(old, s); err != nil {
		return err
	}
	if err := w.writeNames(old, s); err != nil {
		return err
	}
	if err := w.writeLists(old, s); err != nil {
		return err
	}
	// Last, what switches the signatures on: the settings' defaults and
	// the final destination entries.
	set := dosBPFSettings{Nsigs: uint32(len(s.Sigs)), SampleRate: s.SampleRate, NeedsSrc: s.Tables.NeedsSrc, DstV4: s.DstV4, DstV6: s.DstV6}
	if err := o.NfhSettings.Put(uint32(0), set); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	if err := w.writeTCP(old, s); err != nil {
		return err
	}
	if err := syncTrie(w, o.NfhDst, o.NfhDst4, s.Dst, old.Dst, true); err != nil {
		return err
	}
	w.last = s
	return nil
}

// changedSigs returns the signature indexes whose meaning changes from old
// to s. On the first write old was read back from the maps, which hold a
// signature's name, metadata and table columns but not its match: one that
// agrees on those is taken as unchanged, and old records it as s's.
func (w *Writer) changedSigs(old, s *State) bitmap {
	var changed bitmap
	var cols bitmap // read back from the maps: columns whose tables differ
	if w.last == nil {
		cols = columnDiff(old.Tables, s.Tables)
	}
	for i := 0; i < dosspec.MaxSignatures; i++ {
		var a, b SigState
		if i < len(old.Sigs) {
			a = old.Sigs[i]
		}
		if i < len(s.Sigs) {
			b = s.Sigs[i]
		}
		if w.last == nil && i < len(old.Sigs) && i < len(s.Sigs) && sameObserved(a, b) && !cols.has(i) {
			old.Sigs[i] = b // the maps already hold exactly b
			continue
		}
		if a != b {
			changed.set(i)
		}
	}
	return changed
}

// switchOff clears the changed signatures' bits in every destination
// entry old holds and in the settings' defaults, so that no packet is
// classified with a half-written signature; old.Dst becomes what the maps
// then hold.
func (w *Writer) switchOff(old *State, changed bitmap) error {
	o := w.o
	off := map[netip.Prefix]dosBPFDstInfo{}
	for k, v := range old.Dst {
		for i := range v.Sigs.W {
			v.Sigs.W[i] &^= changed.W[i]
		}
		off[k] = v
	}
	if err := syncTrie(w, o.NfhDst, o.NfhDst4, off, old.Dst, false); err != nil {
		return err
	}
	old.Dst = off
	var set dosBPFSettings
	if err := o.NfhSettings.Lookup(uint32(0), &set); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	for i := range changed.W {
		set.DstV4.W[i] &^= changed.W[i]
		set.DstV6.W[i] &^= changed.W[i]
	}
	if err := o.NfhSettings.Put(uint32(0), set); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// keepCounters makes the signature, rate-rule and tenant counters follow
// their ID to its new index.
func (w *Writer) keepCounters(old, s *State) error {
	o := w.o
	if err := moveCounters(w, o.NfhSigCounters, ids(old.Sigs, func(s SigState) string { return s.ID }), ids(s.Sigs, func(s SigState) string { return s.ID })); err != nil {
		return err
	}
	if err := moveCounters(w, o.NfhRateCounters, ids(old.Rates, func(r RateState) string { return r.ID }), ids(s.Rates, func(r RateState) string { return r.ID })); err != nil {
		return err
	}
	return moveCounters(w, o.NfhTenantCounters, tenantIDs(old.Tenants), tenantIDs(s.Tenants))
}

// writeSigs writes the classifier tables, the source trie and the
// metadata of the signatures that differ.
func (w *Writer) writeSigs(old, s *State) error {
	o := w.o
	want, have := s.Tables.arrays(), old.Tables.arrays()
	for i, m := range o.sigArrays() {
		if err := writeArray(w, m, want[i], have[i]); err != nil {
			return err
		}
	}
	if err := syncTrie(w, o.NfhSigSrc, o.NfhSigSrc4, s.Tables.Src, old.Tables.Src, true); err != nil {
		return err
	}
	for i, sg := range s.Sigs {
		if i < len(old.Sigs) && old.Sigs[i] == sg {
			continue
		}
		meta := sg.Meta
		if !sg.Expires.IsZero() {
			meta.ExpiresNs = bootNanos(sg.Expires)
		}
		if err := o.NfhSigMeta.Put(uint32(i), meta); err != nil {
			return fmt.Errorf("write signature %s metadata: %w", sg.ID, err)
		}
		w.Writes++
	}
	return nil
}

func (w *Writer) writeRates(old, s *State) error {
	for i, r := range s.Rates {
		if i < len(old.Rates) && old.Rates[i] == r {
			continue
		}
		if err := w.o.NfhRateRules.Put(uint32(i), r.Rule); err != nil {
			return fmt.Errorf("write rate limit %s: %w", r.ID, err)
		}
		w.Writes++
	}
	return nil
}

// writeLists writes the global source lists (trie and /24 table) and the
// tenants' lists.
func (w *Writer) writeLists(old, s *State) error {
	o := w.o
	before := w.Writes
	if err := syncTrie(w, o.NfhSrcLists, o.NfhSrcLists4, verdicts(s.Lists), verdicts(old.Lists), true); err != nil {
		return err
	}
	// The /24 table follows the trie (which is complete on its own): it
	// is recomputed only when the lists changed, or once per process.
	if w.Writes != before || w.src24 == nil {
		t := src24Table(s.Lists)
		if err := w.writeSrc24(t, w.src24); err != nil {
			return err
		}
		w.src24 = t
	}
	tw6, tw4 := splitTenant(tenantVerdicts(s.TenantLists))
	th6, th4 := splitTenant(tenantVerdicts(old.TenantLists))
	if err := syncMap(w, o.NfhTenantLists, tw6, th6, tenantKey, true); err != nil {
		return err
	}
	return syncMap(w, o.NfhTenantLists4, tw4, th4, tenantKey4, true)
}

// is4 says whether a trie-form prefix is IPv4 (IPv4-mapped, at least /96).
func is4(p netip.Prefix) bool { return p.Addr().Is4In6() && p.Bits() >= 96 }

// key6 and key4 are a trie-form prefix's key in the IPv6 and IPv4 tries.
func key6(p netip.Prefix) dosBPFLpmKey {
	return dosBPFLpmKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func key4(p netip.Prefix) dosBPFLpmKey4 {
	return dosBPFLpmKey4{Prefixlen: uint32(p.Bits() - 96), Addr: addr4(p.Addr())}
}

// addr4 is an IPv4 address as the C u32 in network order holds it.
func addr4(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return binary.LittleEndian.Uint32(b[:])
}

func split[K comparable, V any](m map[K]V, v4 func(K) bool) (six, four map[K]V) {
	six, four = map[K]V{}, map[K]V{}
	for k, v := range m {
		if v4(k) {
			four[k] = v
		} else {
			six[k] = v
		}
	}
	return six, four
}

func splitTenant(m map[TenantListKey]uint32) (six, four map[TenantListKey]uint32) {
	return split(m, func(k TenantListKey) bool { return is4(k.Prefix) })
}

// syncTrie syncs a trie pair from trie-form prefixes.
func syncTrie[V comparable](w *Writer, m6, m4 *ebpf.Map, want, have map[netip.Prefix]V, del bool) error {
	w6, w4 := split(want, is4)
	h6, h4 := split(have, is4)
	if err := syncMap(w, m6, w6, h6, key6, del); err != nil {
		return err
	}
	return syncMap(w, m4, w4, h4, key4, del)
}

func tenantKey(k TenantListKey) dosBPFTenantKey {
	return dosBPFTenantKey{Prefixlen: uint32(32 + k.Prefix.Bits()), Tenant: k.Tenant, Addr: k.Prefix.Addr().As16()}
}

func tenantKey4(k TenantListKey) dosBPFTenantKey4 {
	return dosBPFTenantKey4{Prefixlen: uint32(32 + k.Prefix.Bits() - 96), Tenant: k.Tenant, Addr: addr4(k.Prefix.Addr())}
}

func verdicts(m map[netip.Prefix]Verdict) map[netip.Prefix]uint32 {
	out := make(map[netip.Prefix]uint32, len(m))
	for k, v := range m {
		out[k] = uint32(v)
	}
	return out
}

func tenantVerdicts(m map[TenantListKey]Verdict) map[TenantListKey]uint32 {
	out := make(map[TenantListKey]uint32, len(m))
	for k, v := range m {
		out[k] = uint32(v)
	}
	return out
}

// syncMap makes a hash or trie map hold want, given that it holds have:
// changed entries are put, missing ones deleted (when del), in batches.
func syncMap[K comparable, KK any, V comparable](w *Writer, m *ebpf.Map, want, have map[K]V, key func(K) KK, del bool) error {
	var pk []KK
	var pv []V
	for k, v := range want {
		if hv, ok := have[k]; ok && hv == v {
			continue
		}
		pk = append(pk, key(k))
		pv = append(pv, v)
	}
	if err := batch(m, pk, pv); err != nil {
		return err
	}
	w.Writes += len(pk)
	if !del {
		return nil
	}
	var dk []KK
	for k := range have {
		if _, ok := want[k]; !ok {
			dk = append(dk, key(k))
		}
	}
	for _, k := range dk {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete from %s: %w", m, err)
		}
	}
	w.Writes += len(dk)
	return nil
}

// batch puts keys and values, with one system call per batch where the
// kernel supports it.
func batch[KK, V any](m *ebpf.Map, keys []KK, vals []V) error {
	if len(keys) > 1 {
		_, err := m.BatchUpdate(keys, vals, nil)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	for i := range keys {
		if err := m.Put(keys[i], vals[i]); err != nil {
			return fmt.Errorf("update %s: %w", m, err)
		}
	}
	return nil
}

// writeArray writes the entries of want that differ from have.
func writeArray[V comparable](w *Writer, m *ebpf.Map, want, have []V) error {
	var keys []uint32
	var vals []V
	for i := range want {
		if want[i] != have[i] {
			keys = append(keys, uint32(i))
			vals = append(vals, want[i])
		}
	}
	w.Writes += len(keys)
	return batch(m, keys, vals)
}

// arrays lists the classifier tables in the order of sigArrays.
func (t *Tables) arrays() [6][]bitmap {
	return [6][]bitmap{t.Proto[:], t.SPort[:], t.DPort[:], t.Len[:], t.TTL[:], t.L4[:]}
}

// sigArrays lists the classifier array maps in the order of arrays.
func (o *dosBPFObjects) sigArrays() [6]*ebpf.Map {
	return [6]*ebpf.Map{o.NfhSigProto, o.NfhSigSport, o.NfhSigDport, o.NfhSigLen, o.NfhSigTtl, o.NfhSigL4}
}

func ids[T any](xs []T, id func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = id(x)
	}
	return out
}

func tenantIDs(m map[uint32]string) []string {
	out := make([]string, MaxTenants)
	for i, id := range m {
		if i < MaxTenants {
			out[i] = id
		}
	}
	return out
}

// moveCounters keeps per-CPU counters with their ID when indexes change:
// an ID that moved takes its values along, an index that now holds a new
// ID starts from zero.
func moveCounters(w *Writer, m *ebpf.Map, oldIDs, newIDs []string) error {
	at := map[string]int{}
	for i, id := range oldIDs {
		if id != "" {
			at[id] = i
		}
	}
	type move struct {
		to   int
		vals []dosBPFRuleStats
	}
	var moves []move
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count CPUs: %w", err)
	}
	zero := make([]dosBPFRuleStats, ncpu)
	for i, id := range newIDs {
		if i < len(oldIDs) && oldIDs[i] == id {
			continue
		}
		vals := zero
		if j, ok := at[id]; ok && id != "" {
			var got []dosBPFRuleStats
			if err := m.Lookup(uint32(j), &got); err != nil {
				return fmt.Errorf("read %s[%d]: %w", m, j, err)
			}
			vals = got
		}
		moves = append(moves, move{i, vals})
	}
	for _, mv := range moves {
		if err := m.Put(uint32(mv.to), mv.vals); err != nil {
			return fmt.Errorf("write %s[%d]: %w", m, mv.to, err)
		}
		w.Writes++
	}
	return nil
}

func nameOf(s string) dosBPFName {
	var n dosBPFName
	copy(n.S[:], s)
	return n
}

// names layout (xdp_dos.c): tenants, then signatures, then rate rules.
const (
	namesSigs  = MaxTenants
	namesRates = MaxTenants + dosspec.MaxSignatures
)

func (w *Writer) writeNames(old, s *State) error {
	put := func(base, n int, o, nw []string) error {
		for i := 0; i < n; i++ {
			var a, b string
			if i < len(o) {
				a = o[i]
			}
			if i < len(nw) {
				b = nw[i]
			}
			if a == b {
				continue
			}
			if err := w.o.NfhNames.Put(uint32(base+i), nameOf(b)); err != nil {
				return fmt.Errorf("write name %q: %w", b, err)
			}
			w.Writes++
		}
		return nil
	}
	if err := put(0, MaxTenants, tenantIDs(old.Tenants), tenantIDs(s.Tenants)); err != nil {
		return err
	}
	if err := put(namesSigs, dosspec.MaxSignatures, ids(old.Sigs, func(s SigState) string { return s.ID }), ids(s.Sigs, func(s SigState) string { return s.ID })); err != nil {
		return err
	}
	return put(namesRates, MaxRateRules, ids(old.Rates, func(r RateState) string { return r.ID }), ids(s.Rates, func(r RateState) string { return r.ID }))
}

// observe reads what the (possibly pinned) maps hold into a State that
// Write can diff against: tries, hash entries, the classifier arrays,
// signature metadata and rate rules, and the names (so counters stay with
// their IDs across a restart). A restart with unchanged config therefore
// writes nothing, and never switches a signature off and on again.
func (w *Writer) observe() (*State, error) {
	o := w.o
	st := &State{Lists: map[netip.Prefix]Verdict{}, TenantLists: map[TenantListKey]Verdict{},
		Dst: map[netip.Prefix]dosBPFDstInfo{}, Tenants: map[uint32]string{}, Tables: &Tables{Src: map[netip.Prefix]bitmap{}}}
	if err := readTrie(o.NfhSrcLists, o.NfhSrcLists4, func(p netip.Prefix, v uint32) { st.Lists[p] = Verdict(v) }); err != nil {
		return nil, err
	}
	if err := readTrie(o.NfhDst, o.NfhDst4, func(p netip.Prefix, v dosBPFDstInfo) { st.Dst[p] = v }); err != nil {
		return nil, err
	}
	if err := readTrie(o.NfhSigSrc, o.NfhSigSrc4, func(p netip.Prefix, v bitmap) { st.Tables.Src[p] = v }); err != nil {
		return nil, err
	}
	var tk dosBPFTenantKey
	var v uint32
	it := o.NfhTenantLists.Iterate()
	for it.Next(&tk, &v) {
		p := netip.PrefixFrom(netip.AddrFrom16(tk.Addr), int(tk.Prefixlen)-32)
		st.TenantLists[TenantListKey{Tenant: tk.Tenant, Prefix: p}] = Verdict(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", o.NfhTenantLists, err)
	}
	var tk4 dosBPFTenantKey4
	it = o.NfhTenantLists4.Iterate()
	for it.Next(&tk4, &v) {
		p := netip.PrefixFrom(from4(tk4.Addr), int(tk4.Prefixlen)-32+96)
		st.TenantLists[TenantListKey{Tenant: tk4.Tenant, Prefix: p}] = Verdict(v)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", o.NfhTenantLists4, err)
	}
	names, err := readNames(o.NfhNames)
	if err != nil {
		return nil, err
	}
	for i := 0; i < MaxTenants; i++ {
		if names[i] != "" {
			st.Tenants[uint32(i)] = names[i]
		}
	}
	dst := st.Tables.arrays()
	for i, m := range o.sigArrays() {
		if err := readArray(m, dst[i]); err != nil {
			return nil, err
		}
	}
	var set dosBPFSettings
	if err := o.NfhSettings.Lookup(uint32(0), &set); err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	st.Tables.NeedsSrc, st.SampleRate, st.DstV4, st.DstV6 = set.NeedsSrc, set.SampleRate, set.DstV4, set.DstV6
	// Signatures and rates: the match is only known through the table
	// columns (compared in Write); the Match string stays unknown.
	for i := 0; i < dosspec.MaxSignatures && names[namesSigs+i] != ""; i++ {
		var m dosBPFSigMeta
		if err := o.NfhSigMeta.Lookup(uint32(i), &m); err != nil {
			return nil, fmt.Errorf("read signature %d metadata: %w", i, err)
		}
		exp := m.ExpiresNs
		m.ExpiresNs = 0
		st.Sigs = append(st.Sigs, SigState{ID: names[namesSigs+i], Meta: m, Match: "?", bootExpires: exp})
	}
	for i := 0; i < MaxRateRules && names[namesRates+i] != ""; i++ {
		var r dosBPFRateRule
		if err := o.NfhRateRules.Lookup(uint32(i), &r); err != nil {
			return nil, fmt.Errorf("read rate rule %d: %w", i, err)
		}
		st.Rates = append(st.Rates, RateState{ID: names[namesRates+i], Rule: r})
	}
	if st.TCP, err = observeTCP(o); err != nil {
		return nil, err
	}
	return st, nil
}

// sameObserved: a signature read back from the maps (o) holds what the
// desired one (d) would write, apart from its table column. Expiry times
// are compared to the second (the boot-time conversion drifts).
func sameObserved(o, d SigState) bool {
	if o.ID != d.ID || o.Meta != d.Meta {
		return false
	}
	if d.Expires.IsZero() || o.bootExpires == 0 {
		return d.Expires.IsZero() && o.bootExpires == 0
	}
	diff := int64(bootNanos(d.Expires)) - int64(o.bootExpires)
	return diff > -int64(time.Second) && diff < int64(time.Second)
}

// columnDiff returns the signatures whose bit differs anywhere in the
// classifier tables of a and b.
func columnDiff(a, b *Tables) bitmap {
	var d bitmap
	or := func(x, y []bitmap) {
		for i := range x {
			for j := range d.W {
				d.W[j] |= x[i].W[j] ^ y[i].W[j]
			}
		}
	}
	x, y := a.arrays(), b.arrays()
	for i := range x {
		or(x[i], y[i])
	}
	for _, m := range []struct{ x, y map[netip.Prefix]bitmap }{{a.Src, b.Src}, {b.Src, a.Src}} {
		for p, v := range m.x {
			w := m.y[p]
			for j := range d.W {
				d.W[j] |= v.W[j] ^ w.W[j]
			}
		}
	}
	for j := range d.W {
		d.W[j] |= a.NeedsSrc.W[j] ^ b.NeedsSrc.W[j]
	}
	return d
}

// readArray reads a whole array map into dst.
func readArray[V any](m *ebpf.Map, dst []V) error {
	keys := make([]uint32, 4096)
	vals := make([]V, 4096)
	var cur ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cur, keys, vals, nil)
		for i := 0; i < n; i++ {
			if int(keys[i]) < len(dst) {
				dst[keys[i]] = vals[i]
			}
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			for i := range dst {
				if err := m.Lookup(uint32(i), &dst[i]); err != nil {
					return fmt.Errorf("read %s: %w", m, err)
				}
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", m, err)
		}
	}
}

func readNames(m *ebpf.Map) ([]string, error) {
	out := make([]string, m.MaxEntries())
	var k uint32
	var n dosBPFName
	it := m.Iterate()
	for it.Next(&k, &n) {
		if int(k) < len(out) {
			out[k] = string(bytes.TrimRight(n.S[:], "\x00"))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", m, err)
	}
	return out, nil
}

// from4 is the trie form (IPv4-mapped) of a C network-order u32.
func from4(a uint32) netip.Addr {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], a)
	return netip.AddrFrom16(netip.AddrFrom4(b).As16())
}

// readTrie reads a trie pair into trie-form prefixes.
func readTrie[V any](m6, m4 *ebpf.Map, put func(netip.Prefix, V)) error {
	var k dosBPFLpmKey
	var k4 dosBPFLpmKey4
	var v V
	it := m6.Iterate()
	for it.Next(&k, &v) {
		put(netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen)), v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m6, err)
	}
	it = m4.Iterate()
	for it.Next(&k4, &v) {
		put(netip.PrefixFrom(from4(k4.Addr), int(k4.Prefixlen)+96), v)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read %s: %w", m4, err)
	}
	return nil
}
