package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/tunnels"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// nfcustomer is the customer-router side of GRE tunnels for labs and
// tests, on kernels without GRE. It runs the tunnels package's datapath in
// the namespace of the customer's GRE box (--netns, uplink --uplink) with
// the tunnel interfaces in the router's namespace (--router), applies the
// tunnels and routes, and exits: the datapath stays pinned until --down.
// It returns the process exit code.
func nfcustomer(env cliutil.Env, args []string) int {
	return cliutil.Execute(env, customerCommand(env), args)
}

// customerFlags are nfcustomer's flags.
type customerFlags struct {
	netns, uplink, router, pinDir string
	tunnels, routes               []string // --tunnel and --route, k=v,k=v each
	down                          bool
}

func customerCommand(env cliutil.Env) *cobra.Command {
	var f customerFlags
	cmd := &cobra.Command{Use: "nfcustomer --netns NS --router NS --tunnel name=,local=,remote=,address= [--route prefix=,via=[,priority=][,weight=]]",
		Short: "the customer side of nfhost's GRE tunnels, for labs on kernels without GRE",
		Long: `nfcustomer terminates GRE tunnels from nfhost's anycast endpoint the way a customer's router
would, with the same eBPF datapath as nsd: GRE arrives at --uplink in --netns, and each tunnel
interface (name, /31 address) lives in --router, whose routes --route writes. It applies and
exits; the datapath stays pinned (under --pin-dir) until nfcustomer --down.`,
		Example: `  nfcustomer --netns lab-cust --router lab-cust-r \
    --tunnel name=gre1,local=198.51.100.130,remote=192.0.2.10,address=169.254.20.1/31 \
    --route prefix=0.0.0.0/0,via=169.254.20.0`,
		SilenceUsage: true, SilenceErrors: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runCustomer(env, f) }}
	fl := cmd.Flags()
	fl.StringVar(&f.netns, "netns", "", "named namespace of the customer's GRE box (holds --uplink)")
	fl.StringVar(&f.uplink, "uplink", "eth0", "interface GRE arrives on")
	fl.StringVar(&f.router, "router", "", "named namespace of the customer's router (holds the tunnel interfaces)")
	fl.StringVar(&f.pinDir, "pin-dir", "", "bpffs directory (default /sys/fs/bpf/nfhost-customer/<netns>)")
	fl.StringArrayVar(&f.tunnels, "tunnel", nil, "name=N,local=A,remote=A,address=A/31[,mtu=N][,ttl=N] (repeatable)")
	fl.StringArrayVar(&f.routes, "route", nil, "prefix=P,via=A[,priority=N][,weight=N] (repeatable)")
	fl.BoolVar(&f.down, "down", false, "remove the datapath (unpin programs and maps) and exit")
	cmd.MarkFlagRequired("netns")
	return cmd
}

// runCustomer applies the tunnels and routes f describes, or with --down
// removes the datapath.
func runCustomer(env cliutil.Env, f customerFlags) error {
	pinDir := f.pinDir
	if pinDir == "" {
		pinDir = filepath.Join(bpfpin.BPFFS, "nfhost-customer", f.netns)
	}
	if f.down {
		return tunnels.Detach(pinDir)
	}
	if f.router == "" {
		return cliutil.Usagef("--router is required")
	}
	vn, err := customerNetwork(f.tunnels, f.routes)
	if err != nil {
		return err
	}
	spec := tunnels.SpecFrom("customer", f.router, vn.Tunnels, vn.Routes)
	hostNS, err := namedns.Open(namedns.DefaultDir, f.netns)
	if err != nil {
		return fmt.Errorf("--netns: %w", err)
	}
	defer hostNS.Close()
	c, err := tunnels.StartCustomer(env.Ctx, tunnels.CustomerConfig{HostNS: hostNS, Uplink: f.uplink, PinDir: pinDir, Inner: f.router,
		Tunnels: spec.Tunnels, Routes: spec.Routes})
	if err != nil {
		return err
	}
	c.Close()
	fmt.Fprintf(env.Stdout, "customer endpoint in %s: %d tunnels, %d routes (pinned in %s)\n", f.netns, len(spec.Tunnels), len(spec.Routes), pinDir)
	return nil
}

// customerNetwork turns the --tunnel and --route flags into a network
// document and validates it the way a tenant's tunnels are validated
// ("anycast" is our local end here). Malformed flags are usage errors; an
// invalid network is a FieldError in the flags' terms.
func customerNetwork(tunnelFlags, routeFlags []string) (config.ValidNetwork, error) {
	n := config.Network{Prefixes: []string{}}
	for i, s := range tunnelFlags {
		kv, err := keyValues(s, "name", "local", "remote", "address", "mtu", "ttl")
		if err != nil {
			return config.ValidNetwork{}, cliutil.Usagef("--tunnel %d: %v", i+1, err)
		}
		off := false
		t := tunspec.Tunnel{Name: kv["name"], AnycastEndpoint: kv["local"], CustomerEndpoint: kv["remote"], InterfaceAddress: kv["address"],
			HealthCheck: &tunspec.HealthCheck{Enabled: &off}}
		if t.MTU, err = atoiOr(kv["mtu"], 0); err != nil {
			return config.ValidNetwork{}, cliutil.Usagef("--tunnel %d: mtu: %v", i+1, err)
		}
		if t.TTL, err = atoiOr(kv["ttl"], 0); err != nil {
			return config.ValidNetwork{}, cliutil.Usagef("--tunnel %d: ttl: %v", i+1, err)
		}
		n.Tunnels = append(n.Tunnels, t)
	}
	for i, s := range routeFlags {
		kv, err := keyValues(s, "prefix", "via", "priority", "weight")
		if err != nil {
			return config.ValidNetwork{}, cliutil.Usagef("--route %d: %v", i+1, err)
		}
		r := tunspec.Route{Prefix: kv["prefix"], Nexthop: kv["via"]}
		if v, ok := kv["priority"]; ok {
			p, err := strconv.Atoi(v)
			if err != nil {
				return config.ValidNetwork{}, cliutil.Usagef("--route %d: priority: %v", i+1, err)
			}
			r.Priority = &p
		}
		if r.Weight, err = atoiOr(kv["weight"], 0); err != nil {
			return config.ValidNetwork{}, cliutil.Usagef("--route %d: weight: %v", i+1, err)
		}
		n.Routes = append(n.Routes, r)
	}
	vn, err := n.Validate("customer")
	if err != nil {
		// Speak in this command's flag names.
		msg := strings.NewReplacer("tenants/customer/network: ", "", "tunnels[", "--tunnel[", "routes[", "--route[",
			".anycast_endpoint", ".local", ".customer_endpoint", ".remote", ".interface_address", ".address", ".nexthop", ".via").Replace(err.Error())
		return config.ValidNetwork{}, &doc.FieldError{Msg: msg}
	}
	return vn, nil
}

// keyValues parses "k=v,k=v" with the allowed keys.
func keyValues(s string, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value", part)
		}
		known := false
		for _, a := range allowed {
			known = known || a == k
		}
		if !known {
			return nil, fmt.Errorf("unknown key %q (want %s)", k, strings.Join(allowed, ", "))
		}
		out[k] = v
	}
	return out, nil
}

func atoiOr(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}
