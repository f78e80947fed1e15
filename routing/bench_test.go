package routing_test

import (
	"context"
	"net/netip"
	"testing"
)

// BenchmarkApplyConverged: one Apply of a tenant that is already in place.
func BenchmarkApplyConverged(b *testing.B) {
	tp := newTopo(b)
	spec := tp.spec("bench", 5, "203.0.113.0/24")
	if _, err := tp.rec.Apply(context.Background(), spec); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if ch, err := tp.rec.Apply(context.Background(), spec); err != nil || len(ch) != 0 {
			b.Fatal(ch, err)
		}
	}
}

// BenchmarkApplyPrefixChange: one Apply that moves a tenant between two
// prefix sets (one nft batch).
func BenchmarkApplyPrefixChange(b *testing.B) {
	tp := newTopo(b)
	specs := []struct{ p string }{{"203.0.113.0/25"}, {"203.0.113.0/26"}}
	for i := 0; i < b.N; i++ {
		spec := tp.spec("bench", 5, specs[i%2].p)
		if _, err := tp.rec.Apply(context.Background(), spec); err != nil {
			b.Fatal(err)
		}
	}
	_ = netip.Prefix{}
}
