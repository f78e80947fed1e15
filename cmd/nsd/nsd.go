package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/synproxy"
	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/firewall"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/geoip"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/bgp"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
	"github.com/nfhost/nfhost/tunnels"
)

// run runs nsd with args (without the program name) and returns the
// process exit code.
func run(env cliutil.Env, args []string) int {
	return cliutil.Execute(env, nsdCommand(env, &nsdFlags{}), args)
}

// nsdFlags are nsd's flags.
type nsdFlags struct {
	store          cliutil.StoreFlags
	hostID         string
	hostNetns      string
	uplink         string
	nsPrefix       string
	resync         time.Duration
	counters       string
	metricsAddr    string
	metricsPerRule bool
	logLevel       string
	once           bool
	maxDelFraction float64
	confirmDeletes bool
	xdpMode        string
	pinDir         string
	probeAddr      string
	greBackend     string
	chosenBackend  string // by chooseGREBackend at start
	bgpConfig      string
	bgp            *bgpspec.Valid // parsed --bgp-config
	indexer        bool
	statusWrites   string
	ackInterval    time.Duration
	site, region   string
	geoipDB, asnDB string
	geoReload      time.Duration
}

// nsdCommand is nsd's command; it parses its flags into f.
func nsdCommand(env cliutil.Env, f *nsdFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nsd",
		Short: "nfhost edge daemon: reconciles tenant namespaces, veths and policy routing from Consul KV",
		Long: `nsd watches tenant configs (Consul KV, or a directory) and reconciles the kernel toward them:
per tenant a network namespace joined to the host by a veth pair, policy routing
(nft mark + ip rule + per-tenant table) that steers the tenant's prefixes into it, the
tenant's nftables firewall inside it, and, with --uplink, one shared XDP DoS layer on
the uplink (drop lists, signatures, rate limits, sampling, automatic mitigation) from
dos/global and tenants/<t>/dos, and the tenants' anycast GRE tunnels (--gre-backend: the
eBPF datapath, tcx decap on the uplink and encap per tunnel, or kernel GRE devices; routes,
health checks from --probe-address).

It never tears down the datapath on exit; a restart with unchanged config changes nothing.`,
		Example: `  nsd --source consul --consul-addr 127.0.0.1:8500 --host-id edge1 --uplink eth0
  nsd --source dir --config-dir /etc/nfhost/tenants --once`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE:          func(cmd *cobra.Command, _ []string) error { return runDaemon(env, f) },
	}
	f.register(cmd)
	return cmd
}

func (f *nsdFlags) register(cmd *cobra.Command) {
	hostname, _ := os.Hostname()
	fl := cmd.Flags()
	fl.StringVar(&f.store.Source, "source", "dir", "configuration source: consul or dir")
	f.store.AddConsulFlags(fl)
	fl.StringVar(&f.store.KVPrefix, "kv-prefix", "nfhost", "Consul KV prefix")
	fl.StringVar(&f.store.ConfigDir, "config-dir", "/etc/nfhost/tenants", "directory source: DIR/<tenant>/network.json")
	fl.StringVar(&f.store.StateDir, "state-dir", "/var/lib/nfhost", "where the directory source writes status")
	fl.StringVar(&f.hostID, "host-id", hostname, "this edge server's ID (status keys, control keys)")
	fl.StringVar(&f.hostNetns, "host-netns", "", "operate on this named network namespace as the host (empty: nsd's own)")
	fl.StringVar(&f.uplink, "uplink", "", "uplink interface in the host namespace; the XDP DoS layer attaches to it (empty: no DoS layer)")
	fl.StringVar(&f.xdpMode, "xdp-mode", "auto", "XDP attach mode on the uplink: native, generic, or auto (native, falling back to generic with a warning)")
	fl.StringVar(&f.pinDir, "bpf-pin-dir", "", "bpffs directory for the DoS layer's and GRE datapath's pinned maps and links (default /sys/fs/bpf/nfhost/<host-id>)")
	fl.StringVar(&f.probeAddr, "probe-address", "", "this server's unicast IPv4 address: tunnel health checks are answered to it (default: the uplink's first IPv4 address)")
	fl.StringVar(&f.greBackend, "gre-backend", tunnels.BackendAuto, "GRE tunnels: ebpf (the eBPF datapath: tcx links on Linux 6.6+, tc clsact filters on kernels without tcx), kernel (ip_gre devices in the tenant namespaces) or auto (ebpf where the kernel has tcx, else kernel where it has ip_gre, else ebpf on clsact); probed at start, the choice is logged and in the host status")
	fl.StringVar(&f.nsPrefix, "ns-prefix", owned.DefaultNSPrefix, "name prefix of tenant namespaces")
	fl.DurationVar(&f.resync, "resync-interval", 30*time.Second, "full re-read of kernel state to repair drift (0 disables)")
	fl.StringVar(&f.counters, "status-counters", "auto", "when counter changes alone are written to tenant status: on-demand (while someone asks: nsctl fw stats, dos stats and tunnels do; a fleet's Consul would not survive every host writing every busy tenant's counters every resync), always (on every resync), or auto (on-demand with --source consul, always with dir)")
	fl.StringVar(&f.statusWrites, "status-writes", "per-tenant", "how this host reports applied changes: per-tenant (each tenant's status, tenant-status/<tenant>/<host>, is written whenever its applied index moves) or ack (Consul only: one acknowledgement per host, acks/<host>, says up to which index every tenant write is processed (at once for a change alone, at most once per --ack-interval under a stream), and a tenant's status is written only when it says more than applied: for fleets, where one tenant's change would otherwise be a write per host and 100 changes a second 100 writes per host a second)")
	fl.DurationVar(&f.ackInterval, "ack-interval", nsd.DefaultAckInterval, "with --status-writes ack: the mean time between two acknowledgements of this host under a stream of changes (three may go at once, so a change alone is acknowledged at once)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics (and nsctl dos top's endpoint) on this address, e.g. 127.0.0.1:9469")
	fl.BoolVar(&f.metricsPerRule, "metrics-per-rule", false, "export series per tenant firewall rule (2 each: 400,000 for 1,000 tenants with 200 rules) and per DoS rate-limit rule (3 each); DoS signatures always have theirs")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&f.once, "once", false, "reconcile once, print a per-tenant summary and exit (non-zero if any tenant failed)")
	fl.Float64Var(&f.maxDelFraction, "max-delete-fraction", 0.2, "hold a pass that would delete more than this share of the host's tenants")
	fl.StringVar(&f.bgpConfig, "bgp-config", "", "BGP speaker config file (JSON: asn, router_id, peers, communities, med, graceful_restart); empty: no BGP")
	fl.BoolVar(&f.confirmDeletes, "confirm-deletes", false, "let deletions held by the mass-delete guard through")
	fl.BoolVar(&f.indexer, "indexer", true, "stand for election as the fleet's indexer (Consul): the elected nsd keeps index/, so that each server reads only the tenants that changed")
	fl.StringVar(&f.site, "site", "", "this server's site, the value of cf.colo.name in firewall rules (empty: rules using it are refused)")
	fl.StringVar(&f.region, "region", "", "this server's region, the value of cf.colo.region in firewall rules (empty: rules using it are refused)")
	fl.StringVar(&f.geoipDB, "geoip-db", "", "MaxMind-format country database (GeoLite2-Country, DB-IP lite) for ip.src.country and ip.dst.country (empty: rules using them are refused)")
	fl.StringVar(&f.asnDB, "asn-db", "", "MaxMind-format ASN database (GeoLite2-ASN) for ip.src.asnum and ip.dst.asnum (empty: rules using them are refused)")
	fl.DurationVar(&f.geoReload, "geo-reload-interval", time.Minute, "how often the geo databases' files are checked for a new version")
}

// check validates the flags and fills in the defaults that depend on
// other flags. It runs before anything privileged, so that a usage error
// reads as one whoever runs nsd.
func (f *nsdFlags) check() (slog.Level, netip.Addr, error) {
	var level slog.Level
	var probe netip.Addr
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return level, probe, cliutil.Usagef("--log-level: %v", err)
	}
	if f.maxDelFraction <= 0 || f.maxDelFraction > 1 {
		return level, probe, cliutil.Usagef("--max-delete-fraction must be in (0, 1], got %v", f.maxDelFraction)
	}
	if f.hostID == "" || strings.ContainsAny(f.hostID, "/ ") {
		return level, probe, cliutil.Usagef("--host-id must be non-empty without '/' or spaces, got %q", f.hostID)
	}
	if f.store.Source != "consul" && f.store.Source != "dir" {
		return level, probe, cliutil.Usagef("--source must be consul or dir, got %q", f.store.Source)
	}
	if f.resync < 0 {
		return level, probe, cliutil.Usagef("--resync-interval must be 0 (off) or positive, got %v", f.resync)
	}
	switch f.counters {
	case "on-demand", "always":
	case "auto":
		f.counters = "always"
		if f.store.Source == "consul" {
			f.counters = "on-demand"
		}
	default:
		return level, probe, cliutil.Usagef("--status-counters must be on-demand, always or auto, got %q", f.counters)
	}
	switch {
	case f.statusWrites != "per-tenant" && f.statusWrites != "ack":
		return level, probe, cliutil.Usagef("--status-writes must be per-tenant or ack, got %q", f.statusWrites)
	case f.statusWrites == "ack" && f.store.Source != "consul":
		return level, probe, cliutil.Usagef("--status-writes ack needs --source consul (acknowledgements are Consul keys, acks/<host>)")
	case f.ackInterval <= 0:
		return level, probe, cliutil.Usagef("--ack-interval must be positive, got %v", f.ackInterval)
	}
	if err := owned.ValidateNSPrefix(f.nsPrefix); err != nil {
		return level, probe, cliutil.Usagef("--ns-prefix: %v", err)
	}
	if f.probeAddr != "" {
		var err error
		if probe, err = netip.ParseAddr(f.probeAddr); err != nil || !probe.Is4() {
			return level, probe, cliutil.Usagef("--probe-address: want an IPv4 address, got %q", f.probeAddr)
		}
	}
	switch f.greBackend {
	case tunnels.BackendEBPF, tunnels.BackendKernel, tunnels.BackendAuto:
	default:
		return level, probe, cliutil.Usagef("--gre-backend must be ebpf, kernel or auto, got %q", f.greBackend)
	}
	switch dos.Mode(f.xdpMode) {
	case dos.ModeNative, dos.ModeGeneric, dos.ModeAuto:
	default:
		return level, probe, cliutil.Usagef("--xdp-mode must be native, generic or auto, got %q", f.xdpMode)
	}
	if f.pinDir == "" {
		f.pinDir = filepath.Join(bpfpin.BPFFS, "nfhost", f.hostID)
	}
	if f.bgpConfig != "" {
		b, err := os.ReadFile(f.bgpConfig)
		if err != nil {
			return level, probe, cliutil.Usagef("--bgp-config: %v", err)
		}
		v, err := bgpspec.Parse(f.bgpConfig, b)
		if err != nil {
			return level, probe, cliutil.Usagef("--bgp-config: %v", err)
		}
		if f.hostNetns != "" {
			for i, p := range v.Peers {
				if !p.Passive {
					return level, probe, cliutil.Usagef("--bgp-config: %s: peers[%d] %s: with --host-netns %v", f.bgpConfig, i, p.Address, bgp.ErrDialFromOtherNetns)
				}
			}
		}
		f.bgp = &v
	}
	for _, c := range []struct{ flag, v string }{{"--site", f.site}, {"--region", f.region}} {
		if c.v != "" {
			if len(c.v) > 64 || strings.ContainsFunc(c.v, func(r rune) bool {
				return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
			}) {
				return level, probe, cliutil.Usagef("%s: want a name of letters, digits, - _ and ., got %q", c.flag, c.v)
			}
		}
	}
	if f.geoReload <= 0 {
		return level, probe, cliutil.Usagef("--geo-reload-interval must be positive, got %v", f.geoReload)
	}
	return level, probe, nil
}

// runDaemon builds the subsystems the flags ask for and runs the daemon
// until env.Ctx ends, or with --once for one pass.
func runDaemon(env cliutil.Env, f *nsdFlags) error {
	level, probe, err := f.check()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level})).With("host", f.hostID)
	if os.Geteuid() != 0 {
		return fmt.Errorf("nsd must run as root: it creates network namespaces and programs netlink and nftables (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
	}
	store, err := f.store.Open()
	if err != nil {
		return err
	}
	hostNS := netns.None()
	if f.hostNetns != "" {
		if hostNS, err = namedns.Open(namedns.DefaultDir, f.hostNetns); err != nil {
			return fmt.Errorf("--host-netns: %w", err)
		}
		defer hostNS.Close()
	}
	if f.uplink != "" {
		if err := checkUplink(hostNS, f.uplink); err != nil {
			return err
		}
		// Before anything is changed: a backend this kernel cannot do
		// stops nsd here.
		if f.chosenBackend, err = chooseGREBackend(hostNS, f.greBackend, log); err != nil {
			return err
		}
	}
	rec, err := routing.New(routing.Config{HostNS: hostNS, NSPrefix: f.nsPrefix, Logger: log})
	if err != nil {
		return fmt.Errorf("start routing: %w", err)
	}
	defer rec.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := nsd.NewMetrics(reg)
	metrics.FirewallRules.Enabled = f.metricsPerRule
	opts := nsd.Options{HostID: f.hostID, Store: store, Routing: rec, Firewall: &firewall.NSReconciler{}, NSPrefix: f.nsPrefix, Resync: f.resync,
		CountersOnDemand: f.counters == "on-demand", MaxDeleteFraction: f.maxDelFraction, ConfirmDeletes: f.confirmDeletes, Logger: log, Metrics: metrics,
		Acks: f.statusWrites == "ack", AckInterval: f.ackInterval}
	topSrv := &top.Server{Host: f.hostID} // Rec stays nil without the DoS layer
	langEnv := lang.Env{Site: f.site, Region: f.region}
	opts.FirewallEnv = func() fwspec.Env { return fwspec.Env{Env: langEnv} }
	if f.geoipDB != "" || f.asnDB != "" {
		geo, err := geoip.NewReloader(f.geoipDB, f.asnDB, log)
		if err != nil {
			return fmt.Errorf("--geoip-db/--asn-db: %w", err)
		}
		opts.FirewallEnv = func() fwspec.Env {
			db := geo.DB()
			return fwspec.Env{Env: langEnv, Geo: db, Version: db.Version()}
		}
		changed := make(chan struct{}, 1)
		opts.EnvChanged = changed
		stopGeo := make(chan struct{})
		defer close(stopGeo)
		go geo.Watch(stopGeo, f.geoReload, changed)
	}
	if f.uplink != "" {
		stop, err := startUplink(env.Ctx, f, hostNS, probe, log, reg, &opts, topSrv)
		if err != nil {
			return err
		}
		defer stop()
		opts.Synproxy = synproxy.NS{}
	} else {
		log.Warn("no --uplink: the XDP DoS layer and the GRE datapath are off; dos documents are reported as not applied and tenants with tunnels fail")
	}
	if f.bgp != nil && f.once {
		log.Info("--once: the BGP speaker is not started (nothing is announced or withdrawn)")
	}
	if f.bgp != nil && !f.once {
		sp, err := startBGP(env.Ctx, f, hostNS, probe, log, reg)
		if err != nil {
			return err
		}
		opts.BGP = sp
	}
	if ts, ok := store.(source.TopStore); ok && !f.once {
		pub := newTopPublisher(topSrv, ts, f.hostID, log)
		opts.OnControl = pub.Control
		ctx, cancel := context.WithCancel(env.Ctx)
		defer cancel()
		go pub.run(ctx)
	}
	d := nsd.New(opts)

	if f.once {
		rs, err := d.Once(env.Ctx)
		if err != nil {
			return err
		}
		printOnce(env.Stdout, rs)
		if nsd.Failed(rs) {
			return errOnceFailed
		}
		return nil
	}
	if f.metricsAddr != "" {
		stop, err := serveMetrics(f.metricsAddr, reg, topSrv, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if c, ok := store.(*source.Consul); ok && f.indexer {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.RunIndexer(env.Ctx, f.hostID, log, func(s source.IndexerState) {
				metrics.IndexerLeader.Set(map[bool]float64{true: 1}[s.Leading])
				if s.Err != nil {
					metrics.IndexerErrors.Inc()
				}
			})
		}()
		// On the way out, let the indexer release its lock, so that
		// another nsd takes over at once rather than after the session's
		// TTL.
		defer func() {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
		}()
	}
	log.Info("nsd started", "source", f.store.Source, "host_netns", f.hostNetns, "uplink", f.uplink)
	return d.Run(env.Ctx)
}

// errOnceFailed is --once's error when a tenant failed (exit 1).
var errOnceFailed = errors.New("one or more tenants failed")

// printOnce writes --once's per-tenant summary.
func printOnce(out io.Writer, rs []nsd.Result) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tSTATE\tCHANGES\tERROR")
	for _, r := range rs {
		msg := ""
		if r.Err != nil {
			msg = r.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Tenant, r.State, r.Changes, msg)
	}
	tw.Flush()
}

// startBGP starts the speaker; its router ID defaults to the probe
// address (the uplink's first IPv4 address).
func startBGP(ctx context.Context, f *nsdFlags, hostNS netns.NsHandle, probe netip.Addr, log *slog.Logger, reg prometheus.Registerer) (*bgp.Speaker, error) {
	if !probe.IsValid() && !f.bgp.RouterID.IsValid() && f.uplink != "" {
		probe, _ = defaultProbeAddress(hostNS, f.uplink)
	}
	sp, err := bgp.Start(ctx, bgp.Config{Spec: *f.bgp, RouterID: probe, HostNS: hostNS, Logger: log.With("subsys", "bgp"), Registry: reg})
	if err != nil {
		return nil, fmt.Errorf("--bgp-config %s: %w", f.bgpConfig, err)
	}
	log.Info("bgp speaker started", "asn", f.bgp.ASN, "peers", len(f.bgp.Peers), "listen_port", f.bgp.ListenPort)
	return sp, nil
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
