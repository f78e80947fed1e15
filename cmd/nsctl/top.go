package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// defaultEdge is where nsd's --metrics-addr listens in the README's example.
const defaultEdge = "127.0.0.1:9469"

type topFlags struct {
	edges    []string
	viaStore bool
	hosts    []string
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
fleet view that adds their rates up), or with --via-store every nsd (or --host) through the
store: nsctl writes a watch request to control/top/<id>, each nsd publishes its frame to
top/<id>/<host> every second while the request lasts (30 s, refreshed while watching), and
nsctl deletes the request when it exits. nsd records samples only while someone watches:
the first frame takes one --window. In a terminal it redraws every --interval like top
(q quits; from 120 columns the tables show packets and bits per second and stand side by
side, as many as fit: two from 120 columns, three from 181; narrower, a compact form
without bits per second, two side by side from 80 columns, one below; long commands are
cut with "…": --once prints them whole); --once prints one frame, -o json as JSON.`,
		Example: `  nsctl dos top acme --edge 127.0.0.1:9469
  nsctl dos top --edge edge1:9469 --edge edge2:9469 --proto udp
  nsctl dos top acme --once -o json | jq -r '.candidates[0].command'`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("global") {
				return cliutil.Usagef("--global: dos top shows traffic, not a document; give a TENANT to filter or none for all")
			}
			q, err := f.query(args)
			if err != nil {
				return err
			}
			if !f.viaStore {
				get := func(ctx context.Context) (top.Summary, error) { return fetchTop(ctx, f.edges, q) }
				return runTop(c.Env, f, get)
			}
			w, err := c.startWatch(q, f)
			if err != nil {
				return err
			}
			defer w.stop()
			return runTop(c.Env, f, w.get)
		}}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.edges, "edge", []string{defaultEdge}, "nsd's --metrics-addr (host:port or http(s)://host:port); repeat for a fleet view")
	fl.BoolVar(&f.viaStore, "via-store", false, "ask every nsd through the store (Consul) instead of --edge: for edges nsctl cannot reach")
	fl.StringArrayVar(&f.hosts, "host", nil, "--via-store: only this host ID (repeat for several; default every host)")
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
	if len(f.hosts) > 0 && !f.viaStore {
		return q, cliutil.Usagef("--host: only with --via-store (--edge names edges by address)")
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

// storeWatch is a watch through the store (--via-store).
type storeWatch struct {
	c       *ctl
	store   source.Store
	st      source.TopStore
	id      string
	req     top.WatchRequest
	put     time.Time // last write of the request
	started time.Time
	window  time.Duration
	once    bool
}

// watchTTL is how long a watch request lasts without a refresh; nsctl
// refreshes it every watchRefresh.
const (
	watchTTL     = 30 * time.Second
	watchRefresh = 10 * time.Second
)

func (c *ctl) startWatch(q top.Query, f *topFlags) (*storeWatch, error) {
	st, err := c.open()
	if err != nil {
		return nil, err
	}
	ts, ok := st.(source.TopStore)
	if !ok {
		return nil, fmt.Errorf("--via-store: this store cannot relay dos top")
	}
	b := make([]byte, 6)
	rand.Read(b)
	w := &storeWatch{c: c, store: st, st: ts, id: hex.EncodeToString(b), started: time.Now(), window: q.Window, once: f.once,
		req: top.WatchRequest{Query: q.Values().Encode(), Hosts: f.hosts}}
	if err := w.refresh(c.Ctx); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *storeWatch) refresh(ctx context.Context) error {
	w.req.Until = time.Now().Add(watchTTL).UTC()
	b, _ := json.Marshal(w.req)
	if err := w.store.PutControl(ctx, source.TopWatchKey(w.id), b); err != nil {
		return fmt.Errorf("write the watch request: %w", err)
	}
	w.put = time.Now()
	return nil
}

// stop deletes the request (the edges delete their summaries within a
// second of seeing it go).
func (w *storeWatch) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.st.DeleteControl(ctx, source.TopWatchKey(w.id))
}

// get returns the merged frames the edges published for the watch. The
// first frame waits until the edges have recorded a window (--once: that
// and a second more for slower edges); frames older than the window plus
// 3 s are an edge that stopped publishing and are left out.
func (w *storeWatch) get(ctx context.Context) (top.Summary, error) {
	if time.Since(w.put) > watchRefresh {
		if err := w.refresh(ctx); err != nil {
			return top.Summary{}, err
		}
	}
	ready := w.started.Add(w.window + 1500*time.Millisecond)
	if w.once {
		ready = ready.Add(time.Second)
	}
	if d := time.Until(ready); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return top.Summary{}, ctx.Err()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, err := w.st.ListTop(ctx, w.id)
		if err != nil {
			return top.Summary{}, err
		}
		var ss []top.Summary
		for host, b := range all {
			var s top.Summary
			if json.Unmarshal(b, &s) != nil || time.Since(s.At) > w.window+3*time.Second {
				continue
			}
			if len(s.Hosts) == 0 {
				s.Hosts = []string{host}
			}
			ss = append(ss, s)
		}
		if len(ss) > 0 {
			slices.SortFunc(ss, func(a, b top.Summary) int { return strings.Compare(a.Hosts[0], b.Hosts[0]) })
			return top.Merge(ss, 0), nil
		}
		if time.Now().After(deadline) {
			return top.Summary{}, fmt.Errorf("no nsd published a summary for watch %s within %v of the request (nsd reads control/ and writes top/; is it running and allowed to?)",
				w.id, time.Since(w.started).Round(time.Second))
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return top.Summary{}, ctx.Err()
		}
	}
}
