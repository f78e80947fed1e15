package nsd

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// fakeClock is Options.Now for tests that step time by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time       { return c.t }
func (c *fakeClock) step(d time.Duration) { c.t = c.t.Add(d) }
func countOf(xs []string, x string) (n int) {
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}

// A tenant rewriting its network key 100 times a second for a second is
// applied about burst + 1/interval times, always with a version it wrote,
// and its last write once its turn comes, without a new snapshot; a quiet
// tenant's change in the middle of the burst is applied in its own pass.
func TestPacerCoalescesBursts(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	h := newHarness(t, Options{Now: clk.now})
	h.put("noisy", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("quiet", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.pass(t, true)
	h.resetCalls()

	var last string
	for i := 0; i < 100; i++ {
		clk.step(10 * time.Millisecond)
		last = fmt.Sprintf("198.51.100.%d/32", i)
		h.put("noisy", "network", fmt.Sprintf(`{"prefixes": [%q]}`, last))
		if i == 50 {
			h.put("quiet", "network", `{"prefixes": ["203.0.113.0/25"]}`)
		}
		before := countOf(h.k.applies, "quiet")
		h.pass(t, false)
		if i == 50 && countOf(h.k.applies, "quiet") != before+1 {
			t.Fatalf("the quiet tenant's change waited: applies %v", h.k.applies)
		}
		if _, due := h.d.pace.next(); due != (h.k.specs["noisy"].Prefixes[0].String() != last) {
			t.Fatalf("write %d: deferred=%v but the kernel has %v, the store %s", i, due, h.k.specs["noisy"].Prefixes, last)
		}
	}
	// 1 s at one change per 250 ms after the burst.
	if n, want := countOf(h.k.applies, "noisy"), DefaultApplyBurst+4; n < want-1 || n > want+1 {
		t.Fatalf("noisy tenant applied %d times for 100 writes, want about %d", n, want)
	}
	if h.k.specs["noisy"].Prefixes[0].String() != last {
		// The last write is deferred: the pass at its due time, over the
		// same snapshot, applies it.
		due, ok := h.d.pace.next()
		if !ok {
			t.Fatal("the last write is neither applied nor deferred")
		}
		if wait := due.Sub(clk.t); wait <= 0 || wait > DefaultMinApplyInterval {
			t.Fatalf("due in %v", wait)
		}
		clk.t = due
		h.pass(t, false)
	}
	if got := h.k.specs["noisy"].Prefixes[0].String(); got != last {
		t.Fatalf("kernel has %s, last write %s", got, last)
	}
	if st := h.store.tenantStatus("noisy"); st.State != "applied" || st.AppliedIndex != h.snap.Tenants["noisy"]["network"].ModifyIndex {
		t.Fatalf("status %+v", st)
	}
	if _, ok := h.d.pace.next(); ok {
		t.Fatal("still deferred after the last write was applied")
	}
}

// Full passes apply a deferred tenant at once; a deleted deferred tenant is
// forgotten; a negative interval turns pacing off.
func TestPacerFullPassesAndDeletes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	h := newHarness(t, Options{Now: clk.now, ApplyBurst: 1})
	h.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("b", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.pass(t, true)
	h.put("a", "network", `{"prefixes": ["198.51.100.0/25"]}`)
	h.pass(t, false)
	h.put("a", "network", `{"prefixes": ["198.51.100.0/26"]}`)
	h.pass(t, false)
	if _, ok := h.d.pace.deferred["a"]; !ok || h.k.specs["a"].Prefixes[0].Bits() != 25 {
		t.Fatalf("second change within the interval not deferred: %v", h.k.specs["a"].Prefixes)
	}
	h.pass(t, true)
	if _, ok := h.d.pace.deferred["a"]; ok || h.k.specs["a"].Prefixes[0].Bits() != 26 {
		t.Fatalf("full pass did not apply the deferred change: %v", h.k.specs["a"].Prefixes)
	}

	h.put("b", "network", `{"prefixes": ["203.0.113.0/25"]}`)
	h.pass(t, false)
	h.put("b", "network", `{"prefixes": ["203.0.113.0/26"]}`)
	h.pass(t, false)
	delete(h.snap.Tenants, "b")
	h.pass(t, false)
	if _, ok := h.d.pace.next(); ok || countOf(h.k.deletes, "b") != 1 {
		t.Fatalf("deleted tenant: deletes %v, deferred %v", h.k.deletes, h.d.pace.deferred)
	}

	off := newHarness(t, Options{Now: clk.now, MinApplyInterval: -1})
	off.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	off.pass(t, true)
	for i := 0; i < 10; i++ {
		off.put("a", "network", fmt.Sprintf(`{"prefixes": ["198.51.100.%d/32"]}`, i))
		off.pass(t, false)
	}
	if n := countOf(off.k.applies, "a"); n != 11 {
		t.Fatalf("pacing off: %d applies, want 11", n)
	}
}

// A deferred tenant that releases a prefix and the tenant that claims it in
// the same snapshot: the claim is refused while the release waits (the
// incumbent keeps its prefix), and both apply in the pass at the due time.
func TestPacerKeepsOverlapRules(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	h := newHarness(t, Options{Now: clk.now, ApplyBurst: 1})
	h.put("a", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.pass(t, true)
	clk.step(time.Millisecond)
	h.put("a", "network", `{"prefixes": ["203.0.113.0/25"]}`)
	h.pass(t, false)
	clk.step(time.Millisecond)
	h.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("b", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.pass(t, false)
	if _, ok := h.k.specs["b"]; ok {
		t.Fatal("claim applied while the incumbent still holds the prefix")
	}
	if st := h.store.tenantStatus("b"); !strings.Contains(st.Error, `held by tenant "a"`) {
		t.Fatalf("b status %+v", st)
	}
	due, ok := h.d.pace.next()
	if !ok {
		t.Fatal("a not deferred")
	}
	clk.t = due
	h.pass(t, false)
	if h.k.specs["a"].Prefixes[0].String() != "198.51.100.0/24" || h.k.specs["b"].Prefixes[0].String() != "203.0.113.0/24" {
		t.Fatalf("after the due pass: a %v b %v", h.k.specs["a"].Prefixes, h.k.specs["b"].Prefixes)
	}
}

// watchStore sends the snapshots it is given to Run's watch.
type watchStore struct {
	*fakeStore
	snaps chan source.Snapshot
}

func (w watchStore) Watch(ctx context.Context, out chan<- source.Snapshot, _ func(error)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-w.snaps:
			out <- s
		}
	}
}

// Run's timer applies a deferred change when no snapshot follows it.
func TestRunAppliesDeferredWithoutNewSnapshot(t *testing.T) {
	ws := watchStore{fakeStore: &fakeStore{status: map[string]any{}}, snaps: make(chan source.Snapshot)}
	h := newHarness(t, Options{})
	h.d = New(Options{HostID: "edge1", Store: ws, Routing: h.k, MinApplyInterval: 200 * time.Millisecond, ApplyBurst: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	send := func() {
		b := h.snap // Run keeps the snapshot: hand it a copy
		s := source.Snapshot{Tenants: map[string]map[string]source.Entry{}, Control: b.Control}
		for id, keys := range b.Tenants {
			s.Tenants[id] = map[string]source.Entry{}
			for k, e := range keys {
				s.Tenants[id][k] = e
			}
		}
		ws.snaps <- s
	}
	h.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	send() // the first, full pass
	for _, p := range []string{"198.51.100.0/25", "198.51.100.0/26"} {
		h.put("a", "network", fmt.Sprintf(`{"prefixes": [%q]}`, p))
		send()
	}
	want := h.snap.Tenants["a"]["network"].ModifyIndex
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := ws.tenantStatus("a")
		if st.State == "applied" && st.AppliedIndex == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deferred change was never applied: status %+v, want index %d", st, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// slowKernel is a fakeKernel whose applies take cost on the fake clock.
type slowKernel struct {
	*fakeKernel
	clk  *fakeClock
	cost time.Duration
}

func (k slowKernel) Apply(ctx context.Context, s rtspec.TenantSpec) ([]string, error) {
	k.clk.step(k.cost)
	return k.fakeKernel.Apply(ctx, s)
}

// A tenant whose every apply takes 100 ms and who changes its keys every
// 10 ms keeps the daemon busy about 1/CostShare of the time after its
// burst, not 4 applies (40%) a second; its last write still lands.
func TestPacerChargesExpensiveChanges(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	h := newHarness(t, Options{})
	const cost = 100 * time.Millisecond
	h.d = New(Options{HostID: "edge1", Store: h.store, Routing: slowKernel{h.k, clk, cost}, Now: clk.now})
	h.put("heavy", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.pass(t, true)
	h.resetCalls()
	t0 := clk.t
	var last string
	for i := 0; clk.t.Sub(t0) < 10*time.Second; i++ {
		clk.step(10 * time.Millisecond)
		last = fmt.Sprintf("198.51.100.%d/32", i%256)
		h.put("heavy", "network", fmt.Sprintf(`{"prefixes": [%q]}`, last))
		h.pass(t, false)
	}
	busy := time.Duration(countOf(h.k.applies, "heavy")) * cost
	if limit := clk.t.Sub(t0)/CostShare + DefaultApplyBurst*cost + cost; busy > limit {
		t.Fatalf("busy %v with the heavy tenant over %v, want at most %v", busy, clk.t.Sub(t0), limit)
	}
	if due, ok := h.d.pace.next(); ok {
		clk.t = due
		h.pass(t, false)
	}
	if got := h.k.specs["heavy"].Prefixes[0].String(); got != last {
		t.Fatalf("kernel has %s, last write %s", got, last)
	}
}
