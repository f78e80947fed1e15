package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/consulacl"
	"github.com/nfhost/nfhost/nsd/source"
)

func aclCommand(c *ctl) *cobra.Command {
	cmd := &cobra.Command{Use: "acl", Short: "Consul ACL policies for nsd, the operator and tenants", Args: cobra.NoArgs,
		RunE: missingSubcommand("acl")}
	cmd.AddCommand(aclInitCommand(c))
	return cmd
}

func aclInitCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "create or update the nsd and operator policies (idempotent)",
		Long: `init creates the policies nfhost-nsd (read tenants/, dos/, control/; write the status
prefixes) and nfhost-operator (write everything under the KV prefix; acl = "write") in a
Consul cluster with ACLs enabled, or updates them to what this nsctl ships. Run again,
it changes nothing and says so. It needs a token with acl = "write" (the bootstrap
token the first time). The same rules are in deploy/consul/*.hcl; with --kv-prefix
other than nfhost the policy names carry the prefix.

Tenant policies are made by 'nsctl tenant token create'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			acl, err := c.acl()
			if err != nil {
				return err
			}
			changed := false
			for _, p := range []consulacl.Policy{consulacl.NSD(c.store.KVPrefix), consulacl.Operator(c.store.KVPrefix)} {
				what, err := acl.ensurePolicy(p)
				if err != nil {
					return err
				}
				changed = changed || what != "unchanged"
				fmt.Fprintf(c.Stdout, "policy %s %s\n", p.Name, what)
			}
			if !changed {
				fmt.Fprintln(c.Stdout, "nothing changed")
				return nil
			}
			fmt.Fprintf(c.Stdout, "next: consul acl token create -policy-name %s -description \"nsd <host>\"  (nsd's token)\n",
				consulacl.NSDName(c.store.KVPrefix))
			return nil
		},
	}
}

// aclClient is the Consul ACL API with nsctl's request bound.
type aclClient struct {
	ctx context.Context
	api *api.ACL
	ctl *ctl
}

// acl returns the Consul ACL API the global flags address.
func (c *ctl) acl() (*aclClient, error) {
	if c.store.Source != "consul" {
		return nil, errors.New("ACLs are Consul's: use --source consul")
	}
	cfg, err := c.store.ConsulConfig()
	if err != nil {
		return nil, err
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create consul client: %w", err)
	}
	return &aclClient{ctx: c.Ctx, api: cl.ACL(), ctl: c}, nil
}

// call runs one ACL request under nsctl's --timeout and explains a refusal.
func (a *aclClient) call(what string, f func(q *api.QueryOptions, w *api.WriteOptions) error) error {
	ctx, cancel := context.WithCancel(a.ctx)
	if a.ctl.store.Timeout > 0 {
		ctx, cancel = context.WithTimeout(a.ctx, a.ctl.store.Timeout)
	}
	defer cancel()
	err := f((&api.QueryOptions{}).WithContext(ctx), (&api.WriteOptions{}).WithContext(ctx))
	var se api.StatusError
	switch {
	case err == nil:
		return nil
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: consul did not answer within %s", what, source.ErrTimeout, a.ctl.store.Timeout)
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		return fmt.Errorf("%s: %w (%s); allowed by policy %s (acl = \"write\") or a management token", what, source.ErrForbidden,
			se.Body, consulacl.OperatorName(a.ctl.store.KVPrefix))
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized:
		return fmt.Errorf("%s: Consul's ACL system is off (acl { enabled = true, default_policy = \"deny\" } in the agent's config): %w", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// ensurePolicy creates p or updates it to p's rules and description, and
// says which: "created", "updated" or "unchanged".
func (a *aclClient) ensurePolicy(p consulacl.Policy) (string, error) {
	var cur *api.ACLPolicy
	if err := a.call("read policy "+p.Name, func(q *api.QueryOptions, _ *api.WriteOptions) error {
		var err error
		cur, _, err = a.api.PolicyReadByName(p.Name, q)
		return err
	}); err != nil {
		return "", err
	}
	switch {
	case cur == nil:
		return "created", a.call("create policy "+p.Name, func(_ *api.QueryOptions, w *api.WriteOptions) error {
			_, _, err := a.api.PolicyCreate(&api.ACLPolicy{Name: p.Name, Description: p.Description, Rules: p.Rules}, w)
			return err
		})
	case cur.Rules == p.Rules && cur.Description == p.Description:
		return "unchanged", nil
	}
	return "updated", a.call("update policy "+p.Name, func(_ *api.QueryOptions, w *api.WriteOptions) error {
		cur.Rules, cur.Description = p.Rules, p.Description
		_, _, err := a.api.PolicyUpdate(cur, w)
		return err
	})
}
