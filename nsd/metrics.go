package nsd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are nsd's Prometheus metrics. They are registered on the registry
// passed in, never on the global default.
type Metrics struct {
	Tenants       *prometheus.GaugeVec
	Reconciles    *prometheus.CounterVec
	ApplySeconds  prometheus.Histogram
	KernelChanges *prometheus.CounterVec
	HeldDeletes   prometheus.Gauge
	SourceErrors  prometheus.Counter
	SourceUp      prometheus.Gauge
	ConfigErrors  prometheus.Counter
	LastSync      prometheus.Gauge
	// TenantsDeferred counts the tenants whose latest change the last pass
	// deferred (Options.MinApplyInterval).
	TenantsDeferred prometheus.Gauge

	FirewallApplySeconds prometheus.Histogram
	FirewallPackets      *prometheus.GaugeVec
	FirewallBytes        *prometheus.GaugeVec

	DoSApplySeconds prometheus.Histogram
	DoSSamples      *prometheus.CounterVec

	TunnelApplySeconds prometheus.Histogram
	// SubsystemApplySeconds times the subsystems without a histogram of
	// their own (the DoS document check; later subsystems).
	SubsystemApplySeconds *prometheus.HistogramVec
	AutoMitigations       *prometheus.CounterVec
	FleetPublished        prometheus.Counter
}

// applySeconds is the apply-time histogram of a subsystem.
func (m *Metrics) applySeconds(subsys string) prometheus.Observer {
	switch subsys {
	case "firewall":
		return m.FirewallApplySeconds
	case "tunnels":
		return m.TunnelApplySeconds
	case "routing":
		return m.ApplySeconds
	}
	return m.SubsystemApplySeconds.WithLabelValues(subsys)
}

// NewMetrics creates and registers the metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Tenants: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_tenants",
			Help: "Tenants on this host by state (applied, error, held)."}, []string{"state"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_reconcile_total",
			Help: "Per-tenant reconciles by subsystem and result."}, []string{"subsys", "result"}),
		ApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_apply_duration_seconds",
			Help: "Time to apply one tenant to the kernel.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		KernelChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_kernel_changes_total",
			Help: "Kernel objects created, changed or deleted, by subsystem."}, []string{"subsys"}),
		HeldDeletes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_deletes_held",
			Help: "Tenant deletions held by the mass-delete guard, awaiting operator confirmation."}),
		SourceErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_source_errors_total",
			Help: "Failed reads of the configuration source (Consul or directory)."}),
		SourceUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_source_up",
			Help: "1 while the configuration source answers, 0 after a failed read or probe until it answers again."}),
		ConfigErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_config_errors_total",
			Help: "Tenant configurations rejected by validation."}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_last_sync_timestamp_seconds",
			Help: "Unix time of the last completed reconcile pass."}),
		TenantsDeferred: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_tenants_deferred",
			Help: "Tenants whose latest change waits for its turn: they changed more often than the per-tenant pace allows (coalesced)."}),
		FirewallApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_firewall_apply_duration_seconds",
			Help: "Time to apply one tenant's firewall (one nftables batch).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		FirewallPackets: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_firewall_rule_packets",
			Help: "Packets matched by a tenant firewall rule, as last read from its nftables counter."}, []string{"tenant", "rule"}),
		FirewallBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_firewall_rule_bytes",
			Help: "Bytes matched by a tenant firewall rule, as last read from its nftables counter."}, []string{"tenant", "rule"}),
		DoSApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_dos_apply_duration_seconds",
			Help: "Time to build and write the XDP DoS maps.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		DoSSamples: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_dos_samples_total",
			Help: "Packet samples read from the XDP ring buffer, by tenant (\"\" for none)."}, []string{"tenant"}),
		AutoMitigations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_dos_auto_mitigations_total",
			Help: "Automatic DoS mitigations started, by tenant."}, []string{"tenant"}),
		FleetPublished: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_dos_fleet_mitigations_published_total",
			Help: "Automatic DoS mitigations this edge published to the fleet first."}),
		SubsystemApplySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nfhost_subsystem_apply_duration_seconds",
			Help: "Time to apply one tenant's part of a subsystem without a histogram of its own.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)}, []string{"subsys"}),
		TunnelApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_tunnel_apply_duration_seconds",
			Help: "Time to apply one tenant's tunnels, routes and MSS clamping.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.Tenants, m.Reconciles, m.ApplySeconds, m.KernelChanges, m.HeldDeletes,
			m.SourceErrors, m.SourceUp, m.ConfigErrors, m.LastSync, m.TenantsDeferred, m.FirewallApplySeconds, m.FirewallPackets, m.FirewallBytes,
			m.DoSApplySeconds, m.DoSSamples, m.TunnelApplySeconds, m.SubsystemApplySeconds, m.AutoMitigations,
			m.FleetPublished)
	}
	return m
}
