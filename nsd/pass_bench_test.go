package nsd

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// memKernel is a routing reconciler that only remembers specs, in O(1) per
// call (fakeKernel checks overlaps against every tenant).
type memKernel struct{ specs map[string]rtspec.TenantSpec }

func (k *memKernel) Observe(context.Context) (map[string]routing.Observed, error) {
	out := make(map[string]routing.Observed, len(k.specs))
	for id, s := range k.specs {
		out[id] = routing.Observed{ID: id, Slot: s.Slot, HostIf: s.HostIf, Namespace: s.Namespace}
	}
	return out, nil
}

func (k *memKernel) Apply(_ context.Context, s rtspec.TenantSpec) ([]string, error) {
	k.specs[s.ID] = s
	return nil, nil
}

func (k *memKernel) Delete(_ context.Context, o routing.Observed) ([]string, error) {
	delete(k.specs, o.ID)
	return nil, nil
}

func (k *memKernel) GC(context.Context, map[uint16]bool) ([]string, error) { return nil, nil }

func benchPrefix(i, bits int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>13&1), byte(i >> 5), byte(i << 3)})
	return netip.PrefixFrom(a, bits)
}

// BenchmarkIncrementalPass: one pass after one tenant's network document
// changed, with 100, 1,000 and 10,000 tenants present and a kernel that
// costs nothing: what nsd's own pass costs as the tenants grow (the
// PUT → applied time on one host is this plus the store and the kernel).
// Each size's ns/op against 100 tenants' is the growth; linear would be
// 10× and 100×. "told" passes say which tenant changed, as the Consul
// store's snapshots do (Snapshot.Changed); "scan" passes do not, as a
// directory store's, and the pass compares every tenant: the baseline.
func BenchmarkIncrementalPass(b *testing.B) {
	for _, mode := range []string{"told", "scan"} {
		for _, n := range []int{100, 1000, 10000} {
			b.Run(fmt.Sprintf("%s/tenants=%d", mode, n), func(b *testing.B) { benchPass(b, n, mode == "told") })
		}
	}
}

func benchPass(b *testing.B, n int, told bool) {
	store := &fakeStore{status: map[string]any{}}
	d := New(Options{HostID: "edge1", Store: store, Routing: &memKernel{specs: map[string]rtspec.TenantSpec{}}, NSPrefix: "nfB-"})
	s := source.Snapshot{Tenants: make(map[string]map[string]source.Entry, n), Control: map[string]source.Entry{}}
	index := uint64(0)
	put := func(i, bits int) {
		index++
		s.Tenants[fmt.Sprintf("t%d", i)] = map[string]source.Entry{
			"network": {Value: fmt.Appendf(nil, `{"prefixes": [%q]}`, benchPrefix(i, bits)), ModifyIndex: index},
		}
	}
	for i := 0; i < n; i++ {
		put(i, 29)
	}
	ctx := context.Background()
	if rs := d.Reconcile(ctx, s, true); Failed(rs) {
		b.Fatalf("first pass: %v", rs)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		put(i%n, 29+1+i%2) // every pass changes one tenant
		if told {
			s.Changed = map[string]bool{fmt.Sprintf("t%d", i%n): true}
		}
		if rs := d.Reconcile(ctx, s, false); len(rs) != 1 || Failed(rs) {
			b.Fatalf("pass %d: %v", i, rs)
		}
	}
}
