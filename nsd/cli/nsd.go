package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/firewall"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd"
	"github.com/nfhost/nfhost/routing"
)

var sprintf = fmt.Sprintf

// NSD runs the daemon with args (without the program name) and returns the
// process exit code.
func NSD(env Env, args []string) int {
	var (
		sf             storeFlags
		hostID         string
		hostNetns      string
		uplink         string
		nsPrefix       string
		resync         time.Duration
		metricsAddr    string
		logLevel       string
		once           bool
		maxDelFraction float64
		confirmDeletes bool
		xdpMode        string
		pinDir         string
		probeAddr      string
	)
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "nsd",
		Short: "nfhost edge daemon: reconciles tenant namespaces, veths and policy routing from Consul KV",
		Long: `nsd watches tenant configs (Consul KV, or a directory) and reconciles the kernel toward them:
per tenant a network namespace joined to the host by a veth pair, policy routing
(nft mark + ip rule + per-tenant table) that steers the tenant's prefixes into it, the
tenant's nftables firewall inside it, and, with --uplink, one shared XDP DoS layer on
the uplink (drop lists, signatures, rate limits, sampling, automatic mitigation) from
dos/global and tenants/<t>/dos, and the eBPF GRE datapath for the tenants' anycast tunnels
(tcx decap on the uplink, encap per tunnel, routes, health checks from --probe-address).

It never tears down the datapath on exit; a restart with unchanged config changes nothing.`,
		Example: `  nsd --source consul --consul-addr 127.0.0.1:8500 --host-id edge1 --uplink eth0
  nsd --source dir --config-dir /etc/nfhost/tenants --once`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
	}
	fl := cmd.Flags()
	fl.StringVar(&sf.source, "source", "dir", "configuration source: consul or dir")
	fl.StringVar(&sf.consulAddr, "consul-addr", "", "Consul HTTP address (default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500; token and TLS from CONSUL_HTTP_*)")
	fl.StringVar(&sf.kvPrefix, "kv-prefix", "nfhost", "Consul KV prefix")
	fl.StringVar(&sf.configDir, "config-dir", "/etc/nfhost/tenants", "directory source: DIR/<tenant>/network.json")
	fl.StringVar(&sf.stateDir, "state-dir", "/var/lib/nfhost", "where the directory source writes status")
	fl.StringVar(&hostID, "host-id", hostname, "this edge server's ID (status keys, control keys)")
	fl.StringVar(&hostNetns, "host-netns", "", "operate on this named network namespace as the host (empty: nsd's own)")
	fl.StringVar(&uplink, "uplink", "", "uplink interface in the host namespace; the XDP DoS layer attaches to it (empty: no DoS layer)")
	fl.StringVar(&xdpMode, "xdp-mode", "auto", "XDP attach mode on the uplink: native, generic, or auto (native, falling back to generic with a warning)")
	fl.StringVar(&pinDir, "bpf-pin-dir", "", "bpffs directory for the DoS layer's and GRE datapath's pinned maps and links (default /sys/fs/bpf/nfhost/<host-id>)")
	fl.StringVar(&probeAddr, "probe-address", "", "this server's unicast IPv4 address: tunnel health checks are answered to it (default: the uplink's first IPv4 address)")
	fl.StringVar(&nsPrefix, "ns-prefix", owned.DefaultNSPrefix, "name prefix of tenant namespaces")
	fl.DurationVar(&resync, "resync-interval", 30*time.Second, "full re-read of kernel state to repair drift (0 disables)")
	fl.StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9469")
	fl.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&once, "once", false, "reconcile once, print a per-tenant summary and exit (non-zero if any tenant failed)")
	fl.Float64Var(&maxDelFraction, "max-delete-fraction", 0.2, "hold a pass that would delete more than this share of the host's tenants")
	fl.BoolVar(&confirmDeletes, "confirm-deletes", false, "let deletions held by the mass-delete guard through")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		var level slog.Level
		if err := level.UnmarshalText([]byte(logLevel)); err != nil {
			return usageError("--log-level: %v", err)
		}
		if maxDelFraction <= 0 || maxDelFraction > 1 {
			return usageError("--max-delete-fraction must be in (0, 1], got %v", maxDelFraction)
		}
		if hostID == "" || strings.ContainsAny(hostID, "/ ") {
			return usageError("--host-id must be non-empty without '/' or spaces, got %q", hostID)
		}
		if sf.source != "consul" && sf.source != "dir" {
			return usageError("--source must be consul or dir, got %q", sf.source)
		}
		if resync < 0 {
			return usageError("--resync-interval must be 0 (off) or positive, got %v", resync)
		}
		if err := owned.ValidateNSPrefix(nsPrefix); err != nil {
			return usageError("--ns-prefix: %v", err)
		}
		var probe netip.Addr
		if probeAddr != "" {
			var err error
			if probe, err = netip.ParseAddr(probeAddr); err != nil || !probe.Is4() {
				return usageError("--probe-address: want an IPv4 address, got %q", probeAddr)
			}
		}
		switch dos.Mode(xdpMode) {
		case dos.ModeNative, dos.ModeGeneric, dos.ModeAuto:
		default:
			return usageError("--xdp-mode must be native, generic or auto, got %q", xdpMode)
		}
		if pinDir == "" {
			pinDir = filepath.Join(bpfpin.BPFFS, "nfhost", hostID)
		}
		log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level})).With("host", hostID)
		// Flags are checked above, before privileges, so that a usage
		// error reads as one whoever runs it.
		if os.Geteuid() != 0 {
			return fmt.Errorf("nsd must run as root: it creates network namespaces and programs netlink and nftables (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
		}
		store, err := sf.open(env)
		if err != nil {
			return err
		}
		hostNS := netns.None()
		if hostNetns != "" {
			if hostNS, err = namedns.Open(namedns.DefaultDir, hostNetns); err != nil {
				return fmt.Errorf("--host-netns: %w", err)
			}
			defer hostNS.Close()
		}
		if uplink != "" {
			if err := checkUplink(hostNS, uplink); err != nil {
				return err
			}
		}
		rec, err := routing.New(routing.Config{HostNS: hostNS, NSPrefix: nsPrefix, Logger: log})
		if err != nil {
			return fmt.Errorf("start routing: %w", err)
		}
		defer rec.Close()

		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		metrics := nsd.NewMetrics(reg)
		opts := nsd.Options{HostID: hostID, Store: store, Routing: rec, Firewall: &firewall.NSReconciler{}, NSPrefix: nsPrefix, Resync: resync,
			MaxDeleteFraction: maxDelFraction, ConfirmDeletes: confirmDeletes, Logger: log, Metrics: metrics}
		if uplink != "" {
			dp, err := dos.Load(dos.LoadConfig{PinDir: pinDir, HostNS: hostNS, Uplink: uplink, Mode: dos.Mode(xdpMode), Logger: log})
			if err != nil {
				return fmt.Errorf("start the XDP DoS layer: %w", err)
			}
			defer dp.Close() // the program, link and maps stay pinned
			dr, err := dos.NewReconciler(dp, log)
			if err != nil {
				return fmt.Errorf("start the XDP DoS layer: %w", err)
			}
			opts.DoS = dr
			reg.MustRegister(nsd.NewDoSCollector(dr, log))
			log.Info("XDP DoS layer attached", "uplink", uplink, "mode", dp.Mode, "upgraded_in_place", dp.Upgraded, "unchanged", dp.Reused, "pin_dir", pinDir)
			if !once {
				auto := make(chan []detect.Mitigation, 1)
				pol := &nsd.AutoPolicies{}
				opts.Auto, opts.AutoPolicies = auto, pol
				stop := readSamples(dp, dr, metrics, log, pol, auto)
				defer stop()
			}
			events := make(chan string, 64)
			ts, stop, err := startTunnels(env.Ctx, hostNS, uplink, filepath.Join(pinDir, "tunnels"), probe, log, events)
			if err != nil {
				return err
			}
			defer stop()
			opts.Tunnels, opts.TunnelEvents = ts, events
			reg.MustRegister(newTunnelCollector(ts))
		} else {
			log.Warn("no --uplink: the XDP DoS layer and the GRE datapath are off; dos documents are reported as not applied and tenants with tunnels fail")
		}
		d := nsd.New(opts)

		if once {
			rs, err := d.Once(env.Ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tSTATE\tCHANGES\tERROR")
			for _, r := range rs {
				msg := ""
				if r.Err != nil {
					msg = r.Err.Error()
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Tenant, r.State, r.Changes, msg)
			}
			tw.Flush()
			if nsd.Failed(rs) {
				return errOnceFailed
			}
			return nil
		}
		if metricsAddr != "" {
			ln, err := net.Listen("tcp", metricsAddr)
			if err != nil {
				return fmt.Errorf("listen on --metrics-addr: %w", err)
			}
			srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
			go srv.Serve(ln)
			defer srv.Close()
			log.Info("serving metrics", "addr", ln.Addr().String())
		}
		log.Info("nsd started", "source", sf.source, "host_netns", hostNetns, "uplink", uplink)
		return d.Run(env.Ctx)
	}
	cmd.SetArgs(args)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	return exitCode(env, cmd.ExecuteContext(env.Ctx))
}

var errOnceFailed = errors.New("one or more tenants failed")

// readSamples counts the DoS layer's packet samples per tenant until
// stopped. They are the detection stage's input; nsd itself only counts
// them and logs them at debug level.
// readSamples reads the XDP packet samples: it counts them per tenant and
// feeds the detector, whose mitigations go to auto whenever they change.
func readSamples(dp *dos.Datapath, dr *dos.Reconciler, m *nsd.Metrics, log *slog.Logger, pol *nsd.AutoPolicies, auto chan []detect.Mitigation) (stop func()) {
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
				if p, ok := detect.Parse(s.Data); ok && tenant != "" {
					p.Tenant, p.Dropped = tenant, s.Dropped
					det.Add(p)
				}
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

func checkUplink(hostNS netns.NsHandle, name string) error {
	h, err := nlh.New(hostNS, false)
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err != nil {
		return fmt.Errorf("--uplink %q: no such interface in the host namespace: %w", name, err)
	}
	return nil
}

func exitCode(env Env, err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return ExitOK
	}
	fmt.Fprintln(env.Stderr, "error:", err)
	var ue usageErr
	switch {
	case errors.As(err, &ue) || strings.Contains(err.Error(), "unknown flag") || strings.Contains(err.Error(), "unknown command") ||
		strings.Contains(err.Error(), "accepts ") || strings.Contains(err.Error(), "required flag"):
		return ExitUsage
	}
	return exitFor(err)
}
