package bgp

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	up        *prometheus.GaugeVec
	state     *prometheus.GaugeVec
	updates   *prometheus.CounterVec
	flaps     *prometheus.CounterVec
	announced *prometheus.GaugeVec
}

// newMetrics registers the speaker's metrics (reg may be nil). The peer
// label is bounded by the config file's peers.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_bgp_session_up",
			Help: "1 while the BGP session with the peer is established."}, []string{"peer"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_bgp_session_state",
			Help: "BGP session state per peer (RFC 4273 bgpPeerState: 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established)."}, []string{"peer"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_bgp_updates_sent_total",
			Help: "BGP UPDATE messages sent per peer."}, []string{"peer"}),
		flaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nfhost_bgp_session_flaps_total",
			Help: "Established BGP sessions that went down, per peer."}, []string{"peer"}),
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "nfhost_bgp_prefixes_announced",
			Help: "Prefixes and FlowSpec rules this host announces, by family (ipv4, ipv6, flowspec_ipv4)."}, []string{"family"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.state, m.updates, m.flaps, m.announced)
	}
	return m
}

func (m *metrics) setAnnounced(prefixes []netip.Prefix, flows int) {
	v4, v6 := 0, 0
	for _, p := range prefixes {
		if p.Addr().Is4() {
			v4++
		} else {
			v6++
		}
	}
	m.announced.WithLabelValues("ipv4").Set(float64(v4))
	m.announced.WithLabelValues("ipv6").Set(float64(v6))
	m.announced.WithLabelValues("flowspec_ipv4").Set(float64(flows))
}
