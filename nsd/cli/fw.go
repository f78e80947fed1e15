package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

func fwCommand(env Env, sf *storeFlags) *cobra.Command {
	out := env.Stdout
	fw := &cobra.Command{Use: "fw", Short: "edit and inspect a tenant's firewall rules", Args: cobra.NoArgs,
		Long: `fw edits nfhost/tenants/<tenant>/firewall. Every write validates the whole document
first and uses check-and-set: add-rule and delete-rule re-read and retry when another
editor got there first, so concurrent edits are never lost; put fails with exit code 4.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Help()
			return usageError("nsctl fw: missing subcommand")
		}}

	read := func(tenant string) (fwspec.Config, uint64, error) {
		if err := doc.ValidateTenantID(tenant); err != nil {
			return fwspec.Config{}, 0, err
		}
		_, snap, err := sf.read(env)
		if err != nil {
			return fwspec.Config{}, 0, err
		}
		keys, ok := snap.Tenants[tenant]
		if !ok {
			return fwspec.Config{}, 0, fmt.Errorf("tenant %s: %w", tenant, source.ErrNotFound)
		}
		e, ok := keys[doc.KeyFirewall]
		if !ok {
			return fwspec.Config{Rules: []fwspec.Rule{}}, 0, nil
		}
		var c fwspec.Config
		if err := json.Unmarshal(e.Value, &c); err != nil {
			return c, 0, &doc.FieldError{Tenant: tenant, Key: doc.KeyFirewall, Msg: "stored document is not valid JSON: " + err.Error()}
		}
		return c, e.ModifyIndex, nil
	}
	write := func(tenant string, c fwspec.Config, cas uint64) error {
		if _, err := c.Validate(tenant); err != nil {
			return err
		}
		b, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return err
		}
		st, err := sf.open(env)
		if err != nil {
			return err
		}
		return st.Put(env.Ctx, tenant, doc.KeyFirewall, b, cas)
	}
	// edit applies f to the current document and writes it with CAS,
	// re-reading on a conflict.
	edit := func(tenant string, f func(*fwspec.Config) error) error {
		return casEdit(func() (fwspec.Config, uint64, error) { return read(tenant) },
			func(c fwspec.Config, idx uint64) error { return write(tenant, c, idx) }, f)
	}

	get := &cobra.Command{Use: "get TENANT", Short: "print the firewall document", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := read(args[0])
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(c, "", "  ")
			fmt.Fprintln(out, string(b))
			return nil
		}}

	var file string
	readFile := func() (fwspec.Config, error) {
		b, err := readDocFile(file)
		if err != nil {
			return fwspec.Config{}, err
		}
		var c fwspec.Config
		if _, err := fwspec.Parse("", b); err != nil {
			return c, err
		}
		return c, json.Unmarshal(b, &c)
	}
	put := &cobra.Command{Use: "put TENANT -f FILE", Short: "validate and replace the firewall document (check-and-set)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, idx, err := read(args[0])
			if err != nil {
				return err
			}
			c, err := readFile()
			if err != nil {
				return err
			}
			if err := write(args[0], c, idx); err != nil {
				return err
			}
			fmt.Fprintf(out, "tenants/%s/firewall written (%d rules)\n", args[0], len(c.Rules))
			return nil
		}}
	put.Flags().StringVarP(&file, "file", "f", "", "firewall document (- for stdin)")
	put.MarkFlagRequired("file")

	validate := &cobra.Command{Use: "validate -f FILE", Short: "validate a firewall document (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := readFile()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "firewall: valid (%d rules, %d lists)\n", len(c.Rules), len(c.Lists))
			return nil
		}}
	validate.Flags().StringVarP(&file, "file", "f", "", "firewall document (- for stdin)")
	validate.MarkFlagRequired("file")

	var rule fwspec.Rule
	var before string
	var disabled bool
	addRule := &cobra.Command{Use: "add-rule TENANT --id ID --expression EXPR --action allow|block|log", Short: "append (or insert) one rule",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := edit(args[0], func(c *fwspec.Config) error {
				r := rule
				if disabled {
					f := false
					r.Enabled = &f
				}
				for _, x := range c.Rules {
					if x.ID == r.ID {
						return &doc.FieldError{Tenant: args[0], Key: doc.KeyFirewall, Path: "rules", Value: r.ID, Msg: "a rule with this id exists"}
					}
				}
				if before == "" {
					c.Rules = append(c.Rules, r)
					return nil
				}
				for i, x := range c.Rules {
					if x.ID == before {
						c.Rules = append(c.Rules[:i], append([]fwspec.Rule{r}, c.Rules[i:]...)...)
						return nil
					}
				}
				return fmt.Errorf("--before %s: %w", before, source.ErrNotFound)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "rule %s added to tenants/%s/firewall\n", rule.ID, args[0])
			return nil
		}}
	af := addRule.Flags()
	af.StringVar(&rule.ID, "id", "", "rule ID")
	af.StringVar(&rule.Expression, "expression", "", "match expression, e.g. 'tcp.dstport == 22'")
	af.StringVar((*string)(&rule.Action), "action", "block", "allow, block or log")
	af.StringVar(&rule.Description, "description", "", "free text")
	af.StringVar(&before, "before", "", "insert before this rule ID (default: append)")
	af.BoolVar(&disabled, "disabled", false, "add the rule disabled")
	addRule.MarkFlagRequired("id")
	addRule.MarkFlagRequired("expression")

	delRule := &cobra.Command{Use: "delete-rule TENANT ID", Short: "remove one rule", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := edit(args[0], func(c *fwspec.Config) error {
				for i, x := range c.Rules {
					if x.ID == args[1] {
						c.Rules = append(c.Rules[:i], c.Rules[i+1:]...)
						return nil
					}
				}
				return fmt.Errorf("rule %s: %w", args[1], source.ErrNotFound)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "rule %s deleted from tenants/%s/firewall\n", args[1], args[0])
			return nil
		}}

	var host string
	stats := &cobra.Command{Use: "stats TENANT [--host H]", Short: "per-rule hit counters as reported by each host", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, err := sf.tenantStatuses(env, host, args[0], "no status", nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tRULE\tPACKETS\tBYTES")
			for _, s := range sts {
				for _, r := range slices.Sorted(maps.Keys(s.Firewall)) {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.host, r, s.Firewall[r].Packets, s.Firewall[r].Bytes)
				}
			}
			return tw.Flush()
		}}
	stats.Flags().StringVar(&host, "host", "", "only this host")

	fw.AddCommand(get, put, validate, addRule, delRule, stats)
	return fw
}
