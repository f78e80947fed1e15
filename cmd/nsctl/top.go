package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
)

// defaultEdge is where nsd's --metrics-addr listens in the README's example.
const defaultEdge = "127.0.0.1:9469"

type topFlags struct {
	edges    []string
	once     bool
	output   string
	dst      string
	proto    string
	interval time.Duration
	window   time.Duration
	topN     int
}

// dosTopCommand is nsctl dos top: the live view of the sampled traffic on
// one edge or several, from each nsd's top.Path endpoint (on its
// --metrics-addr listener).
func dosTopCommand(c *ctl) *cobra.Command {
	f := &topFlags{}
	cmd := &cobra.Command{Use: "top [TENANT] [--edge ADDR]... [--once] [-o json] [--dst CIDR] [--proto P]",
		Short: "live view of the traffic the XDP DoS layer samples, with candidate signatures to copy",
		Long: `top shows what is hitting the edge right now, from the XDP layer's 1-in-N packet samples
(sample_rate in dos/global or the tenant's dos document; without sampling the view is empty
and says so): top destinations, source /24 and /48 blocks, protocols and ports, IP lengths,
TTLs, TCP flags and the first payload bytes, with packet and bit rates scaled back from
the sampling rate; and the signatures nsd's detector would derive from it right now, each
with the nsctl dos add-signature command that adds it.

It asks each edge's nsd (--edge, the address of nsd's --metrics-addr; several --edge for a
fleet view that adds their rates up). nsd records samples only while someone watches:
the first frame takes one --window. In a terminal it redraws every --interval like top
(q quits; at 160 columns and more the tables go side by side, long commands are cut
with "…": --once prints them whole); --once prints one frame, -o json as JSON.`,
		Example: `  nsctl dos top acme --edge 127.0.0.1:9469
  nsctl dos top --edge edge1:9469 --edge edge2:9469 --proto udp
  nsctl dos top acme --once -o json | jq -r '.candidates[0].command'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := f.query(args)
			if err != nil {
				return err
			}
			get := func(ctx context.Context) (top.Summary, error) { return fetchTop(ctx, f.edges, q) }
			return runTop(c.Env, f, get)
		}}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.edges, "edge", []string{defaultEdge}, "nsd's --metrics-addr (host:port or http(s)://host:port); repeat for a fleet view")
	fl.BoolVar(&f.once, "once", false, "print one frame and exit")
	fl.StringVarP(&f.output, "output", "o", "text", "text or json")
	fl.StringVar(&f.dst, "dst", "", "only traffic to this address or CIDR")
	fl.StringVar(&f.proto, "proto", "", "only this protocol (tcp, udp, icmp, icmpv6, gre or 0-255)")
	fl.DurationVar(&f.interval, "interval", time.Second, "redraw interval")
	fl.DurationVar(&f.window, "window", 2*time.Second, "rates over the last WINDOW of samples (at most 10s)")
	fl.IntVar(&f.topN, "top", 10, "rows per table (1-100)")
	return cmd
}

// query checks the flags and builds the request; errors name the flag.
func (f *topFlags) query(args []string) (top.Query, error) {
	q := top.Query{Window: f.window, Filter: top.Filter{Proto: -1}, TopN: f.topN}
	if len(args) == 1 {
		if err := doc.ValidateTenantID(args[0]); err != nil {
			return q, cliutil.Usagef("TENANT: %v", err)
		}
		q.Filter.Tenant = args[0]
	}
	if f.output != "text" && f.output != "json" {
		return q, cliutil.Usagef("--output: want text or json, got %q", f.output)
	}
	if f.window <= 0 || f.window > top.MaxWindow {
		return q, cliutil.Usagef("--window: want a duration in (0, %v], got %v", top.MaxWindow, f.window)
	}
	if f.interval < 100*time.Millisecond {
		return q, cliutil.Usagef("--interval: at least 100ms, got %v", f.interval)
	}
	if f.topN < 1 || f.topN > 100 {
		return q, cliutil.Usagef("--top: want 1-100, got %d", f.topN)
	}
	if len(f.edges) == 0 {
		return q, cliutil.Usagef("--edge: give at least one")
	}
	if f.dst != "" {
		p, err := top.ParseDst(f.dst)
		if err != nil {
			return q, cliutil.Usagef("--dst: %v", err)
		}
		q.Filter.Dst = p
	}
	if f.proto != "" {
		p, err := top.ParseProto(f.proto)
		if err != nil {
			var n int
			if _, e := fmt.Sscan(f.proto, &n); e != nil || n < 0 || n > 255 || fmt.Sprint(n) != f.proto {
				return q, cliutil.Usagef("--proto: %v", err)
			}
			p = n
		}
		q.Filter.Proto = p
	}
	return q, nil
}

// runTop prints one frame (--once) or runs the live view.
func runTop(env cliutil.Env, f *topFlags, get func(context.Context) (top.Summary, error)) error {
	if f.once {
		s, err := get(env.Ctx)
		if err != nil {
			return err
		}
		return printTop(env.Stdout, f.output, s)
	}
	if f.output == "json" {
		// A JSON stream: one summary per line, every interval.
		for {
			s, err := get(env.Ctx)
			if env.Ctx.Err() != nil {
				return nil
			}
			if err != nil {
				fmt.Fprintf(env.Stderr, "nsctl: %v\n", err)
			} else if err := printTop(env.Stdout, "json-line", s); err != nil {
				return err
			}
			select {
			case <-env.Ctx.Done():
				return nil
			case <-time.After(f.interval):
			}
		}
	}
	return live(env.Ctx, env.Stdin, env.Stdout, f.interval, func(ctx context.Context, w, h int) ([]string, error) {
		s, err := get(ctx)
		if err != nil {
			return nil, err
		}
		return top.Render(s, w, h), nil
	})
}

func printTop(out io.Writer, format string, s top.Summary) error {
	switch format {
	case "json":
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	case "json-line":
		return json.NewEncoder(out).Encode(s)
	}
	_, err := fmt.Fprintln(out, strings.Join(top.Render(s, 0, 0), "\n"))
	return err
}

// fetchTop asks every edge at once and merges their frames; an edge that
// does not answer is a note in the frame, unless none answers.
func fetchTop(ctx context.Context, edges []string, q top.Query) (top.Summary, error) {
	type res struct {
		s   top.Summary
		err error
	}
	out := make([]res, len(edges))
	var wg sync.WaitGroup
	for i, e := range edges {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].s, out[i].err = fetchEdge(ctx, e, q)
		}()
	}
	wg.Wait()
	var ok []top.Summary
	var errs []error
	var notes []string
	for _, r := range out {
		if r.err != nil {
			errs = append(errs, r.err)
			notes = append(notes, r.err.Error())
			continue
		}
		ok = append(ok, r.s)
	}
	if len(ok) == 0 {
		return top.Summary{}, errors.Join(errs...)
	}
	s := top.Merge(ok, q.TopN)
	s.Notes = append(s.Notes, notes...)
	return s, nil
}

// fetchEdge asks one nsd; the request is bounded by the window plus 5 s.
func fetchEdge(ctx context.Context, edge string, q top.Query) (top.Summary, error) {
	base := edge
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, q.Window+5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+top.Path+"?"+q.Values().Encode(), nil)
	if err != nil {
		return top.Summary{}, fmt.Errorf("edge %s: %w", edge, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return top.Summary{}, fmt.Errorf("ask edge %s (nsd --metrics-addr): %w", edge, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return top.Summary{}, fmt.Errorf("edge %s: %s: %s", edge, resp.Status, strings.TrimSpace(string(msg)))
	}
	var s top.Summary
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&s); err != nil {
		return s, fmt.Errorf("edge %s: read summary: %w", edge, err)
	}
	return s, nil
}
