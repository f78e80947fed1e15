package firewall_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/firewall"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/firewall/fwspec/fwtest"
	"github.com/nfhost/nfhost/internal/nstest"
)

// bigConfig: 200 rules of assorted shapes, none matching the benchmark's
// traffic (TCP to port 5201 from 203.0.113.2), and a 100,000-entry list
// that one of the first rules looks every packet up in.
func bigConfig(changed bool) fwspec.Config {
	c := fwspec.Config{Lists: map[string][]string{"big": {}}}
	for i := 0; i < 100000; i++ {
		c.Lists["big"] = append(c.Lists["big"], fmt.Sprintf("%d.%d.%d.0/24", 10+i>>16, (i>>8)&255, i&255))
	}
	c.Rules = append(c.Rules, fwspec.Rule{ID: "deny-big", Expression: "ip.src in $big", Action: fwspec.Block})
	for i := 1; i < 200; i++ {
		e := fwtest.Expression(i)
		c.Rules = append(c.Rules, fwspec.Rule{ID: fmt.Sprintf("r%d", i), Expression: e, Action: fwspec.Block})
	}
	if changed {
		c.Rules[100].Expression = "tcp.dstport == 4444"
	}
	return c
}

// mixedConfig is bigConfig with a list whose prefixes are not all of one
// length (every tenth a /32), which stays an interval set.
func mixedConfig() fwspec.Config {
	c := bigConfig(false)
	for i := 0; i < len(c.Lists["big"]); i += 10 {
		c.Lists["big"][i] = strings.TrimSuffix(c.Lists["big"][i], "0/24") + "1/32"
	}
	return c
}

func specOf(b testing.TB, c fwspec.Config) *fwspec.Spec {
	raw, _ := json.Marshal(c)
	s, err := fwspec.Parse("bench", raw)
	if err != nil {
		b.Fatal(err)
	}
	return &s
}

// BenchmarkApply200Rules100k: nsd's reconciler against `nft -f` loading the
// same ruleset (dumped from the kernel) into a fresh namespace, same run.
func BenchmarkApply200Rules100k(b *testing.B) {
	nstest.RequireRoot(b)
	nstest.RequireTool(b, "nft")
	spec, spec2, mixed := specOf(b, bigConfig(false)), specOf(b, bigConfig(true)), specOf(b, mixedConfig())
	for i := 0; i < b.N; i++ {
		// The list of mixed lengths (an interval set: two elements a prefix).
		nsm := nstest.New(b, "nfP"+nstest.Unique())
		tm := time.Now()
		if _, err := (&firewall.Reconciler{}).Apply(nsm.Handle, mixed); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(tm).Milliseconds()), "apply-mixed-ms")
		ns := nstest.New(b, "nfP"+nstest.Unique())
		rec := &firewall.Reconciler{}
		t0 := time.Now()
		if _, err := rec.Apply(ns.Handle, spec); err != nil {
			b.Fatal(err)
		}
		full := time.Since(t0)
		t1 := time.Now()
		ch, err := rec.Apply(ns.Handle, spec2)
		if err != nil || len(ch) == 0 {
			b.Fatal(ch, err)
		}
		change := time.Since(t1)
		t2 := time.Now()
		if ch, err := rec.Apply(ns.Handle, spec2); err != nil || len(ch) != 0 {
			b.Fatal(ch, err)
		}
		noop := time.Since(t2)
		// A restarted nsd verifies the list element by element once.
		t4 := time.Now()
		if ch, err := (&firewall.Reconciler{}).Apply(ns.Handle, spec2); err != nil || len(ch) != 0 {
			b.Fatal(ch, err)
		}
		verify := time.Since(t4)

		// Baseline: the nft CLI loads the same table.
		dump := ns.MustExec(b, "nft", "list", "table", "inet", "nfhost")
		f := filepath.Join(b.TempDir(), "ruleset.nft")
		os.WriteFile(f, []byte(dump), 0o644)
		ns2 := nstest.New(b, "nfP"+nstest.Unique())
		t3 := time.Now()
		if out, err := exec.Command("nsenter", "--net="+ns2.Path(), "--", "nft", "-f", f).CombinedOutput(); err != nil {
			b.Fatalf("nft -f: %v %s", err, out)
		}
		cli := time.Since(t3)
		b.ReportMetric(float64(full.Milliseconds()), "apply-ms")
		b.ReportMetric(float64(change.Microseconds())/1000, "one-rule-change-ms")
		b.ReportMetric(float64(noop.Microseconds())/1000, "noop-ms")
		b.ReportMetric(float64(verify.Milliseconds()), "restart-verify-ms")
		b.ReportMetric(float64(cli.Milliseconds()), "nft-cli-ms")
		b.ReportMetric(full.Seconds()/cli.Seconds(), "apply/nft-cli")
	}
}

// BenchmarkForwarding: iperf3 TCP throughput from a client into a tenant
// namespace with the 200-rule, 100k-list firewall, against the same path
// without rules, same run: interleaved 3-second runs, medians.
func BenchmarkForwarding(b *testing.B) {
	nstest.RequireRoot(b)
	nstest.RequireTool(b, "iperf3")
	spec := specOf(b, bigConfig(false))
	for i := 0; i < b.N; i++ {
		u := nstest.Unique()
		client, tenant := nstest.New(b, "nfP"+u+"c"), nstest.New(b, "nfP"+u+"t")
		nstest.Link(b, client, "eth0", "203.0.113.2/24", tenant, "host0", "203.0.113.1/24")
		run := func() float64 {
			srv := exec.Command("nsenter", "--net="+tenant.Path(), "--", "iperf3", "-s", "-p", "5201")
			srv.Start()
			defer func() { srv.Process.Kill(); srv.Wait() }()
			time.Sleep(300 * time.Millisecond)
			out := client.MustExec(b, "iperf3", "-c", "203.0.113.1", "-p", "5201", "-t", "3", "-J")
			var res struct {
				End struct {
					SumReceived struct {
						BitsPerSecond float64 `json:"bits_per_second"`
					} `json:"sum_received"`
				} `json:"end"`
			}
			if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
				b.Fatalf("iperf3 output: %v", err)
			}
			return res.End.SumReceived.BitsPerSecond / 1e9
		}
		// Runs back to back: no table, the 200 rules, and the table with
		// no rule (its base chain and dispatch: what any nfhost firewall
		// costs); the ratio of each to the no-table run next to it, and the
		// medians of those: runs next to each other see the same machine,
		// which cancels most of the drift (single 3 s runs on two cores vary
		// by ±15%). NFHOST_BENCH_PAIRS, default 7.
		rec := &firewall.Reconciler{}
		empty := specOf(b, fwspec.Config{Rules: []fwspec.Rule{}})
		var bases, withs, ratios, emptyRatios []float64
		pairs := 7
		if v, err := strconv.Atoi(os.Getenv("NFHOST_BENCH_PAIRS")); err == nil && v > 0 {
			pairs = v
		}
		for k := 0; k < pairs; k++ {
			bases = append(bases, run())
			if _, err := rec.Apply(tenant.Handle, spec); err != nil {
				b.Fatal(err)
			}
			withs = append(withs, run())
			if _, err := rec.Apply(tenant.Handle, empty); err != nil {
				b.Fatal(err)
			}
			emptyRatios = append(emptyRatios, run()/bases[k])
			if _, err := rec.Apply(tenant.Handle, nil); err != nil {
				b.Fatal(err)
			}
			ratios = append(ratios, withs[k]/bases[k])
		}
		base, with := median(bases), median(withs)
		b.ReportMetric(base, "no-rules-Gbps")
		b.ReportMetric(with, "rules-Gbps")
		b.ReportMetric(with/base, "ratio")
		b.ReportMetric(median(ratios), "pair-ratio-median")
		b.ReportMetric(median(emptyRatios), "empty-table-ratio-median")
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
