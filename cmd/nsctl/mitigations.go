package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/fleet"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// dosMitigationsCommand lists and cancels the fleet-wide automatic
// mitigations (nfhost/dos/mitigations/, dos/fleet).
func dosMitigationsCommand(c *ctl) *cobra.Command {
	var tenant string
	cmd := &cobra.Command{Use: "mitigations [--tenant T]", Short: "list the fleet-wide automatic DoS mitigations (cancel: end one on every edge)", Args: cobra.NoArgs,
		Long: `mitigations lists nfhost/dos/mitigations/: the signatures an edge's detector derived and
published, applied by every edge until their expiry. cancel ends one on every edge: the
record stays, marked cancelled, until its expiry so that no detector publishes it again.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, snap, err := c.read()
			if err != nil {
				return err
			}
			now := time.Now()
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tID\tACTION\tEXPIRES\tORIGIN\tSTATE\tEXPRESSION")
			for _, name := range sortedNames(snap.Mitigations) {
				r, err := fleet.Parse(name, snap.Mitigations[name].Value)
				if err != nil {
					fmt.Fprintf(c.Stderr, "refused: %v\n", err)
					continue
				}
				if tenant != "" && r.Tenant != tenant {
					continue
				}
				state := "active"
				switch {
				case !now.Before(r.Expires):
					state = "expired"
				case r.Cancelled:
					state = "cancelled"
				}
				action := r.Action
				if r.Action == "ratelimit" {
					action = fmt.Sprintf("ratelimit %d pps", r.LimitPPS)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s (in %s)\t%s\t%s\t%s\n", r.Tenant, r.ID, action, r.Expires.Format(time.RFC3339),
					r.Expires.Sub(now).Round(time.Second), r.Origin, state, r.Expression)
			}
			return tw.Flush()
		}}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only this tenant's")
	cmd.AddCommand(dosMitigationsCancelCommand(c))
	return cmd
}

func sortedNames(m map[string]source.Entry) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func dosMitigationsCancelCommand(c *ctl) *cobra.Command {
	return &cobra.Command{Use: "cancel TENANT ID", Short: "end a fleet-wide mitigation on every edge", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := doc.ValidateTenantID(args[0]); err != nil {
				return cliutil.Usagef("%v", err)
			}
			name := fleet.Name(args[0], args[1])
			for attempt := 0; ; attempt++ {
				st, snap, err := c.read()
				if err != nil {
					return err
				}
				ms, ok := st.(source.MitigationStore)
				if !ok {
					return fmt.Errorf("cancel %s: this store holds no fleet-wide mitigations (Consul does)", name)
				}
				e, ok := snap.Mitigations[name]
				if !ok {
					return fmt.Errorf("cancel %s%s: %w", fleet.Prefix, name, source.ErrNotFound)
				}
				r, err := fleet.Parse(name, e.Value)
				if err != nil {
					return err
				}
				if r.Cancelled {
					fmt.Fprintf(c.Stdout, "%s already cancelled\n", name)
					return nil
				}
				who, _ := os.Hostname()
				cr := fleet.Cancel(r, "nsctl@"+who, time.Now())
				b, _ := json.Marshal(cr)
				err = ms.PutMitigation(c.Ctx, name, b, e.ModifyIndex)
				if errors.Is(err, source.ErrConflict) && attempt < 5 {
					continue // an edge moved its expiry on: read again
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.Stdout, "%s cancelled on every edge (the record stays until %s)\n", name, cr.Expires.Format(time.RFC3339))
				return nil
			}
		}}
}
