package tunnels

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/vishvananda/netns"
)

// Customer is the customer-router side of tunnels, built from the same
// datapath with the roles of the endpoints swapped (Local is the customer
// endpoint, Remote the anycast one). The lab and tests use it because the
// customer's router here has no kernel GRE either: its uplink namespace
// terminates GRE and its tunnel interfaces live in Inner, the router.
type Customer struct {
	dp  *Datapath
	rec *Reconciler
}

// CustomerConfig describes one customer router.
type CustomerConfig struct {
	HostNS  netns.NsHandle // where the uplink is
	Uplink  string
	PinDir  string
	Inner   string // named namespace holding the tunnel interfaces
	Tunnels []Tunnel
	Routes  []Route
	Attach  AttachMode
	Logger  *slog.Logger
}

// StartCustomer loads the datapath on the customer's uplink and applies
// its tunnels and routes.
func StartCustomer(ctx context.Context, cfg CustomerConfig) (*Customer, error) {
	dp, err := Load(LoadConfig{PinDir: cfg.PinDir, HostNS: cfg.HostNS, Uplink: cfg.Uplink, Attach: cfg.Attach, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	rec, err := NewReconciler(Config{HostNS: cfg.HostNS, Datapath: dp, Logger: cfg.Logger})
	if err != nil {
		dp.Close()
		return nil, err
	}
	c := &Customer{dp: dp, rec: rec}
	if _, err := c.Apply(ctx, cfg.Inner, cfg.Tunnels, cfg.Routes); err != nil {
		c.Close()
		return nil, fmt.Errorf("customer endpoint: %w", err)
	}
	return c, nil
}

// Apply changes the customer's tunnels and routes.
func (c *Customer) Apply(ctx context.Context, inner string, ts []Tunnel, rs []Route) ([]string, error) {
	return c.rec.Apply(ctx, TenantSpec{Tenant: "customer", Namespace: inner, Tunnels: ts, Routes: rs})
}

// Stats returns the counters of one of the customer's tunnels.
func (c *Customer) Stats(name string) (Stats, error) {
	id, ok := c.rec.ID("customer", name)
	if !ok {
		return Stats{}, fmt.Errorf("no tunnel %s", name)
	}
	return c.dp.Stats(id)
}

// Close releases handles; the datapath stays pinned (Detach removes it).
func (c *Customer) Close() {
	c.rec.Close()
	c.dp.Close()
}
