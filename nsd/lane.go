package nsd

import (
	"maps"
	"strings"
	"time"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/plan"
	"github.com/nfhost/nfhost/nsd/source"
)

// DefaultLaneWidth is how many throttled tenants' firewall applies may run
// in the background at once (Options.LaneWidth).
const DefaultLaneWidth = 2

// lane runs the kernel part of a throttled tenant's firewall-only change
// off the reconcile goroutine, so that a tenant rewriting its firewall as
// fast as Consul takes it does not make every other tenant's change wait
// behind its nft batches (issue 12: a quiet tenant's PUT → applied p99
// was 1.5× with such a neighbour while the daemon applied one tenant at a
// time).
//
// Only what is safe runs there: Firewall.Apply and Firewall.Counters on the
// tenant's own namespace (nftables commits in different namespaces do not
// share a lock in the kernel; firewall.Reconciler is safe for concurrent
// use on different namespaces). Everything else stays on the reconcile
// goroutine: the pacer decided the change may go now (take), the pass
// validated and planned it, and when the result is back the next pass
// folds it in as the tenant's firewall apply, through the same code as a
// synchronous one (status, failure, metrics), then bills the pacer for
// what it cost.
//
// A tenant goes to the lane only when its bucket is empty (it has been
// writing faster than the pacer's rate: quiet tenants and an operator's
// quick edits stay synchronous), when its only changed document is its
// firewall (its namespace, routes and tunnels are unchanged and applied),
// and when the new document is valid. While its job runs the tenant is
// left alone by every pass; a deletion of it, a full pass and a kernel
// observation first wait for the lane to drain.
type lane struct {
	width   int
	results chan laneResult
	busy    map[string]bool       // tenants with a job in flight
	done    map[string]laneResult // results not yet folded into a pass
}

type laneJob struct {
	id   string
	keys map[string]source.Entry // the keys the job applies
	ns   string
	spec *fwspec.Spec // the plan's firewall spec (nil: no firewall)
}

type laneResult struct {
	laneJob
	changes  []string
	err      error
	counters map[string]fwspec.Counter
	ctrErr   error
	took     time.Duration
}

func newLane(width int) *lane {
	return &lane{width: width, results: make(chan laneResult, max(width, 1)),
		busy: map[string]bool{}, done: map[string]laneResult{}}
}

// start runs job in the background unless the lane is full.
func (l *lane) start(fw Firewall, now func() time.Time, job laneJob) bool {
	if l.width <= 0 || len(l.busy) >= l.width || l.busy[job.id] {
		return false
	}
	l.busy[job.id] = true
	go func() {
		t0 := now()
		r := laneResult{laneJob: job}
		r.changes, r.err = fw.Apply(job.ns, job.spec)
		if r.err == nil && job.spec != nil {
			r.counters, r.ctrErr = fw.Counters(job.ns)
		}
		r.took = now().Sub(t0)
		l.results <- r // buffered: width slots, at most width jobs
	}()
	return true
}

// finish records a job's result (from the results channel).
func (l *lane) finish(r laneResult) {
	delete(l.busy, r.id)
	l.done[r.id] = r
}

// drain waits for every job in flight.
func (l *lane) drain() {
	for len(l.busy) > 0 {
		l.finish(<-l.results)
	}
}

// forget drops a deleted tenant's result.
func (l *lane) forget(id string) { delete(l.done, id) }

// withoutFirewall is a fingerprint without the firewall key's part: two
// key sets with the same one differ at most in their firewall document.
func withoutFirewall(fp string) string {
	var b strings.Builder
	for _, part := range strings.SplitAfter(fp, ";") {
		if !strings.HasPrefix(part, doc.KeyFirewall+"=") {
			b.WriteString(part)
		}
	}
	return b.String()
}

// foldLane prepares the pass's view of the lane: a full pass, and a pass
// that deletes a tenant with a job in flight, wait for the lane first.
// Finished jobs whose tenant's other documents are unchanged since are
// returned, and the pass sees those tenants with the keys their job
// applied (what is in the kernel now); a finished job whose tenant changed
// otherwise meanwhile is dropped, and the tenant is applied as usual.
func (d *Daemon) foldLane(s *source.Snapshot, full bool) map[string]*laneResult {
	wait := full
	for id := range d.lane.busy {
		if _, ok := s.Tenants[id]; !ok {
			wait = true
		}
	}
	if wait {
		d.lane.drain()
	}
	if len(d.lane.done) == 0 {
		return nil
	}
	out := map[string]*laneResult{}
	for id, r := range d.lane.done {
		delete(d.lane.done, id)
		keys, ok := s.Tenants[id]
		if !ok || withoutFirewall(fingerprint(keys)) != withoutFirewall(fingerprint(r.keys)) {
			continue
		}
		out[id] = &r
	}
	if len(out) > 0 {
		tenants := maps.Clone(s.Tenants)
		for id, r := range out {
			tenants[id] = r.keys
		}
		s.Tenants = tenants
	}
	return out
}

// laneEligible: a tenant whose change the pacer just let through goes to
// the lane if its bucket is now empty and only its firewall document
// changed since it was applied.
func (d *Daemon) laneEligible(id, fp string, now time.Time) bool {
	a := d.applied[id]
	return d.lane.width > 0 && d.o.Firewall != nil && a != nil && a.spec.Namespace != "" && !d.failed[id] &&
		d.seen[id] != "" && withoutFirewall(d.seen[id]) == withoutFirewall(fp) && d.pace.throttled(id, now)
}

// toLane sends a tenant's firewall change to the lane; false: apply it
// here. A full lane defers the change to the tenant's next turn.
func (d *Daemon) toLane(id string, keys map[string]source.Entry, v verdict, slots *plan.Slots, now time.Time) bool {
	if v.err != nil {
		return false
	}
	slot, err := slots.For(id)
	if err != nil {
		return false
	}
	p := d.planFor(id, keys, v, slot)
	if p.Firewall.Err != nil {
		return false // refused: the synchronous path reports it
	}
	if len(d.lane.busy) >= d.lane.width {
		d.pace.deferred[id] = now.Add(d.o.MinApplyInterval)
		return true
	}
	return d.lane.start(d.o.Firewall, d.o.Now, laneJob{id: id, keys: keys, ns: d.applied[id].spec.Namespace, spec: p.Firewall.Spec})
}
