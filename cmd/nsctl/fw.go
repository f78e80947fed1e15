package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

func fwCommand(c *ctl) *cobra.Command {
	cmd := &cobra.Command{Use: "fw", Short: "edit and inspect a tenant's firewall rules", Args: cobra.NoArgs,
		Long: `fw edits nfhost/tenants/<tenant>/firewall. Every write validates the whole document
first and uses check-and-set: add-rule and delete-rule re-read and retry when another
editor got there first, so concurrent edits are never lost; put fails with exit code 4.`,
		RunE: missingSubcommand("fw")}
	fws := firewalls{c}
	cmd.AddCommand(fwGetCommand(fws), fwPutCommand(fws), fwValidateCommand(fws), fwAddRuleCommand(fws), fwDeleteRuleCommand(fws), fwStatsCommand(c))
	return cmd
}

// firewalls reads and writes tenants/<tenant>/firewall. Every write
// validates the whole document first.
type firewalls struct{ *ctl }

// read returns tenant's firewall document and its index; a tenant
// without one has an empty document at index 0.
func (fws firewalls) read(tenant string) (fwspec.Config, uint64, error) {
	if err := doc.ValidateTenantID(tenant); err != nil {
		return fwspec.Config{}, 0, err
	}
	_, snap, err := fws.ctl.read()
	if err != nil {
		return fwspec.Config{}, 0, err
	}
	keys, ok := snap.Tenants[tenant]
	if !ok && snap.Hidden {
		// The token sees only some tenants (a tenant's own token): the
		// tenant may exist, but this token may not touch it.
		k := strings.Trim(fws.store.KVPrefix, "/") + "/tenants/" + tenant + "/" + doc.KeyFirewall
		return fwspec.Config{}, 0, fmt.Errorf("%s: %w", k, source.ForbiddenError(fws.store.KVPrefix, "write", k, "Consul hides tenant "+tenant+"'s keys from this token"))
	}
	if !ok {
		return fwspec.Config{}, 0, fmt.Errorf("tenant %s: %w", tenant, source.ErrNotFound)
	}
	e, ok := keys[doc.KeyFirewall]
	if !ok {
		return fwspec.Config{Rules: []fwspec.Rule{}}, 0, nil
	}
	var c fwspec.Config
	if err := json.Unmarshal(e.Value, &c); err != nil {
		// The index still comes back: put replaces such a document.
		return c, e.ModifyIndex, storedInvalid{&doc.FieldError{Tenant: tenant, Key: doc.KeyFirewall,
			Msg: "stored document is not valid JSON: " + err.Error() + " (put replaces it)"}}
	}
	return c, e.ModifyIndex, nil
}

// storedInvalid is a stored document that does not decode (written with
// another client): edits refuse it, put replaces it.
type storedInvalid struct{ error }

func (e storedInvalid) Unwrap() error { return e.error }

// write validates c and writes it with check-and-set against cas.
func (fws firewalls) write(tenant string, c fwspec.Config, cas uint64) error {
	if _, err := c.ValidateEnv(tenant, fwspec.OfflineEnv()); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	st, err := fws.open()
	if err != nil {
		return err
	}
	return st.Put(fws.Ctx, tenant, doc.KeyFirewall, b, cas)
}

// edit applies f to the current document and writes it with check-and-set,
// re-reading on a conflict.
func (fws firewalls) edit(tenant string, f func(*fwspec.Config) error) error {
	return casEdit(func() (fwspec.Config, uint64, error) { return fws.read(tenant) },
		func(c fwspec.Config, idx uint64) error { return fws.write(tenant, c, idx) }, f)
}

// readFile reads and validates a firewall document given with -f.
func (fws firewalls) readFile(file string) (fwspec.Config, error) {
	b, err := fws.readInput(file)
	if err != nil {
		return fwspec.Config{}, err
	}
	var c fwspec.Config
	// Checked as nsd would with a site, a region and geo databases: a rule
	// that needs them is refused by the servers that lack them, in status.
	if _, err := fwspec.ParseEnv("", b, fwspec.OfflineEnv()); err != nil {
		return c, err
	}
	return c, json.Unmarshal(b, &c)
}

func fwGetCommand(fws firewalls) *cobra.Command {
	return &cobra.Command{Use: "get TENANT", Short: "print the firewall document", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := fws.read(args[0])
			if err != nil {
				return err
			}
			b, _ := json.MarshalIndent(c, "", "  ")
			fmt.Fprintln(fws.Stdout, string(b))
			return nil
		}}
}

func fwPutCommand(fws firewalls) *cobra.Command {
	var file string
	cmd := &cobra.Command{Use: "put TENANT -f FILE", Short: "validate and replace the firewall document (check-and-set)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, idx, err := fws.read(args[0])
			if err != nil && !errors.As(err, new(storedInvalid)) {
				return err
			}
			c, err := fws.readFile(file)
			if err != nil {
				return err
			}
			if err := fws.write(args[0], c, idx); err != nil {
				return err
			}
			fmt.Fprintf(fws.Stdout, "tenants/%s/firewall written (%d rules)\n", args[0], len(c.Rules))
			return nil
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "firewall document (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

func fwValidateCommand(fws firewalls) *cobra.Command {
	var file string
	cmd := &cobra.Command{Use: "validate -f FILE", Short: "validate a firewall document (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := fws.readFile(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(fws.Stdout, "firewall: valid (%d rules, %d lists)\n", len(c.Rules), len(c.Lists))
			return nil
		}}
	cmd.Flags().StringVarP(&file, "file", "f", "", "firewall document (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

func fwAddRuleCommand(fws firewalls) *cobra.Command {
	var rule fwspec.Rule
	var before string
	var disabled bool
	cmd := &cobra.Command{Use: "add-rule TENANT --id ID --expression EXPR --action allow|block|log", Short: "append (or insert) one rule",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := rule
			if disabled {
				f := false
				r.Enabled = &f
			}
			if err := fws.edit(args[0], func(c *fwspec.Config) error { return addRule(args[0], c, r, before) }); err != nil {
				return err
			}
			fmt.Fprintf(fws.Stdout, "rule %s added to tenants/%s/firewall\n", rule.ID, args[0])
			return nil
		}}
	fl := cmd.Flags()
	fl.StringVar(&rule.ID, "id", "", "rule ID")
	fl.StringVar(&rule.Expression, "expression", "", "match expression, e.g. 'tcp.dstport == 22'")
	fl.StringVar((*string)(&rule.Action), "action", "block", "allow, block or log")
	fl.StringVar(&rule.Description, "description", "", "free text")
	fl.StringVar(&before, "before", "", "insert before this rule ID (default: append)")
	fl.BoolVar(&disabled, "disabled", false, "add the rule disabled")
	cmd.MarkFlagRequired("id")
	cmd.MarkFlagRequired("expression")
	return cmd
}

// addRule appends r to c, or inserts it before the rule with ID before.
func addRule(tenant string, c *fwspec.Config, r fwspec.Rule, before string) error {
	for _, x := range c.Rules {
		if x.ID == r.ID {
			return &doc.FieldError{Tenant: tenant, Key: doc.KeyFirewall, Path: "rules", Value: r.ID, Msg: "a rule with this id exists"}
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
}

func fwDeleteRuleCommand(fws firewalls) *cobra.Command {
	return &cobra.Command{Use: "delete-rule TENANT ID", Short: "remove one rule", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := fws.edit(args[0], func(c *fwspec.Config) error {
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
			fmt.Fprintf(fws.Stdout, "rule %s deleted from tenants/%s/firewall\n", args[1], args[0])
			return nil
		}}
}

func fwStatsCommand(c *ctl) *cobra.Command {
	var host string
	var cf counterFlags
	cmd := &cobra.Command{Use: "stats TENANT [--host H]", Short: "per-rule hit counters as reported by each host (fresh: every host is asked to publish them)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, err := c.freshStatuses(&cf, host, args[0], "no status", nil)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tRULE\tPACKETS\tBYTES")
			for _, s := range sts {
				for _, r := range slices.Sorted(maps.Keys(s.Firewall)) {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.host, r, s.Firewall[r].Packets, s.Firewall[r].Bytes)
				}
			}
			return tw.Flush()
		}}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	cf.register(cmd)
	return cmd
}
