package main

import (
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

// bgpCommand is nsctl bgp: each host's BGP sessions and announcements.
func bgpCommand(c *ctl) *cobra.Command {
	var host string
	cmd := &cobra.Command{Use: "bgp [--host H]", Short: "BGP per host: sessions, state, announced prefixes, FlowSpec rules, drain",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all, err := c.status(host)
			if err != nil {
				return err
			}
			return printBGP(c.Stdout, all, time.Now())
		}}
	cmd.Flags().StringVar(&host, "host", "", "only this host")
	return cmd
}

func printBGP(out io.Writer, all map[string]map[string]json.RawMessage, now time.Time) error {
	n := 0
	for _, h := range slices.Sorted(maps.Keys(all)) {
		raw, ok := all[h][source.HostStatusName]
		if !ok {
			continue
		}
		var hs source.HostStatus
		if err := json.Unmarshal(raw, &hs); err != nil {
			continue
		}
		n++
		drain := ""
		if hs.Drained {
			drain = " DRAINED (nsctl undrain " + h + " announces again)"
		}
		if hs.BGP == nil {
			fmt.Fprintf(out, "%s: no BGP (nsd runs without --bgp-config)%s\n", h, drain)
			continue
		}
		b := hs.BGP
		fmt.Fprintf(out, "%s: AS %d router ID %s%s\n", h, b.LocalASN, b.RouterID, drain)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PEER\tASN\tSTATE\tSINCE\tFLOWSPEC\tUPDATES SENT\tLAST ERROR")
		for _, s := range b.Sessions {
			since := "-"
			if !s.Since.IsZero() {
				since = now.Sub(s.Since).Round(time.Second).String()
			}
			state := s.State
			if !s.RetryAt.IsZero() && s.State == "backoff" {
				state = fmt.Sprintf("backoff (%d failures, retry in %s)", s.Failures, max(s.RetryAt.Sub(now), 0).Round(time.Second))
			}
			fs := "no"
			if s.FlowSpec {
				fs = "yes"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%d\t%s\n", s.Peer, s.ASN, state, since, fs, s.UpdatesSent, s.LastError)
		}
		tw.Flush()
		more := ""
		if n := b.AnnouncedCount - len(b.Announced); n > 0 {
			more = fmt.Sprintf(" (and %d more)", n)
		}
		fmt.Fprintf(out, "  announced (%d): %s%s\n", b.AnnouncedCount, strings.Join(b.Announced, " "), more)
		for _, f := range b.FlowSpec {
			fmt.Fprintf(out, "  flowspec: %s\n", f)
		}
		for _, f := range b.NotExported {
			fmt.Fprintf(out, "  not exported: %s\n", f)
		}
		if b.Error != "" {
			fmt.Fprintf(out, "  error: %s\n", b.Error)
		}
	}
	if n == 0 {
		return fmt.Errorf("no host status: %w", source.ErrNotFound)
	}
	return nil
}

// drainCommand is nsctl drain HOST and nsctl undrain HOST: the control key
// that makes a host withdraw (or announce again) everything it announces.
func drainCommand(c *ctl, drain bool) *cobra.Command {
	use, short, value, done := "drain HOST", "withdraw every BGP announcement of HOST (traffic moves to the other edges)", "true", "drained"
	if !drain {
		use, short, value, done = "undrain HOST", "let HOST announce again what it serves", "false", "undrained"
	}
	return &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h := args[0]
			if h == "" || strings.ContainsAny(h, "/ ") {
				return &doc.FieldError{Msg: fmt.Sprintf("invalid host ID %q: non-empty, without '/' or spaces", h)}
			}
			st, err := c.open()
			if err != nil {
				return err
			}
			if err := st.PutControl(c.Ctx, source.DrainKey(h), []byte(value)); err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "%s %s (control/%s = %s); nsctl bgp --host %s shows when it took effect\n", done, h, source.DrainKey(h), value, h)
			return nil
		}}
}
