package tunnels

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

// healthRecorder is a prober started by startRecordingProber and the
// health changes it reported.
type healthRecorder struct {
	*Prober
	mu      sync.Mutex
	changes []Health
}

// startRecordingProber runs a prober in hostNS (probe address 192.0.2.2)
// for rec's tunnels, its traffic from stats, until ctx ends or stop is
// called; every health change is recorded.
func startRecordingProber(t *testing.T, ctx context.Context, hostNS netns.NsHandle, rec *Reconciler, stats func(uint32) (Stats, error)) (*healthRecorder, context.CancelFunc) {
	t.Helper()
	r := &healthRecorder{}
	p, err := NewProber(hostNS, netip.MustParseAddr("192.0.2.2"), rec, nil, func(h Health) {
		r.mu.Lock()
		r.changes = append(r.changes, h)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	r.Prober = p
	p.SetTraffic(func(id uint32) (uint64, bool) {
		st, err := stats(id)
		return st.RxPackets, err == nil
	})
	pctx, cancel := context.WithCancel(ctx)
	go p.Run(pctx)
	return r, cancel
}

// path is the states the tunnel went through, in order, space-separated.
func (r *healthRecorder) path(tunnel string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var states []string
	for _, h := range r.changes {
		if h.Tunnel == tunnel {
			states = append(states, h.State)
		}
	}
	return strings.Join(states, " ")
}
