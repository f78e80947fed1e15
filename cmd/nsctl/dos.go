package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/nsd/source"
)

// dosCommand edits tenants/<t>/dos and dos/global like fw edits firewalls:
// every write validates the whole document and uses check-and-set.
func dosCommand(c *ctl) *cobra.Command {
	d := &dosDocs{ctl: c}
	cmd := &cobra.Command{Use: "dos", Short: "edit and inspect DoS documents (a tenant's, or the fleet-wide one with --global)", Args: cobra.NoArgs,
		Long: `dos edits nfhost/tenants/<tenant>/dos, or nfhost/dos/global with --global. Signatures
use the firewall's expression language restricted to what XDP evaluates: a conjunction of
field comparisons and at most one payload[off:len] (& mask) == value. Writes validate the
whole document and use check-and-set (put: exit code 4 on a conflict; add-signature and
delete-signature re-read and retry).`,
		RunE: missingSubcommand("dos")}
	// --global belongs to the commands that edit a document; stats, top
	// and mitigations have none to choose.
	for _, sub := range []*cobra.Command{dosGetCommand(d), dosPutCommand(d), dosValidateCommand(d), dosAddSignatureCommand(d), dosDeleteSignatureCommand(d)} {
		sub.Flags().BoolVar(&d.global, "global", false, "the fleet-wide document nfhost/dos/global instead of a tenant's")
		cmd.AddCommand(sub)
	}
	cmd.AddCommand(dosStatsCommand(c), dosTopCommand(c), dosMitigationsCommand(c))
	return cmd
}

// dosDocs reads and writes DoS documents. Its methods take a tenant; ""
// is the global document.
type dosDocs struct {
	*ctl
	global bool // --global
}

// anyTenant is the "tenant" of a tenant document checked outside any
// tenant (dos validate).
const anyTenant = "\x00"

// scope resolves the TENANT argument against --global.
func (d *dosDocs) scope(args []string) (string, error) {
	switch {
	case d.global && len(args) == 0:
		return "", nil
	case d.global:
		return "", cliutil.Usagef("give a TENANT or --global, not both")
	case len(args) == 0:
		return "", cliutil.Usagef("give a TENANT or --global")
	}
	return args[0], doc.ValidateTenantID(args[0])
}

// name is the document's key as messages show it.
func (d *dosDocs) name(tenant string) string {
	if tenant == "" {
		return dosspec.GlobalKey
	}
	return "tenants/" + tenant + "/dos"
}

// parse validates b as tenant's document.
func (d *dosDocs) parse(tenant string, b []byte) (dosspec.Spec, error) {
	switch tenant {
	case "":
		return dosspec.ParseGlobal(b)
	case anyTenant:
		return dosspec.Parse("", b)
	}
	return dosspec.Parse(tenant, b)
}

// read returns the document and its index; an absent one is empty at
// index 0, but a tenant must exist.
func (d *dosDocs) read(tenant string) (dosspec.Config, uint64, error) {
	_, snap, err := d.ctl.read()
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
		return c, e.ModifyIndex, storedInvalid{fmt.Errorf("%s: stored document is not valid JSON (put replaces it): %w", d.name(tenant), err)}
	}
	return c, e.ModifyIndex, nil
}

// write validates c and writes it with check-and-set against cas.
func (d *dosDocs) write(tenant string, c dosspec.Config, cas uint64) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	s, err := d.parse(tenant, b)
	if err != nil {
		return err
	}
	if tenant != "" {
		if err := d.checkPrefixes(tenant, &s); err != nil {
			return err
		}
	}
	st, err := d.open()
	if err != nil {
		return err
	}
	if tenant == "" {
		return st.PutDoSGlobal(d.Ctx, b, cas)
	}
	return st.Put(d.Ctx, tenant, doc.KeyDoS, b, cas)
}

// checkPrefixes refuses, as nsd would, a tenant document whose rate
// limits or TCP protection lie outside the tenant's prefixes. A tenant
// whose network does not parse is nsd's to report: nothing to check
// against here.
func (d *dosDocs) checkPrefixes(tenant string, s *dosspec.Spec) error {
	_, snap, err := d.ctl.read()
	if err != nil {
		return err
	}
	n, ok := snap.Tenants[tenant][doc.KeyNetwork]
	if !ok {
		return nil
	}
	vn, err := config.ParseNetwork(tenant, n.Value)
	if err != nil {
		return nil
	}
	return s.CheckPrefixes(tenant, vn.Prefixes)
}

// edit applies f to the current document and writes it with check-and-set,
// re-reading on a conflict.
func (d *dosDocs) edit(tenant string, f func(*dosspec.Config) error) error {
	return casEdit(func() (dosspec.Config, uint64, error) { return d.read(tenant) },
		func(c dosspec.Config, idx uint64) error { return d.write(tenant, c, idx) }, f)
}

// readFile reads a document given with -f and validates it as tenant's.
func (d *dosDocs) readFile(tenant, file string) (dosspec.Config, dosspec.Spec, error) {
	b, err := d.readInput(file)
	if err != nil {
		return dosspec.Config{}, dosspec.Spec{}, err
	}
	s, err := d.parse(tenant, b)
	if err != nil {
		return dosspec.Config{}, s, err
	}
	var c dosspec.Config
	return c, s, json.Unmarshal(b, &c)
}

func dosGetCommand(d *dosDocs) *cobra.Command {
	return &cobra.Command{Use: "get (TENANT | --global)", Short: "print the DoS document", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := d.scope(args)
			if err != nil {
				return err
			}
			c, _, err := d.read(t)
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(c, "", "  ")
			fmt.Fprintln(d.Stdout, string(b))
			return nil
		}}
}

func dosPutCommand(d *dosDocs) *cobra.Command {
	var file string
	cmd := &cobra.Command{Use: "put (TENANT | --global) -f FILE", Short: "validate and replace the DoS document (check-and-set)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := d.scope(args)
			if err != nil {
				return err
			}
			_, idx, err := d.read(t)
			if err != nil && !errors.As(err, new(storedInvalid)) {
				return err
			}
			c, s, err := d.readFile(t, file)
			if err != nil {
				return err
			}

			if err := d.write(t, c, idx); err != nil {
				return err
			}
			fmt.Fprintf(d.Stdout, "%s written (%d signatures, %d allow, %d deny, %d rate limits)\n", d.name(t), len(s.Signatures), len(s.Allow), len(s.Deny), len(s.RateLimits))
			return nil
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "DoS document (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

func dosValidateCommand(d *dosDocs) *cobra.Command {
	var file string
	cmd := &cobra.Command{Use: "validate -f FILE [--global]", Short: "validate a DoS document (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t := anyTenant
			if d.global {
				t = ""
			}
			_, s, err := d.readFile(t, file)
			if err != nil {
				return err
			}
			fmt.Fprintf(d.Stdout, "dos: valid (%d signatures, %d allow, %d deny, %d rate limits)\n", len(s.Signatures), len(s.Allow), len(s.Deny), len(s.RateLimits))
			return nil
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "DoS document (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

func dosAddSignatureCommand(d *dosDocs) *cobra.Command {
	var sig dosspec.Signature
	var expires time.Duration
	cmd := &cobra.Command{Use: "add-signature (TENANT | --global) --id ID --expression EXPR [--action drop|ratelimit|monitor] [--export flowspec]",
		Short: "add (or replace) one signature", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := d.scope(args)
			if err != nil {
				return err
			}
			if expires < 0 || cmd.Flags().Changed("expires-in") && expires == 0 {
				return cliutil.Usagef("--expires-in %s: must be a positive duration (leave it out: never)", expires)
			}
			s := sig
			if expires > 0 {
				at := time.Now().Add(expires).UTC().Truncate(time.Second)
				s.Expires = &at
			}
			err = d.edit(t, func(c *dosspec.Config) error {
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
			fmt.Fprintf(d.Stdout, "signature %s written to %s\n", s.ID, d.name(t))
			return nil
		}}
	fl := cmd.Flags()
	fl.StringVar(&sig.ID, "id", "", "signature ID")
	fl.StringVar(&sig.Expression, "expression", "", "match expression, e.g. 'udp.srcport == 53 and ip.len > 512'")
	fl.StringVar(&sig.Action, "action", "drop", "drop, ratelimit or monitor")
	fl.Uint64Var(&sig.PPS, "pps", 0, "ratelimit: packets per second")
	fl.Uint64Var(&sig.BPS, "bps", 0, "ratelimit: bits per second")
	fl.StringVar(&sig.Per, "per", "", "ratelimit: ip (one bucket per destination, default) or rule")
	fl.DurationVar(&expires, "expires-in", 0, "expire the signature after this long (default: never)")
	fl.StringVar(&sig.Export, "export", "", "flowspec: also announce it as a BGP FlowSpec rule to the peers that negotiate it")
	cmd.MarkFlagRequired("id")
	cmd.MarkFlagRequired("expression")
	return cmd
}

func dosDeleteSignatureCommand(d *dosDocs) *cobra.Command {
	return &cobra.Command{Use: "delete-signature (TENANT | --global) ID", Short: "remove one signature", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[len(args)-1]
			t, err := d.scope(args[:len(args)-1])
			if err != nil {
				return err
			}
			err = d.edit(t, func(c *dosspec.Config) error {
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
			fmt.Fprintf(d.Stdout, "signature %s deleted from %s\n", id, d.name(t))
			return nil
		}}
}

func dosStatsCommand(c *ctl) *cobra.Command {
	var host string
	var cf counterFlags
	cmd := &cobra.Command{Use: "stats TENANT [--host H]", Short: "DoS counters for a tenant as reported by each host", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, err := c.freshStatuses(&cf, host, args[0], "no DoS counters", func(s source.Status) bool { return s.DoS != nil })
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tRULE\tPACKETS\tDROPPED")
			for _, s := range sts {
				fmt.Fprintf(tw, "%s\t(all traffic)\t%d\t%d\n", s.host, s.DoS.Packets, s.DoS.Dropped)
				for _, r := range slices.Sorted(maps.Keys(s.DoS.Rules)) {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.host, r, s.DoS.Rules[r].Packets, s.DoS.Rules[r].Dropped)
				}
			}
			return tw.Flush()
		}}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	cf.register(cmd)
	return cmd
}
