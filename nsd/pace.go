package nsd

import (
	"time"
)

// Defaults of the per-tenant pacing of changes (Options.MinApplyInterval,
// Options.ApplyBurst).
const (
	DefaultMinApplyInterval = 250 * time.Millisecond
	DefaultApplyBurst       = 10
	// CostShare: in the long run one tenant's paced changes take at most
	// 1/CostShare of the daemon's time.
	CostShare = 10
)

// pacer coalesces one tenant's bursts of changes so that they cannot keep
// the daemon's single reconcile goroutine busy: every tenant has a token
// bucket (GCRA) of burst changes refilled at one per interval. A change
// that finds the bucket empty is deferred: the pass leaves the tenant as it
// is (its keys still differ from what was applied, so any later pass sees
// the change again) and Run starts a pass when the earliest deferred tenant
// is due, which applies whatever keys the tenant has by then. A tenant
// writing 100 times a second is thus applied about 1/interval times a
// second, with its latest keys, and never loses its last write.
//
// A change also costs the bucket what it cost the daemon: CostShare times
// the time its apply took, when that is more than the interval, so that a
// tenant whose documents are expensive (a 100,000-entry list rewritten in
// a loop) keeps nsd busy at most 1/CostShare of the time, not 4 applies of
// whatever size a second.
//
// Only changes in incremental passes are paced: full passes (start) apply
// every tenant, a resync's slice applies its own tenants unpaced (and paces
// the others' changes as an incremental pass does), and a failed tenant
// with unchanged keys is retried on every pass as before.
type pacer struct {
	interval time.Duration // <= 0: off
	burst    int
	tat      map[string]time.Time // GCRA theoretical arrival time per tenant
	deferred map[string]time.Time // tenants deferred by the last pass → when they are due
}

func newPacer(interval time.Duration, burst int) *pacer {
	return &pacer{interval: interval, burst: burst, tat: map[string]time.Time{}, deferred: map[string]time.Time{}}
}

// take reports whether tenant id may apply a change at now, and consumes a
// token if so; otherwise it records when the tenant is due.
func (p *pacer) take(id string, now time.Time) bool {
	if p.interval <= 0 {
		return true
	}
	tat := p.tat[id]
	if tat.Before(now) {
		tat = now
	}
	// Allowed while the bucket is not empty: tat may run ahead of now by
	// at most burst-1 intervals.
	earliest := tat.Add(-time.Duration(p.burst-1) * p.interval)
	if earliest.After(now) {
		p.deferred[id] = earliest
		return false
	}
	p.tat[id] = tat.Add(p.interval)
	return true
}

// throttled reports whether tenant id's bucket is empty at now: its next
// change would be deferred.
func (p *pacer) throttled(id string, now time.Time) bool {
	return p.interval > 0 && p.tat[id].Add(-time.Duration(p.burst-1)*p.interval).After(now)
}

// charge bills tenant id for a change that took took to apply, beyond the
// interval take already billed.
func (p *pacer) charge(id string, took time.Duration) {
	if p.interval <= 0 {
		return
	}
	if extra := CostShare*took - p.interval; extra > 0 {
		p.tat[id] = p.tat[id].Add(extra)
	}
}

// startPass forgets the previous pass's deferrals (each pass decides them
// again) and the buckets that are full again.
func (p *pacer) startPass(now time.Time) {
	clear(p.deferred)
	for id, tat := range p.tat {
		if !tat.After(now) {
			delete(p.tat, id)
		}
	}
}

// forget drops a deleted tenant.
func (p *pacer) forget(id string) {
	delete(p.tat, id)
	delete(p.deferred, id)
}

// next returns when the earliest deferred tenant is due.
func (p *pacer) next() (time.Time, bool) {
	var due time.Time
	for _, at := range p.deferred {
		if due.IsZero() || at.Before(due) {
			due = at
		}
	}
	return due, !due.IsZero()
}
