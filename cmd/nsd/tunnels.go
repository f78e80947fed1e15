package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels"
)

// tunnelSubsystem joins the tunnel reconciler, datapath and prober into
// nsd's Tunnels interface.
type tunnelSubsystem struct {
	rec     *tunnels.Reconciler
	backend string          // tunnels.BackendEBPF or BackendKernel
	prober  *tunnels.Prober // nil without a probe address
	// noProbe says why there is no prober; tenants with tunnels fail with it.
	noProbe error
}

func (t *tunnelSubsystem) Apply(ctx context.Context, spec tunnels.TenantSpec) ([]string, error) {
	if t.prober == nil && len(spec.Tunnels) > 0 {
		return nil, t.noProbe
	}
	return t.rec.Apply(ctx, spec)
}

func (t *tunnelSubsystem) Remove(tenant string) ([]string, error) { return t.rec.Remove(tenant) }

func (t *tunnelSubsystem) Status(tenant string) map[string]source.TunnelStatus {
	out := map[string]source.TunnelStatus{}
	if s, ok := t.rec.Spec(tenant); ok {
		for _, tu := range s.Tunnels {
			st := source.TunnelStatus{State: "unchecked"}
			if t.prober == nil {
			} else if h, ok := t.prober.HealthOf(tenant, tu.Name); ok {
				st.State, st.LossPercent, st.RTTMillis = h.State, h.Loss*100, float64(h.RTT.Microseconds())/1000
				st.Reason, st.Since, st.Type, st.Direction = h.Reason, h.Since, h.Type, h.Direction
				st.WindowProbes, st.WindowLost, st.LastFailure = h.Probes, h.Lost, h.LastFailure
				st.ProbesSent, st.ProbesAnswered = h.Sent, h.Received
			} else if tu.Health.Enabled {
				st.State = "starting"
			}
			if id, ok := t.rec.ID(tenant, tu.Name); ok {
				if c, err := t.rec.Stats(id); err == nil {
					st.RxPackets, st.TxPackets, st.Drops = c.RxPackets, c.TxPackets, c.Drops
				}
			}
			out[tu.Name] = st
		}
	}
	return out
}

// defaultProbeAddress is the uplink's first IPv4 address.
func defaultProbeAddress(hostNS netns.NsHandle, uplink string) (netip.Addr, error) {
	h, err := nlh.New(hostNS, false)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	l, err := h.LinkByName(uplink)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find uplink %q: %w", uplink, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("uplink %s has no IPv4 address to probe tunnels from; set --probe-address", uplink)
	}
	a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
	return a, nil
}

// tunnelCollector exports tunnel health and counters at scrape time.
type tunnelCollector struct {
	t                                     *tunnelSubsystem
	state, loss, rtt, pkts, drops, probes *prometheus.Desc
	backend                               *prometheus.Desc
}

func newTunnelCollector(t *tunnelSubsystem) *tunnelCollector {
	l := []string{"tenant", "tunnel"}
	return &tunnelCollector{t: t,
		state:   prometheus.NewDesc("nfhost_tunnel_health_state", "Tunnel health: 0 healthy, 1 degraded, 2 down (tunnels with health checks).", l, nil),
		loss:    prometheus.NewDesc("nfhost_tunnel_probe_loss_ratio", "Share of health probes lost over the window.", l, nil),
		rtt:     prometheus.NewDesc("nfhost_tunnel_probe_rtt_seconds", "Round-trip time of the last answered health probe.", l, nil),
		pkts:    prometheus.NewDesc("nfhost_tunnel_packets_total", "Packets through a tunnel: rx decapsulated, tx encapsulated.", append(l, "direction"), nil),
		drops:   prometheus.NewDesc("nfhost_tunnel_dropped_packets_total", "Packets a tunnel failed to encapsulate or decapsulate.", l, nil),
		backend: prometheus.NewDesc("nfhost_gre_backend_info", "The GRE tunnels' backend in force (1 for the one chosen): ebpf or kernel.", []string{"backend"}, nil),
		probes: prometheus.NewDesc("nfhost_tunnel_probes_total", "Health probes whose outcome is known: answered, or lost (timed out).",
			append(l, "result"), nil),
	}
}

func (c *tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.loss, c.rtt, c.pkts, c.drops, c.probes, c.backend} {
		ch <- d
	}
}

func (c *tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.backend, prometheus.GaugeValue, 1, c.t.backend)
	rank := map[string]float64{tunnels.StateHealthy: 0, tunnels.StateDegraded: 1, tunnels.StateDown: 2}
	var hs []tunnels.Health
	if c.t.prober != nil {
		hs = c.t.prober.Health()
	}
	for _, h := range hs {
		ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(h.Received), h.Tenant, h.Tunnel, "answered")
		ch <- prometheus.MustNewConstMetric(c.probes, prometheus.CounterValue, float64(h.LostTotal), h.Tenant, h.Tunnel, "lost")
		r, ok := rank[h.State]
		if !ok {
			continue // starting: no verdict yet
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, r, h.Tenant, h.Tunnel)
		ch <- prometheus.MustNewConstMetric(c.loss, prometheus.GaugeValue, h.Loss, h.Tenant, h.Tunnel)
		ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, h.RTT.Seconds(), h.Tenant, h.Tunnel)
	}
	for _, s := range c.t.rec.Specs() {
		for _, tu := range s.Tunnels {
			id, ok := c.t.rec.ID(s.Tenant, tu.Name)
			if !ok {
				continue
			}
			st, err := c.t.rec.Stats(id)
			if err != nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.pkts, prometheus.CounterValue, float64(st.RxPackets), s.Tenant, tu.Name, "rx")
			ch <- prometheus.MustNewConstMetric(c.pkts, prometheus.CounterValue, float64(st.TxPackets), s.Tenant, tu.Name, "tx")
			ch <- prometheus.MustNewConstMetric(c.drops, prometheus.CounterValue, float64(st.Drops), s.Tenant, tu.Name)
		}
	}
}

// tunnelsConfig is what startTunnels needs from the flags.
type tunnelsConfig struct {
	uplink, pinDir string
	backend        string // --gre-backend
	nsPrefix       string
	probe          netip.Addr
}

// chooseGREBackend probes the kernel and picks the backend --gre-backend
// asks for; a backend the kernel cannot do is refused with the missing
// feature.
func chooseGREBackend(hostNS netns.NsHandle, flag string, log *slog.Logger) (string, error) {
	f := tunnels.ProbeFeatures(hostNS)
	b, err := tunnels.ChooseBackend(flag, f)
	if err != nil {
		return "", err
	}
	log.Info("GRE backend chosen", "backend", b, "flag", flag, "tcx", f.TCX, "tcx_err", f.TCXErr, "ip_gre", f.IPGRE, "ip_gre_err", f.IPGREErr)
	return b, nil
}

// startTunnels starts the chosen GRE backend (eBPF: the datapath loaded on
// the uplink; kernel: GRE devices, with any eBPF datapath an earlier nsd
// pinned detached, so that its decap no longer takes the GRE) and the
// prober. Without a probe address (none given, and the uplink has no IPv4
// address) the backend still runs, and only tenants that have tunnels
// fail.
func startTunnels(ctx context.Context, hostNS netns.NsHandle, c tunnelsConfig, log *slog.Logger, events chan<- string) (*tunnelSubsystem, func(), error) {
	uplink, pinDir, probe := c.uplink, c.pinDir, c.probe
	var rec *tunnels.Reconciler
	var stop func()
	var err error
	var dp *tunnels.Datapath
	switch c.backend {
	case tunnels.BackendKernel:
		if _, serr := os.Stat(pinDir); serr == nil {
			if err := tunnels.Detach(pinDir); err != nil {
				return nil, nil, fmt.Errorf("kernel GRE backend: detach the eBPF GRE datapath pinned in %s: %w", pinDir, err)
			}
			log.Info("kernel GRE backend: detached the eBPF GRE datapath an earlier nsd left", "pin_dir", pinDir)
		}
		kb, err := tunnels.NewKernelBackend(tunnels.KernelConfig{HostNS: hostNS, NSPrefix: c.nsPrefix, Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("start the kernel GRE backend: %w", err)
		}
		if rec, err = tunnels.NewReconciler(tunnels.Config{HostNS: hostNS, Backend: kb, Logger: log}); err != nil {
			kb.Close()
			return nil, nil, fmt.Errorf("start the kernel GRE backend: %w", err)
		}
		stop = func() {
			rec.Close()
			kb.Close()
		}
	default:
		dp, err = tunnels.Load(tunnels.LoadConfig{PinDir: pinDir, HostNS: hostNS, Uplink: uplink, Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("start the GRE datapath: %w", err)
		}
		if rec, err = tunnels.NewReconciler(tunnels.Config{HostNS: hostNS, Datapath: dp, Logger: log}); err != nil {
			dp.Close()
			return nil, nil, fmt.Errorf("start the GRE datapath: %w", err)
		}
		// A host that ran the kernel backend before: its anycast routes
		// would make the host answer for the endpoints.
		if ch, err := tunnels.RemoveAnycastRoutes(hostNS); err != nil {
			log.Warn("remove the kernel GRE backend's anycast routes", "err", err)
		} else if len(ch) > 0 {
			log.Info("removed the kernel GRE backend's anycast routes", "changes", ch)
		}
		stop = func() {
			rec.Close()
			dp.Close()
		}
	}
	ts := &tunnelSubsystem{rec: rec, backend: c.backend}
	if !probe.IsValid() {
		if probe, err = defaultProbeAddress(hostNS, uplink); err != nil {
			ts.noProbe = fmt.Errorf("tunnels need this server's unicast IPv4 address for their health checks: %w", err)
			log.Warn("GRE datapath attached without health checks: tenants with tunnels fail until nsd has a probe address", "uplink", uplink, "err", err)
			return ts, stop, nil
		}
	}
	n := newTenantNotifier(events)
	pr, err := tunnels.NewProber(hostNS, probe, rec, log.With("subsys", "tunnels"), func(h tunnels.Health) { n.notify(h.Tenant) })
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("start tunnel health checks: %w", err)
	}
	pr.SetTraffic(func(id uint32) (uint64, bool) {
		st, err := rec.Stats(id)
		return st.RxPackets, err == nil
	})
	ts.prober = pr
	pctx, cancel := context.WithCancel(ctx)
	go n.run(pctx)
	go pr.Run(pctx)
	if dp != nil {
		log.Info("GRE datapath attached", "backend", c.backend, "uplink", uplink, "probe_address", probe, "upgraded_in_place", dp.Upgraded, "unchanged", dp.Reused, "pin_dir", pinDir)
	} else {
		log.Info("kernel GRE backend started", "backend", c.backend, "uplink", uplink, "probe_address", probe, "tenants_with_tunnels", len(rec.Tenants()))
	}
	return ts, func() {
		cancel()
		pr.Close()
		stop()
	}, nil
}

// tenantNotifier passes the tenants whose tunnel health changed to nsd's
// loop without losing any (a tunnel's first verdict included) and without
// blocking the prober: names wait in a set, each once, until the loop
// takes them.
type tenantNotifier struct {
	out     chan<- string
	mu      sync.Mutex
	pending map[string]bool
	kick    chan struct{}
}

func newTenantNotifier(out chan<- string) *tenantNotifier {
	return &tenantNotifier{out: out, pending: map[string]bool{}, kick: make(chan struct{}, 1)}
}

func (n *tenantNotifier) notify(tenant string) {
	n.mu.Lock()
	n.pending[tenant] = true
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *tenantNotifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		n.mu.Lock()
		names := slices.Sorted(maps.Keys(n.pending))
		clear(n.pending)
		n.mu.Unlock()
		for _, t := range names {
			select {
			case n.out <- t:
			case <-ctx.Done():
				return
			}
		}
	}
}
