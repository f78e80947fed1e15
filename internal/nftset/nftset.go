// Package nftset converts between IP prefixes and the elements of nftables
// interval sets and maps. An interval set stores [start, end) as two
// elements: the start key and an "interval end" key one past the last
// address. A range that runs to the top of the address space has no end
// element (IntervalOpen).
package nftset

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
)

// Elements returns the set elements for p, with val as the map value
// (nil for plain sets).
func Elements(p netip.Prefix, val []byte) []nftables.SetElement {
	p = p.Masked()
	start := p.Addr()
	last := LastAddr(p)
	next := last.Next()
	if !next.IsValid() {
		return []nftables.SetElement{{Key: start.AsSlice(), Val: val, IntervalOpen: true}}
	}
	return []nftables.SetElement{
		{Key: start.AsSlice(), Val: val},
		{Key: next.AsSlice(), IntervalEnd: true},
	}
}

// LastAddr is the highest address in p.
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		hostBits := len(a)*8 - bits - (len(a)-1-i)*8
		switch {
		case hostBits >= 8:
			a[i] = 0xff
		case hostBits > 0:
			a[i] |= byte(1<<hostBits - 1)
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// Interval is one [Start, End] range (End inclusive) read back from the
// kernel, with its map value.
type Interval struct {
	Start, End netip.Addr
	Val        []byte
}

// Prefix returns the prefix covering exactly this interval, if there is one.
func (iv Interval) Prefix() (netip.Prefix, bool) {
	for bits := 0; bits <= iv.Start.BitLen(); bits++ {
		p := netip.PrefixFrom(iv.Start, bits)
		if p.Masked() == p && LastAddr(p) == iv.End {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Intervals pairs the start and end elements of a dumped interval set or map.
// Elements with a malformed pairing are reported as an error so the caller
// can rebuild the set rather than guess.
func Intervals(elems []nftables.SetElement) ([]Interval, error) {
	type el struct {
		addr netip.Addr
		end  bool
		open bool
		val  []byte
	}
	list := make([]el, 0, len(elems))
	for _, e := range elems {
		a, ok := netip.AddrFromSlice(e.Key)
		if !ok {
			return nil, fmt.Errorf("parse set element key %x: bad length", e.Key)
		}
		list = append(list, el{addr: a, end: e.IntervalEnd, open: e.IntervalOpen, val: e.Val})
	}
	// At one address an end element closes the previous range before a start
	// element opens the next.
	sort.SliceStable(list, func(i, j int) bool {
		if c := list[i].addr.Compare(list[j].addr); c != 0 {
			return c < 0
		}
		return list[i].end && !list[j].end
	})
	var out []Interval
	for i := 0; i < len(list); i++ {
		s := list[i]
		if s.end {
			// A leading end element at the zero address is how the kernel
			// marks "nothing below"; anything else is unpaired.
			if s.addr.IsUnspecified() || s.addr == netip.IPv4Unspecified() {
				continue
			}
			return nil, fmt.Errorf("unpaired interval end %s", s.addr)
		}
		if i+1 < len(list) && list[i+1].end {
			out = append(out, Interval{Start: s.addr, End: list[i+1].addr.Prev(), Val: s.val})
			i++
			continue
		}
		if i+1 == len(list) {
			// Open interval to the top of the address space.
			top := LastAddr(netip.PrefixFrom(s.addr, 0))
			out = append(out, Interval{Start: s.addr, End: top, Val: s.val})
			continue
		}
		return nil, fmt.Errorf("interval start %s has no end", s.addr)
	}
	return out, nil
}
