package dos

import (
	"net/netip"
	"sort"
)

// Verdict is the value of a source-list entry (enum verdict in the BPF C).
type Verdict uint32

// Verdicts.
const (
	VerdictAllow Verdict = 1
	VerdictDeny  Verdict = 2
)

// Entry is one source-list trie entry.
type Entry struct {
	Prefix  netip.Prefix
	Verdict Verdict
}

// ResolveLists turns allow and deny prefixes into trie entries in which
// allow always wins: the trie returns the longest match only, so a deny
// prefix covered by an allow prefix is left out (every address in it is
// allowed anyway), and an allow prefix inside a deny prefix needs nothing
// special (it is the longer match). Duplicates collapse; the result is
// sorted.
func ResolveLists(allow, deny []netip.Prefix) []Entry {
	var out []Entry
	seen := map[netip.Prefix]bool{}
	for _, p := range allow {
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, Entry{Prefix: p, Verdict: VerdictAllow})
		}
	}
	for _, d := range deny {
		d = d.Masked()
		if seen[d] {
			continue
		}
		covered := false
		for _, a := range allow {
			if a.Bits() <= d.Bits() && a.Contains(d.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			seen[d] = true
			out = append(out, Entry{Prefix: d, Verdict: VerdictDeny})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if c := out[i].Prefix.Addr().Compare(out[j].Prefix.Addr()); c != 0 {
			return c < 0
		}
		return out[i].Prefix.Bits() < out[j].Prefix.Bits()
	})
	return out
}
