// Package nsd is the edge daemon's core: it turns configuration snapshots
// from a source.Store into per-tenant kernel state through the subsystem
// reconcilers, and reports status.
//
// Data flow per pass: snapshot → validate (nsd/config) → overlap check and
// slot allocation (nsd/plan) → routing.TenantSpec → Reconciler.Apply → status.
// Only tenants whose keys changed are touched on a watch event; a periodic
// resync re-reads the kernel and re-applies every tenant to repair drift.
package nsd

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/nsd/plan"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// Plumber is the routing reconciler as the daemon uses it.
type Plumber interface {
	Observe(ctx context.Context) (map[string]routing.Observed, error)
	Apply(ctx context.Context, spec rtspec.TenantSpec) ([]string, error)
	Delete(ctx context.Context, o routing.Observed) ([]string, error)
	GC(ctx context.Context, slots map[uint16]bool) ([]string, error)
}

// Prefetcher is a Plumber that reads ahead, on every core, what the
// Applies of a pass's tenants read (routing.Reconciler.Prefetch): a full
// pass then verifies converged tenants about twice as fast on two cores.
type Prefetcher interface {
	Prefetch(ctx context.Context, ids []string) (stop func())
}

// Firewall is the tenant firewall reconciler as the daemon uses it.
// Both methods must be safe for concurrent use on different namespaces
// (the lane applies throttled tenants' firewalls in the background); the
// daemon never overlaps two calls on one namespace.
type Firewall interface {
	Apply(namespace string, spec *fwspec.Spec) ([]string, error)
	Counters(namespace string) (map[string]fwspec.Counter, error)
}

// Options configure a Daemon.
type Options struct {
	HostID  string
	Store   source.Store
	Routing Plumber
	// Firewall may be nil: firewall keys are then reported as not applied.
	Firewall Firewall
	// DoS may be nil (no --uplink): dos keys are then reported as not
	// applied.
	DoS DoS
	// Synproxy completes in the tenant namespace the handshakes the XDP
	// layer's SYN cookies start (tcp_protection); nil: not kept.
	Synproxy Synproxy
	// GREBackend names the tunnels' backend (ebpf or kernel) for the host
	// status.
	GREBackend string
	// Tunnels may be nil (no --uplink): tenants with tunnels then fail
	// with an error saying so.
	Tunnels Tunnels
	// TunnelEvents names tenants whose tunnel health changed (the prober
	// sends them); their status is rewritten. May be nil.
	TunnelEvents <-chan string
	// Auto delivers the automatic DoS mitigations in force whenever they
	// change (the detector sends them); AutoPolicies is where the daemon
	// publishes the tenants' detection settings. Both may be nil.
	Auto         <-chan []detect.Mitigation
	AutoPolicies *AutoPolicies
	// BGP is the speaker (nil: no BGP). The daemon gives it what this
	// host announces after every pass and never waits for it.
	BGP Announcer
	// OnControl gets the control keys of every snapshot (the nsctl dos
	// top publisher reads its watch requests there). May be nil; must not
	// block.
	OnControl func(map[string]source.Entry)
	NSPrefix  string
	// FirewallEnv returns what firewall rules may refer to on this server
	// (site, region, geo databases) now; nil: none. EnvChanged starts a
	// full pass when it changes (a geo database reloaded); may be nil.
	FirewallEnv func() fwspec.Env
	EnvChanged  <-chan struct{}
	// Resync is the interval of full passes that repair drift.
	Resync time.Duration
	// CountersOnDemand: a change of a tenant's counters alone writes its
	// status only while someone asked for them (counters.go); off, every
	// change seen on a resync is written. CounterInterval is how often a
	// requested tenant's counters are read (0: DefaultCounterInterval).
	CountersOnDemand bool
	CounterInterval  time.Duration
	// MaxDeleteFraction: a pass that would delete more than this share of
	// the tenants on the host (and more than one tenant) is held until an
	// operator confirms. 0 means the default 0.2; 1 disables the guard.
	MaxDeleteFraction float64
	// ConfirmDeletes lets held deletions through (the --confirm-deletes flag).
	ConfirmDeletes bool
	// MinApplyInterval and ApplyBurst pace each tenant's changes so that
	// one tenant rewriting its keys many times a second cannot delay the
	// others: a tenant may apply ApplyBurst changes at once, then one per
	// MinApplyInterval; changes beyond that are coalesced and applied, in
	// their latest version, when the tenant's turn comes (see pacer).
	// 0 means the defaults (250 ms, 10); a negative interval turns pacing
	// off.
	MinApplyInterval time.Duration
	ApplyBurst       int
	// LaneWidth is how many throttled tenants' firewall changes may be
	// applied in the background at once (see lane); 0 means
	// DefaultLaneWidth, negative turns the lane off (everything on the
	// reconcile goroutine).
	LaneWidth int
	// Acks: acknowledge processed changes per host (acks/<host>) and write
	// a tenant's status only when it says more than "applied" (ack.go);
	// the store must be a source.AckStore. AckInterval is the least time
	// between two acknowledgements (0: DefaultAckInterval).
	Acks        bool
	AckInterval time.Duration
	Logger      *slog.Logger
	Metrics     *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

type applied struct {
	index    uint64 // ModifyIndex of the network key that is in force
	spec     rtspec.TenantSpec
	prefixes []netip.Prefix
	fwIndex  uint64        // ModifyIndex of the firewall key in force (0: none)
	fw       *fwspec.Spec  // last good firewall; nil: none
	dosIndex uint64        // ModifyIndex of the dos key in force (0: none)
	dos      *dosspec.Spec // last good DoS document; nil: none
	tunnels  []tunspec.ValidTunnel
	// advertise is the network document's advertise switch in force.
	advertise bool
	at        time.Time // when the state in force was applied
}

// Daemon holds the reconcile state. Its methods are not safe for
// concurrent use; Run serialises everything on one goroutine, except the
// kernel part of throttled tenants' firewall changes (lane), which touches
// nothing of the daemon's state.
type Daemon struct {
	o   Options
	log *slog.Logger
	m   *Metrics

	observed map[string]routing.Observed
	applied  map[string]*applied
	// pairs indexes the tunnel endpoint pairs of the applied tenants
	// (each applied's tunnels), kept as tenants are applied and deleted
	// rather than rebuilt from every tenant's in each pass.
	pairs *plan.TunnelPairs
	seen  map[string]string // tenant → fingerprint of its key indexes
	// pending: the tenants whose keys may differ from what seen holds
	// (the snapshots' Changed sets, kept until a pass looked at them),
	// which are all an incremental pass looks at. absent: the tenants
	// running here that the last snapshot does not list (deletions).
	// live: the tenants running here (observed or applied). holdings and
	// slotTable are the applied prefixes and everyone's slots, kept as
	// tenants are applied and deleted. stateCount counts statuses by
	// state (the tenants gauge). Together they make an incremental pass
	// cost what its tenants cost, not what the host's tenants do.
	pending    map[string]bool
	absent     map[string]bool
	live       map[string]bool
	holdings   *plan.Holdings
	slotTable  *plan.SlotTable
	stateCount map[string]int
	failed     map[string]bool
	// hostFailed: the tenant's last pass failed on this host (in the
	// kernel), not only because a document was refused; it is not
	// announced over BGP from here.
	hostFailed map[string]bool
	bgp        bgpState
	statuses   map[string]source.Status
	hold       holdState
	dos        dosState
	auto       []detect.Mitigation // this edge's detector's mitigations
	fleet      fleetState          // the fleet's (fleet.go)
	rejected   map[string]uint64   // tenant/key → ModifyIndex of the bad document last counted
	problems   string              // the unattributable keys last logged
	hostLast   string              // the host status last written, without its timestamp
	subs       []Subsystem         // in the order a tenant is applied
	plans      map[string]cachedPlan
	// shared lists (nfhost/lists/): the last good version of each, the
	// key of the listing they were parsed from, and a version for plans.
	shared    map[string][]netip.Prefix
	sharedKey string
	sharedVer string
	pace      *pacer
	lane      *lane
	requests  map[string]counterRequest // counter requests by tenant (counters.go)
	// ack writes the host's acknowledgement (Options.Acks, ack.go); nil:
	// per-tenant status writes. written holds, by tenant, the substance of
	// the status key this host holds (statusSubstance).
	ack     *acker
	written map[string]string
	// resync is the periodic resync in progress (resync.go); nil: none.
	resync *resyncState
	// sourceDown is set by the store's health callback, from its goroutines.
	sourceDown atomic.Bool
}

// New creates a daemon.
func New(o Options) *Daemon {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.MaxDeleteFraction == 0 {
		o.MaxDeleteFraction = 0.2
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NSPrefix == "" {
		o.NSPrefix = owned.DefaultNSPrefix
	}
	if o.MinApplyInterval == 0 {
		o.MinApplyInterval = DefaultMinApplyInterval
	}
	if o.ApplyBurst <= 0 {
		o.ApplyBurst = DefaultApplyBurst
	}
	if o.CounterInterval <= 0 {
		o.CounterInterval = DefaultCounterInterval
	}
	d := &Daemon{
		o: o, log: o.Logger, m: o.Metrics,
		observed:   map[string]routing.Observed{},
		applied:    map[string]*applied{},
		pairs:      plan.NewTunnelPairs(nil),
		seen:       map[string]string{},
		pending:    map[string]bool{},
		absent:     map[string]bool{},
		live:       map[string]bool{},
		holdings:   plan.NewHoldings(),
		slotTable:  plan.NewSlotTable(nil),
		stateCount: map[string]int{},
		failed:     map[string]bool{},
		hostFailed: map[string]bool{},
		statuses:   map[string]source.Status{},
		rejected:   map[string]uint64{},
		plans:      map[string]cachedPlan{},
		hold:       holdState{flag: o.ConfirmDeletes},
		pace:       newPacer(o.MinApplyInterval, o.ApplyBurst),
		requests:   map[string]counterRequest{},
		written:    map[string]string{},
	}
	if as, ok := o.Store.(source.AckStore); ok && o.Acks {
		d.ack = newAcker(as, o.HostID, o.AckInterval, o.Now, o.Logger)
	}
	width := o.LaneWidth
	if width == 0 {
		width = DefaultLaneWidth
	}
	if o.MinApplyInterval < 0 { // no pacing: nothing is throttled
		width = 0
	}
	d.lane = newLane(width)
	// Routing first: it makes the namespace the others live in.
	d.subs = []Subsystem{&routingSub{d: d, r: o.Routing}, &tunnelsSub{d: d, t: o.Tunnels},
		&firewallSub{d: d, fw: o.Firewall}, &dosSub{d: d, dos: o.DoS, proxy: o.Synproxy}}
	return d
}

// Result summarises one tenant after a pass.
type Result struct {
	Tenant  string
	State   string
	Changes int
	Err     error
}

// Run watches the store and reconciles until ctx ends. It never tears down
// kernel state on exit: the datapath stays in place across restarts.
func (d *Daemon) Run(ctx context.Context) error {
	snaps := make(chan source.Snapshot, 1)
	go d.o.Store.Watch(ctx, snaps, d.sourceHealth)
	if d.ack != nil {
		go d.ack.run(ctx)
	}
	var ticker, bgpTick <-chan time.Time
	if d.o.BGP != nil {
		// The speaker works asynchronously: its sessions and what it
		// announced reach the host status when they change.
		t := time.NewTicker(time.Second)
		defer t.Stop()
		bgpTick = t.C
	}
	if d.o.Resync > 0 {
		t := time.NewTicker(d.o.Resync)
		defer t.Stop()
		ticker = t.C
	}
	counterTick := time.NewTicker(d.o.CounterInterval)
	defer counterTick.Stop()
	var (
		last    *source.Snapshot
		started bool
		// wake starts a pass when the earliest tenant deferred by the
		// pacer is due, whether or not a new snapshot arrives.
		wake  = time.NewTimer(time.Hour)
		wakeC <-chan time.Time
		// now is always ready: the next slice of a resync is taken
		// when nothing else is waiting (select picks among the ready).
		now    = make(chan time.Time)
		sliceC <-chan time.Time
	)
	close(now)
	wake.Stop()
	defer wake.Stop()
	for {
		if due, ok := d.pace.next(); ok {
			wake.Reset(max(due.Sub(d.o.Now()), 0))
			wakeC = wake.C
		} else {
			wake.Stop()
			wakeC = nil
		}
		sliceC = nil
		if d.resyncing() && last != nil {
			sliceC = now
		}
		select {
		case <-ctx.Done():
			d.log.Info("stopping; kernel state stays in place")
			return nil
		case s := <-snaps:
			s = latest(snaps, s)
			d.m.SourceUp.Set(1)
			if d.o.OnControl != nil {
				d.o.OnControl(s.Control)
			}
			last = &s
			full := !started
			if full {
				if err := d.start(ctx); err != nil {
					d.log.Error("observe kernel state", "err", err)
					continue
				}
				started = true
			}
			d.Reconcile(ctx, s, full)
			d.refreshCounters(ctx, d.updateCounterRequests(s.Control))
		case <-counterTick.C:
			d.refreshCounters(ctx, d.requestedTenants())
		case id := <-d.o.TunnelEvents:
			d.refreshTunnelStatus(ctx, id)
		case ms := <-d.o.Auto:
			d.setAuto(ms)
			if last != nil {
				d.reconcileDoS(ctx, *last, false, nil)
				d.announce(*last, false, nil) // exported automatic mitigations
			}
		case <-bgpTick:
			d.refreshBGPStatus(ctx, last)
		case <-wakeC:
			if last != nil && started {
				d.Reconcile(ctx, *last, false)
			}
		case r := <-d.lane.results:
			d.lane.finish(r)
			if last != nil && started {
				d.Reconcile(ctx, *last, false)
			}
		case <-d.o.EnvChanged:
			// Every tenant's rules are compiled again; the firewall
			// reconciler turns changed geo lists into element changes.
			if last != nil && started {
				d.Reconcile(ctx, *last, true)
			}
		case <-sliceC:
			d.resyncStep(ctx, *last)
		case <-ticker:
			if last == nil || !started || d.resyncing() {
				continue // a resync still running: this tick is skipped
			}
			if err := d.resyncTick(ctx, *last); err != nil {
				d.log.Error("observe kernel state", "err", err)
			}
		}
	}
}

// latest returns the newest snapshot waiting in snaps, s if none: a pass
// over a snapshot that a newer one already replaced is wasted work. A store
// reset seen in a skipped snapshot is carried over.
func latest(snaps <-chan source.Snapshot, s source.Snapshot) source.Snapshot {
	for {
		select {
		case n := <-snaps:
			n.StoreReset = n.StoreReset || s.StoreReset
			n.Changed = bothChanged(s.Changed, n.Changed)
			s = n
		default:
			return s
		}
	}
}

// bothChanged is the Changed set of two snapshots in a row.
func bothChanged(a, b map[string]bool) map[string]bool {
	if a == nil || b == nil {
		return nil
	}
	out := maps.Clone(b)
	maps.Copy(out, a)
	return out
}

// sourceHealth is the store's health callback (called from its goroutines):
// every failure counts, the first one and the recovery are logged.
func (d *Daemon) sourceHealth(err error) {
	if err == nil {
		d.m.SourceUp.Set(1)
		if d.sourceDown.Swap(false) {
			d.log.Info("config source available again")
		}
		return
	}
	d.m.SourceErrors.Inc()
	d.m.SourceUp.Set(0)
	if !d.sourceDown.Swap(true) {
		d.log.Warn("config source unavailable; keeping applied state", "err", err)
	} else {
		d.log.Debug("config source still unavailable", "err", err)
	}
}

// Once reads the store, reconciles every tenant and returns the results.
func (d *Daemon) Once(ctx context.Context) ([]Result, error) {
	s, err := d.o.Store.Read(ctx)
	if err != nil {
		return nil, err
	}
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	return d.Reconcile(ctx, s, true), nil
}

// start observes the kernel and reads back what this host reported before
// a restart: tenant statuses (so that those of tenants gone meanwhile are
// removed) and the mass-delete guard's pending hold and spent token.
func (d *Daemon) start(ctx context.Context) error {
	if err := d.observe(ctx); err != nil {
		return err
	}
	if l, ok := d.o.Store.(legacyStatus); ok {
		if removed, err := l.RemoveLegacyStatus(ctx, d.o.HostID); err != nil {
			d.log.Warn("remove this host's status in the old layout", "err", err)
		} else if removed {
			d.log.Info("removed this host's status in the old layout (status/<host>/); it is now tenant-status/<tenant>/<host> and host-status/<host>")
		}
	}
	all, err := d.o.Store.ListStatus(ctx, d.o.HostID)
	if err != nil {
		d.log.Warn("read this host's previous status", "err", err)
		return nil
	}
	for name, raw := range all[d.o.HostID] {
		if name == source.HostStatusName {
			var hs source.HostStatus
			if json.Unmarshal(raw, &hs) == nil {
				d.hold.ids, d.hold.token, d.hold.spent = hs.HeldDeletes, hs.ConfirmToken, hs.SpentConfirmToken
			}
			continue
		}
		var st source.Status
		if json.Unmarshal(raw, &st) == nil && st.Tenant == name {
			d.setStatus(st)
			d.written[name], _ = statusSubstance(st) // the key is there, whatever it says
		}
	}
	if as, ok := d.o.Store.(source.AckStore); ok && d.ack == nil {
		// Per-tenant status writes: an acknowledgement left by an earlier
		// run with acknowledgements would say this host is further than
		// its statuses.
		if err := as.DeleteAck(ctx, d.o.HostID); err != nil {
			d.log.Warn("delete this host's acknowledgement", "err", err)
		}
	}
	return nil
}

// legacyStatus is a store that may hold status in an older layout.
type legacyStatus interface {
	RemoveLegacyStatus(ctx context.Context, host string) (bool, error)
}

// observe reloads every subsystem's view of the kernel.
func (d *Daemon) observe(ctx context.Context) error {
	for _, sub := range d.subs {
		if err := sub.Observe(ctx); err != nil {
			return err
		}
	}
	return nil
}

// fingerprint names a tenant's keys and their modify indexes ("dos=7;
// network=9;"). Every incremental pass takes it of every tenant, so it is
// built without fmt or a sort package call (a tenant has a handful of keys):
// 2.2 µs → a few hundred ns, 22 ms → 3 ms a pass with 10,000 tenants.
func fingerprint(keys map[string]source.Entry) string {
	var arr [8]string
	names := arr[:0]
	n := 0
	for k := range keys {
		names = append(names, k)
		n += len(k) + 22
	}
	for i := 1; i < len(names); i++ { // insertion sort: a few names
		for j := i; j > 0 && names[j] < names[j-1]; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
	b := make([]byte, 0, n)
	for _, k := range names {
		b = append(b, k...)
		b = append(b, '=')
		b = strconv.AppendUint(b, keys[k].ModifyIndex, 10)
		b = append(b, ';')
	}
	return string(b)
}

// verdict is what validation decided for one tenant in a pass.
type verdict struct {
	valid config.ValidNetwork
	err   error
}

// Reconcile runs one pass. With full set every tenant is re-applied;
// otherwise only tenants whose keys changed (or that failed before).
func (d *Daemon) Reconcile(ctx context.Context, s source.Snapshot, full bool) []Result {
	return d.reconcile(ctx, s, pass{full: full})
}

// pass says what one reconcile pass does beyond the tenants that changed.
type pass struct {
	// full: every tenant is applied again (drift repaired), then GC.
	full bool
	// A slice of a resync (resync.go): every makes the pass compare
	// every tenant with what it last applied (the first slice), verify
	// are the tenants applied again as a full pass would, and finish
	// ends the resync as a full pass does (the DoS layer's full pass,
	// GC, the host status heartbeat).
	every, finish bool
	verify        []string
}

func (d *Daemon) reconcile(ctx context.Context, s source.Snapshot, ps pass) []Result {
	full := ps.full
	start := d.o.Now()
	var results []Result
	orig := s.Tenants
	if s.StoreReset {
		// A new store counts its indexes from the start again: a
		// cached plan (keyed by the documents' indexes) could match a
		// different document.
		clear(d.plans)
	}
	prepared := d.foldLane(&s, full)

	// A shared list changed: every tenant's rules are compiled again (an
	// element diff for the tenants that use it, reads for the others).
	if d.updateShared(s) {
		full = true
	}
	if full {
		d.resync = nil // this pass does what the rest of a resync would
	}
	// A full pass, or a snapshot that does not say what changed, looks
	// at every tenant; else at those the snapshots said changed (and the
	// ones still due from earlier passes).
	every := full || ps.every || s.Changed == nil
	d.track(s, every)
	// Deletions first, so that a prefix moving between tenants is free.
	results = append(results, d.deletions(ctx, s)...)
	d.dropStaleStatus(ctx, s, every)
	d.logProblems(s.Problems)

	// Candidates in the order older configs first: on an overlap between
	// two new configs the older one wins, as it would have had it been
	// applied first.
	// A tenant whose keys changed again too soon is deferred (pacer): the
	// pass leaves it as it is and a later one applies its latest keys.
	var todo []string
	d.pace.startPass(start)
	paced, toLane := map[string]bool{}, map[string]bool{}
	for id := range prepared {
		d.pending[id] = true
	}
	for id := range d.failed {
		d.pending[id] = true // retried every pass, a resync's slices too
	}
	verify := make(map[string]bool, len(ps.verify))
	for _, id := range ps.verify {
		verify[id] = true
		d.pending[id] = true
	}
	for id := range d.pending {
		keys, ok := s.Tenants[id]
		if !ok {
			delete(d.pending, id) // gone: deletions' business
			continue
		}
		if d.lane.busy[id] {
			continue // its lane job's result comes back to a later pass
		}
		if prepared[id] != nil {
			todo = append(todo, id) // the pacer let it go when it was sent
			continue
		}
		fp := fingerprint(keys)
		changed := d.seen[id] != fp
		if !full && !verify[id] && changed {
			if !d.pace.take(id, start) {
				continue // deferred: still pending
			}
			paced[id] = true
			toLane[id] = d.laneEligible(id, fp, start)
		}
		if full || verify[id] || d.failed[id] || changed {
			todo = append(todo, id)
		} else {
			delete(d.pending, id)
		}
	}
	d.m.TenantsDeferred.Set(float64(len(d.pace.deferred)))
	sort.Slice(todo, func(i, j int) bool {
		a, b := s.Tenants[todo[i]][doc.KeyNetwork].ModifyIndex, s.Tenants[todo[j]][doc.KeyNetwork].ModifyIndex
		if a != b {
			return a < b
		}
		return todo[i] < todo[j]
	})
	verdicts := d.validate(ctx, s, todo)
	slots := d.slotTable.Pass()
	stop := func() {}
	if pf, ok := d.o.Routing.(Prefetcher); ok && (full || len(verify) > 0) && len(todo) > 1 {
		stop = pf.Prefetch(ctx, todo) // a full pass or a resync's slice: every tenant read
	}
	for _, id := range todo {
		keys := s.Tenants[id]
		if toLane[id] && d.toLane(id, keys, verdicts[id], slots, start) {
			continue // pending until its result comes back
		}
		t0 := d.o.Now()
		results = append(results, d.reconcileTenant(ctx, id, keys, verdicts[id], d.pairs, slots, full || verify[id], prepared[id]))
		d.m.TenantApplySeconds.Observe(d.o.Now().Sub(t0).Seconds())
		d.seen[id] = fingerprint(keys)
		delete(d.pending, id)
		if paced[id] {
			d.pace.charge(id, d.o.Now().Sub(t0))
		}
		if r := prepared[id]; r != nil {
			d.pace.charge(id, r.took)
			if fingerprint(orig[id]) != fingerprint(r.keys) {
				// Written again while the job ran: a pass is due now
				// (the pacer decides when the newest keys go).
				d.pace.deferred[id] = start
				d.pending[id] = true
			}
		}
	}
	stop()
	for _, sub := range d.subs {
		if f, ok := sub.(PassFinisher); ok {
			f.FinishPass(ctx, s, full || ps.finish, results)
		}
	}
	if full || ps.finish {
		// GC reads the mirrors Observe loaded; incremental passes skip it
		// so their cost does not grow with untouched tenants.
		d.gc(ctx)
	}
	d.updateGauges()
	d.announce(s, every || ps.finish, results)
	d.writeHostStatus(ctx, s, full || ps.finish)
	d.ackPass(s)
	d.m.LastSync.Set(float64(d.o.Now().Unix()))
	kind := "changes"
	switch {
	case full:
		kind = "full"
	case ps.verify != nil || ps.finish:
		kind = "resync"
	}
	d.m.PassSeconds.WithLabelValues(kind).Observe(d.o.Now().Sub(start).Seconds())
	if len(todo) > 0 || len(results) > 0 {
		d.log.Debug("reconcile pass done", "full", full, "tenants", len(todo), "took", time.Since(start))
	}
	return results
}

// validate parses the network documents of the tenants in todo and decides
// the prefix assignment of the whole pass (plan.AssignPrefixes), so that
// prefixes can move or be swapped between tenants in one change. Tenants
// that give up prefixes another tenant takes release them in the kernel
// first: the nft interval map never holds two tenants' overlapping entries.
func (d *Daemon) validate(ctx context.Context, s source.Snapshot, todo []string) map[string]verdict {
	out := make(map[string]verdict, len(todo))
	var claims []plan.Claim
	for _, id := range todo {
		net, ok := s.Tenants[id][doc.KeyNetwork]
		var v verdict
		if v.valid, v.err = plan.Network(id, plan.Doc{Value: net.Value, Index: net.ModifyIndex}, ok); v.err == nil {
			claims = append(claims, plan.Claim{Tenant: id, Prefixes: v.valid.Prefixes})
		}
		out[id] = v
	}
	refused := d.holdings.Assign(claims)
	for id, err := range refused {
		v := out[id]
		v.err = err
		out[id] = v
	}
	var taken []netip.Prefix // what the accepted claims will hold
	for _, c := range claims {
		if refused[c.Tenant] == nil {
			taken = append(taken, c.Prefixes...)
		}
	}
	for _, c := range claims {
		a := d.applied[c.Tenant]
		if refused[c.Tenant] != nil || a == nil {
			continue
		}
		kept := plan.Kept(a.prefixes, c.Prefixes)
		if len(kept) == len(a.prefixes) || !releasesTo(a.prefixes, kept, c.Prefixes, taken) {
			continue
		}
		spec := a.spec
		spec.Prefixes = kept
		changes, err := d.o.Routing.Apply(ctx, spec)
		d.recordChanges(d.log.With("tenant", c.Tenant), "routing", changes)
		if err != nil {
			d.log.Warn("release prefixes before the pass", "tenant", c.Tenant, "err", err)
			continue
		}
		a.prefixes = kept
		d.holdings.Set(c.Tenant, kept)
	}
	return out
}

// releasesTo reports whether a tenant going from held to own (keeping
// kept) gives up a prefix that another accepted claim takes (taken holds
// every accepted claim's prefixes, own included).
func releasesTo(held, kept, own, taken []netip.Prefix) bool {
	for _, p := range held {
		if slices.Contains(kept, p) {
			continue
		}
		for _, q := range taken {
			if p.Overlaps(q) && !slices.Contains(own, q) {
				return true
			}
		}
	}
	return false
}

func (d *Daemon) slots() map[string]uint16 {
	out := make(map[string]uint16, len(d.observed)+len(d.applied))
	for id, o := range d.observed {
		if o.Slot != 0 {
			out[id] = o.Slot
		}
	}
	for id, a := range d.applied {
		out[id] = a.spec.Slot
	}
	return out
}

// configError counts a rejected document once per version of it, however
// often an unchanged bad document is validated again.
func (d *Daemon) configError(id, key string, index uint64) {
	k := id + "/" + key
	if d.rejected[k] == index {
		return
	}
	d.rejected[k] = index
	d.m.ConfigErrors.Inc()
}

func (d *Daemon) reconcileTenant(ctx context.Context, id string, keys map[string]source.Entry, v verdict,
	pairs *plan.TunnelPairs, slots *plan.Slots, full bool, prepared *laneResult) Result {
	log := d.log.With("tenant", id)
	st := d.newStatus(log, id, keys)
	t := &TenantRun{ID: id, Keys: keys, Status: &st, Full: full, Log: log, pairs: pairs, prepared: prepared}
	var slot uint16
	if v.err == nil {
		var err error
		if slot, err = slots.For(id); err != nil {
			return d.fail(ctx, log, st, "routing", err)
		}
	}
	t.Plan = d.planFor(id, keys, v, slot)
	var changes []string
	for _, sub := range d.subs {
		ch, err := d.applySub(ctx, sub, t)
		changes = append(changes, ch...)
		if err != nil {
			st.Changes = len(changes)
			return d.fail(ctx, log, st, sub.Name(), err)
		}
	}
	delete(d.failed, id)
	delete(d.hostFailed, id)

	st.State = "applied"
	for _, sub := range d.subs {
		if f, ok := sub.(StatusFinisher); ok {
			f.FinishStatus(&st)
		}
	}
	st.Changes = len(changes)
	a := d.applied[id]
	prev, had := d.statuses[id]
	if len(changes) > 0 || a.at.IsZero() || !had || prev.State != st.State || prev.AppliedIndex != st.AppliedIndex {
		a.at = d.o.Now().UTC()
	}
	st.AppliedAt = a.at
	if had && len(changes) == 0 && full && prev.State == st.State && prev.AppliedIndex == st.AppliedIndex &&
		strings.Join(prev.Warnings, "\n") == strings.Join(st.Warnings, "\n") && (d.quietCounters(id) || maps.Equal(prev.Firewall, st.Firewall)) &&
		sameTunnelHealth(prev.Tunnels, st.Tunnels) {
		d.setStatus(st)
		return Result{Tenant: id, State: st.State} // converged resync: no status write
	}
	if len(changes) > 0 || !had || prev.AppliedIndex != st.AppliedIndex {
		log.Info("tenant applied", "index", a.index, "changes", len(changes))
	}
	d.putStatus(ctx, st)
	return Result{Tenant: id, State: st.State, Changes: len(changes)}
}

// newStatus starts a tenant's status for a pass: unknown keys are warnings
// (logged when the tenant's keys change).
func (d *Daemon) newStatus(log *slog.Logger, id string, keys map[string]source.Entry) source.Status {
	st := source.Status{Host: d.o.HostID, Tenant: id, Subsystems: map[string]source.SubsystemState{}}
	st.DoS = d.statuses[id].DoS // refreshed on resync by reportDoSCounters
	if d.counterRequested(id) {
		st.CountersAsked = d.statuses[id].CountersAsked // still answered: the counters are fresh
	}
	for k := range keys {
		if !doc.IsKnownKey(k) {
			st.Warnings = append(st.Warnings, fmt.Sprintf("tenants/%s/%s: unknown key, ignored", id, k))
		}
	}
	sort.Strings(st.Warnings)
	if d.seen[id] != fingerprint(keys) {
		for _, w := range st.Warnings {
			log.Warn(w)
		}
	}
	return st
}

// planFor returns the tenant's plan for this pass (plan.ForTenant). The
// plan of an unchanged tenant with an unchanged verdict and a firewall or
// DoS document is reused, so a resync does not parse those again.
func (d *Daemon) planFor(id string, keys map[string]source.Entry, v verdict, slot uint16) *plan.TenantPlan {
	var env fwspec.Env
	if d.o.FirewallEnv != nil {
		env = d.o.FirewallEnv()
	}
	env.Shared, env.Version = d.shared, env.Version+"|"+d.sharedVer
	envKey := env.Site + "|" + env.Region + "|" + env.Version
	key := fmt.Sprintf("%s|%d|%v|%s", fingerprint(keys), slot, v.err, envKey)
	opts := plan.Options{NSPrefix: d.o.NSPrefix, Firewall: env}
	if c, ok := d.plans[id]; ok {
		if c.key == key {
			return c.plan
		}
		if c.env == envKey {
			opts.Reuse = c.plan // parts whose document did not change
		}
	}
	docs := make(map[string]plan.Doc, len(keys))
	for k, e := range keys {
		docs[k] = plan.Doc{Value: e.Value, Index: e.ModifyIndex}
	}
	p := plan.ForTenant(opts, id, docs, v.valid, v.err, slot)
	// Only documents that cost something to parse again are worth the
	// memory: the network document is validated every pass anyway.
	if p.Firewall.Present || p.DoS.Present {
		d.plans[id] = cachedPlan{key: key, env: envKey, plan: &p}
	} else {
		delete(d.plans, id)
	}
	return &p
}

// updateShared parses the snapshot's shared lists if their indexes
// changed and reports whether any list in force changed. A list that does
// not parse is logged and keeps its last good version.
func (d *Daemon) updateShared(s source.Snapshot) bool {
	var key strings.Builder
	names := make([]string, 0, len(s.Lists))
	for n := range s.Lists {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&key, "%s", n)
		for _, e := range s.Lists[n] {
			fmt.Fprintf(&key, ":%d", e.ModifyIndex)
		}
		key.WriteByte(';')
	}
	if key.String() == d.sharedKey {
		return false
	}
	d.sharedKey = key.String()
	next := map[string][]netip.Prefix{}
	for _, n := range names {
		parts := make([][]byte, len(s.Lists[n]))
		for i, e := range s.Lists[n] {
			parts[i] = e.Value
		}
		ps, err := fwspec.ParseSharedList(n, parts)
		if err != nil {
			d.log.Error("shared list refused; its last good version stays in force", "list", n, "err", err)
			if old, ok := d.shared[n]; ok {
				next[n] = old
			}
			continue
		}
		next[n] = ps
	}
	d.shared = next
	h := fnv.New64a()
	for _, n := range names {
		if ps, ok := next[n]; ok {
			fmt.Fprintf(h, "%s:%d:%p;", n, len(ps), ps)
		}
	}
	ver := fmt.Sprintf("%x", h.Sum64())
	changed := ver != d.sharedVer
	d.sharedVer = ver
	return changed
}

type cachedPlan struct {
	key  string // every input of the plan
	env  string // the firewall environment's part of key
	plan *plan.TenantPlan
}

// fail records an error for a tenant whose last good state stays in force.
// It counts the failed reconcile under the subsystem that failed.
func (d *Daemon) fail(ctx context.Context, log *slog.Logger, st source.Status, subsys string, err error) Result {
	d.m.Reconciles.WithLabelValues(subsys, "error").Inc()
	d.failed[st.Tenant] = true
	d.hostFailed[st.Tenant] = !onlyRefused(err)
	st.State = "error"
	st.Error = err.Error()
	if !st.Subsystems[subsys].Failed() {
		st.Subsystems[subsys] = source.SubsystemError // unless the subsystem said more (what stays in force)
	}
	if a, ok := d.applied[st.Tenant]; ok {
		st.AppliedIndex = a.index
		st.AppliedAt = a.at // when the state in force was applied; zero if never
		if subsys != "routing" && st.Subsystems["routing"] == "" {
			st.Subsystems["routing"] = source.SubsystemOKLastGood
		}
		if subsys != "firewall" && a.fw != nil {
			st.Subsystems["firewall"] = source.SubsystemOKLastGood
		}
	}
	prev, had := d.statuses[st.Tenant]
	if !had || prev.Error != st.Error {
		log.Error("tenant not applied; its last good state stays in force", "subsys", subsys, "err", err)
	}
	if had && prev.State == st.State && prev.Error == st.Error && prev.AppliedIndex == st.AppliedIndex && prev.AppliedAt.Equal(st.AppliedAt) &&
		strings.Join(prev.Warnings, "\n") == strings.Join(st.Warnings, "\n") && (d.quietCounters(st.Tenant) || maps.Equal(prev.Firewall, st.Firewall)) &&
		sameTunnelHealth(prev.Tunnels, st.Tunnels) {
		d.setStatus(st)
		return Result{Tenant: st.Tenant, State: st.State, Err: err} // nothing new to report
	}
	d.putStatus(ctx, st)
	return Result{Tenant: st.Tenant, State: st.State, Err: err}
}

func (d *Daemon) putStatus(ctx context.Context, st source.Status) {
	d.setStatus(st)
	if d.ack != nil {
		d.putAckedStatus(ctx, st)
		return
	}
	if err := d.o.Store.PutStatus(ctx, d.o.HostID, st.Tenant, st); err != nil {
		d.log.Warn("write status", "tenant", st.Tenant, "err", err)
	}
}

// isRunning reports whether tenant id is plumbed here (observed or
// applied), without building running's set: an incremental pass asks
// about a few tenants, not all of them.
func (d *Daemon) isRunning(id string) bool { return d.live[id] }

// runningCount is len(running()) without building the set.
func (d *Daemon) runningCount() int { return len(d.live) }

// running lists the tenants this host runs: found in the kernel or applied.
func (d *Daemon) running() map[string]bool { return maps.Clone(d.live) }

// observedAll makes live and the slot table again from the kernel's
// inventory (observed, just loaded) and what is applied; the next pass
// that looks at every tenant makes absent again from live.
func (d *Daemon) observedAll() {
	clear(d.live)
	for id := range d.observed {
		d.live[id] = true
	}
	for id := range d.applied {
		d.live[id] = true
	}
	d.slotTable = plan.NewSlotTable(d.slots())
}

// track takes the snapshot's changes into pending and absent: every
// tenant when every is set, else the snapshot's Changed.
func (d *Daemon) track(s source.Snapshot, every bool) {
	if every {
		for id := range s.Tenants {
			d.pending[id] = true
		}
		clear(d.absent)
		for id := range d.live {
			if _, ok := s.Tenants[id]; !ok {
				d.absent[id] = true
			}
		}
		return
	}
	for id := range s.Changed {
		d.pending[id] = true
		if _, ok := s.Tenants[id]; ok || !d.live[id] {
			delete(d.absent, id)
		} else {
			d.absent[id] = true
		}
	}
}

// setStatus and dropStatus keep the statuses and their count by state.
func (d *Daemon) setStatus(st source.Status) {
	if prev, ok := d.statuses[st.Tenant]; ok {
		d.stateCount[prev.State]--
	}
	d.statuses[st.Tenant] = st
	d.stateCount[st.State]++
}

func (d *Daemon) dropStatus(id string) {
	if prev, ok := d.statuses[id]; ok {
		d.stateCount[prev.State]--
		delete(d.statuses, id)
	}
}

// holdState is the mass-delete guard's memory.
type holdState struct {
	ids   []string // deletions held, sorted
	token string   // the token that lets exactly this hold through
	// spent is the last token that let deletions through. Tokens carry a
	// random part drawn per hold, so a confirmation left in the control
	// key never matches a later hold, even of the same tenants; spent is
	// kept too so that a restart cannot revive it.
	spent string
	// flag: --confirm-deletes is given and has not let a hold through yet;
	// it is good for one hold.
	flag bool
}

// deletions removes tenants that are gone from the store, unless the mass-
// delete guard holds them: a pass that would delete more than
// MaxDeleteFraction of the host's tenants (and more than one), or any
// tenant when the store was wiped or came back as a new or restored cluster.
func (d *Daemon) deletions(ctx context.Context, s source.Snapshot) []Result {
	gone := slices.Sorted(maps.Keys(d.absent))
	if len(gone) == 0 {
		d.setHold(nil, "")
		return nil
	}
	if reason := d.guard(ctx, gone, d.runningCount(), len(s.Tenants), s.StoreReset, s.Hidden); reason != "" {
		token := d.setHold(gone, reason)
		if string(s.Control[source.ConfirmKey(d.o.HostID)].Value) == token && token != d.hold.spent || d.hold.flag {
			d.log.Warn("held deletions confirmed by the operator", "deletes", len(gone), "token", token)
			d.hold.spent, d.hold.flag = token, false
			d.setHold(nil, "")
		} else {
			out := make([]Result, 0, len(gone))
			for _, id := range gone {
				out = append(out, Result{Tenant: id, State: "held"})
			}
			return out
		}
	} else {
		d.setHold(nil, "")
	}
	var out []Result
	for _, id := range gone {
		out = append(out, d.deleteTenant(ctx, id))
	}
	return out
}

// guard says why deleting gone would be held, or "" when it would not.
func (d *Daemon) guard(ctx context.Context, gone []string, running, listed int, reset, hidden bool) string {
	switch {
	case d.o.MaxDeleteFraction >= 1:
		return "" // the guard is off
	case slices.Equal(gone, d.hold.ids):
		// A hold lasts until it is confirmed or the set changes, whatever
		// the pass sees meanwhile (its own host status written again,
		// say); a restart reads it back from that status.
		return "still held, awaiting confirmation"
	case len(gone) > 1 && float64(len(gone)) > d.o.MaxDeleteFraction*float64(running):
		return "the config source lists far fewer tenants than this host runs"
	case reset:
		return "the config source restarted with older indexes (a new cluster, or a restore from a snapshot)"
	case hidden:
		return "the config source hid keys from nsd's token (ACLs): missing tenants may only be invisible"
	case listed == 0 && d.storeWiped(ctx, gone):
		return "the config source lists no tenants and lost this host's status of them: a wiped store"
	}
	return ""
}

// storeWiped tells a store that lost everything from an operator deleting
// the last tenants: nsd removes a tenant's status only after deleting the
// tenant, so in a store that was not wiped the status keys of the tenants
// about to go are still there. A store that cannot say counts as wiped.
func (d *Daemon) storeWiped(ctx context.Context, gone []string) bool {
	all, err := d.o.Store.ListStatus(ctx, d.o.HostID)
	if err != nil {
		d.log.Warn("read this host's status to tell a wiped store", "err", err)
		return true
	}
	for _, id := range gone {
		if _, ok := all[d.o.HostID][id]; ok {
			return false
		}
	}
	return true
}

// setHold records the held deletions (nil: none) and returns their token.
// The same set keeps its token; a new set gets a new one, logged once.
func (d *Daemon) setHold(ids []string, reason string) string {
	if len(ids) == 0 {
		d.hold.ids, d.hold.token = nil, ""
		d.m.HeldDeletes.Set(0)
		return ""
	}
	d.m.HeldDeletes.Set(float64(len(ids)))
	if slices.Equal(ids, d.hold.ids) && d.hold.token != "" {
		return d.hold.token
	}
	d.hold.ids, d.hold.token = ids, deleteToken(ids)
	d.log.Error("HOLDING mass delete: "+reason,
		"deletes", len(ids), "running", d.runningCount(), "max_fraction", d.o.MaxDeleteFraction,
		"confirm", fmt.Sprintf("nsctl confirm-deletes --host %s --token %s", d.o.HostID, d.hold.token))
	return d.hold.token
}

// deleteToken names one hold of ids: their hash with a random part, so
// that no confirmation is good for more than the hold it was given for.
func deleteToken(ids []string) string {
	var nonce [8]byte
	rand.Read(nonce[:])
	sum := sha256.Sum256(append(nonce[:], strings.Join(ids, ",")...))
	return hex.EncodeToString(sum[:8])
}

// dropStaleStatus removes the status of tenants that are gone from the
// store and not running here (for example a tenant that never applied),
// including those read back from before a restart.
func (d *Daemon) dropStaleStatus(ctx context.Context, s source.Snapshot, every bool) {
	ids := s.Changed // only a tenant that changed can have gone
	if every {
		ids = make(map[string]bool, len(d.statuses))
		for id := range d.statuses {
			ids[id] = true
		}
	}
	for id := range ids {
		if _, ok := s.Tenants[id]; ok || d.isRunning(id) {
			continue
		}
		if _, ok := d.statuses[id]; !ok {
			continue
		}
		d.dropStatus(id)
		delete(d.failed, id)
		delete(d.seen, id)
		if _, keyed := d.written[id]; d.ack != nil && !keyed {
			continue
		}
		delete(d.written, id)
		if err := d.o.Store.DeleteStatus(ctx, d.o.HostID, id); err != nil {
			d.log.Warn("delete status", "tenant", id, "err", err)
		} else {
			d.log.Info("removed the status of a tenant that is gone", "tenant", id)
		}
	}
}

// logProblems logs keys that belong to no tenant when the list changes.
func (d *Daemon) logProblems(problems []string) {
	joined := strings.Join(problems, "\n")
	if joined == d.problems {
		return
	}
	d.problems = joined
	for _, p := range problems {
		d.log.Warn("ignored key in the config source", "problem", p)
	}
}

func (d *Daemon) deleteTenant(ctx context.Context, id string) Result {
	log := d.log.With("tenant", id)
	var n int
	for i := len(d.subs) - 1; i >= 0; i-- {
		sub := d.subs[i]
		changes, err := sub.Delete(ctx, id)
		d.recordChanges(log, sub.Name(), changes)
		n += len(changes)
		if err != nil {
			d.m.Reconciles.WithLabelValues(sub.Name(), "error").Inc()
			log.Error("delete tenant", "subsys", sub.Name(), "err", err)
			return Result{Tenant: id, State: "error", Err: err}
		}
	}
	log.Info("tenant deleted", "changes", n)
	delete(d.observed, id)
	delete(d.applied, id)
	delete(d.live, id)
	delete(d.absent, id)
	d.holdings.Set(id, nil)
	d.slotTable.Set(id, 0)
	d.pairs.Set(id, nil)
	delete(d.seen, id)
	delete(d.failed, id)
	delete(d.hostFailed, id)
	d.dropStatus(id)
	delete(d.plans, id)
	d.pace.forget(id)
	d.lane.forget(id)
	if _, keyed := d.written[id]; d.ack == nil || keyed {
		if err := d.o.Store.DeleteStatus(ctx, d.o.HostID, id); err != nil {
			d.log.Warn("delete status", "tenant", id, "err", err)
		}
	}
	delete(d.written, id)
	return Result{Tenant: id, State: "deleted", Changes: n}
}

// gc removes each subsystem's state that belongs to no tenant on the host.
func (d *Daemon) gc(ctx context.Context) {
	live := d.running()
	for _, sub := range d.subs {
		changes, err := sub.GC(ctx, live)
		if err != nil {
			d.log.Error("garbage-collect", "subsys", sub.Name(), "err", err)
			continue
		}
		d.recordChanges(d.log, sub.Name(), changes)
	}
}

func (d *Daemon) updateGauges() {
	counts := map[string]int{"applied": 0, "error": 0, "held": len(d.hold.ids)}
	for state, n := range d.stateCount {
		counts[state] += n
	}
	for k, v := range counts {
		d.m.Tenants.WithLabelValues(k).Set(float64(v))
	}
}

// writeHostStatus publishes the host-level report when it changed, and on
// full passes (a heartbeat at the resync interval). It must not be written
// on every pass: a blocking query on an empty tenant prefix wakes on any
// write, and a timestamp that always changes would feed a write loop.
func (d *Daemon) writeHostStatus(ctx context.Context, s source.Snapshot, full bool) {
	hs := source.HostStatus{Host: d.o.HostID, Tenants: d.runningCount(), HeldDeletes: d.hold.ids, ConfirmToken: d.hold.token,
		SpentConfirmToken: d.hold.spent, Problems: s.Problems, DoSGlobalIndex: d.dos.globalIndex, DoSGlobalError: d.dos.globalErr,
		Drained: d.bgp.drained, BGP: d.bgpStatus(), GREBackend: d.o.GREBackend}
	b, _ := json.Marshal(hs)
	if string(b) == d.hostLast && !full {
		return
	}
	hs.UpdatedAt = d.o.Now().UTC()
	if err := d.o.Store.PutStatus(ctx, d.o.HostID, source.HostStatusName, hs); err != nil {
		d.log.Warn("write host status", "err", err)
		return
	}
	d.hostLast = string(b)
}

// onlyRefused reports whether err consists only of refused documents
// (*doc.FieldError or doc.Errors), not of a failure on this host.
func onlyRefused(err error) bool {
	switch e := err.(type) {
	case nil:
		return true
	case *doc.FieldError, doc.Errors:
		return true
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			if !onlyRefused(x) {
				return false
			}
		}
		return true
	}
	return false
}

// Failed reports whether any result is an error.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Err != nil || r.State == "error" {
			return true
		}
	}
	return false
}

// ErrHeld is returned by callers that treat held deletions as failure.
var ErrHeld = errors.New("tenant deletions held by the mass-delete guard")

// recordChanges counts and logs the kernel changes one reconciler made.
func (d *Daemon) recordChanges(log *slog.Logger, subsys string, changes []string) {
	d.m.KernelChanges.WithLabelValues(subsys).Add(float64(len(changes)))
	for _, c := range changes {
		log.Info("kernel change", "subsys", subsys, "change", c)
	}
}
