package nsd

import (
	"context"
	"fmt"
	"testing"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// gcKernel counts GC calls.
type gcKernel struct {
	*fakeKernel
	gcs int
}

func (k *gcKernel) GC(ctx context.Context, slots map[uint16]bool) ([]string, error) {
	k.gcs++
	return k.fakeKernel.GC(ctx, slots)
}

// A periodic resync runs in slices: a change that arrives between two
// slices is applied before the resync ends, every tenant's drift is
// repaired by the end, and GC and the host status heartbeat come once, at
// the end.
func TestResyncInSlices(t *testing.T) {
	h := newHarness(t, Options{})
	k := &gcKernel{fakeKernel: h.k}
	h.d = New(Options{HostID: "edge1", Store: h.store, Routing: k, NSPrefix: "nfR-"})
	const n = 200
	for i := 0; i < n; i++ {
		h.put(fmt.Sprintf("t%d", i), "network", fmt.Sprintf(`{"prefixes": ["198.18.%d.0/24"]}`, i))
	}
	ctx := context.Background()
	if rs := h.pass(t, true); Failed(rs) {
		t.Fatal(rs)
	}
	k.gcs = 0
	hostWrites := h.store.writes[source.HostStatusName]
	// Drift: every tenth tenant's namespace is gone from the kernel.
	for i := 0; i < n; i += 10 {
		delete(h.k.specs, fmt.Sprintf("t%d", i))
	}
	// And a tenant the store never had is in the kernel (left over).
	h.k.specs["orphan"] = func() rtspec.TenantSpec {
		o := h.k.specs["t1"]
		o.ID, o.Slot, o.Prefixes = "orphan", 4000, nil
		return o
	}()
	if err := h.d.resyncTick(ctx, h.snap); err != nil {
		t.Fatal(err)
	}
	// A pass before the first slice deletes it already.
	if rs := h.d.Reconcile(ctx, source.Snapshot{Tenants: h.snap.Tenants, Control: h.snap.Control, Changed: map[string]bool{}}, false); len(rs) != 1 || rs[0].Tenant != "orphan" || rs[0].State != "deleted" {
		t.Fatalf("the pass after the resync's observe: %v", rs)
	}
	h.d.resync.size = 16 // several slices whatever the machine's speed
	h.d.resyncStep(ctx, h.snap)
	if !h.d.resyncing() || len(h.d.resync.ids) == 0 {
		t.Fatal("the resync ended in one slice")
	}
	// A change between slices is applied now.
	h.put("t7", "network", `{"prefixes": ["198.18.7.0/25"]}`)
	s := h.snap
	s.Changed = map[string]bool{"t7": true}
	h.resetCalls()
	h.d.Reconcile(ctx, s, false)
	if len(h.k.applies) != 1 || h.k.applies[0] != "t7" || h.k.specs["t7"].Prefixes[0].String() != "198.18.7.0/25" {
		t.Fatalf("a change between slices applied %v", h.k.applies)
	}
	if !h.d.resyncing() {
		t.Fatal("the change ended the resync")
	}
	if k.gcs != 0 || h.store.writes[source.HostStatusName] != hostWrites {
		t.Fatalf("GC ran %d times, host status written %d times before the resync ended", k.gcs, h.store.writes[source.HostStatusName]-hostWrites)
	}
	// A tenant whose firewall change is in the lane when its slice comes
	// is verified in a later slice instead of skipped.
	next := h.d.resync.ids[0]
	h.d.lane.busy[next] = true
	h.d.resync.size = 16
	h.d.resyncStep(ctx, s)
	if ids := h.d.resync.ids; ids[len(ids)-1] != next {
		t.Fatalf("%s, busy in the lane, is not left for a later slice: %v", next, ids)
	}
	delete(h.d.lane.busy, next)
	slices := 2
	for h.d.resyncing() {
		h.d.resync.size = 16
		h.d.resyncStep(ctx, s)
		slices++
	}
	if slices < n/16 {
		t.Fatalf("%d slices for %d tenants of 16", slices, n)
	}
	for i := 0; i < n; i++ {
		if _, ok := h.k.specs[fmt.Sprintf("t%d", i)]; !ok {
			t.Fatalf("t%d's drift not repaired", i)
		}
	}
	if k.gcs != 1 || h.store.writes[source.HostStatusName] != hostWrites+1 {
		t.Fatalf("GC ran %d times, host status written %d times: want once each, at the end", k.gcs, h.store.writes[source.HostStatusName]-hostWrites)
	}
}
