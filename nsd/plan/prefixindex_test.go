package plan

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// checkOverlapReference is CheckOverlap as it was before the index: every
// prefix against every other tenant's, in sorted tenant order.
func checkOverlapReference(id string, prefixes []netip.Prefix, holdings map[string][]netip.Prefix) error {
	var others []string
	for o := range holdings {
		if o != id {
			others = append(others, o)
		}
	}
	sort.Strings(others)
	var errs doc.Errors
	for i, p := range prefixes {
		for _, o := range others {
			for _, q := range holdings[o] {
				if p.Overlaps(q) {
					errs = append(errs, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork,
						Path: fmt.Sprintf("prefixes[%d]", i), Value: p.String(),
						Msg: fmt.Sprintf("overlaps %s held by tenant %q", q, o)})
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func assignReference(held map[string][]netip.Prefix, claims []Claim) map[string]error {
	refused := map[string]error{}
	claimed := map[string][]netip.Prefix{}
	for _, c := range claims {
		claimed[c.Tenant] = c.Prefixes
	}
	for {
		holdings := map[string][]netip.Prefix{}
		for id, ps := range held {
			if want, ok := claimed[id]; ok && refused[id] == nil {
				holdings[id] = Kept(ps, want)
			} else {
				holdings[id] = ps
			}
		}
		more := false
		for _, c := range claims {
			if refused[c.Tenant] != nil {
				continue
			}
			if err := checkOverlapReference(c.Tenant, c.Prefixes, holdings); err != nil {
				refused[c.Tenant] = err
				more = true
				continue
			}
			holdings[c.Tenant] = c.Prefixes
		}
		if !more {
			return refused
		}
	}
}

// randClaim is a claim of tenant id, which holds held: perhaps one of
// those prefixes, and one to three drawn.
func randClaim(r *rand.Rand, id string, held []netip.Prefix) Claim {
	var ps []netip.Prefix
	if len(held) > 0 && r.IntN(2) == 0 {
		ps = append(ps, held[r.IntN(len(held))])
	}
	for k := r.IntN(3); k >= 0; k-- {
		ps = append(ps, randPrefix(r))
	}
	return Claim{Tenant: id, Prefixes: ps}
}

// randPrefix draws from a small space so that overlaps, nesting and
// duplicates are common, in both families.
func randPrefix(r *rand.Rand) netip.Prefix {
	if r.IntN(4) == 0 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(r.IntN(4)), byte(r.IntN(4) * 64)})
		p, _ := a.Prefix(28 + r.IntN(12))
		return p
	}
	a := netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(4)), byte(r.IntN(16) * 16)})
	p, _ := a.Prefix(20 + r.IntN(9))
	return p
}

// The index and the scan decide exactly what the pairwise comparison
// decided, with the same messages in the same order, over random passes.
func TestAssignPrefixesMatchesPairwise(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		held := map[string][]netip.Prefix{}
		var claims []Claim
		n := 1 + r.IntN(8)
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("t%d", r.IntN(12))
			if r.IntN(3) > 0 {
				var ps []netip.Prefix
				for k := r.IntN(3); k >= 0; k-- {
					ps = append(ps, randPrefix(r))
				}
				held[id] = ps
			}
			if r.IntN(2) == 0 {
				claims = append(claims, randClaim(r, id, held[id]))
			}
		}
		// One claim per tenant, as a pass makes.
		seen := map[string]bool{}
		var uniq []Claim
		for _, c := range claims {
			if !seen[c.Tenant] {
				seen[c.Tenant] = true
				uniq = append(uniq, c)
			}
		}
		want := assignReference(held, uniq)
		// The index, and the scan of every holding a pass with few claims
		// uses instead.
		for _, limit := range []int{-1, len(uniq)} {
			if got := assignPrefixes(held, uniq, limit); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("round %d (scan up to %d claims): held %v claims %v\ngot  %v\nwant %v", round, limit, held, uniq, got, want)
			}
		}
		for _, c := range uniq {
			if g, w := fmt.Sprint(CheckOverlap(c.Tenant, c.Prefixes, held)), fmt.Sprint(checkOverlapReference(c.Tenant, c.Prefixes, held)); g != w {
				t.Fatalf("round %d: CheckOverlap(%s, %v) over %v:\ngot  %s\nwant %s", round, c.Tenant, c.Prefixes, held, g, w)
			}
		}
	}
}

// A full pass over n tenants that all keep their prefixes (the resync):
// linear in n (57 s at 10,000 with the pairwise comparison).
func BenchmarkAssignPrefixesFullPass(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			held := map[string][]netip.Prefix{}
			var claims []Claim
			for i := 0; i < n; i++ {
				p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
				id := fmt.Sprintf("t%d", i)
				held[id] = []netip.Prefix{p}
				claims = append(claims, Claim{Tenant: id, Prefixes: []netip.Prefix{p}})
			}
			for i := 0; i < b.N; i++ {
				AssignPrefixes(held, claims)
			}
		})
	}
}

func checkTunnelPairsReference(id string, tunnels []tunspec.ValidTunnel, holdings map[string][]tunspec.ValidTunnel) error {
	var others []string
	for o := range holdings {
		if o != id {
			others = append(others, o)
		}
	}
	sort.Strings(others)
	var errs doc.Errors
	for i, t := range tunnels {
		for _, o := range others {
			for _, u := range holdings[o] {
				if t.Anycast == u.Anycast && t.Customer == u.Customer {
					errs = append(errs, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork,
						Path: fmt.Sprintf("tunnels[%d].customer_endpoint", i), Value: t.Customer.String(),
						Msg: fmt.Sprintf("the endpoint pair %s - %s is used by tenant %q (tunnel %s)", t.Anycast, t.Customer, o, u.Name)})
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// TunnelPairs, updated as a pass applies tenants, answers what comparing
// with every tenant's tunnels answered.
func TestTunnelPairsMatchesPairwise(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tunnels := func() []tunspec.ValidTunnel {
		var ts []tunspec.ValidTunnel
		for k := r.IntN(3); k >= 0; k-- {
			ts = append(ts, tunspec.ValidTunnel{Name: fmt.Sprintf("gre%d", r.IntN(5)),
				Anycast:  netip.AddrFrom4([4]byte{192, 0, 2, byte(1 + r.IntN(2))}),
				Customer: netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + r.IntN(3))})})
		}
		return ts
	}
	for round := 0; round < 500; round++ {
		holdings := map[string][]tunspec.ValidTunnel{}
		for i := r.IntN(6); i >= 0; i-- {
			holdings[fmt.Sprintf("t%d", r.IntN(8))] = tunnels()
		}
		x := NewTunnelPairs(holdings)
		for step := 0; step < 10; step++ {
			id, ts := fmt.Sprintf("t%d", r.IntN(8)), tunnels()
			got, want := fmt.Sprint(x.Check(id, ts)), fmt.Sprint(checkTunnelPairsReference(id, ts, holdings))
			if got != want {
				t.Fatalf("round %d step %d: Check(%s, %v) over %v:\ngot  %s\nwant %s", round, step, id, ts, holdings, got, want)
			}
			if r.IntN(2) == 0 {
				holdings[id] = ts
				x.Set(id, ts)
			}
		}
	}
}
