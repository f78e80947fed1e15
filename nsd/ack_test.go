package nsd

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// ackingStore is fakeStore with acknowledgements.
type ackingStore struct {
	*fakeStore
	amu  sync.Mutex
	acks []source.Ack
}

func (s *ackingStore) PutAck(_ context.Context, a source.Ack) error {
	s.amu.Lock()
	defer s.amu.Unlock()
	s.acks = append(s.acks, a)
	return nil
}

func (s *ackingStore) ListAcks(context.Context) (map[string]source.Ack, error) { return nil, nil }
func (s *ackingStore) DeleteAck(context.Context, string) error                 { return nil }

func (s *ackingStore) written() []source.Ack {
	s.amu.Lock()
	defer s.amu.Unlock()
	return append([]source.Ack(nil), s.acks...)
}

func newAckHarness(t *testing.T, opts Options) (*harness, *ackingStore) {
	h := &harness{store: &fakeStore{status: map[string]any{}}, k: &fakeKernel{specs: map[string]rtspec.TenantSpec{}},
		snap: source.Snapshot{Tenants: map[string]map[string]source.Entry{}, Control: map[string]source.Entry{}}}
	as := &ackingStore{fakeStore: h.store}
	opts.HostID, opts.Store, opts.Routing, opts.Acks = "edge1", as, h.k, true
	h.d = New(opts)
	if h.d.ack == nil {
		t.Fatal("Acks with an AckStore made no acker")
	}
	return h, as
}

// tenantWrites are the status writes of tenants (not the host's).
func (h *harness) tenantWrites() map[string]int {
	out := map[string]int{}
	for k, v := range h.store.writes {
		if k != source.HostStatusName {
			out[k] = v
		}
	}
	return out
}

func (h *harness) ackPass(t *testing.T, full bool) uint64 {
	t.Helper()
	h.snap.Through = h.index
	h.pass(t, full)
	h.d.ack.mu.Lock()
	defer h.d.ack.mu.Unlock()
	return h.d.ack.want
}

// With acknowledgements a clean tenant has no status key (the ack says
// it), a tenant with something to say has one, written when that changes
// and deleted when it is clean again; the ack covers the snapshot.
func TestAckedStatusWrites(t *testing.T) {
	h, _ := newAckHarness(t, Options{MinApplyInterval: -1})
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("beta", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("bad", "network", `{"prefixes": ["not a prefix"]}`)
	if got := h.ackPass(t, true); got != h.index {
		t.Fatalf("ack after the first pass: %d, want %d", got, h.index)
	}
	if w := h.tenantWrites(); len(w) != 1 || w["bad"] != 1 {
		t.Fatalf("status writes %v, want only the refused tenant's", w)
	}
	// A change of a clean tenant: no status write, the ack moves.
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/25"]}`)
	if got := h.ackPass(t, false); got != h.index {
		t.Fatalf("ack after acme's change: %d, want %d", got, h.index)
	}
	// The refused tenant changes to another refused version with the
	// same error: nothing new to say.
	h.put("bad", "network", `{"prefixes": ["not a prefix"], "advertise": false}`)
	h.ackPass(t, false)
	if w := h.tenantWrites(); len(w) != 1 || w["bad"] != 1 {
		t.Fatalf("status writes %v after changes that say nothing new", w)
	}
	// Fixed: its key goes.
	h.put("bad", "network", `{"prefixes": ["192.0.2.0/24"]}`)
	h.ackPass(t, false)
	if _, ok := h.store.status["bad"]; ok || len(h.store.status) != 1 {
		t.Fatalf("statuses %v after the fix, want none", h.store.status)
	}
	// Resyncs write nothing either.
	h.ackPass(t, true)
	h.ackPass(t, true)
	if w := h.tenantWrites(); len(w) != 1 || w["bad"] != 1 {
		t.Fatalf("resyncs wrote statuses: %v", w)
	}
}

// A change the pacer defers is not acknowledged until it is applied: the
// ack stays below the deferred tenant's newest write.
func TestAckWaitsForDeferredChange(t *testing.T) {
	now := time.Date(2026, 12, 2, 20, 0, 0, 0, time.UTC)
	h, _ := newAckHarness(t, Options{MinApplyInterval: time.Second, ApplyBurst: 1, LaneWidth: -1, Now: func() time.Time { return now }})
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("beta", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.ackPass(t, true)
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/25"]}`)
	h.ackPass(t, false) // acme's burst: applied
	h.put("acme", "network", `{"prefixes": ["198.51.100.0/26"]}`)
	deferred := h.index
	h.put("beta", "network", `{"prefixes": ["203.0.113.0/25"]}`)
	got := h.ackPass(t, false)
	if _, ok := h.d.pace.deferred["acme"]; !ok {
		t.Fatalf("acme's second change was not deferred (pacer: %v)", h.d.pace.deferred)
	}
	if got >= deferred {
		t.Fatalf("ack %d covers acme's deferred write at %d", got, deferred)
	}
	now = now.Add(2 * time.Second)
	if got := h.ackPass(t, false); got != h.index {
		t.Fatalf("ack after acme's turn: %d, want %d", got, h.index)
	}
}

// The acker writes a change at once and a stream of them at most once per
// interval, the latest value last.
func TestAckerCoalesces(t *testing.T) {
	st := &ackingStore{fakeStore: &fakeStore{status: map[string]any{}}}
	a := newAcker(st, "edge1", 200*time.Millisecond, time.Now, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.run(ctx)
	a.set(5, false)
	deadline := time.Now().Add(5 * time.Second)
	for len(st.written()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for i := uint64(6); i <= 50; i++ {
		a.set(i, false)
		time.Sleep(5 * time.Millisecond)
	}
	a.set(3, false) // never backwards
	for time.Now().Before(deadline) {
		w := st.written()
		if w[len(w)-1].Through == 50 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w := st.written()
	if w[0].Through != 5 || w[len(w)-1].Through != 50 {
		t.Fatalf("acks %v: want 5 first and 50 last", w)
	}
	// 45 sets over about 225 ms at one write per 200 ms after a burst of
	// three: about five writes (however slow the machine, never one per
	// set).
	if len(w) > 8 {
		t.Fatalf("%d ack writes for 46 sets: not coalesced", len(w))
	}
	a.set(2, true) // a store reset may go back
	for time.Now().Before(deadline) && st.written()[len(st.written())-1].Through != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	if w := st.written(); w[len(w)-1].Through != 2 {
		t.Fatalf("after a reset: %v", w[len(w)-1])
	}
}
