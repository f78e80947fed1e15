package nsd

import (
	"context"
	"log/slog"

	"github.com/nfhost/nfhost/nsd/plan"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// Subsystem is one part of the kernel state nsd keeps for tenants (routing,
// tunnels, firewall, DoS). The daemon iterates them in a fixed order,
// routing first since it makes the namespace the others live in, and never
// knows which one it drives: a new subsystem is one adapter file (a type
// implementing this interface) and one entry in New's list.
//
// Contract: every method honours ctx and is idempotent. Apply makes the
// kernel match the tenant's plan for this subsystem and writes what it
// reports into t.Status; an error stops the tenant's pass there (the state
// of the subsystems before it stays applied, its own last good state stays
// in force) and fails the tenant under Name(). Delete removes what the
// subsystem made for a tenant that is gone; the daemon calls the
// subsystems in reverse order. Observe reloads the subsystem's view of the
// kernel before a full pass; GC then removes its state of tenants not in
// live.
type Subsystem interface {
	Name() string
	Observe(ctx context.Context) error
	Apply(ctx context.Context, t *TenantRun) ([]string, error)
	Delete(ctx context.Context, tenant string) ([]string, error)
	GC(ctx context.Context, live map[string]bool) ([]string, error)
}

// PassFinisher is a Subsystem with state shared by all tenants (the XDP
// DoS maps): FinishPass runs once per pass after every tenant, and may turn
// results into errors (a document it could not place).
type PassFinisher interface {
	FinishPass(ctx context.Context, s source.Snapshot, full bool, results []Result)
}

// StatusFinisher is a Subsystem that has the last word on a tenant's status
// once every subsystem applied (the DoS layer's placement of its document).
type StatusFinisher interface {
	FinishStatus(st *source.Status)
}

// TenantRun is one tenant's pass through the subsystems.
type TenantRun struct {
	ID   string
	Plan *plan.TenantPlan
	// Keys are the tenant's documents as stored.
	Keys map[string]source.Entry
	// Status is the status being built; subsystems fill their parts.
	Status *source.Status
	// Full is set on full passes: drift is repaired, also of a last good
	// state kept because its newer document was refused.
	Full bool
	Log  *slog.Logger
	// pairs are the tunnel endpoint pairs each tenant holds in this pass.
	pairs map[string][]tunspec.ValidTunnel
	// prepared is the firewall apply the lane already made for this run's
	// keys (nil: none).
	prepared *laneResult
}

// applySub runs one subsystem for one tenant: the one place that times,
// logs and counts what a subsystem did.
func (d *Daemon) applySub(ctx context.Context, sub Subsystem, t *TenantRun) ([]string, error) {
	t0 := d.o.Now()
	changes, err := sub.Apply(ctx, t)
	took := d.o.Now().Sub(t0)
	if t.prepared != nil && sub.Name() == "firewall" {
		took = t.prepared.took // the apply happened in the lane
		d.m.BackgroundApplies.Inc()
	}
	d.m.applySeconds(sub.Name()).Observe(took.Seconds())
	d.recordChanges(t.Log, sub.Name(), changes)
	if err == nil {
		d.m.Reconciles.WithLabelValues(sub.Name(), "ok").Inc()
	}
	return changes, err
}
