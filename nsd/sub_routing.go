package nsd

import (
	"context"
	"errors"
	"fmt"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing"
)

// routingSub adapts the routing reconciler (namespace, veth, policy
// routing) to Subsystem. It also keeps the daemon's record of what is in
// force for each tenant (applied), since routing is what makes a tenant
// exist on the host.
type routingSub struct {
	d *Daemon
	r Plumber
}

func (s *routingSub) Name() string { return "routing" }

// Observe is the daemon's inventory of the tenants on the host (their
// slots, links and namespaces), read from the kernel.
func (s *routingSub) Observe(ctx context.Context) error {
	obs, err := s.r.Observe(ctx)
	if err != nil {
		return fmt.Errorf("observe routing state: %w", err)
	}
	s.d.observed = obs
	s.d.observedAll()
	return nil
}

func (s *routingSub) Apply(ctx context.Context, t *TenantRun) ([]string, error) {
	d, p := s.d, t.Plan
	err := p.NetworkErr
	if err == nil {
		err = t.pairs.Check(t.ID, p.Network.Tunnels)
	}
	if err != nil {
		d.configError(t.ID, doc.KeyNetwork, p.NetworkIndex)
		a, ok := d.applied[t.ID]
		if !ok {
			return nil, err
		}
		t.Status.Subsystems["routing"] = source.ErrorKeeping("last good config in force")
		if !t.Full {
			return nil, err
		}
		// The last good config stays in force: repair its drift too.
		changes, aerr := s.r.Apply(ctx, a.spec)
		if aerr != nil {
			err = errors.Join(err, fmt.Errorf("re-apply last good config: %w", aerr))
		}
		return changes, err
	}
	changes, err := s.r.Apply(ctx, p.Routing)
	if err != nil {
		return changes, fmt.Errorf("apply routing: %w", err)
	}
	t.pairs.Set(t.ID, p.Network.Tunnels)
	a := &applied{index: p.NetworkIndex, spec: p.Routing, prefixes: p.Network.Prefixes, tunnels: p.Network.Tunnels,
		advertise: p.Network.Advertise}
	if prev := d.applied[t.ID]; prev != nil {
		a.fw, a.fwIndex = prev.fw, prev.fwIndex
		a.dos, a.dosIndex = prev.dos, prev.dosIndex
		a.at = prev.at
	}
	d.applied[t.ID] = a
	d.observed[t.ID] = routing.Observed{ID: t.ID, Slot: p.Routing.Slot, HostIf: p.Routing.HostIf, Namespace: p.Routing.Namespace}
	d.live[t.ID] = true
	d.holdings.Set(t.ID, a.prefixes)
	d.slotTable.Set(t.ID, p.Routing.Slot)
	t.Status.AppliedIndex = p.NetworkIndex
	t.Status.Subsystems["routing"] = source.SubsystemOK
	return changes, nil
}

func (s *routingSub) Delete(ctx context.Context, tenant string) ([]string, error) {
	d := s.d
	o, ok := d.observed[tenant]
	if !ok {
		o = routing.Observed{ID: tenant}
	}
	if a, ok := d.applied[tenant]; ok && o.Slot == 0 {
		o.Slot = a.spec.Slot
	}
	return s.r.Delete(ctx, o)
}

// GC removes ip rules and map entries in nfhost's ranges that belong to no
// live tenant's slot.
func (s *routingSub) GC(ctx context.Context, live map[string]bool) ([]string, error) {
	keep := map[uint16]bool{}
	for id, slot := range s.d.slots() {
		if live[id] {
			keep[slot] = true
		}
	}
	return s.r.GC(ctx, keep)
}
