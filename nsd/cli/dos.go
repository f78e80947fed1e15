package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// dosCommand edits tenants/<t>/dos and dos/global like fw edits firewalls:
// every write validates the whole document and uses check-and-set.
func dosCommand(env Env, sf *storeFlags) *cobra.Command {
	out := env.Stdout
	var global bool
	cmd := &cobra.Command{Use: "dos", Short: "edit and inspect DoS documents (a tenant's, or the fleet-wide one with --global)", Args: cobra.NoArgs,
		Long: `dos edits nfhost/tenants/<tenant>/dos, or nfhost/dos/global with --global. Signatures
use the firewall's expression language restricted to what XDP evaluates: a conjunction of
field comparisons and at most one payload[off:len] (& mask) == value. Writes validate the
whole document and use check-and-set (put: exit code 4 on a conflict; add-signature and
delete-signature re-read and retry).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Help()
			return usageError("nsctl dos: missing subcommand")
		}}
	cmd.PersistentFlags().BoolVar(&global, "global", false, "the fleet-wide document nfhost/dos/global instead of a tenant's")

	// scope resolves the TENANT argument against --global.
	scope := func(args []string) (string, error) {
		switch {
		case global && len(args) == 0:
			return "", nil
		case global:
			return "", usageError("give a TENANT or --global, not both")
		case len(args) == 0:
			return "", usageError("give a TENANT or --global")
		}
		return args[0], doc.ValidateTenantID(args[0])
	}
	name := func(tenant string) string {
		if tenant == "" {
			return dosspec.GlobalKey
		}
		return "tenants/" + tenant + "/dos"
	}
	// parse validates b as tenant's document; "" is the global one and
	// anyTenant a tenant document outside any tenant (validate).
	const anyTenant = "\x00"
	parse := func(tenant string, b []byte) (dosspec.Spec, error) {
		switch tenant {
		case "":
			return dosspec.ParseGlobal(b)
		case anyTenant:
			return dosspec.Parse("", b)
		}
		return dosspec.Parse(tenant, b)
	}
	read := func(tenant string) (dosspec.Config, uint64, error) {
		_, snap, err := sf.read(env)
		if err != nil {
			return dosspec.Config{}, 0, err
		}
		var e *source.Entry
		if tenant == "" {
			e = snap.DoSGlobal
		} else {
			keys, ok := snap.Tenants[tenant]
			if !ok {
				return dosspec.Config{}, 0, fmt.Errorf("tenant %s: %w", tenant, source.ErrNotFound)
			}
			if x, ok := keys[doc.KeyDoS]; ok {
				e = &x
			}
		}
		if e == nil {
			return dosspec.Config{}, 0, nil
		}
		var c dosspec.Config
		if err := json.Unmarshal(e.Value, &c); err != nil {
			return c, 0, fmt.Errorf("%s: stored document is not valid JSON: %w", name(tenant), err)
		}
		return c, e.ModifyIndex, nil
	}
	write := func(tenant string, c dosspec.Config, cas uint64) error {
		b, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return err
		}
		if _, err := parse(tenant, b); err != nil {
			return err
		}
		st, err := sf.open(env)
		if err != nil {
			return err
		}
		if tenant == "" {
			return st.PutDoSGlobal(env.Ctx, b, cas)
		}
		return st.Put(env.Ctx, tenant, doc.KeyDoS, b, cas)
	}
	edit := func(tenant string, f func(*dosspec.Config) error) error {
		return casEdit(func() (dosspec.Config, uint64, error) { return read(tenant) },
			func(c dosspec.Config, idx uint64) error { return write(tenant, c, idx) }, f)
	}

	get := &cobra.Command{Use: "get (TENANT | --global)", Short: "print the DoS document", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := scope(args)
			if err != nil {
				return err
			}
			c, _, err := read(t)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(c, "", "  ")
			fmt.Fprintln(out, string(b))
			return nil
		}}

	var file string
	readFile := func(tenant string) (dosspec.Config, dosspec.Spec, error) {
		b, err := readDocFile(file)
		if err != nil {
			return dosspec.Config{}, dosspec.Spec{}, err
		}
		s, err := parse(tenant, b)
		if err != nil {
			return dosspec.Config{}, s, err
		}
		var c dosspec.Config
		return c, s, json.Unmarshal(b, &c)
	}
	put := &cobra.Command{Use: "put (TENANT | --global) -f FILE", Short: "validate and replace the DoS document (check-and-set)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := scope(args)
			if err != nil {
				return err
			}
			_, idx, err := read(t)
			if err != nil {
				return err
			}
			c, s, err := readFile(t)
			if err != nil {
				return err
			}
			if err := write(t, c, idx); err != nil {
				return err
			}
			fmt.Fprintf(out, "%s written (%d signatures, %d allow, %d deny, %d rate limits)\n", name(t), len(s.Signatures), len(s.Allow), len(s.Deny), len(s.RateLimits))
			return nil
		}}
	put.Flags().StringVarP(&file, "file", "f", "", "DoS document (- for stdin)")
	put.MarkFlagRequired("file")

	validate := &cobra.Command{Use: "validate -f FILE [--global]", Short: "validate a DoS document (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t := anyTenant
			if global {
				t = ""
			}
			_, s, err := readFile(t)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "dos: valid (%d signatures, %d allow, %d deny, %d rate limits)\n", len(s.Signatures), len(s.Allow), len(s.Deny), len(s.RateLimits))
			return nil
		}}
	validate.Flags().StringVarP(&file, "file", "f", "", "DoS document (- for stdin)")
	validate.MarkFlagRequired("file")

	var sig dosspec.Signature
	var expires time.Duration
	addSig := &cobra.Command{Use: "add-signature (TENANT | --global) --id ID --expression EXPR [--action drop|ratelimit|monitor]",
		Short: "add (or replace) one signature", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := scope(args)
			if err != nil {
				return err
			}
			s := sig
			if expires > 0 {
				at := time.Now().Add(expires).UTC().Truncate(time.Second)
				s.Expires = &at
			}
			err = edit(t, func(c *dosspec.Config) error {
				for i, x := range c.Signatures {
					if x.ID == s.ID {
						c.Signatures[i] = s
						return nil
					}
				}
				c.Signatures = append(c.Signatures, s)
				return nil
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "signature %s written to %s\n", s.ID, name(t))
			return nil
		}}
	sf2 := addSig.Flags()
	sf2.StringVar(&sig.ID, "id", "", "signature ID")
	sf2.StringVar(&sig.Expression, "expression", "", "match expression, e.g. 'udp.srcport == 53 and ip.len > 512'")
	sf2.StringVar(&sig.Action, "action", "drop", "drop, ratelimit or monitor")
	sf2.Uint64Var(&sig.PPS, "pps", 0, "ratelimit: packets per second")
	sf2.Uint64Var(&sig.BPS, "bps", 0, "ratelimit: bits per second")
	sf2.StringVar(&sig.Per, "per", "", "ratelimit: ip (one bucket per destination, default) or rule")
	sf2.DurationVar(&expires, "expires-in", 0, "expire the signature after this long (default: never)")
	addSig.MarkFlagRequired("id")
	addSig.MarkFlagRequired("expression")

	delSig := &cobra.Command{Use: "delete-signature (TENANT | --global) ID", Short: "remove one signature", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[len(args)-1]
			t, err := scope(args[:len(args)-1])
			if err != nil {
				return err
			}
			err = edit(t, func(c *dosspec.Config) error {
				for i, x := range c.Signatures {
					if x.ID == id {
						c.Signatures = append(c.Signatures[:i], c.Signatures[i+1:]...)
						return nil
					}
				}
				return fmt.Errorf("signature %s: %w", id, source.ErrNotFound)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "signature %s deleted from %s\n", id, name(t))
			return nil
		}}

	var host string
	stats := &cobra.Command{Use: "stats TENANT [--host H]", Short: "DoS counters for a tenant as reported by each host", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, err := sf.tenantStatuses(env, host, args[0], "no DoS counters", func(s source.Status) bool { return s.DoS != nil })
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tRULE\tPACKETS\tDROPPED")
			for _, s := range sts {
				fmt.Fprintf(tw, "%s\t(all traffic)\t%d\t%d\n", s.host, s.DoS.Packets, s.DoS.Dropped)
				for _, r := range slices.Sorted(maps.Keys(s.DoS.Rules)) {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.host, r, s.DoS.Rules[r].Packets, s.DoS.Rules[r].Dropped)
				}
			}
			return tw.Flush()
		}}
	stats.Flags().StringVar(&host, "host", "", "only this host")

	cmd.AddCommand(get, put, validate, addSig, delSig, stats)
	return cmd
}
