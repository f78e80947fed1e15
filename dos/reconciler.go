package dos

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// Tenant is what nsd hands the DoS reconciler per tenant.
type Tenant struct {
	ID       string
	Prefixes []netip.Prefix
	Spec     *dosspec.Spec // nil: the tenant has no DoS document
}

// Reconciler keeps the DoS maps equal to the desired state: it assigns
// tenants stable counter indexes (recovered from the pinned name map after
// a restart), builds the State purely and writes the difference.
type Reconciler struct {
	mu    sync.Mutex // Apply against Counters (metrics scrapes)
	objs  *dosBPFObjects
	w     *Writer
	index map[string]uint32
	// inForce is the version of each document the maps hold (State.InForce
	// of the last Write); nil before the first, when recoverInForce infers
	// it from the maps.
	inForce map[string]*dosspec.Spec
	log     *slog.Logger
}

// NewReconciler reads the index assignment the pinned maps hold.
func NewReconciler(d *Datapath, log *slog.Logger) (*Reconciler, error) {
	return newReconciler(&d.objs, log)
}

func newReconciler(o *dosBPFObjects, log *slog.Logger) (*Reconciler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	names, err := readNames(o.NfhNames)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{objs: o, w: NewWriter(o), index: map[string]uint32{}, log: log}
	for i := 1; i < MaxTenants; i++ {
		if names[i] != "" {
			r.index[names[i]] = uint32(i)
		}
	}
	return r, nil
}

// Apply makes the maps match global and tenants. The returned map holds
// the documents that could not be placed, by tenant ID and, for the
// global document, GlobalKey (no tenant ID contains a slash): a
// *PlacementError says whether the version placed before stays in force
// (see the package documentation for who gets the slots). A tenant keeps
// its counters either way. err is a failure to write the maps; what is in
// force is then unknown and the next Apply starts from the maps.
func (r *Reconciler) Apply(global dosspec.Spec, tenants []Tenant, now time.Time) (map[string]error, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]bool{}
	for _, t := range tenants {
		want[t.ID] = true
	}
	used := map[uint32]bool{}
	for id, i := range r.index {
		if want[id] {
			used[i] = true
		}
	}
	errs := map[string]error{}
	var in []TenantInput
	sorted := append([]Tenant(nil), tenants...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	next := uint32(1)
	for _, t := range sorted {
		idx, ok := r.index[t.ID]
		if !ok {
			for next < MaxTenants && used[next] {
				next++
			}
			if next >= MaxTenants {
				errs[t.ID] = fmt.Errorf("the host's %d DoS tenant slots are taken", MaxTenants-1)
				continue
			}
			idx = next
			used[idx] = true
		}
		in = append(in, TenantInput{ID: t.ID, Index: idx, Prefixes: t.Prefixes, Spec: t.Spec})
	}
	inForce := r.inForce
	if inForce == nil {
		var err error
		if inForce, err = r.recoverInForce(global, in, now); err != nil {
			return errs, err
		}
	}
	st, berrs := Build(Desired{Global: global, Tenants: in, Now: now, InForce: inForce})
	for id, err := range berrs {
		errs[id] = err
	}
	t0 := time.Now()
	if err := r.w.Write(st); err != nil {
		r.inForce = nil
		return errs, fmt.Errorf("write DoS maps: %w", err)
	}
	r.inForce = st.InForce
	r.index = map[string]uint32{}
	for _, t := range in {
		r.index[t.ID] = t.Index
	}
	if r.w.Writes > 0 {
		r.log.Info("DoS maps updated", "entries", r.w.Writes, "signatures", len(st.Sigs), "rate_rules", len(st.Rates),
			"tenants", len(in), "took", time.Since(t0))
	}
	return errs, nil
}

// recoverInForce infers, for a Reconciler that has not written yet (nsd
// restarted), which documents the maps hold: a document counts as in
// force when the pinned names hold every signature and rate rule it would
// write (what it held before the restart). The previous version of a
// document that is not, say one refused before the restart, is not known:
// that document competes for the free slots like a new one.
func (r *Reconciler) recoverInForce(global dosspec.Spec, tenants []TenantInput, now time.Time) (map[string]*dosspec.Spec, error) {
	names, err := readNames(r.objs.NfhNames)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, n := range names[namesSigs:] {
		if n != "" {
			have[n] = true
		}
	}
	holds := func(scope string, s *dosspec.Spec) bool {
		for _, rl := range s.RateLimits {
			if !have[scope+"/rate:"+rl.Prefix.String()] {
				return false
			}
		}
		for _, sg := range s.Signatures {
			if !live(sg, now) {
				continue
			}
			if !have[scope+"/"+sg.ID] || sg.Action == "ratelimit" && !have[scope+"/sig:"+sg.ID] {
				return false
			}
		}
		return true
	}
	out := map[string]*dosspec.Spec{}
	if holds(Global, &global) {
		out[dosspec.GlobalKey] = &global
	}
	for _, t := range tenants {
		if t.Spec != nil && holds(t.ID, t.Spec) {
			out[t.ID] = t.Spec
		}
	}
	return out, nil
}

// Writes is the number of map entries the last Apply changed.
func (r *Reconciler) Writes() int { return r.w.Writes }

// TenantIndex is a tenant's counter index (0: none).
func (r *Reconciler) TenantIndex(id string) uint32 { return r.index[id] }

// TenantName maps a counter index back to its tenant ("" if unused).
func (r *Reconciler) TenantName(i uint32) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.w.Last(); st != nil {
		return st.Tenants[i]
	}
	return ""
}

// SampleRate is the 1-in-N rate packets to a tenant's prefixes are
// sampled at as the maps hold it (the tenant's sample_rate, else the
// global one; tenant "": the global one; 0: off).
func (r *Reconciler) SampleRate(tenant string) uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.w.Last()
	if st == nil {
		return 0
	}
	if s := st.InForce[tenant]; tenant != "" && s != nil && s.SampleRate != 0 {
		return s.SampleRate
	}
	return st.SampleRate
}

// Sampling reports whether any packets are sampled (a global or a
// tenant's sample_rate in force).
func (r *Reconciler) Sampling() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.w.Last()
	if st == nil {
		return false
	}
	if st.SampleRate != 0 {
		return true
	}
	for id, s := range st.InForce {
		if id != dosspec.GlobalKey && s != nil && s.SampleRate != 0 {
			return true
		}
	}
	return false
}

// Stats are packet and byte counts; Dropped* the part that was dropped.
type Stats struct {
	Packets, Bytes, Dropped, DroppedBytes uint64
}

// Reasons names the global counters (enum counter in xdp_dos.c).
var Reasons = []string{"pass", "allow", "deny", "non_ip", "malformed", "signature_drop", "rate_drop",
	"monitor", "tenant_allow", "tenant_deny", "sampled", "sample_lost",
	"syn_cookie", "cookie_invalid", "out_of_state", "syn_drop"}

// Counters is a snapshot of every counter, summed over CPUs.
type Counters struct {
	Reasons    map[string]Stats // Packets and Bytes only
	Signatures map[string]Stats // by scope/id
	RateLimits map[string]Stats // by scope/rate:<prefix> or scope/sig:<id>
	Tenants    map[string]Stats
	// TCP is the TCP protection counters of tenants with a rule.
	TCP map[string]TCPStats
}

// Counters reads every counter.
func (r *Reconciler) Counters() (Counters, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := Counters{Reasons: map[string]Stats{}, Signatures: map[string]Stats{}, RateLimits: map[string]Stats{}, Tenants: map[string]Stats{}}
	for i, name := range Reasons {
		var per []dosBPFStats
		if err := r.objs.NfhCounters.Lookup(uint32(i), &per); err != nil {
			return c, fmt.Errorf("read counter %s: %w", name, err)
		}
		var s Stats
		for _, p := range per {
			s.Packets += p.Packets
			s.Bytes += p.Bytes
		}
		c.Reasons[name] = s
	}
	st := r.w.Last()
	if st == nil {
		return c, nil
	}
	for i, sg := range st.Sigs {
		s, err := ruleStats(r.objs.NfhSigCounters, uint32(i))
		if err != nil {
			return c, err
		}
		c.Signatures[sg.ID] = s
	}
	for i, rt := range st.Rates {
		s, err := ruleStats(r.objs.NfhRateCounters, uint32(i))
		if err != nil {
			return c, err
		}
		c.RateLimits[rt.ID] = s
	}
	for i, id := range st.Tenants {
		s, err := ruleStats(r.objs.NfhTenantCounters, i)
		if err != nil {
			return c, err
		}
		c.Tenants[id] = s
	}
	c.TCP = map[string]TCPStats{}
	for i := range st.TCP.Rules {
		s, err := readTCPStats(r.objs.NfhTcpCounters, i)
		if err != nil {
			return c, fmt.Errorf("read TCP counters %d: %w", i, err)
		}
		c.TCP[st.Tenants[i]] = s
	}
	return c, nil
}

func ruleStats(m *ebpf.Map, i uint32) (Stats, error) {
	var per []dosBPFRuleStats
	if err := m.Lookup(i, &per); err != nil {
		return Stats{}, fmt.Errorf("read %s[%d]: %w", m, i, err)
	}
	var s Stats
	for _, p := range per {
		s.Packets += p.Packets
		s.Bytes += p.Bytes
		s.Dropped += p.Dropped
		s.DroppedBytes += p.DroppedBytes
	}
	return s, nil
}
