package nsd

import (
	"context"
	"fmt"
	"strings"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels"
)

// Tunnels is the GRE tunnel subsystem: tunnel interfaces, routes and MSS
// clamping per tenant (tunnels.Reconciler), and health (tunnels.Prober).
type Tunnels interface {
	Apply(ctx context.Context, spec tunnels.TenantSpec) ([]string, error)
	Remove(tenant string) ([]string, error)
	// Status reports each tunnel of a tenant: health and counters.
	Status(tenant string) map[string]source.TunnelStatus
}

// tunnelsSub adapts the GRE tunnel subsystem to Subsystem. A tenant with
// tunnels on an nsd without the GRE datapath is an error, never ignored.
type tunnelsSub struct {
	d *Daemon
	t Tunnels // nil: no --uplink
}

func (s *tunnelsSub) Name() string { return "tunnels" }

func (s *tunnelsSub) Observe(context.Context) error { return nil }

func (s *tunnelsSub) Apply(ctx context.Context, t *TenantRun) ([]string, error) {
	n := t.Plan.Network
	if s.t == nil {
		if len(n.Tunnels) > 0 || len(n.Routes) > 0 {
			return nil, fmt.Errorf("tenants/%s/network: tunnels: this nsd has no GRE datapath (start it with --uplink)", t.ID)
		}
		return nil, nil
	}
	// Always Apply, even without tunnels: a restarted nsd may find tunnels
	// of a tenant whose config dropped them, and the empty spec removes them.
	changes, err := s.t.Apply(ctx, tunnels.SpecFrom(t.ID, t.Plan.Routing.Namespace, n.Tunnels, n.Routes))
	if err != nil {
		return changes, fmt.Errorf("apply tunnels: %w", err)
	}
	if len(n.Tunnels) > 0 {
		t.Status.Subsystems["tunnels"] = source.SubsystemOK
		t.Status.Tunnels = s.t.Status(t.ID)
	}
	return changes, nil
}

func (s *tunnelsSub) Delete(_ context.Context, tenant string) ([]string, error) {
	if s.t == nil {
		return nil, nil
	}
	return s.t.Remove(tenant)
}

// GC: a tenant's tunnels are removed with it (Delete), and tunnels its
// config dropped by its next Apply.
func (s *tunnelsSub) GC(context.Context, map[string]bool) ([]string, error) { return nil, nil }

// refreshTunnelStatus rewrites a tenant's status when its tunnels' health
// changed (called from Run on prober events; full passes rewrite status
// through reconcileTunnels).
func (d *Daemon) refreshTunnelStatus(ctx context.Context, id string) {
	st, ok := d.statuses[id]
	if !ok || d.o.Tunnels == nil {
		return
	}
	ts := d.o.Tunnels.Status(id)
	if sameTunnelHealth(st.Tunnels, ts) {
		return
	}
	st.Tunnels = ts
	d.putStatus(ctx, st)
}

// sameTunnelHealth compares what status consumers act on (state and since
// when, whether the reason carries the prober's hint, and the loss and RTT
// in coarse steps), so counters and the counts in a down tunnel's reason
// alone do not cause writes.
func sameTunnelHealth(a, b map[string]source.TunnelStatus) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y, ok := b[k]
		if !ok || x.State != y.State || !x.Since.Equal(y.Since) || hinted(x) != hinted(y) ||
			int(x.LossPercent) != int(y.LossPercent) || int(x.RTTMillis) != int(y.RTTMillis) {
			return false
		}
	}
	return true
}

// hinted: the reason says the tunnel carries traffic while no probe is
// answered (tunnels.Health.Reason).
func hinted(s source.TunnelStatus) bool { return strings.Contains(s.Reason, "no probe answered") }
