package nsd

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/nsd/source"
)

// countingFirewall counts one more packet on every read of its counters.
type countingFirewall struct {
	mu sync.Mutex
	n  uint64
}

func (f *countingFirewall) Apply(string, *fwspec.Spec) ([]string, error) { return nil, nil }

func (f *countingFirewall) Counters(string) (map[string]fwspec.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return map[string]fwspec.Counter{"r": {Packets: f.n, Bytes: 60 * f.n}}, nil
}

// With counters on demand, resyncs whose only news is counters write no
// status; a request in control/watch/<tenant> is answered at once with
// fresh counters and its Asked time, then again while the counters change
// and the request lasts; its end stops the writes; a malformed request is
// ignored.
func TestCountersOnDemand(t *testing.T) {
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	h := newHarness(t, Options{Firewall: &countingFirewall{}, CountersOnDemand: true, Now: func() time.Time { return now }})
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("acme", "firewall", `{"rules": [{"id": "r", "expression": "tcp.dstport == 22", "action": "block"}]}`)
	h.put("beta", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("beta", "firewall", `{"rules": [{"id": "r", "expression": "tcp.dstport == 22", "action": "block"}]}`)
	ctx := context.Background()
	// What Run does with a snapshot and on the counter ticker.
	snapshot := func(full bool) {
		t.Helper()
		h.pass(t, full)
		h.d.refreshCounters(ctx, h.d.updateCounterRequests(h.snap.Control))
	}
	tick := func() { h.d.refreshCounters(ctx, h.d.requestedTenants()) }
	writes := func(id string) int {
		h.store.mu.Lock()
		defer h.store.mu.Unlock()
		return h.store.writes[id]
	}
	snapshot(true)
	w0 := writes("acme")
	for i := 0; i < 3; i++ {
		snapshot(true) // resyncs: the counters move, nothing else
	}
	if got := writes("acme"); got != w0 {
		t.Fatalf("resyncs with only new counters wrote %d statuses", got-w0)
	}

	asked := now.Add(-time.Second) // the requester's clock
	req, _ := json.Marshal(source.CounterRequest{Asked: asked, Until: now.Add(2 * time.Minute)})
	h.index++
	h.snap.Control[source.CounterRequestName("acme")] = source.Entry{Value: req, ModifyIndex: h.index}
	snapshot(false)
	st := h.store.tenantStatus("acme")
	if writes("acme") != w0+1 || !st.CountersAsked.Equal(asked) || st.Firewall["r"].Packets == 0 {
		t.Fatalf("the request was not answered: %d writes, %+v", writes("acme")-w0, st)
	}
	before := st.Firewall["r"].Packets
	tick()
	if st := h.store.tenantStatus("acme"); writes("acme") != w0+2 || st.Firewall["r"].Packets <= before || !st.CountersAsked.Equal(asked) {
		t.Fatalf("a tick while requested: %d writes, %+v", writes("acme")-w0, st)
	}
	if writes("beta") != w0 {
		t.Errorf("beta, not requested, was written %d times", writes("beta")-w0)
	}
	// A pass for another reason keeps saying the counters answer the request.
	snapshot(true)
	if st := h.store.tenantStatus("acme"); !st.CountersAsked.Equal(asked) {
		t.Errorf("a resync dropped CountersAsked: %+v", st)
	}

	// The request expires: ticks and resyncs write nothing more.
	now = now.Add(3 * time.Minute)
	w := writes("acme")
	tick()
	snapshot(true)
	if writes("acme") != w {
		t.Errorf("an expired request still writes: %d", writes("acme")-w)
	}
	// Malformed: ignored.
	h.index++
	h.snap.Control[source.CounterRequestName("acme")] = source.Entry{Value: []byte(`"now please"`), ModifyIndex: h.index}
	snapshot(false)
	if writes("acme") != w {
		t.Errorf("a malformed request was answered")
	}

	// Off (--status-counters always): every resync with new counters writes.
	h2 := newHarness(t, Options{Firewall: &countingFirewall{}})
	h2.put("acme", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h2.put("acme", "firewall", `{"rules": [{"id": "r", "expression": "tcp.dstport == 22", "action": "block"}]}`)
	h2.pass(t, true)
	n := h2.store.writes["acme"]
	h2.pass(t, true)
	if h2.store.writes["acme"] != n+1 {
		t.Errorf("always: a resync with new counters wrote %d statuses", h2.store.writes["acme"]-n)
	}
}
