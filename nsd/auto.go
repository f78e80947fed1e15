package nsd

import (
	"fmt"
	"sync"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

// AutoPolicies is the tenants' detection settings, written by the daemon
// from the DoS documents in force and read by the detector goroutine.
type AutoPolicies struct {
	mu sync.RWMutex
	m  map[string]detect.Policy
}

// Get is the detector's Policy function.
func (p *AutoPolicies) Get(tenant string) (detect.Policy, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pol, ok := p.m[tenant]
	return pol, ok
}

func (p *AutoPolicies) set(m map[string]detect.Policy) {
	p.mu.Lock()
	p.m = m
	p.mu.Unlock()
}

// withAuto returns the tenant's spec with its automatic mitigations added
// as expiring signatures (IDs auto-<hash>). A mitigation that does not
// compile (it always should) is logged and skipped.
func (d *Daemon) withAuto(id string, spec *dosspec.Spec) *dosspec.Spec {
	var ms []detect.Mitigation
	for _, m := range d.inForce() {
		if m.Tenant == id {
			ms = append(ms, m)
		}
	}
	if len(ms) == 0 || spec == nil {
		return spec
	}
	s := *spec
	s.Signatures = append([]dosspec.CompiledSignature(nil), spec.Signatures...)
	for _, m := range ms {
		e, err := lang.Parse(m.Expression)
		var match dosspec.Match
		if err == nil {
			match, err = dosspec.CompileMatch(e)
		}
		if err != nil {
			d.log.Error("automatic mitigation does not compile; skipped", "tenant", id, "expression", m.Expression, "err", err)
			continue
		}
		cs := dosspec.CompiledSignature{ID: m.ID, Action: m.Action, Match: match, Expires: m.Expires, Export: spec.AutoExport}
		if m.Action == "ratelimit" {
			cs.Limit = dosspec.Limit{PPS: m.LimitPPS, PerIP: true}
		}
		s.Signatures = append(s.Signatures, cs)
	}
	return &s
}

// autoFingerprint keys the DoS apply on the mitigations in force and
// their expiry (the detector moves it on in half-Duration steps).
func (d *Daemon) autoFingerprint() string {
	var s string
	for _, m := range d.inForce() {
		s += fmt.Sprintf("%s/%s@%d;", m.Tenant, m.ID, m.Expires.Unix())
	}
	return s
}

// updateAutoPolicies publishes the detection settings in force.
func (d *Daemon) updateAutoPolicies() {
	if d.o.AutoPolicies == nil {
		return
	}
	m := map[string]detect.Policy{}
	for id, a := range d.applied {
		if a.dos != nil && a.dos.AutoPPS > 0 {
			m[id] = detect.Policy{PPS: a.dos.AutoPPS, SampleRate: a.dos.SampleRate, Duration: a.dos.AutoDuration}
		}
	}
	d.o.AutoPolicies.set(m)
}

// setAuto takes the detector's mitigations, logging starts and ends.
func (d *Daemon) setAuto(ms []detect.Mitigation) {
	old := map[string]bool{}
	for _, m := range d.auto {
		old[m.Tenant+"/"+m.ID] = true
	}
	now := map[string]bool{}
	for _, m := range ms {
		k := m.Tenant + "/" + m.ID
		now[k] = true
		if !old[k] {
			d.log.Warn("automatic DoS mitigation", "tenant", m.Tenant, "victim", m.Victim, "signature", m.ID,
				"action", m.Action, "estimated_pps", m.PPS, "expression", m.Expression)
			d.m.AutoMitigations.WithLabelValues(m.Tenant).Inc()
		}
	}
	for _, m := range d.auto {
		if !now[m.Tenant+"/"+m.ID] {
			d.log.Info("automatic DoS mitigation ended", "tenant", m.Tenant, "signature", m.ID)
		}
	}
	d.auto = ms
}
