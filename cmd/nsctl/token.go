package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/consulacl"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

func tenantTokenCommand(c *ctl) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "issue, list and revoke tenants' Consul ACL tokens", Args: cobra.NoArgs,
		Long: `A tenant's token may write tenants/<id>/firewall, read its network and dos keys and its
status from every host (tenant-status/<id>/), and nothing else: policy nfhost-tenant-<id>,
the rules of deploy/consul/tenant.hcl.tmpl. These commands need a token with acl = "write"
(the operator's).`,
		RunE: missingSubcommand("tenant token")}
	cmd.AddCommand(tokenCreateCommand(c), tokenRevokeCommand(c), tokenListCommand(c))
	return cmd
}

// tenantACL checks a tenant ID given on the command line and connects to
// Consul's ACL API.
func (c *ctl) tenantACL(id string) (*aclClient, error) {
	if err := doc.ValidateTenantID(id); err != nil {
		return nil, err
	}
	return c.acl()
}

func tokenCreateCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "create ID", Short: "create or update the tenant's policy and issue a new token (prints SecretID and AccessorID)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			acl, err := c.tenantACL(id)
			if err != nil {
				return err
			}
			p := consulacl.Tenant(c.store.KVPrefix, id)
			what, err := acl.ensurePolicy(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.Stderr, "policy %s %s\n", p.Name, what)
			var tok *api.ACLToken
			if err := acl.call("create token for tenant "+id, func(_ *api.QueryOptions, w *api.WriteOptions) error {
				var err error
				tok, _, err = acl.api.TokenCreate(&api.ACLToken{Description: p.Description,
					Policies: []*api.ACLTokenPolicyLink{{Name: p.Name}}}, w)
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "AccessorID: %s\nSecretID:   %s\n", tok.AccessorID, tok.SecretID)
			return nil
		},
	}
}

// tenantTokens lists the tokens linked to a tenant policy of the prefix,
// by tenant ID ("" for all tenants).
func (a *aclClient) tenantTokens(id string) ([]tenantToken, error) {
	var list []*api.ACLTokenListEntry
	if err := a.call("list tokens", func(q *api.QueryOptions, _ *api.WriteOptions) error {
		var err error
		list, _, err = a.api.TokenList(q)
		return err
	}); err != nil {
		return nil, err
	}
	pre := consulacl.TenantNamePrefix(a.ctl.store.KVPrefix)
	var out []tenantToken
	for _, t := range list {
		for _, p := range t.Policies {
			tenant, ok := strings.CutPrefix(p.Name, pre)
			if ok && (id == "" || tenant == id) {
				out = append(out, tenantToken{tenant, t})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b tenantToken) int {
		if a.tenant != b.tenant {
			return strings.Compare(a.tenant, b.tenant)
		}
		return a.CreateTime.Compare(b.CreateTime)
	})
	return out, nil
}

type tenantToken struct {
	tenant string
	*api.ACLTokenListEntry
}

func tokenRevokeCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "revoke ID", Short: "delete every token of the tenant (exit 5 if it has none)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			acl, err := c.tenantACL(id)
			if err != nil {
				return err
			}
			toks, err := acl.tenantTokens(id)
			if err != nil {
				return err
			}
			if len(toks) == 0 {
				return fmt.Errorf("tokens of tenant %s: %w", id, source.ErrNotFound)
			}
			for _, t := range toks {
				if err := acl.call("revoke token "+t.AccessorID, func(_ *api.QueryOptions, w *api.WriteOptions) error {
					_, err := acl.api.TokenDelete(t.AccessorID, w)
					return err
				}); err != nil {
					return err
				}
				fmt.Fprintf(c.Stdout, "token %s of tenant %s revoked\n", t.AccessorID, id)
			}
			return nil
		},
	}
}

func tokenListCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "list [ID]", Short: "list tenants' tokens (accessor IDs, never secrets)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			acl, err := c.acl()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			toks, err := acl.tenantTokens(id)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tACCESSOR\tCREATED\tDESCRIPTION")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.tenant, t.AccessorID, t.CreateTime.UTC().Format("2006-01-02T15:04:05Z"), t.Description)
			}
			return tw.Flush()
		},
	}
}
