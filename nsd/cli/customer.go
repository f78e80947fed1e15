package cli

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/nsd"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/tunnels"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// Customer is nfcustomer: the customer-router side of GRE tunnels for
// labs and tests, on kernels without GRE. It runs the tunnels package's
// datapath in the namespace of the customer's GRE box (--netns, uplink
// --uplink) with the tunnel interfaces in the router's namespace
// (--router), applies the tunnels and routes, and exits: the datapath
// stays pinned until --down.
func Customer(env Env, args []string) int {
	var netnsName, uplink, router, pinDir string
	var tunnelFlags, routeFlags []string
	var down bool
	cmd := &cobra.Command{Use: "nfcustomer --netns NS --router NS --tunnel name=,local=,remote=,address= [--route prefix=,via=[,priority=][,weight=]]",
		Short: "the customer side of nfhost's GRE tunnels, for labs on kernels without GRE",
		Long: `nfcustomer terminates GRE tunnels from nfhost's anycast endpoint the way a customer's router
would, with the same eBPF datapath as nsd: GRE arrives at --uplink in --netns, and each tunnel
interface (name, /31 address) lives in --router, whose routes --route writes. It applies and
exits; the datapath stays pinned (under --pin-dir) until nfcustomer --down.`,
		Example: `  nfcustomer --netns lab-cust --router lab-cust-r \
    --tunnel name=gre1,local=198.51.100.130,remote=192.0.2.10,address=169.254.20.1/31 \
    --route prefix=0.0.0.0/0,via=169.254.20.0`,
		SilenceUsage: true, SilenceErrors: true, Args: cobra.NoArgs}
	fl := cmd.Flags()
	fl.StringVar(&netnsName, "netns", "", "named namespace of the customer's GRE box (holds --uplink)")
	fl.StringVar(&uplink, "uplink", "eth0", "interface GRE arrives on")
	fl.StringVar(&router, "router", "", "named namespace of the customer's router (holds the tunnel interfaces)")
	fl.StringVar(&pinDir, "pin-dir", "", "bpffs directory (default /sys/fs/bpf/nfhost-customer/<netns>)")
	fl.StringArrayVar(&tunnelFlags, "tunnel", nil, "name=N,local=A,remote=A,address=A/31[,mtu=N][,ttl=N] (repeatable)")
	fl.StringArrayVar(&routeFlags, "route", nil, "prefix=P,via=A[,priority=N][,weight=N] (repeatable)")
	fl.BoolVar(&down, "down", false, "remove the datapath (unpin programs and maps) and exit")
	cmd.MarkFlagRequired("netns")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if pinDir == "" {
			pinDir = filepath.Join(bpfpin.BPFFS, "nfhost-customer", netnsName)
		}
		if down {
			return tunnels.Detach(pinDir)
		}
		if router == "" {
			return usageError("--router is required")
		}
		n := config.Network{Prefixes: []string{}}
		for i, s := range tunnelFlags {
			kv, err := keyValues(s, "name", "local", "remote", "address", "mtu", "ttl")
			if err != nil {
				return usageError("--tunnel %d: %v", i+1, err)
			}
			off := false
			t := tunspec.Tunnel{Name: kv["name"], AnycastEndpoint: kv["local"], CustomerEndpoint: kv["remote"], InterfaceAddress: kv["address"],
				HealthCheck: &tunspec.HealthCheck{Enabled: &off}}
			if t.MTU, err = atoiOr(kv["mtu"], 0); err != nil {
				return usageError("--tunnel %d: mtu: %v", i+1, err)
			}
			if t.TTL, err = atoiOr(kv["ttl"], 0); err != nil {
				return usageError("--tunnel %d: ttl: %v", i+1, err)
			}
			n.Tunnels = append(n.Tunnels, t)
		}
		for i, s := range routeFlags {
			kv, err := keyValues(s, "prefix", "via", "priority", "weight")
			if err != nil {
				return usageError("--route %d: %v", i+1, err)
			}
			r := tunspec.Route{Prefix: kv["prefix"], Nexthop: kv["via"]}
			if v, ok := kv["priority"]; ok {
				p, err := strconv.Atoi(v)
				if err != nil {
					return usageError("--route %d: priority: %v", i+1, err)
				}
				r.Priority = &p
			}
			if r.Weight, err = atoiOr(kv["weight"], 0); err != nil {
				return usageError("--route %d: weight: %v", i+1, err)
			}
			n.Routes = append(n.Routes, r)
		}
		// The same validation as a tenant's tunnels ("anycast" is our
		// local end here), reported with field paths.
		vn, err := n.Validate("customer")
		if err != nil {
			// Speak in this command's flag names.
			msg := strings.NewReplacer("tenants/customer/network: ", "", "tunnels[", "--tunnel[", "routes[", "--route[",
				".anycast_endpoint", ".local", ".customer_endpoint", ".remote", ".interface_address", ".address", ".nexthop", ".via").Replace(err.Error())
			return &doc.FieldError{Msg: msg}
		}
		spec := nsd.TunnelSpec("customer", router, vn)
		hostNS, err := namedns.Open(namedns.DefaultDir, netnsName)
		if err != nil {
			return fmt.Errorf("--netns: %w", err)
		}
		defer hostNS.Close()
		c, err := tunnels.StartCustomer(env.Ctx, tunnels.CustomerConfig{HostNS: hostNS, Uplink: uplink, PinDir: pinDir, Inner: router,
			Tunnels: spec.Tunnels, Routes: spec.Routes})
		if err != nil {
			return err
		}
		c.Close()
		fmt.Fprintf(env.Stdout, "customer endpoint in %s: %d tunnels, %d routes (pinned in %s)\n", netnsName, len(spec.Tunnels), len(spec.Routes), pinDir)
		return nil
	}
	cmd.SetArgs(args)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	return exitCode(env, cmd.ExecuteContext(env.Ctx))
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
