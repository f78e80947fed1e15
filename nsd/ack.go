package nsd

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
)

// Acknowledgements (Options.Acks, nsd --status-writes ack): instead of a
// status write per tenant per change, the host writes acks/<host> saying
// up to which store index it has processed every tenant write
// (source.Ack), and a tenant's own status only when it says more than
// "applied" (statusSubstance). A single-tenant change then costs each host
// one small write, and a burst of changes one write per AckInterval.

// DefaultAckInterval is the mean least time between two acknowledgements
// of a host under a stream of changes; AckBurst acknowledgements may go at
// once, so that changes a few seconds apart are each acknowledged at once.
const (
	DefaultAckInterval = time.Second
	AckBurst           = 3
)

// acker writes the host's acknowledgement off the reconcile goroutine,
// paced by a token bucket (AckBurst tokens, one more per interval): at
// once when it moved and a token is left, else when the next one comes;
// the latest value wins.
type acker struct {
	store    source.AckStore
	host     string
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	kick     chan struct{}

	mu    sync.Mutex
	want  uint64
	reset bool // want may be lower than what was written (store reset)
}

func newAcker(st source.AckStore, host string, interval time.Duration, now func() time.Time, log *slog.Logger) *acker {
	if interval <= 0 {
		interval = DefaultAckInterval
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &acker{store: st, host: host, interval: interval, now: now, log: log, kick: make(chan struct{}, 1)}
}

// set records that every tenant write up to through is processed; it
// never goes back unless the store's indexes did (reset).
func (a *acker) set(through uint64, reset bool) {
	a.mu.Lock()
	switch {
	case reset:
		a.want, a.reset = through, true
	case through > a.want:
		a.want = through
	default:
		a.mu.Unlock()
		return
	}
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run writes acknowledgements until ctx ends.
func (a *acker) run(ctx context.Context) {
	var wrote uint64
	// tat: the theoretical arrival time of the bucket (GCRA): a write may
	// go when now >= tat - (burst-1)*interval.
	var tat time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		now := a.now()
		if tat.Before(now) {
			tat = now
		}
		if wait := tat.Add(-time.Duration(AckBurst-1) * a.interval).Sub(now); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		a.mu.Lock()
		want, reset := a.want, a.reset
		a.reset = false
		a.mu.Unlock()
		if want == wrote && !reset {
			continue
		}
		tat = tat.Add(a.interval)
		if err := a.store.PutAck(ctx, source.Ack{Host: a.host, Through: want, At: a.now().UTC()}); err != nil {
			a.log.Warn("write acknowledgement", "through", want, "err", err)
			a.mu.Lock()
			a.reset = a.reset || reset
			a.mu.Unlock()
			select { // try again with the next token
			case a.kick <- struct{}{}:
			default:
			}
			continue
		}
		wrote = want
	}
}

// ackPass acknowledges snapshot s after a pass: every tenant write up to
// s.Through, except what the pass left for later (tenants the pacer
// deferred and the lane's jobs in flight), whose writes after the version
// in force are not processed yet.
func (d *Daemon) ackPass(s source.Snapshot) {
	if d.ack == nil || s.Through == 0 {
		return
	}
	through := s.Through
	floor := func(id string) {
		var m uint64
		if a := d.applied[id]; a != nil {
			m = max(a.index, a.fwIndex, a.dosIndex)
		}
		if keys, ok := s.Tenants[id]; ok && m == 0 {
			// Never applied: nothing of it before its first key's write.
			m = ^uint64(0)
			for _, e := range keys {
				m = min(m, e.ModifyIndex-1)
			}
		}
		through = min(through, m)
	}
	for id := range d.pace.deferred {
		floor(id)
	}
	for id := range d.lane.busy {
		floor(id)
	}
	d.ack.set(through, s.StoreReset)
}

// statusSubstance is what a status says beyond the versions and times it
// carries, and whether that is only "applied" (clean): with
// acknowledgements such a status is not written (the ack says it), and a
// status whose substance did not change is not written again.
func statusSubstance(st source.Status) (string, bool) {
	clean := st.State == "applied" && st.Error == "" && len(st.Warnings) == 0 && len(st.Tunnels) == 0 && st.CountersAsked.IsZero()
	for _, s := range st.Subsystems {
		clean = clean && s == source.SubsystemOK
	}
	if clean {
		return "", true
	}
	type health struct {
		State       string
		Since       time.Time
		Hinted      bool
		Loss, RTT   int
		Rx, Tx, Drp uint64
	}
	sub := struct {
		State, Error  string
		Warnings      []string
		Subsystems    map[string]source.SubsystemState
		CountersAsked time.Time
		Tunnels       map[string]health
		Firewall      map[string]source.RuleCounter
		DoS           *source.DoSCounters
	}{State: st.State, Error: st.Error, Warnings: st.Warnings, Subsystems: st.Subsystems, CountersAsked: st.CountersAsked}
	asked := !st.CountersAsked.IsZero()
	if len(st.Tunnels) > 0 {
		sub.Tunnels = map[string]health{}
		for k, t := range st.Tunnels {
			h := health{State: t.State, Since: t.Since, Hinted: hinted(t), Loss: int(t.LossPercent), RTT: int(t.RTTMillis)}
			if asked {
				h.Rx, h.Tx, h.Drp = t.RxPackets, t.TxPackets, t.Drops
			}
			sub.Tunnels[k] = h
		}
	}
	if asked { // the counters are the answer to a request
		sub.Firewall, sub.DoS = st.Firewall, st.DoS
	}
	b, _ := json.Marshal(sub)
	return string(b), false
}

// putAckedStatus is putStatus with acknowledgements: it writes st only if
// its substance differs from what the host's key holds, and deletes the
// key when st is clean.
func (d *Daemon) putAckedStatus(ctx context.Context, st source.Status) {
	sub, clean := statusSubstance(st)
	was, keyed := d.written[st.Tenant]
	switch {
	case clean && keyed:
		if err := d.o.Store.DeleteStatus(ctx, d.o.HostID, st.Tenant); err != nil {
			d.log.Warn("delete status", "tenant", st.Tenant, "err", err)
			return
		}
		delete(d.written, st.Tenant)
		return
	case clean, keyed && was == sub:
		return
	}
	if err := d.o.Store.PutStatus(ctx, d.o.HostID, st.Tenant, st); err != nil {
		d.log.Warn("write status", "tenant", st.Tenant, "err", err)
		return
	}
	d.written[st.Tenant] = sub
}
