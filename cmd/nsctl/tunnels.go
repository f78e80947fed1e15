package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// tunnelsCommand is nsctl tunnels: each host's view of a tenant's tunnels.
func tunnelsCommand(c *ctl) *cobra.Command {
	var host string
	var w watchFlags
	var cf counterFlags
	cmd := &cobra.Command{Use: "tunnels TENANT [--host H] [--watch]", Short: "tunnel health (state and why, probe window, loss, RTT) and counters as reported by each host",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return w.run(c, "nsctl tunnels "+args[0], func(out io.Writer) error {
				sts, err := c.freshStatuses(&cf, host, args[0], "no status", nil)
				if err != nil {
					return err
				}
				return printTunnels(out, sts)
			})
		}}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	w.register(cmd)
	cf.register(cmd)
	return cmd
}

// printTunnels writes one row per host and tunnel, the probe window
// (probes of the last five minutes, at least the last 30, and how many
// were lost), then, after a blank line, one line per tunnel saying why it
// is in its state (the state itself only in the table, so scripts can
// count it).
func printTunnels(out io.Writer, sts []hostStatus) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	// One word per column header, so scripts can find a column by name.
	fmt.Fprintln(tw, "HOST\tTUNNEL\tSTATE\tSINCE\tCHECK\tPROBES\tLOST\tLAST-FAILURE\tLOSS\tRTT\tRX\tTX\tDROPS")
	var reasons []string
	for _, s := range sts {
		for _, name := range slices.Sorted(maps.Keys(s.Tunnels)) {
			t := s.Tunnels[name]
			check := "-"
			if t.Type != "" {
				check = t.Type + "/" + t.Direction
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%.1f%%\t%.2fms\t%d\t%d\t%d\n", s.host, name, t.State, stamp(t.Since), check,
				t.WindowProbes, t.WindowLost, stamp(t.LastFailure), t.LossPercent, t.RTTMillis, t.RxPackets, t.TxPackets, t.Drops)
			if t.Reason != "" {
				reasons = append(reasons, fmt.Sprintf("%s %s: %s", s.host, name, t.Reason))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The reasons after a blank line: a script reading the table stops
	// there.
	if len(reasons) > 0 {
		reasons = append([]string{""}, reasons...)
	}
	for _, r := range reasons {
		if _, err := fmt.Fprintln(out, r); err != nil {
			return err
		}
	}
	return nil
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}
