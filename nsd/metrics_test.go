package nsd

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// countersDoS is a DoS layer whose counters are those of a full host.
type countersDoS struct{ c dos.Counters }

func (f *countersDoS) Apply(dosspec.Spec, []dos.Tenant, time.Time) (map[string]error, error) {
	return nil, nil
}
func (f *countersDoS) Counters() (dos.Counters, error) { return f.c, nil }

// TestSeriesBudget counts the series nsd's own metrics export for 1,000
// tenants with 200 firewall rules each, every subsystem and pass observed,
// every tenant with DoS counters, samples and an automatic mitigation, and
// every XDP signature slot (256) and rate rule slot used: the figures the
// README states. Per-rule series (firewall rules, DoS rate-limit rules)
// are off by default and add two per firewall rule and three per rate rule
// when on.
func TestSeriesBudget(t *testing.T) {
	count := func(rules bool) int {
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg)
		m.FirewallRules.Enabled = rules
		c := dos.Counters{Reasons: map[string]dos.Stats{}, Signatures: map[string]dos.Stats{}, RateLimits: map[string]dos.Stats{}, Tenants: map[string]dos.Stats{}}
		for _, r := range dos.Reasons {
			c.Reasons[r] = dos.Stats{Packets: 1}
		}
		for i := 0; i < dosspec.MaxSignatures; i++ {
			c.Signatures[fmt.Sprintf("t%d/sig%d", i, i)] = dos.Stats{Packets: 1}
		}
		for i := 0; i < dos.MaxRateRules; i++ {
			c.RateLimits[fmt.Sprintf("t%d/rate:%d", i, i)] = dos.Stats{Packets: 1}
		}
		for _, s := range []string{"routing", "tunnels", "firewall", "dos"} {
			for _, r := range []string{"ok", "error", "config"} {
				m.Reconciles.WithLabelValues(s, r).Inc()
			}
			m.ApplySeconds.WithLabelValues(s).Observe(0.001)
			m.KernelChanges.WithLabelValues(s).Inc()
		}
		for _, s := range []string{"applied", "error", "held"} {
			m.Tenants.WithLabelValues(s).Set(1)
		}
		m.PassSeconds.WithLabelValues("full").Observe(1)
		m.PassSeconds.WithLabelValues("changes").Observe(1)
		for i := 0; i < 1000; i++ {
			id := fmt.Sprintf("tenant%d", i)
			c.Tenants[id] = dos.Stats{Packets: 1}
			m.DoSSamples.WithLabelValues(id).Inc()
			m.AutoMitigations.WithLabelValues(id).Inc()
			fw := map[string][2]uint64{}
			for r := 0; r < 200; r++ {
				fw[fmt.Sprintf("rule%d", r)] = [2]uint64{1, 1}
			}
			m.FirewallRules.Set(id, fw)
		}
		reg.MustRegister(NewDoSCollector(&countersDoS{c}, nil, rules))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if h := m.GetHistogram(); h != nil {
					n += len(h.GetBucket()) + 3 // buckets, +Inf, _sum, _count
				} else {
					n++
				}
			}
		}
		return n
	}
	off, on := count(false), count(true)
	t.Logf("series for 1,000 tenants × 200 rules, every XDP rule slot used: %d (per-rule series off), %d (--metrics-per-rule)", off, on)
	if on-off != 2*1000*200+3*dos.MaxRateRules {
		t.Errorf("per-rule series: %d, want %d", on-off, 2*1000*200+3*dos.MaxRateRules)
	}
	if off > 6000 {
		t.Errorf("%d series without per-rule firewall series", off)
	}
}
