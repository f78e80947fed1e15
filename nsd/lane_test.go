package nsd

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nfhost/nfhost/firewall/fwspec"
	dto "github.com/prometheus/client_model/go"
)

// gatedFirewall is a Firewall whose applies in one namespace wait for a
// gate, as a slow nft batch would; the others return at once.
type gatedFirewall struct {
	mu      sync.Mutex
	slowNS  string
	gate    chan struct{}
	entered chan struct{}
	log     []string // "apply <ns> <rule ids>" in the order the applies ended
}

func (f *gatedFirewall) Apply(ns string, spec *fwspec.Spec) ([]string, error) {
	f.mu.Lock()
	slow := ns == f.slowNS && f.gate != nil
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if slow {
		entered <- struct{}{}
		<-gate
	}
	var ids []string
	if spec != nil {
		for _, r := range spec.Rules {
			ids = append(ids, r.ID)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf("apply %s %v", ns, ids))
	return []string{"firewall " + ns}, nil
}

func (f *gatedFirewall) Counters(string) (map[string]fwspec.Counter, error) {
	return map[string]fwspec.Counter{}, nil
}

func (f *gatedFirewall) hold(ns string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.slowNS, f.gate, f.entered = ns, make(chan struct{}), make(chan struct{}, 1)
}

func (f *gatedFirewall) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.gate)
	f.gate = nil
}

func fwDoc(id string) string {
	return fmt.Sprintf(`{"rules": [{"id": %q, "expression": "tcp.dstport == 22", "action": "block"}]}`, id)
}

// A throttled tenant's firewall change is applied in the lane: while its
// slow nft batch runs, another tenant's change is applied at once; the
// result is folded into the next pass (status with the firewall index the
// lane applied), and a write that came meanwhile is applied after it.
func TestLaneKeepsQuietTenantsOutOfANoisyOnesWay(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	fw := &gatedFirewall{}
	h := newHarness(t, Options{Now: clk.now, Firewall: fw, ApplyBurst: 2})
	h.put("noisy", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("noisy", "firewall", fwDoc("n0"))
	h.put("quiet", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("quiet", "firewall", fwDoc("q0"))
	h.pass(t, true)
	noisyNS := h.k.specs["noisy"].Namespace

	// The first change uses the burst and is applied here.
	clk.step(time.Millisecond)
	h.put("noisy", "firewall", fwDoc("n1"))
	h.pass(t, false)
	if len(h.d.lane.busy) != 0 || h.store.tenantStatus("noisy").FirewallIndex != h.index {
		t.Fatalf("first change: lane %v status %+v", h.d.lane.busy, h.store.tenantStatus("noisy"))
	}
	// The second empties the bucket: the lane takes it, and its batch hangs.
	fw.hold(noisyNS)
	clk.step(time.Millisecond)
	h.put("noisy", "firewall", fwDoc("n2"))
	n2 := h.index
	h.pass(t, false)
	<-fw.entered
	if !h.d.lane.busy["noisy"] {
		t.Fatal("the throttled tenant's change did not go to the lane")
	}
	// Meanwhile the quiet tenant's change is applied by the next pass.
	clk.step(time.Millisecond)
	h.put("quiet", "firewall", fwDoc("q1"))
	h.pass(t, false)
	if st := h.store.tenantStatus("quiet"); st.FirewallIndex != h.index || st.State != "applied" {
		t.Fatalf("quiet tenant waited for the noisy one: %+v", st)
	}
	// The noisy tenant writes again while its job runs: left alone.
	clk.step(time.Millisecond)
	h.put("noisy", "firewall", fwDoc("n3"))
	n3 := h.index
	h.pass(t, false)
	if st := h.store.tenantStatus("noisy"); st.FirewallIndex == n2 || st.FirewallIndex == n3 {
		t.Fatalf("status claims a firewall the lane has not applied yet: %+v", st)
	}

	fw.release()
	r := <-h.d.lane.results // what Run does
	h.d.lane.finish(r)
	h.pass(t, false)
	if st := h.store.tenantStatus("noisy"); st.FirewallIndex != n2 || st.State != "applied" {
		t.Fatalf("after the lane: status %+v, want firewall index %d", st, n2)
	}
	// The write made while the lane ran is due: passes at the times the
	// pacer gives apply it, with no new snapshot.
	for i := 0; i < 3 && h.store.tenantStatus("noisy").FirewallIndex != n3; i++ {
		due, ok := h.d.pace.next()
		if !ok {
			t.Fatal("the write made while the lane ran is not due")
		}
		clk.t = due
		h.pass(t, false)
		if h.d.lane.busy["noisy"] {
			r := <-h.d.lane.results
			h.d.lane.finish(r)
			h.pass(t, false)
		}
	}
	if st := h.store.tenantStatus("noisy"); st.FirewallIndex != n3 {
		t.Fatalf("last write not applied: %+v (want %d)", st, n3)
	}
	var m dto.Metric
	h.d.m.BackgroundApplies.Write(&m)
	if got := m.GetCounter().GetValue(); got < 1 {
		t.Fatalf("background applies %v", got)
	}
	if last := fw.log[len(fw.log)-1]; last != fmt.Sprintf("apply %s [n3]", noisyNS) {
		t.Fatalf("last apply %q", last)
	}
}

// Deleting a tenant whose lane job runs, and a full pass, wait for the job:
// the deletion comes after the batch, never under it.
func TestLaneDrainsBeforeDeleteAndFullPass(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	fw := &gatedFirewall{}
	h := newHarness(t, Options{Now: clk.now, Firewall: fw, ApplyBurst: 1})
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		h.put(id, "network", fmt.Sprintf(`{"prefixes": ["198.51.100.%d/32"]}`, id[0]))
	}
	h.pass(t, true)
	send := func(id, rule string) {
		t.Helper()
		fw.hold(h.k.specs[id].Namespace)
		clk.step(time.Second)
		h.put(id, "firewall", fwDoc(rule))
		h.pass(t, false)
		<-fw.entered
		if !h.d.lane.busy[id] {
			t.Fatalf("%s not in the lane", id)
		}
	}
	send("a", "a1")
	delete(h.snap.Tenants, "a")
	time.AfterFunc(50*time.Millisecond, fw.release)
	h.pass(t, false)
	if len(h.k.deletes) != 1 || len(fw.log) == 0 || len(h.d.lane.busy) != 0 {
		t.Fatalf("deletes %v, firewall log %v, lane %v", h.k.deletes, fw.log, h.d.lane.busy)
	}

	send("b", "b1")
	time.AfterFunc(50*time.Millisecond, fw.release)
	h.pass(t, true)
	if len(h.d.lane.busy) != 0 || h.store.tenantStatus("b").FirewallIndex != h.index {
		t.Fatalf("full pass: lane %v status %+v", h.d.lane.busy, h.store.tenantStatus("b"))
	}

	// Lane off: everything on the calling goroutine.
	off := newHarness(t, Options{Now: clk.now, Firewall: &gatedFirewall{}, ApplyBurst: 1, LaneWidth: -1})
	off.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	off.pass(t, true)
	clk.step(time.Second)
	off.put("a", "firewall", fwDoc("x"))
	off.pass(t, false)
	if len(off.d.lane.busy) != 0 || off.store.tenantStatus("a").FirewallIndex != off.index {
		t.Fatalf("lane off: %v %+v", off.d.lane.busy, off.store.tenantStatus("a"))
	}
}
