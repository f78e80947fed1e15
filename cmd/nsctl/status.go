package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/doc"
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
				if err := printStatus(out, all); err != nil {
					return err
				}
				st, err := c.open()
				if err != nil {
					return err
				}
				if as, ok := st.(source.AckStore); ok {
					acks, err := as.ListAcks(c.Ctx)
					if err != nil {
						return err
					}
					if host != "" {
						acks = map[string]source.Ack{host: acks[host]}
						if acks[host].Host == "" {
							acks = nil
						}
					}
					for _, n := range ackNotes(acks) {
						fmt.Fprintln(out, n)
					}
				}
				return nil
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
	parsed := map[string]source.Status{}
	for h, raw := range all {
		var s source.Status
		if json.Unmarshal(raw, &s) == nil {
			parsed[h] = s
		}
	}
	if err := c.withAcks(st, tenant, parsed); err != nil {
		return nil, err
	}
	var out []hostStatus
	for _, h := range slices.Sorted(maps.Keys(parsed)) {
		s := parsed[h]
		if host != "" && h != host || keep != nil && !keep(s) {
			continue
		}
		out = append(out, hostStatus{h, s})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s for tenant %s: %w", what, tenant, source.ErrNotFound)
	}
	return out, nil
}

// ackedStore is a store whose hosts may acknowledge instead of writing
// every tenant's status (nsd --status-writes ack).
type ackedStore interface {
	source.AckStore
	TenantIndexes(ctx context.Context, tenant string) (highest, network uint64, err error)
}

// withAcks completes a tenant's statuses by host with what acknowledging
// hosts say without a status key: a host whose ack is at or past the
// tenant's last write and holds no status of it applied it cleanly
// (state applied); one behind is "pending". A status an acknowledging
// host holds that says applied is applied at the current network index.
func (c *ctl) withAcks(st source.Store, tenant string, sts map[string]source.Status) error {
	as, ok := st.(ackedStore)
	if !ok {
		return nil
	}
	acks, err := as.ListAcks(c.Ctx)
	if err != nil || len(acks) == 0 {
		return err
	}
	highest, network, err := as.TenantIndexes(c.Ctx, tenant)
	if err != nil {
		return err
	}
	for h, a := range acks {
		s, had := sts[h]
		switch {
		case highest == 0 && !had: // no such tenant (any more)
		case a.Through < highest && !had:
			sts[h] = source.Status{Host: h, Tenant: tenant, State: fmt.Sprintf("pending (acknowledged through index %d)", a.Through)}
		case a.Through < highest:
		case !had:
			sts[h] = source.Status{Host: h, Tenant: tenant, State: "applied", AppliedIndex: network, AppliedAt: a.At}
		case s.State == "applied":
			s.AppliedIndex = network
			sts[h] = s
		}
	}
	return nil
}

// ackNotes are one line per acknowledging host.
func ackNotes(acks map[string]source.Ack) []string {
	var out []string
	for _, h := range slices.Sorted(maps.Keys(acks)) {
		a := acks[h]
		out = append(out, fmt.Sprintf("%s: acknowledges every tenant write through index %d (at %s); tenants without a row from it are applied there",
			h, a.Through, a.At.Format("2006-01-02T15:04:05Z")))
	}
	return out
}

// counterFlags are the flags of the commands that show counters.
type counterFlags struct {
	wait time.Duration
	// asked is the request in force from this process (a live view
	// renews it only when half of it has passed).
	asked time.Time
}

func (f *counterFlags) register(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&f.wait, "wait", 10*time.Second,
		"how long to wait for every host to publish fresh counters (nsd publishes them on request; 0: show the last published)")
}

// counterRequestTTL is how long hosts keep publishing a tenant's counters
// after a request (a live view renews it).
const counterRequestTTL = 2 * time.Minute

// freshStatuses is tenantStatuses for the commands that show counters.
// nsd publishes a tenant's counters only on request (--status-counters
// on-demand): with a Consul store it first writes the tenant's request,
// control/watch/<tenant>, then waits up to f.wait until every host that
// reports the tenant has answered it (Status.CountersAsked), and says on
// stderr which hosts did not. A request the token may not write (or any
// other failure to ask) leaves the last published counters, with a note.
func (c *ctl) freshStatuses(f *counterFlags, host, tenant, what string, keep func(source.Status) bool) ([]hostStatus, error) {
	if c.store.Source != "consul" || f.wait <= 0 {
		return c.tenantStatuses(host, tenant, what, keep)
	}
	if err := doc.ValidateTenantID(tenant); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	if f.asked.IsZero() || now.After(f.asked.Add(counterRequestTTL/2)) {
		st, err := c.open()
		if err != nil {
			return nil, err
		}
		req := source.CounterRequest{Asked: now, Until: now.Add(counterRequestTTL)}
		b, _ := json.Marshal(req)
		if err := st.PutControl(c.Ctx, source.CounterRequestName(tenant), b); err != nil {
			fmt.Fprintf(c.Stderr, "nsctl: counters as last published: could not ask the hosts for fresh ones: %v\n", err)
			return c.tenantStatuses(host, tenant, what, keep)
		}
		f.asked = req.Asked
	}
	deadline := time.Now().Add(f.wait)
	for {
		// keep applies to the answer, not to the wait: a host that has
		// no counters yet still answers.
		sts, err := c.tenantStatuses(host, tenant, what, nil)
		if err != nil {
			return nil, err
		}
		var late []string
		for _, s := range sts {
			if s.CountersAsked.Before(f.asked) {
				late = append(late, s.host)
			}
		}
		if len(late) == 0 || time.Now().After(deadline) {
			if len(late) > 0 {
				fmt.Fprintf(c.Stderr, "nsctl: no fresh counters from %s within %v: showing what they published last\n", strings.Join(late, ", "), f.wait)
			}
			var out []hostStatus
			for _, s := range sts {
				if keep == nil || keep(s.Status) {
					out = append(out, s)
				}
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%s for tenant %s: %w", what, tenant, source.ErrNotFound)
			}
			return out, nil
		}
		select {
		case <-c.Ctx.Done():
			return nil, c.Ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
