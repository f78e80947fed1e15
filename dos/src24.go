package dos

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/cilium/ebpf"
)

// The /24 table (nfh_src24 in xdp_dos.c): the IPv4 global list verdicts
// per /24 block, 4 bits each, 16 blocks per word; src24Trie where a list
// prefix longer than /24 lies inside the block and the trie must decide.
const (
	src24Words = 1 << 20
	src24Trie  = 4
	// src24AllTrie is a word that sends all of its blocks to the trie:
	// what a freshly created table holds while an older program version,
	// which had no table, is still being replaced (no gap in filtering).
	src24AllTrie = 0x4444444444444444
)

// src24Table computes the table from the lists in trie form (allow
// already resolved to win). Prefixes of /24 or shorter paint their blocks,
// shortest first so that the longest wins; blocks holding longer
// prefixes are marked for the trie.
func src24Table(lists map[netip.Prefix]Verdict) []uint64 {
	words := make([]uint64, src24Words)
	type entry struct {
		block, n uint32 // first block, block count (0: longer than /24)
		v        Verdict
	}
	var es []entry
	for p, v := range lists {
		if !is4(p) {
			continue
		}
		a := p.Addr().As16()
		block := uint32(a[12])<<16 | uint32(a[13])<<8 | uint32(a[14])
		bits := p.Bits() - 96
		if bits > 24 {
			es = append(es, entry{block: block, v: v})
			continue
		}
		es = append(es, entry{block: block, n: 1 << (24 - bits), v: v})
	}
	sort.Slice(es, func(i, j int) bool { return es[i].n > es[j].n }) // shortest prefix first, longer than /24 last
	set := func(b uint32, v uint64) {
		sh := (b & 15) * 4
		words[b>>4] = words[b>>4]&^(0xf<<sh) | v<<sh
	}
	for _, e := range es {
		if e.n == 0 {
			set(e.block, src24Trie)
			continue
		}
		v := uint64(e.v) & 0xf
		rep := v * 0x1111111111111111
		for b, end := e.block, e.block+e.n; b < end; {
			if b&15 == 0 && end-b >= 16 {
				words[b>>4] = rep
				b += 16
				continue
			}
			set(b, v)
			b++
		}
	}
	return words
}

// writeSrc24 writes the words of want that differ from have (nil: read
// them from the map first).
func (w *Writer) writeSrc24(want, have []uint64) error {
	m := w.o.NfhSrc24
	if have == nil {
		have = make([]uint64, src24Words)
		if err := readArray(m, have); err != nil {
			return err
		}
	}
	if err := writeArray(w, m, want, have); err != nil {
		return fmt.Errorf("write the /24 table: %w", err)
	}
	return nil
}

// fillSrc24 sends every block of a new table to the trie.
func fillSrc24(m *ebpf.Map) error {
	keys := make([]uint32, src24Words)
	vals := make([]uint64, src24Words)
	for i := range keys {
		keys[i], vals[i] = uint32(i), src24AllTrie
	}
	if err := batch(m, keys, vals); err != nil {
		return fmt.Errorf("initialise the /24 table: %w", err)
	}
	return nil
}
