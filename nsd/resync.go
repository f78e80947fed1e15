package nsd

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
)

// A periodic resync (Options.Resync) reads the kernel again and applies
// every tenant again to repair drift. Done as one pass it would hold every
// change back for as long as it takes: 17.7 s with 10,000 tenants, every
// 30 s by default. So it runs in slices: after Observe, each slice applies
// the next few tenants as a full pass would (drift repaired, a last good
// config re-applied), and the reconcile loop serves snapshots between
// slices, so a change waits for one slice at most. The first slice
// compares every tenant with what it last applied (and finds the
// deletions a full pass would); the last one ends the resync as a full
// pass does: the DoS layer's full pass, GC of what belongs to no tenant,
// the host status heartbeat.

// resyncSliceTime is what a slice should take; its size follows the time
// the last slice took per tenant, between resyncMinSlice and
// resyncMaxSlice tenants.
const (
	resyncSliceTime = 50 * time.Millisecond
	resyncMinSlice  = 8
	resyncMaxSlice  = 1024
)

type resyncState struct {
	ids   []string // the tenants still to verify, in order
	first bool     // the next slice is the first
	size  int      // tenants in the next slice
	began time.Time
}

// resyncTick reads the kernel again and begins a resync of s's tenants.
func (d *Daemon) resyncTick(ctx context.Context, s source.Snapshot) error {
	d.lane.drain() // observe reads what the lane writes
	err := d.observe(ctx)
	// The inventory may have changed (even if a later subsystem failed):
	// the tenants gone from the store are taken from it now, so that the
	// passes before the first slice delete what it found.
	d.track(s, true)
	if err != nil {
		return err
	}
	d.startResync(s)
	return nil
}

// startResync begins a resync of the tenants of s (after observe).
func (d *Daemon) startResync(s source.Snapshot) {
	d.resync = &resyncState{ids: slices.Sorted(maps.Keys(s.Tenants)), first: true, size: 32, began: d.o.Now()}
}

// resyncing reports whether a resync has slices left.
func (d *Daemon) resyncing() bool { return d.resync != nil }

// resyncStep runs the next slice of the resync over s, the newest
// snapshot.
func (d *Daemon) resyncStep(ctx context.Context, s source.Snapshot) []Result {
	r := d.resync
	if len(r.ids) <= r.size {
		d.lane.drain() // the last slice: no tenant is left in the lane unverified
	}
	n := min(r.size, len(r.ids))
	var verify, later []string
	for _, id := range r.ids[:n] {
		if d.lane.busy[id] {
			later = append(later, id) // the pass would skip it: verified in a later slice
		} else {
			verify = append(verify, id)
		}
	}
	r.ids = append(r.ids[n:len(r.ids):len(r.ids)], later...)
	ps := pass{every: r.first, verify: verify, finish: len(r.ids) == 0}
	r.first = false
	t0 := d.o.Now()
	results := d.reconcile(ctx, s, ps)
	if n := len(verify); n > 0 {
		per := d.o.Now().Sub(t0) / time.Duration(n)
		r.size = resyncMaxSlice
		if per > 0 {
			r.size = min(max(int(resyncSliceTime/per), resyncMinSlice), resyncMaxSlice)
		}
	}
	if ps.finish {
		d.m.ResyncSeconds.Observe(d.o.Now().Sub(r.began).Seconds())
		d.resync = nil
	}
	return results
}
