package nsd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// fakeStore records status writes. Reconcile never reads the store; the
// snapshot is handed in.
type fakeStore struct {
	source.Store
	mu     sync.Mutex
	status map[string]any
	writes map[string]int // status writes by name
}

func (f *fakeStore) PutStatus(_ context.Context, host, name string, st any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[name] = st
	if f.writes == nil {
		f.writes = map[string]int{}
	}
	f.writes[name]++
	return nil
}

func (f *fakeStore) ListStatus(_ context.Context, host string) (map[string]map[string]json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]map[string]json.RawMessage{"edge1": {}}
	for name, st := range f.status {
		b, _ := json.Marshal(st)
		out["edge1"][name] = b
	}
	return out, nil
}

func (f *fakeStore) DeleteStatus(_ context.Context, host, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.status, name)
	return nil
}

func (f *fakeStore) tenantStatus(id string) source.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, _ := f.status[id].(source.Status)
	return st
}

// fakeKernel is a Plumber that keeps specs in memory.
type fakeKernel struct {
	specs   map[string]rtspec.TenantSpec
	applies []string
	deletes []string
	failFor string
}

func (k *fakeKernel) Observe(context.Context) (map[string]routing.Observed, error) {
	out := map[string]routing.Observed{}
	for id, s := range k.specs {
		out[id] = routing.Observed{ID: id, Slot: s.Slot, HostIf: s.HostIf, Namespace: s.Namespace}
	}
	return out, nil
}

func (k *fakeKernel) Apply(_ context.Context, s rtspec.TenantSpec) ([]string, error) {
	k.applies = append(k.applies, s.ID)
	if s.ID == k.failFor {
		return nil, fmt.Errorf("injected failure")
	}
	// Like the kernel's nft interval map: no two tenants' entries overlap.
	for id, o := range k.specs {
		for _, p := range o.Prefixes {
			for _, q := range s.Prefixes {
				if id != s.ID && p.Overlaps(q) {
					return nil, fmt.Errorf("interval %s overlaps %s of %s", q, p, id)
				}
			}
		}
	}
	old, ok := k.specs[s.ID]
	k.specs[s.ID] = s
	if ok && fmt.Sprint(old) == fmt.Sprint(s) {
		return nil, nil
	}
	return []string{"changed " + s.ID}, nil
}

func (k *fakeKernel) Delete(_ context.Context, o routing.Observed) ([]string, error) {
	k.deletes = append(k.deletes, o.ID)
	delete(k.specs, o.ID)
	return []string{"deleted " + o.ID}, nil
}

func (k *fakeKernel) GC(context.Context, map[uint16]bool) ([]string, error) { return nil, nil }

type harness struct {
	d     *Daemon
	store *fakeStore
	k     *fakeKernel
	index uint64
	snap  source.Snapshot
}

func newHarness(t *testing.T, opts Options) *harness {
	h := &harness{store: &fakeStore{status: map[string]any{}}, k: &fakeKernel{specs: map[string]rtspec.TenantSpec{}},
		snap: source.Snapshot{Tenants: map[string]map[string]source.Entry{}, Control: map[string]source.Entry{}}}
	opts.HostID, opts.Store, opts.Routing = "edge1", h.store, h.k
	h.d = New(opts)
	return h
}

func (h *harness) put(id, key, doc string) {
	h.index++
	if h.snap.Tenants[id] == nil {
		h.snap.Tenants[id] = map[string]source.Entry{}
	}
	h.snap.Tenants[id][key] = source.Entry{Value: []byte(doc), ModifyIndex: h.index}
}

func (h *harness) pass(t *testing.T, full bool) []Result {
	t.Helper()
	// Snapshots are values: copy so later puts do not alias.
	b, _ := json.Marshal(h.snap)
	var s source.Snapshot
	json.Unmarshal(b, &s)
	return h.d.Reconcile(context.Background(), s, full)
}

func (h *harness) resetCalls() { h.k.applies, h.k.deletes = nil, nil }

func TestOnlyChangedTenantsAreTouched(t *testing.T) {
	h := newHarness(t, Options{})
	for i := 0; i < 50; i++ {
		h.put(fmt.Sprintf("t%d", i), "network", fmt.Sprintf(`{"prefixes": ["198.51.%d.0/24"]}`, i))
	}
	h.pass(t, true)
	if len(h.k.applies) != 50 {
		t.Fatalf("initial pass applied %d", len(h.k.applies))
	}
	h.resetCalls()
	h.put("t7", "network", `{"prefixes": ["198.51.7.0/25"]}`)
	h.pass(t, false)
	if strings.Join(h.k.applies, ",") != "t7" {
		t.Fatalf("incremental pass applied %v, want only t7", h.k.applies)
	}
	h.resetCalls()
	h.pass(t, false)
	if len(h.k.applies) != 0 {
		t.Fatalf("no-op pass applied %v", h.k.applies)
	}
}

func TestBadConfigKeepsLastGoodAndOthersUntouched(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("other", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.pass(t, true)
	good := h.k.specs["acme"]
	h.resetCalls()

	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24", "203.0.113.0/33"]}`)
	rs := h.pass(t, false)
	if !Failed(rs) || len(h.k.applies) != 0 {
		t.Fatalf("results %+v applies %v", rs, h.k.applies)
	}
	if fmt.Sprint(h.k.specs["acme"]) != fmt.Sprint(good) {
		t.Fatal("last good state was changed")
	}
	st := h.store.tenantStatus("acme")
	want := `tenants/acme/network: prefixes[1]: "203.0.113.0/33": invalid CIDR`
	if st.State != "error" || st.Error != want || st.AppliedIndex != 1 {
		t.Fatalf("status %+v", st)
	}
	// A full resync re-applies the last good config (drift repair).
	h.resetCalls()
	h.pass(t, true)
	sort.Strings(h.k.applies)
	if strings.Join(h.k.applies, ",") != "acme,other" {
		t.Fatalf("resync applies %v", h.k.applies)
	}
	// Fixing the config applies it.
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/25"]}`)
	h.pass(t, false)
	if st := h.store.tenantStatus("acme"); st.State != "applied" || h.k.specs["acme"].Prefixes[0].String() != "203.0.113.0/25" {
		t.Fatalf("status %+v", st)
	}
}

func TestOverlapIncumbentKeepsPrefix(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.pass(t, true)
	h.put("intruder", "network", `{"prefixes": ["203.0.113.128/25"]}`)
	h.pass(t, false)
	if _, ok := h.k.specs["intruder"]; ok {
		t.Fatal("overlapping tenant applied")
	}
	if st := h.store.tenantStatus("intruder"); !strings.Contains(st.Error, `overlaps 203.0.113.0/24 held by tenant "acme"`) {
		t.Fatalf("status %+v", st)
	}
	// Once acme lets go, the intruder's retry succeeds.
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/25"]}`)
	h.pass(t, false)
	if _, ok := h.k.specs["intruder"]; !ok {
		t.Fatalf("intruder not applied after acme released the prefix: %+v", h.store.tenantStatus("intruder"))
	}
}

func TestSimultaneousOverlapOlderWins(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("zeta", "network", `{"prefixes": ["203.0.113.0/24"]}`)  // index 1: older
	h.put("alpha", "network", `{"prefixes": ["203.0.113.0/24"]}`) // index 2
	h.pass(t, true)
	if _, ok := h.k.specs["zeta"]; !ok {
		t.Fatal("older config lost")
	}
	if _, ok := h.k.specs["alpha"]; ok {
		t.Fatal("newer overlapping config applied")
	}
}

func TestMassDeleteGuard(t *testing.T) {
	h := newHarness(t, Options{})
	for i := 0; i < 10; i++ {
		h.put(fmt.Sprintf("t%d", i), "network", fmt.Sprintf(`{"prefixes": ["198.51.%d.0/24"]}`, i))
	}
	h.pass(t, true)

	// One delete goes through at once.
	delete(h.snap.Tenants, "t0")
	h.pass(t, false)
	if strings.Join(h.k.deletes, ",") != "t0" {
		t.Fatalf("deletes %v", h.k.deletes)
	}
	h.resetCalls()

	// The store is wiped: nothing is deleted, the hold is reported.
	saved := h.snap.Tenants
	h.snap.Tenants = map[string]map[string]source.Entry{}
	rs := h.pass(t, false)
	if len(h.k.deletes) != 0 || len(h.k.specs) != 9 {
		t.Fatalf("wiped store deleted %v", h.k.deletes)
	}
	if len(rs) != 9 || rs[0].State != "held" {
		t.Fatalf("results %+v", rs)
	}
	hs, _ := h.store.status[source.HostStatusName].(source.HostStatus)
	if len(hs.HeldDeletes) != 9 || hs.ConfirmToken == "" {
		t.Fatalf("host status %+v", hs)
	}
	// A wrong token does nothing; the right one lets it through.
	h.snap.Control[source.ConfirmKey("edge1")] = source.Entry{Value: []byte("nope")}
	h.pass(t, false)
	if len(h.k.deletes) != 0 {
		t.Fatal("wrong token accepted")
	}
	h.snap.Control[source.ConfirmKey("edge1")] = source.Entry{Value: []byte(hs.ConfirmToken)}
	h.pass(t, false)
	if len(h.k.deletes) != 9 || len(h.k.specs) != 0 {
		t.Fatalf("confirmed deletes: %v", h.k.deletes)
	}
	_ = saved
}

func TestMassDeleteGuardFlagAndFraction(t *testing.T) {
	h := newHarness(t, Options{MaxDeleteFraction: 0.5})
	for i := 0; i < 4; i++ {
		h.put(fmt.Sprintf("t%d", i), "network", fmt.Sprintf(`{"prefixes": ["198.51.%d.0/24"]}`, i))
	}
	h.pass(t, true)
	delete(h.snap.Tenants, "t0")
	delete(h.snap.Tenants, "t1")
	h.pass(t, false) // 2 of 4 = 50%: not more than the fraction
	if len(h.k.deletes) != 2 {
		t.Fatalf("deletes %v", h.k.deletes)
	}

	h2 := newHarness(t, Options{ConfirmDeletes: true})
	h2.put("a", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h2.put("b", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h2.pass(t, true)
	h2.snap.Tenants = map[string]map[string]source.Entry{}
	h2.pass(t, false)
	if len(h2.k.deletes) != 2 {
		t.Fatalf("--confirm-deletes did not let deletes through: %v", h2.k.deletes)
	}
}

func TestUnknownKeysAndApplyErrors(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "netwrok", `{}`)
	h.put("nonet", "firewall", `{}`)
	h.put("broken", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.k.failFor = "broken"
	rs := h.pass(t, true)
	if st := h.store.tenantStatus("acme"); st.State != "applied" || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "netwrok: unknown key") {
		t.Fatalf("acme status %+v", st)
	}
	if st := h.store.tenantStatus("nonet"); st.State != "error" || !strings.Contains(st.Error, "tenants/nonet/network: missing") {
		t.Fatalf("nonet status %+v", st)
	}
	if st := h.store.tenantStatus("broken"); st.State != "error" || !strings.Contains(st.Error, "injected failure") {
		t.Fatalf("broken status %+v", st)
	}
	if !Failed(rs) {
		t.Fatal("Failed() = false")
	}
	// Failed tenants are retried on the next pass even without a change.
	h.k.failFor = ""
	h.resetCalls()
	h.pass(t, false)
	if !strings.Contains(strings.Join(h.k.applies, ","), "broken") {
		t.Fatalf("failed tenant not retried: %v", h.k.applies)
	}
}

func TestFingerprint(t *testing.T) {
	keys := map[string]source.Entry{"network": {ModifyIndex: 123456}, "firewall": {ModifyIndex: 123999}, "dos": {ModifyIndex: 99}}
	if got := fingerprint(keys); got != "dos=99;firewall=123999;network=123456;" {
		t.Fatalf("fingerprint %q", got)
	}
	if got := fingerprint(nil); got != "" {
		t.Fatalf("fingerprint of no keys %q", got)
	}
}
