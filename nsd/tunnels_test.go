package nsd

import (
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
)

// TestSameTunnelHealth: what rewrites a tenant's status when only tunnel
// health moved: a new state or since, the prober's hint appearing, loss or
// RTT in whole steps; not counters, nor the counts in a down tunnel's
// reason.
func TestSameTunnelHealth(t *testing.T) {
	at := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	base := source.TunnelStatus{State: "down", Since: at, Reason: "3 of the last 3 probes lost", LossPercent: 100, RTTMillis: 1.2}
	for _, c := range []struct {
		name string
		mod  func(*source.TunnelStatus)
		same bool
	}{
		{"counters and reason counts", func(s *source.TunnelStatus) {
			s.ProbesSent, s.WindowLost, s.RxPackets, s.Reason = 40, 40, 9, "40 of the last 30 probes lost"
		}, true},
		{"state", func(s *source.TunnelStatus) { s.State = "degraded" }, false},
		{"since", func(s *source.TunnelStatus) { s.Since = at.Add(time.Second) }, false},
		{"hint", func(s *source.TunnelStatus) { s.Reason += "; no probe answered while the tunnel received 5 packets" }, false},
		{"loss step", func(s *source.TunnelStatus) { s.LossPercent = 98.5 }, false},
		{"rtt within a millisecond", func(s *source.TunnelStatus) { s.RTTMillis = 1.9 }, true},
	} {
		b := base
		c.mod(&b)
		got := sameTunnelHealth(map[string]source.TunnelStatus{"g": base}, map[string]source.TunnelStatus{"g": b})
		if got != c.same {
			t.Errorf("%s: same = %v, want %v", c.name, got, c.same)
		}
	}
}
