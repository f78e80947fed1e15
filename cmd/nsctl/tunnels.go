package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// tunnelsCommand is nsctl tunnels: each host's view of a tenant's tunnels.
func tunnelsCommand(c *ctl) *cobra.Command {
	var host string
	var w watchFlags
	cmd := &cobra.Command{Use: "tunnels TENANT [--host H] [--watch]", Short: "tunnel health (state, loss, RTT) and counters as reported by each host",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return w.run(c, "nsctl tunnels "+args[0], func(out io.Writer) error { return printTunnels(c, out, host, args[0]) })
		}}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	w.register(cmd)
	return cmd
}

// printTunnels writes the tunnel table of a tenant.
func printTunnels(c *ctl, out io.Writer, host, tenant string) error {
	sts, err := c.tenantStatuses(host, tenant, "no status", nil)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTUNNEL\tSTATE\tLOSS\tRTT\tRX\tTX\tDROPS")
	for _, s := range sts {
		for _, name := range slices.Sorted(maps.Keys(s.Tunnels)) {
			t := s.Tunnels[name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f%%\t%.2fms\t%d\t%d\t%d\n", s.host, name, t.State, t.LossPercent, t.RTTMillis, t.RxPackets, t.TxPackets, t.Drops)
		}
	}
	return tw.Flush()
}
