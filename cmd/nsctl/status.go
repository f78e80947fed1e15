package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/nsd/source"
)

func statusCommand(c *ctl) *cobra.Command {
	var host string
	var w watchFlags
	cmd := &cobra.Command{
		Use: "status [--host H] [--watch]", Short: "table of host × tenant: applied index, state, error", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return w.run(c, "nsctl status", func(out io.Writer) error {
				all, err := c.status(host)
				if err != nil {
					return err
				}
				return printStatus(out, all)
			})
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	w.register(cmd)
	return cmd
}

// printStatus writes the host × tenant table, then one line per host that
// holds deletions or refused a dos/global document.
func printStatus(out io.Writer, all map[string]map[string]json.RawMessage) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTENANT\tSTATE\tINDEX\tAPPLIED\tERROR")
	var notes []string
	for _, h := range slices.Sorted(maps.Keys(all)) {
		for _, n := range slices.Sorted(maps.Keys(all[h])) {
			if n == source.HostStatusName {
				notes = append(notes, hostNotes(h, all[h][n])...)
				continue
			}
			var s source.Status
			if err := json.Unmarshal(all[h][n], &s); err != nil {
				continue
			}
			at := "-" // never applied
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", h, n, s.State, s.AppliedIndex, at, s.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
}

// hostNotes are what host's host-level status asks an operator to act on.
func hostNotes(host string, raw json.RawMessage) []string {
	var hs source.HostStatus
	if json.Unmarshal(raw, &hs) != nil {
		return nil
	}
	var notes []string
	if len(hs.HeldDeletes) > 0 {
		notes = append(notes, fmt.Sprintf("%s: HOLDING deletion of %d tenants (%s); confirm with: nsctl confirm-deletes --host %s --token %s",
			host, len(hs.HeldDeletes), strings.Join(hs.HeldDeletes, ","), host, hs.ConfirmToken))
	}
	if hs.DoSGlobalError != "" {
		notes = append(notes, fmt.Sprintf("%s: %s (in force: dos/global index %d)", host, hs.DoSGlobalError, hs.DoSGlobalIndex))
	}
	return notes
}

func confirmDeletesCommand(c *ctl) *cobra.Command {
	var host, token string
	cmd := &cobra.Command{
		Use:   "confirm-deletes --host H --token T",
		Short: "let a host's held mass deletion through (token from `nsctl status` or nsd's log)",
		Long: `confirm-deletes writes the confirm token a host reported to control/confirm-deletes/<host>.
Here --token is that confirm token, not a Consul ACL token: give the Consul token with
--token-file, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := c.open()
			if err != nil {
				return err
			}
			if err := st.PutControl(c.Ctx, source.ConfirmKey(host), []byte(token)); err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "confirmed deletes on %s (token %s)\n", host, token)
			return nil
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "host ID")
	cmd.Flags().StringVar(&token, "token", "", "confirm token the host reported (not the Consul ACL token, see above)")
	cmd.MarkFlagRequired("host")
	cmd.MarkFlagRequired("token")
	return cmd
}

// hostStatus is one host's status of a tenant.
type hostStatus struct {
	host string
	source.Status
}

// tenantStatuses returns a tenant's status from each host (one host if
// set), sorted by host, keeping those keep accepts; none is ErrNotFound
// with what (e.g. "no status").
func (c *ctl) tenantStatuses(host, tenant, what string, keep func(source.Status) bool) ([]hostStatus, error) {
	st, err := c.open()
	if err != nil {
		return nil, err
	}
	// One tenant's prefix: what a tenant's own token may read.
	all, err := st.ListTenantStatus(c.Ctx, tenant)
	if err != nil {
		return nil, err
	}
	var out []hostStatus
	for _, h := range slices.Sorted(maps.Keys(all)) {
		var s source.Status
		raw := all[h]
		if host != "" && h != host || json.Unmarshal(raw, &s) != nil || keep != nil && !keep(s) {
			continue
		}
		out = append(out, hostStatus{h, s})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s for tenant %s: %w", what, tenant, source.ErrNotFound)
	}
	return out, nil
}
