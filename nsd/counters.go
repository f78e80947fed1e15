package nsd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/consulacl"
	"github.com/nfhost/nfhost/nsd/source"
)

// Counters on demand.
//
// A tenant's status carries its counters (firewall rules, DoS, tunnel
// traffic). Written whenever they change, that is one write per tenant
// with traffic per host per resync: 10,000 tenants on 1,000 hosts would
// be 330,000 Consul writes a second. With Options.CountersOnDemand a
// counter change alone writes nothing; the counters are published while
// someone asks for them: control/watch/<tenant> holds a
// source.CounterRequest (nsctl fw stats, dos stats and tunnels write it;
// the tenant's own token may). Every host then reads the tenant's counters
// at once and writes its status with CountersAsked set to the request's
// Asked time, which the requester waits for, and again every
// CounterInterval while they change, until the request's Until. Operators
// watch counters in Prometheus, which costs Consul nothing.

// DefaultCounterInterval is how often a requested tenant's counters are
// read while the request lasts.
const DefaultCounterInterval = 5 * time.Second

// counterRequest is a request in force on this host.
type counterRequest struct {
	asked, until time.Time // the requester's clock
	index        uint64    // ModifyIndex of the control key
	served       uint64    // the index last answered with a status write
}

// quietCounters reports whether a change of the tenant's counters alone
// must not cause a status write.
func (d *Daemon) quietCounters(id string) bool {
	return d.o.CountersOnDemand && !d.counterRequested(id)
}

func (d *Daemon) counterRequested(id string) bool {
	r, ok := d.requests[id]
	return ok && d.o.Now().Before(r.until)
}

// updateCounterRequests reads the requests in control and returns the
// tenants with a request not answered yet, sorted. A malformed request is
// logged and ignored.
func (d *Daemon) updateCounterRequests(control map[string]source.Entry) []string {
	seen := map[string]bool{}
	var due []string
	for name, e := range control {
		id, ok := strings.CutPrefix(name, consulacl.CounterRequestPrefix)
		if !ok || id == "" {
			continue
		}
		seen[id] = true
		r, had := d.requests[id]
		if had && r.index == e.ModifyIndex {
			continue
		}
		var req source.CounterRequest
		if err := json.Unmarshal(e.Value, &req); err != nil || req.Asked.IsZero() || req.Until.IsZero() {
			if !had || r.index != e.ModifyIndex {
				d.log.Warn("ignoring a counter request", "key", "control/"+name, "err", fmt.Sprintf("want {\"asked\": time, \"until\": time}: %v", err))
			}
			d.requests[id] = counterRequest{index: e.ModifyIndex, served: e.ModifyIndex}
			continue
		}
		d.requests[id] = counterRequest{asked: req.Asked, until: req.Until, index: e.ModifyIndex, served: r.served}
		due = append(due, id)
	}
	for id := range d.requests {
		if !seen[id] {
			delete(d.requests, id)
		}
	}
	slices.Sort(due)
	return due
}

// requestedTenants lists the tenants whose request is in force.
func (d *Daemon) requestedTenants() []string {
	var out []string
	for id := range d.requests {
		if d.counterRequested(id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// refreshCounters reads the counters of the given tenants this host has a
// status for and writes the status when their request is not answered
// yet, or when the counters changed since the last write.
func (d *Daemon) refreshCounters(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	var dc dos.Counters
	var byTenant map[string][]dosRule
	if d.o.DoS != nil {
		c, err := d.o.DoS.Counters()
		if err != nil {
			d.log.Warn("read DoS counters", "err", err)
		} else {
			dc, byTenant = c, dosRulesByTenant(c)
		}
	}
	fw := &firewallSub{d: d, fw: d.o.Firewall}
	for _, id := range ids {
		st, ok := d.statuses[id]
		r := d.requests[id]
		if !ok || r.asked.IsZero() {
			continue
		}
		next := st
		if a := d.applied[id]; a != nil { // nothing applied: the answer has no counters
			if d.o.Firewall != nil && a.fw != nil {
				fw.readCounters(id, a, &next)
			}
			if byTenant != nil {
				next.DoS = dosCountersOf(dc, byTenant, id)
			}
			if d.o.Tunnels != nil {
				next.Tunnels = d.o.Tunnels.Status(id)
			}
		}
		next.CountersAsked = r.asked
		if r.served == r.index && maps.Equal(st.Firewall, next.Firewall) && fmt.Sprint(st.DoS) == fmt.Sprint(next.DoS) &&
			fmt.Sprint(st.Tunnels) == fmt.Sprint(next.Tunnels) {
			continue
		}
		r.served = r.index
		d.requests[id] = r
		d.putStatus(ctx, next)
	}
}
