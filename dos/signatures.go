package dos

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Index of the "no such header" entry in the field arrays (BPF NO_PORT,
// NO_L4).
const (
	noPort = 65536
	noL4   = 256
)

// Signature actions as the BPF program knows them.
const (
	sigDrop    = 1
	sigMonitor = 2
)

type bitmap = dosBPFBitmap

func (b *bitmap) set(i int) { b.W[i/64] |= 1 << (i % 64) }

// Tables are the classifier's maps as values: for every field value the
// bitmap of signatures that accept it. BuildTables is pure; Writer puts
// them into the kernel.
type Tables struct {
	N            int
	Proto, Flags [257]bitmap
	IType, ICode [257]bitmap
	SPort, DPort [65537]bitmap
	Len          [65536]bitmap
	TTL          [256]bitmap
	Src, Dst     map[netip.Prefix]bitmap
	Actions      []uint32
	Expires      []time.Time
	// NeedsSrc and NeedsDst: signatures the address tries can remove.
	NeedsSrc, NeedsDst bitmap
}

var (
	v6Root = netip.MustParsePrefix("::/0")
	v4Root = netip.MustParsePrefix("::ffff:0.0.0.0/96")
)

func fill(arr []bitmap, r Range, bit, none int) {
	if !r.Set {
		for i := range arr {
			arr[i].set(bit)
		}
		return
	}
	for v := r.Lo; v <= r.Hi && v < uint64(len(arr)); v++ {
		if int(v) != none {
			arr[v].set(bit)
		}
	}
}

// mapped turns an address prefix into the trie's IPv4-mapped form.
func mapped(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
	}
	return p
}

// BuildTables compiles signatures, in priority order, into field tables.
// Monitor-only signatures still count; the action decides the verdict.
func BuildTables(sigs []CompiledSignature) (*Tables, error) {
	if len(sigs) > MaxSignatures {
		return nil, fmt.Errorf("%d signatures, at most %d", len(sigs), MaxSignatures)
	}
	t := &Tables{N: len(sigs), Src: map[netip.Prefix]bitmap{}, Dst: map[netip.Prefix]bitmap{}}
	for i, s := range sigs {
		m := s.Match
		fill(t.Proto[:], m.Proto, i, -1)
		fill(t.SPort[:], m.SrcPort, i, noPort)
		fill(t.DPort[:], m.DstPort, i, noPort)
		fill(t.Len[:], m.Len, i, -1)
		fill(t.TTL[:], m.TTL, i, -1)
		fill(t.IType[:], m.ICMPType, i, noL4)
		fill(t.ICode[:], m.ICMPC, i, noL4)
		for v := 0; v < 256; v++ {
			if uint8(v)&m.TCPFlagsMask == m.TCPFlagsValue {
				t.Flags[v].set(i)
			}
		}
		if m.TCPFlagsMask == 0 {
			t.Flags[noL4].set(i)
		}
		switch s.Action {
		case "drop":
			t.Actions = append(t.Actions, sigDrop)
		case "monitor":
			t.Actions = append(t.Actions, sigMonitor)
		default:
			return nil, fmt.Errorf("signature %s: action %q is not implemented in the XDP program yet", s.ID, s.Action)
		}
		t.Expires = append(t.Expires, s.Expires)
		if m.Src.IsValid() || m.Version != 0 {
			t.NeedsSrc.set(i)
		}
		if m.Dst.IsValid() || m.Version != 0 {
			t.NeedsDst.set(i)
		}
	}
	// Address tries: one entry per prefix any signature names plus the two
	// family roots; each holds the signatures whose condition covers it.
	for _, side := range []struct {
		out  map[netip.Prefix]bitmap
		pick func(Match) netip.Prefix
	}{{t.Src, func(m Match) netip.Prefix { return m.Src }}, {t.Dst, func(m Match) netip.Prefix { return m.Dst }}} {
		keys := map[netip.Prefix]bool{v4Root: true, v6Root: true}
		for _, s := range sigs {
			if p := side.pick(s.Match); p.IsValid() {
				keys[mapped(p)] = true
			}
		}
		for k := range keys {
			var b bitmap
			is4 := v4Root.Contains(k.Addr()) && k.Bits() >= 96
			for i, s := range sigs {
				if s.Match.Version == 4 && !is4 || s.Match.Version == 6 && is4 {
					continue
				}
				p := side.pick(s.Match)
				if !p.IsValid() || mapped(p).Bits() <= k.Bits() && mapped(p).Contains(k.Addr()) {
					b.set(i)
				}
			}
			side.out[k] = b
		}
	}
	return t, nil
}

// bootNanos converts a wall-clock time to CLOCK_BOOTTIME nanoseconds, the
// clock bpf_ktime_get_boot_ns reads.
func bootNanos(at time.Time) uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	boot := time.Duration(ts.Nano())
	d := time.Until(at)
	if v := boot + d; v > 0 {
		return uint64(v)
	}
	return 1 // already expired
}

// Writer puts Tables into the program's maps, writing only entries that
// differ from what it wrote last (the first write is complete).
type Writer struct {
	d    *dosBPFObjects
	last *Tables
}

func writeArray(m *ebpf.Map, want, last []bitmap) error {
	var keys []uint32
	var vals []bitmap
	for i := range want {
		if last == nil || want[i] != last[i] {
			keys = append(keys, uint32(i))
			vals = append(vals, want[i])
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("update %s: %w", m, err)
	}
	return nil
}

// Write applies t; monitor makes every signature count-only.
func (w *Writer) Write(t *Tables, monitor bool) error {
	o := w.d
	var l *Tables
	if w.last != nil {
		l = w.last
	}
	pick := func(f func(*Tables) []bitmap) []bitmap {
		if l == nil {
			return nil
		}
		return f(l)
	}
	for _, a := range []struct {
		m *ebpf.Map
		f func(*Tables) []bitmap
	}{
		{o.NfhSigProto, func(t *Tables) []bitmap { return t.Proto[:] }},
		{o.NfhSigSport, func(t *Tables) []bitmap { return t.SPort[:] }},
		{o.NfhSigDport, func(t *Tables) []bitmap { return t.DPort[:] }},
		{o.NfhSigLen, func(t *Tables) []bitmap { return t.Len[:] }},
		{o.NfhSigTtl, func(t *Tables) []bitmap { return t.TTL[:] }},
		{o.NfhSigFlags, func(t *Tables) []bitmap { return t.Flags[:] }},
		{o.NfhSigItype, func(t *Tables) []bitmap { return t.IType[:] }},
		{o.NfhSigIcode, func(t *Tables) []bitmap { return t.ICode[:] }},
	} {
		if err := writeArray(a.m, a.f(t), pick(a.f)); err != nil {
			return err
		}
	}
	for _, side := range []struct {
		m         *ebpf.Map
		want, old map[netip.Prefix]bitmap
	}{{o.NfhSigSrc, t.Src, nil}, {o.NfhSigDst, t.Dst, nil}} {
		if l != nil {
			if side.m == o.NfhSigSrc {
				side.old = l.Src
			} else {
				side.old = l.Dst
			}
		}
		for p := range side.old {
			if _, ok := side.want[p]; !ok {
				if err := side.m.Delete(Key(p)); err != nil {
					return fmt.Errorf("delete %s from %s: %w", p, side.m, err)
				}
			}
		}
		for p, b := range side.want {
			if ob, ok := side.old[p]; ok && ob == b {
				continue
			}
			if err := side.m.Put(Key(p), b); err != nil {
				return fmt.Errorf("put %s into %s: %w", p, side.m, err)
			}
		}
	}
	for i := range t.Actions {
		meta := dosBPFSigMeta{Action: t.Actions[i]}
		if !t.Expires[i].IsZero() {
			meta.ExpiresNs = bootNanos(t.Expires[i])
		}
		if err := o.NfhSigMeta.Put(uint32(i), meta); err != nil {
			return fmt.Errorf("write signature %d metadata: %w", i, err)
		}
	}
	mon := uint32(0)
	if monitor {
		mon = 1
	}
	if err := o.NfhSettings.Put(uint32(0), dosBPFSettings{Nsigs: uint32(t.N), Monitor: mon, NeedsSrc: t.NeedsSrc, NeedsDst: t.NeedsDst}); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	w.last = t
	return nil
}
