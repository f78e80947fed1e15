package nsd

import (
	"context"
	"errors"
	"fmt"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// firewallSub adapts the tenant firewall reconciler to Subsystem: the
// tenant's firewall document in its namespace's "inet nfhost" table, or no
// table when there is none. A refused document keeps the rules in force.
type firewallSub struct {
	d  *Daemon
	fw Firewall // nil: firewall documents are reported as not applied
}

func (s *firewallSub) Name() string { return "firewall" }

func (s *firewallSub) Observe(context.Context) error { return nil }

func (s *firewallSub) Apply(_ context.Context, t *TenantRun) ([]string, error) {
	d, part, st := s.d, t.Plan.Firewall, t.Status
	if s.fw == nil {
		if part.Present {
			st.Warnings = append(st.Warnings, fmt.Sprintf("tenants/%s/firewall: not applied by this nsd", t.ID))
		}
		return nil, nil
	}
	a := d.applied[t.ID]
	if part.Err != nil {
		err := part.Err
		d.configError(t.ID, doc.KeyFirewall, part.Index)
		if a.fw != nil {
			st.Subsystems["firewall"] = source.ErrorKeeping("last good rules in force")
			// Drift repair for the rules in force, whose counters are
			// reported as usual.
			if _, aerr := s.fw.Apply(a.spec.Namespace, a.fw); aerr != nil {
				err = errors.Join(err, fmt.Errorf("re-apply last good firewall: %w", aerr))
			} else {
				s.readCounters(t.ID, a, st)
			}
		}
		return nil, err
	}
	var changes []string
	var err error
	p := t.prepared
	if p != nil && p.spec == part.Spec && p.ns == a.spec.Namespace {
		changes, err = p.changes, p.err // applied in the lane
	} else {
		p = nil
		changes, err = s.fw.Apply(a.spec.Namespace, part.Spec)
	}
	if err != nil {
		return changes, fmt.Errorf("apply firewall: %w", err)
	}
	a.fw, a.fwIndex = part.Spec, part.Index
	if part.Spec != nil {
		st.Subsystems["firewall"] = source.SubsystemOK
		if p != nil {
			s.reportCounters(t.ID, a, st, p.counters, p.ctrErr)
		} else {
			s.readCounters(t.ID, a, st)
		}
	} else {
		s.d.m.FirewallRules.Set(t.ID, nil)
	}
	return changes, nil
}

// readCounters reports the counters of the rules in force.
func (s *firewallSub) readCounters(id string, a *applied, st *source.Status) {
	ctr, err := s.fw.Counters(a.spec.Namespace)
	s.reportCounters(id, a, st, ctr, err)
}

func (s *firewallSub) reportCounters(id string, a *applied, st *source.Status, ctr map[string]fwspec.Counter, err error) {
	st.FirewallIndex = a.fwIndex
	if err != nil {
		return
	}
	st.Firewall = make(map[string]source.RuleCounter, len(ctr))
	series := make(map[string][2]uint64, len(ctr))
	for rule, c := range ctr {
		st.Firewall[rule] = source.RuleCounter(c)
		series[rule] = [2]uint64{c.Packets, c.Bytes}
	}
	s.d.m.FirewallRules.Set(id, series)
}

// Delete: the firewall lives inside the tenant's namespace and goes with
// it; so do its metric series.
func (s *firewallSub) Delete(_ context.Context, id string) ([]string, error) {
	s.d.m.FirewallRules.Set(id, nil)
	return nil, nil
}

func (s *firewallSub) GC(context.Context, map[string]bool) ([]string, error) { return nil, nil }
