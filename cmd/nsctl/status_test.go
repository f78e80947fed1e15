package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
)

func TestStatus(t *testing.T) {
	l := newDirLab(t)
	at := time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)
	l.status("edge1", "acme", source.Status{State: "applied", AppliedIndex: 42, AppliedAt: at})
	l.status("edge1", "beta", source.Status{State: "error", AppliedIndex: 7, Error: "tenants/beta/network: prefixes[0]: overlaps acme"})
	l.status("edge2", "acme", source.Status{State: "held", AppliedIndex: 41, AppliedAt: at})
	l.status("edge1", source.HostStatusName, source.HostStatus{Host: "edge1", HeldDeletes: []string{"gamma", "delta"}, ConfirmToken: "tok123"})
	l.status("edge2", source.HostStatusName, source.HostStatus{Host: "edge2", DoSGlobalIndex: 9, DoSGlobalError: "dos/global: deny[0]: invalid CIDR"})
	want := `HOST   TENANT  STATE    INDEX  APPLIED               ERROR
edge1  acme    applied  42     2025-03-01T12:30:00Z  
edge1  beta    error    7      -                     tenants/beta/network: prefixes[0]: overlaps acme
edge2  acme    held     41     2025-03-01T12:30:00Z  
edge1: HOLDING deletion of 2 tenants (gamma,delta); confirm with: nsctl confirm-deletes --host edge1 --token tok123
edge2: dos/global: deny[0]: invalid CIDR (in force: dos/global index 9)
`
	if out := l.must("status"); out != want {
		t.Errorf("status:\n%s\nwant\n%s", out, want)
	}
	out := l.must("status", "--host", "edge2")
	if strings.Contains(out, "edge1") || !strings.Contains(out, "edge2  acme    held") {
		t.Errorf("status --host edge2:\n%s", out)
	}
}

func TestConfirmDeletes(t *testing.T) {
	l := newDirLab(t)
	if out := l.must("confirm-deletes", "--host", "edge1", "--token", "tok123"); out != "confirmed deletes on edge1 (token tok123)\n" {
		t.Errorf("confirm-deletes: %s", out)
	}
	// Where nsd on edge1 looks for it.
	snap, err := source.NewDir(l.cfg, l.state).Read(t.Context())
	if err != nil || string(snap.Control[source.ConfirmKey("edge1")].Value) != "tok123" {
		t.Errorf("control %s: %q %v", source.ConfirmKey("edge1"), snap.Control[source.ConfirmKey("edge1")].Value, err)
	}
	if _, err := os.Stat(filepath.Join(l.cfg, "_control", "confirm-deletes", "edge1")); err != nil {
		t.Error(err)
	}
}

func TestTunnels(t *testing.T) {
	l := newDirLab(t)
	if out, code := l.ctl("tunnels", "acme"); code != ExitNotFound {
		t.Errorf("tunnels without status: exit %d\n%s", code, out)
	}
	since := time.Date(2026, 12, 1, 22, 0, 0, 0, time.UTC)
	l.status("edge1", "acme", source.Status{Tunnels: map[string]source.TunnelStatus{
		"gre2": {State: "down", LossPercent: 100, Type: "reply", Direction: "unidirectional", Since: since,
			Reason: "all 3 probes of the last 1s lost", WindowProbes: 40, WindowLost: 40, LastFailure: since.Add(39 * time.Second)},
		"gre1": {State: "healthy", LossPercent: 2.5, RTTMillis: 1.234, RxPackets: 10, TxPackets: 12, Drops: 1,
			Type: "request", Direction: "bidirectional", Since: since, Reason: "the last 30 probes answered", WindowProbes: 40, WindowLost: 1,
			LastFailure: since.Add(-time.Minute)},
		"gre3": {State: "unchecked"},
	}})
	want := `HOST   TUNNEL  STATE      SINCE                 CHECK                  PROBES  LOST  LAST-FAILURE          LOSS    RTT     RX  TX  DROPS
edge1  gre1    healthy    2026-12-01T22:00:00Z  request/bidirectional  40      1     2026-12-01T21:59:00Z  2.5%    1.23ms  10  12  1
edge1  gre2    down       2026-12-01T22:00:00Z  reply/unidirectional   40      40    2026-12-01T22:00:39Z  100.0%  0.00ms  0   0   0
edge1  gre3    unchecked  -                     -                      0       0     -                     0.0%    0.00ms  0   0   0

edge1 gre1: the last 30 probes answered
edge1 gre2: all 3 probes of the last 1s lost
`
	if out := l.must("tunnels", "acme"); out != want {
		t.Errorf("tunnels:\n%s\nwant\n%s", out, want)
	}
	if out, code := l.ctl("tunnels", "acme", "--host", "edge9"); code != ExitNotFound {
		t.Errorf("tunnels --host edge9: exit %d\n%s", code, out)
	}
}
