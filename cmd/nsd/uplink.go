package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/nsd"
)

// startUplink starts what nsd runs on the uplink: the XDP DoS layer (with
// the sample reader that feeds automatic mitigation, unless --once) and the
// GRE datapath. It adds them to opts and their collectors to reg. stop
// closes them in reverse order; the programs, links and maps stay pinned.
// The sample reader also feeds topSrv's recorder while someone watches.
func startUplink(ctx context.Context, f *nsdFlags, hostNS netns.NsHandle, probe netip.Addr, log *slog.Logger, reg *prometheus.Registry, opts *nsd.Options, topSrv *top.Server) (stop func(), err error) {
	var stops []func()
	undo := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	dp, err := dos.Load(dos.LoadConfig{PinDir: f.pinDir, HostNS: hostNS, Uplink: f.uplink, Mode: dos.Mode(f.xdpMode), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start the XDP DoS layer: %w", err)
	}
	stops = append(stops, dp.Close)
	dr, err := dos.NewReconciler(dp, log)
	if err != nil {
		undo()
		return nil, fmt.Errorf("start the XDP DoS layer: %w", err)
	}
	opts.DoS = dr
	reg.MustRegister(nsd.NewDoSCollector(dr, log, f.metricsPerRule))
	log.Info("XDP DoS layer attached", "uplink", f.uplink, "mode", dp.Mode, "upgraded_in_place", dp.Upgraded, "unchanged", dp.Reused, "pin_dir", f.pinDir)
	if !f.once {
		auto := make(chan []detect.Mitigation, 1)
		pol := &nsd.AutoPolicies{}
		opts.Auto, opts.AutoPolicies = auto, pol
		rec := top.NewRecorder()
		topSrv.Rec, topSrv.Sampling = rec, dr.Sampling
		stops = append(stops, readSamples(dp, dr, opts.Metrics, log, pol, auto, rec))
	}

	backend := f.chosenBackend
	opts.GREBackend = backend
	events := make(chan string, 64)
	ts, stopTunnels, err := startTunnels(ctx, hostNS, tunnelsConfig{uplink: f.uplink, pinDir: filepath.Join(f.pinDir, "tunnels"), backend: backend,
		nsPrefix: f.nsPrefix, probe: probe}, log, events)
	if err != nil {
		undo()
		return nil, err
	}
	stops = append(stops, stopTunnels)
	opts.Tunnels, opts.TunnelEvents = ts, events
	reg.MustRegister(newTunnelCollector(ts))
	return undo, nil
}

// readSamples reads the XDP packet samples until stopped: it counts them
// per tenant and feeds the detector, whose mitigations go to auto whenever
// they change, and rec while a viewer (nsctl dos top) watches; unwatched,
// that costs one atomic load per sample.
func readSamples(dp *dos.Datapath, dr *dos.Reconciler, m *nsd.Metrics, log *slog.Logger, pol *nsd.AutoPolicies, auto chan []detect.Mitigation, rec *top.Recorder) (stop func()) {
	rd, err := dp.Samples()
	if err != nil {
		log.Warn("packet samples unavailable: no automatic mitigation", "err", err)
		return func() {}
	}
	det := detect.New(detect.Config{Policy: pol.Get})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
			s, err := rd.Read()
			switch {
			case errors.Is(err, dos.ErrClosed):
				return
			case errors.Is(err, os.ErrDeadlineExceeded):
			case err != nil:
				log.Warn("read packet sample", "err", err)
			default:
				tenant := dr.TenantName(s.Tenant)
				m.DoSSamples.WithLabelValues(tenant).Inc()
				p, ok := detect.Parse(s.Data)
				if ok && tenant != "" {
					p.Tenant, p.Dropped = tenant, s.Dropped
					det.Add(p)
				}
				if now := time.Now(); rec.Watching(now) {
					rec.Add(top.Sample{At: now, Tenant: tenant, Rate: dr.SampleRate(tenant), Len: s.Len, Dropped: s.Dropped, Reason: s.Reason, Pkt: p})
				}
			}
			if now := time.Now(); !rec.Watching(now) {
				rec.Release(now) // the samples of a watch that ended
			}
			if det.Tick(time.Now()) {
				ms := det.Active()
				select {
				case auto <- ms:
				default:
					// The daemon is busy; the newest set replaces the
					// unread one.
					select {
					case <-auto:
					default:
					}
					auto <- ms
				}
			}
		}
	}()
	return func() { rd.Close(); <-done }
}
