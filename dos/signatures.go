package dos

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
	"golang.org/x/sys/unix"
)

// Index of the "no such header" entry in the field arrays (BPF NO_PORT,
// NO_L4).
const (
	noPort   = 65536
	icmpBase = 256
	l4None   = icmpBase + 65536
)

// Signature actions as the BPF program knows them.
const (
	sigDrop      = 1
	sigMonitor   = 2
	sigRateLimit = 3
)

type bitmap = dosBPFBitmap

func (b *bitmap) set(i int) { b.W[i/64] |= 1 << (i % 64) }

func (b *bitmap) has(i int) bool { return b.W[i/64]&(1<<(i%64)) != 0 }

// Tables are the classifier's maps as values: for every field value the
// bitmap of signatures that accept it. BuildTables is pure; Writer puts
// them into the kernel.
type Tables struct {
	N     int
	Proto [257]bitmap
	// L4: TCP flags byte, icmpBase + type<<8|code, or l4None.
	L4           [l4None + 1]bitmap
	SPort, DPort [65537]bitmap
	Len          [65536]bitmap
	TTL          [256]bitmap
	Src          map[netip.Prefix]bitmap
	// NeedsSrc: signatures the source trie can remove.
	NeedsSrc bitmap
}

var (
	v6Root = netip.MustParsePrefix("::/0")
	v4Root = netip.MustParsePrefix("::ffff:0.0.0.0/96")
)

func fill(arr []bitmap, r dosspec.Range, bit, none int) {
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

// BuildTables compiles signatures, in priority order, into the field
// tables and the source trie. The destination side (and tenant scope) is
// part of the nfh_dst entries Build computes.
func BuildTables(sigs []dosspec.CompiledSignature) (*Tables, error) {
	if len(sigs) > dosspec.MaxSignatures {
		return nil, fmt.Errorf("%d signatures, at most %d", len(sigs), dosspec.MaxSignatures)
	}
	t := &Tables{N: len(sigs), Src: map[netip.Prefix]bitmap{}}
	for i, s := range sigs {
		m := s.Match
		fill(t.Proto[:], m.Proto, i, -1)
		fill(t.SPort[:], m.SrcPort, i, noPort)
		fill(t.DPort[:], m.DstPort, i, noPort)
		fill(t.Len[:], m.Len, i, -1)
		fill(t.TTL[:], m.TTL, i, -1)
		icmp := m.ICMPType.Set || m.ICMPC.Set
		if !icmp {
			for v := 0; v < 256; v++ {
				if uint8(v)&m.TCPFlagsMask == m.TCPFlagsValue {
					t.L4[v].set(i)
				}
			}
		}
		if m.TCPFlagsMask == 0 {
			tr, cr := m.ICMPType, m.ICMPC
			if !tr.Set {
				tr = dosspec.Range{Lo: 0, Hi: 255}
			}
			if !cr.Set {
				cr = dosspec.Range{Lo: 0, Hi: 255}
			}
			for ty := tr.Lo; ty <= tr.Hi; ty++ {
				for c := cr.Lo; c <= cr.Hi; c++ {
					t.L4[icmpBase+ty<<8+c].set(i)
				}
			}
			if !icmp {
				t.L4[l4None].set(i)
			}
		}
		// The family is settled on the destination side (nfh_dst entries
		// and the per-family settings bitmaps), so only a source prefix
		// needs the source trie.
		if m.Src.IsValid() {
			t.NeedsSrc.set(i)
		}
	}
	// Source trie: one entry per prefix any signature names plus the two
	// family roots; each holds the signatures whose condition covers it.
	keys := []netip.Prefix{v4Root, v6Root}
	for _, s := range sigs {
		if s.Match.Src.IsValid() {
			keys = append(keys, mapped(s.Match.Src))
		}
	}
	for _, k := range keys {
		t.Src[k] = addrBitmap(sigs, k, func(m dosspec.Match) netip.Prefix { return m.Src })
	}
	return t, nil
}

// addrBitmap is the set of signatures whose address condition (picked by
// pick; none: any) covers the trie key k, family included.
func addrBitmap(sigs []dosspec.CompiledSignature, k netip.Prefix, pick func(dosspec.Match) netip.Prefix) bitmap {
	var b bitmap
	for i, s := range sigs {
		if accepts(s.Match, k, pick(s.Match)) {
			b.set(i)
		}
	}
	return b
}

// accepts says whether a signature with address condition p (invalid:
// none) accepts every address of trie key k, family included.
func accepts(m dosspec.Match, k, p netip.Prefix) bool {
	is4 := v4Root.Contains(k.Addr()) && k.Bits() >= 96
	if m.Version == 4 && !is4 || m.Version == 6 && is4 {
		return false
	}
	return !p.IsValid() || covers(mapped(p), k)
}

// covers says whether prefix p contains prefix k (both in trie form).
func covers(p, k netip.Prefix) bool { return p.Bits() <= k.Bits() && p.Contains(k.Addr()) }

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
