package nsd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels"
)

type fakeTunnels struct {
	specs   map[string]tunnels.TenantSpec
	removed []string
}

func (f *fakeTunnels) Apply(_ context.Context, s tunnels.TenantSpec) ([]string, error) {
	if len(s.Tunnels) == 0 {
		delete(f.specs, s.Tenant)
		return nil, nil
	}
	f.specs[s.Tenant] = s
	return []string{"applied"}, nil
}

func (f *fakeTunnels) Remove(tenant string) ([]string, error) {
	f.removed = append(f.removed, tenant)
	delete(f.specs, tenant)
	return nil, nil
}

func (f *fakeTunnels) Status(tenant string) map[string]source.TunnelStatus {
	out := map[string]source.TunnelStatus{}
	for _, t := range f.specs[tenant].Tunnels {
		out[t.Name] = source.TunnelStatus{State: "healthy"}
	}
	return out
}

const acmeTunnel = `{"prefixes": ["203.0.113.0/24"],
 "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31"}],
 "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}]}`

func TestTunnelsApplyStatusDelete(t *testing.T) {
	ft := &fakeTunnels{specs: map[string]tunnels.TenantSpec{}}
	h := newHarness(t, Options{Tunnels: ft})
	h.put("acme", "network", acmeTunnel)
	h.pass(t, true)
	s, ok := ft.specs["acme"]
	if !ok || s.Namespace != "nf-acme" || len(s.Routes) != 1 || s.Routes[0].Tunnel != "gre-acme1" || s.Tunnels[0].MTU != 1476 {
		t.Fatalf("tunnel spec %+v", s)
	}
	st := h.store.tenantStatus("acme")
	if st.State != "applied" || st.Subsystems["tunnels"] != "ok" || st.Tunnels["gre-acme1"].State != "healthy" {
		t.Fatalf("status %+v", st)
	}
	// Another tenant may not reuse the endpoint pair.
	h.put("other", "network", strings.Replace(acmeTunnel, "203.0.113.0/24", "198.51.100.0/25", 2))
	h.pass(t, false)
	if st := h.store.tenantStatus("other"); !strings.Contains(st.Error, `tunnels[0].customer_endpoint: "198.51.100.130": the endpoint pair 192.0.2.10 - 198.51.100.130 is used by tenant "acme"`) {
		t.Fatalf("pair conflict not refused: %+v", st)
	}
	if _, ok := ft.specs["other"]; ok {
		t.Fatal("conflicting tunnel applied")
	}
	delete(h.snap.Tenants, "acme")
	h.pass(t, false)
	if len(ft.removed) != 1 || ft.removed[0] != "acme" {
		t.Fatalf("tunnels not removed with the tenant: %v", ft.removed)
	}
}

func TestTunnelsWithoutDatapathFail(t *testing.T) {
	h := newHarness(t, Options{})
	h.put("acme", "network", acmeTunnel)
	h.pass(t, true)
	if st := h.store.tenantStatus("acme"); st.State != "error" || !strings.Contains(st.Error, "this nsd has no GRE datapath (start it with --uplink)") {
		t.Fatalf("status %+v", st)
	}
}

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
