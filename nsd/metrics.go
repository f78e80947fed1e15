package nsd

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are nsd's Prometheus metrics. They are registered on the registry
// passed in, never on the global default. Names follow Prometheus
// conventions (base units, _total counters, _seconds) and every label is
// bounded: by the subsystems, the tenants, or (DoS rules) the XDP slots.
// Series per firewall rule and per DoS rate-limit rule are off unless
// asked for (nsd --metrics-per-rule: FirewallRules.Enabled and
// NewDoSCollector's perRule): 1,000 tenants × 200 firewall rules would
// add 400,000 and the 16,384 XDP rate rule slots 49,152 (TestSeriesBudget).
type Metrics struct {
	Tenants       *prometheus.GaugeVec
	Reconciles    *prometheus.CounterVec
	KernelChanges *prometheus.CounterVec
	HeldDeletes   prometheus.Gauge
	SourceErrors  prometheus.Counter
	SourceUp      prometheus.Gauge
	ConfigErrors  prometheus.Counter
	LastSync      prometheus.Gauge
	// TenantsDeferred counts the tenants whose latest change the last pass
	// deferred (Options.MinApplyInterval).
	TenantsDeferred prometheus.Gauge

	// IndexerLeader is 1 while this nsd keeps the fleet's index
	// (source.Consul.RunIndexer); IndexerErrors counts its failures.
	IndexerLeader prometheus.Gauge
	IndexerErrors prometheus.Counter
	// BackgroundApplies counts throttled tenants' firewall changes applied
	// in the lane, off the reconcile goroutine.
	BackgroundApplies prometheus.Counter
	// ApplySeconds times one subsystem's Apply of one tenant, by subsys
	// (routing, tunnels, firewall, dos); TenantApplySeconds one tenant
	// through all of them; PassSeconds a whole reconcile pass, by pass
	// (full, resync or changes); ResyncSeconds a periodic resync from its
	// start to its last slice.
	ApplySeconds       *prometheus.HistogramVec
	TenantApplySeconds prometheus.Histogram
	PassSeconds        *prometheus.HistogramVec
	ResyncSeconds      prometheus.Histogram

	// FirewallRules holds the tenants' per-rule firewall counters as last
	// read (after each apply and resync), exported only when Enabled.
	FirewallRules *RuleCounters

	DoSApplySeconds prometheus.Histogram
	DoSSamples      *prometheus.CounterVec
	AutoMitigations *prometheus.CounterVec
	FleetPublished  prometheus.Counter
	// Drained is 1 while the operator drains this host (BGP withdrawn).
	Drained prometheus.Gauge
}

// applySeconds is the apply-time histogram of a subsystem.
func (m *Metrics) applySeconds(subsys string) prometheus.Observer {
	return m.ApplySeconds.WithLabelValues(subsys)
}

// applyBuckets: 100 µs to 3.3 s, doubling (a converged tenant takes well
// under a millisecond, a 100,000-entry firewall list hundreds).
var applyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16)

// NewMetrics creates and registers the metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Tenants: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_tenants",
			Help: "Tenants on this host by state (applied, error, held)."}, []string{"state"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_reconcile_total",
			Help: "Per-tenant reconciles by subsystem and result."}, []string{"subsys", "result"}),
		KernelChanges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_kernel_changes_total",
			Help: "Kernel objects created, changed or deleted, by subsystem."}, []string{"subsys"}),
		HeldDeletes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_deletes_held",
			Help: "Tenant deletions held by the mass-delete guard, awaiting operator confirmation."}),
		SourceErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_source_errors_total",
			Help: "Failed reads of the configuration source (Consul or directory)."}),
		Drained: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_bgp_drained",
			Help: "1 while this host is drained (control/drain/<host>): it announces nothing over BGP."}),
		SourceUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_source_up",
			Help: "1 while the configuration source answers, 0 after a failed read or probe until it answers again."}),
		ConfigErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_config_errors_total",
			Help: "Tenant configurations rejected by validation."}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_last_sync_timestamp_seconds",
			Help: "Unix time of the last completed reconcile pass."}),
		TenantsDeferred: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_tenants_deferred",
			Help: "Tenants whose latest change waits for its turn: they changed more often than the per-tenant pace allows (coalesced)."}),
		IndexerLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "nfhost_indexer_leader",
			Help: "1 while this nsd is the fleet's elected indexer (it keeps the index/ journal and digest)."}),
		IndexerErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_indexer_errors_total",
			Help: "Failures of the indexer's election or work."}),
		BackgroundApplies: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_firewall_background_applies_total",
			Help: "Firewall changes of throttled tenants applied off the reconcile goroutine."}),
		ApplySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nfhost_subsystem_apply_duration_seconds",
			Help: "Time one subsystem takes to apply one tenant, by subsystem.", Buckets: applyBuckets}, []string{"subsys"}),
		TenantApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_tenant_apply_duration_seconds",
			Help: "Time to apply one tenant through every subsystem.", Buckets: applyBuckets}),
		PassSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nfhost_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass, by pass: full (every tenant: the first after a start, a changed environment or shared list), resync (one slice of a periodic resync) or changes (the tenants that changed).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"pass"}),
		ResyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_resync_duration_seconds",
			Help:    "Time of one periodic resync, from reading the kernel to its last slice (changes are served between slices).",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		FirewallRules: newRuleCounters(),
		DoSApplySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nfhost_dos_apply_duration_seconds",
			Help: "Time to build and write the XDP DoS maps.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		DoSSamples: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_dos_samples_total",
			Help: "Packet samples read from the XDP ring buffer, by tenant (\"\" for none)."}, []string{"tenant"}),
		AutoMitigations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_dos_auto_mitigations_total",
			Help: "Automatic DoS mitigations started, by tenant."}, []string{"tenant"}),
		FleetPublished: prometheus.NewCounter(prometheus.CounterOpts{Name: "nfhost_dos_fleet_mitigations_published_total",
			Help: "Automatic DoS mitigations this edge published to the fleet first."}),
	}
	if reg != nil {
		reg.MustRegister(m.Drained)
		reg.MustRegister(m.Tenants, m.Reconciles, m.KernelChanges, m.HeldDeletes,
			m.SourceErrors, m.SourceUp, m.ConfigErrors, m.LastSync, m.TenantsDeferred,
			m.ApplySeconds, m.TenantApplySeconds, m.PassSeconds, m.ResyncSeconds, m.FirewallRules,
			m.IndexerLeader, m.IndexerErrors, m.BackgroundApplies,
			m.DoSApplySeconds, m.DoSSamples, m.AutoMitigations, m.FleetPublished)
	}
	return m
}

// RuleCounters exports the tenants' firewall rule counters as counters
// (they are the nftables counters, which only grow while a rule lives)
// when Enabled. A tenant's set is replaced on each read and removed with
// the tenant, so series of deleted rules and tenants go.
type RuleCounters struct {
	// Enabled: export nfhost_firewall_rule_packets_total and
	// nfhost_firewall_rule_bytes_total{tenant,rule}.
	Enabled bool

	mu             sync.Mutex
	byTenant       map[string]map[string][2]uint64 // rule → packets, bytes
	packets, bytes *prometheus.Desc
}

func newRuleCounters() *RuleCounters {
	return &RuleCounters{byTenant: map[string]map[string][2]uint64{},
		packets: prometheus.NewDesc("nfhost_firewall_rule_packets_total",
			"Packets matched by a tenant firewall rule, as last read from its nftables counter (nsd --metrics-per-rule).", []string{"tenant", "rule"}, nil),
		bytes: prometheus.NewDesc("nfhost_firewall_rule_bytes_total",
			"Bytes matched by a tenant firewall rule, as last read from its nftables counter (nsd --metrics-per-rule).", []string{"tenant", "rule"}, nil)}
}

// Set replaces a tenant's rule counters (nil: the tenant has none).
func (r *RuleCounters) Set(tenant string, rules map[string][2]uint64) {
	if !r.Enabled {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if rules == nil {
		delete(r.byTenant, tenant)
		return
	}
	r.byTenant[tenant] = rules
}

func (r *RuleCounters) Describe(ch chan<- *prometheus.Desc) { ch <- r.packets; ch <- r.bytes }

func (r *RuleCounters) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for tenant, rules := range r.byTenant {
		for rule, c := range rules {
			ch <- prometheus.MustNewConstMetric(r.packets, prometheus.CounterValue, float64(c[0]), tenant, rule)
			ch <- prometheus.MustNewConstMetric(r.bytes, prometheus.CounterValue, float64(c[1]), tenant, rule)
		}
	}
}
