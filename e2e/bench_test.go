package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/firewall"
	"github.com/nfhost/nfhost/firewall/fwspec/fwtest"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nftset"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
	"github.com/nfhost/nfhost/nsd"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

func benchTenants() int {
	if n, err := strconv.Atoi(os.Getenv("NFHOST_BENCH_TENANTS")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// tenantPrefix gives tenant i a distinct /29 in 198.18.0.0/15
// (benchmarking range, RFC 2544): 16,384 of them.
func tenantPrefix(i int) netip.Prefix {
	a := netip.AddrFrom4([4]byte{198, 18 + byte(i>>13&1), byte(i >> 5), byte(i << 3)})
	return netip.PrefixFrom(a, 29)
}

func cleanupPrefix(b testing.TB, prefix string) {
	b.Cleanup(func() {
		names, _ := namedns.List(namedns.DefaultDir, prefix)
		for _, n := range names {
			namedns.Delete(namedns.DefaultDir, n)
		}
	})
}

// bareCreate builds the same objects as routing.Reconciler.Apply for one
// tenant with plain netlink and nftables calls: no reads, no diffing.
func bareCreate(host *netlink.Handle, hostNS int, conn *nftables.Conn, m4 *nftables.Set, spec rtspec.TenantSpec) error {
	ns, err := namedns.Create(namedns.DefaultDir, spec.Namespace)
	if err != nil {
		return err
	}
	defer ns.Close()
	tn, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer tn.Close()
	if err := host.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: spec.HostIf, Alias: spec.Alias},
		PeerName: spec.NSIf, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		return err
	}
	hl, _ := host.LinkByName(spec.HostIf)
	nl, _ := tn.LinkByName(spec.NSIf)
	lo, _ := tn.LinkByName("lo")
	for _, a := range []struct {
		h *netlink.Handle
		l netlink.Link
		p netip.Prefix
	}{{host, hl, owned.HostAddr4}, {host, hl, owned.HostAddr6}, {tn, nl, owned.NSAddr4}, {tn, nl, owned.NSAddr6}} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.p.Addr().AsSlice(), Mask: net.CIDRMask(a.p.Bits(), a.p.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := a.h.AddrAdd(a.l, addr); err != nil {
			return err
		}
	}
	host.LinkSetUp(hl)
	tn.LinkSetUp(nl)
	tn.LinkSetUp(lo)
	if _, err := namedns.EnsureSysctls(ns, []namedns.Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"},
		{Path: "net/ipv6/conf/all/forwarding", Value: "1"}, {Path: "net/ipv4/conf/all/rp_filter", Value: "0"}}); err != nil {
		return err
	}
	for _, r := range []*netlink.Route{
		{LinkIndex: nl.Attrs().Index, Gw: owned.HostAddr4.Addr().AsSlice(), Flags: int(netlink.FLAG_ONLINK)},
		{LinkIndex: nl.Attrs().Index, Gw: owned.HostAddr6.Addr().AsSlice()},
	} {
		if err := tn.RouteAdd(r); err != nil {
			return err
		}
	}
	for _, r := range []*netlink.Route{
		{LinkIndex: hl.Attrs().Index, Gw: owned.NSAddr4.Addr().AsSlice(), Table: int(spec.Table), Flags: int(netlink.FLAG_ONLINK)},
		{LinkIndex: hl.Attrs().Index, Gw: owned.NSAddr6.Addr().AsSlice(), Table: int(spec.Table)},
	} {
		if err := host.RouteAdd(r); err != nil {
			return err
		}
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ru := netlink.NewRule()
		ru.Family, ru.Priority, ru.Mark, ru.Table = fam, owned.RulePriority, spec.Mark, int(spec.Table)
		if err := host.RuleAdd(ru); err != nil {
			return err
		}
	}
	for _, p := range spec.Prefixes {
		conn.SetAddElements(m4, nftset.Elements(p, []byte{byte(spec.Mark), byte(spec.Mark >> 8), byte(spec.Mark >> 16), byte(spec.Mark >> 24)}))
	}
	return conn.Flush()
}

// BenchmarkColdStart: N tenants (namespace + veth + routing) by nsd's
// reconcile pass, against bare netlink calls creating the same objects in
// another host namespace, in the same run. Run with -benchtime=1x.
func BenchmarkColdStart(b *testing.B) {
	nstest.RequireRoot(b)
	n := benchTenants()
	for i := 0; i < b.N; i++ {
		u := nstest.Unique()
		// Baseline.
		bh := nstest.New(b, "nfB"+u+"h")
		bp := "nfB" + u + "b-"
		cleanupPrefix(b, bp)
		host, _ := netlink.NewHandleAt(bh.Handle)
		conn, _ := nftables.New(nftables.WithNetNSFd(int(bh.Handle)))
		tbl := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "nfhost"})
		m4 := &nftables.Set{Table: tbl, Name: "tenant_marks4", KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark, IsMap: true, Interval: true}
		conn.AddSet(m4, nil)
		if err := conn.Flush(); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for j := 0; j < n; j++ {
			spec := rtspec.NewTenantSpec(fmt.Sprintf("t%d", j), uint16(j+1), bp, []netip.Prefix{tenantPrefix(j)})
			if err := bareCreate(host, int(bh.Handle), conn, m4, spec); err != nil {
				b.Fatalf("baseline tenant %d: %v", j, err)
			}
		}
		base := time.Since(t0)
		host.Close()

		// nsd: one full reconcile pass from an in-memory snapshot.
		nh := nstest.New(b, "nfB"+u+"n")
		np := "nfB" + u + "n-"
		cleanupPrefix(b, np)
		rec, err := routing.New(routing.Config{HostNS: nh.Handle, NSPrefix: np})
		if err != nil {
			b.Fatal(err)
		}
		snap := networkSnapshot(n)
		d := nsd.New(nsd.Options{HostID: "bench", Store: nullStore{}, Routing: rec, NSPrefix: np})
		t1 := time.Now()
		if _, err := rec.Observe(context.Background()); err != nil {
			b.Fatal(err)
		}
		rs := d.Reconcile(context.Background(), snap, true)
		ours := time.Since(t1)
		if nsd.Failed(rs) || len(rs) != n {
			b.Fatalf("reconcile: %d results, failed=%v", len(rs), nsd.Failed(rs))
		}
		// A second pass over a converged host: reads only.
		t2 := time.Now()
		d.Reconcile(context.Background(), snap, true)
		resync := time.Since(t2)
		rec.Close()
		b.ReportMetric(float64(n), "tenants")
		b.ReportMetric(base.Seconds(), "baseline-s")
		b.ReportMetric(ours.Seconds(), "nsd-s")
		b.ReportMetric(ours.Seconds()/base.Seconds(), "nsd/baseline")
		b.ReportMetric(float64(ours.Microseconds())/float64(n)/1000, "nsd-ms/tenant")
		b.ReportMetric(resync.Seconds(), "resync-s")
	}
}

// nullStore discards status writes.
type nullStore struct{ source.Store }

func (nullStore) PutStatus(context.Context, string, string, any) error { return nil }
func (nullStore) DeleteStatus(context.Context, string, string) error   { return nil }

// BenchmarkChangeLatency: Consul PUT of one tenant's network key → nsd has
// applied it (its status key, written after the kernel change, is read with
// a blocking query), p50/p99 over 100 changes, with N tenants present and,
// as the baseline in the same run, with 10.
func BenchmarkChangeLatency(b *testing.B) {
	nstest.RequireRoot(b)
	agent := consultest.Start(b)
	for i := 0; i < b.N; i++ {
		small, smallApply := changeLatency(b, agent, 10)
		big, bigApply := changeLatency(b, agent, benchTenants())
		b.ReportMetric(float64(benchTenants()), "tenants")
		// The benchmark process holds nsd (and the test's Consul client):
		// its RSS with the tenants applied, an upper bound on nsd's.
		b.ReportMetric(lastRSS, "process-rss-MiB")
		b.ReportMetric(ms(big[50]), "p50-ms")
		b.ReportMetric(ms(big[99]), "p99-ms")
		b.ReportMetric(ms(small[50]), "p50-10tenants-ms")
		b.ReportMetric(ms(small[99]), "p99-10tenants-ms")
		b.ReportMetric(ms(big[50])/ms(small[50]), "p50-ratio")
		b.ReportMetric(ms(bigApply), "apply-ms")
		b.ReportMetric(ms(smallApply), "apply-10tenants-ms")
		b.ReportMetric(ms(bigApply)/ms(smallApply), "apply-ratio")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// lastRSS is the benchmark process's RSS after changeLatency's initial pass.
var lastRSS float64

// changeLatency returns percentiles indexed 0..100 and the mean time nsd
// spent in the kernel Apply per change (from its own histogram).
func changeLatency(b *testing.B, agent *consultest.Agent, n int) ([]time.Duration, time.Duration) {
	u := nstest.Unique()
	kv := agent.Client.KV()
	prefix := "bench" + u
	hostNS := nstest.New(b, "nfL"+u+"h")
	np := "nfL" + u + "-"
	cleanupPrefix(b, np)
	rec, err := routing.New(routing.Config{HostNS: hostNS.Handle, NSPrefix: np})
	if err != nil {
		b.Fatal(err)
	}
	defer rec.Close()
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	store, _ := source.NewConsul(cfg, prefix)
	for j := 0; j < n; j++ {
		kv.Put(&api.KVPair{Key: fmt.Sprintf("%s/tenants/t%d/network", prefix, j), Value: []byte(fmt.Sprintf(`{"prefixes": [%q]}`, tenantPrefix(j)))}, nil)
	}
	reg := prometheus.NewRegistry()
	d := nsd.New(nsd.Options{HostID: "bench", Store: store, Routing: rec, NSPrefix: np, Resync: time.Hour, Metrics: nsd.NewMetrics(reg)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// As nsd runs by default (--indexer): a candidate for the fleet's
	// indexer, here the only one, so that a change costs a journal read
	// and the tenant's keys, not a listing of every tenant.
	go store.RunIndexer(ctx, "bench", slog.New(slog.DiscardHandler), nil)
	go d.Run(ctx)
	statusKey := func(id string) string { return fmt.Sprintf("%s/tenant-status/%s/bench", prefix, id) }
	// Wait for the initial pass (10,000 tenants take about 15 minutes here).
	deadline := time.Now().Add(5*time.Minute + time.Duration(n)*100*time.Millisecond)
	for {
		keys, _, _ := kv.Keys(prefix+"/tenant-status/", "", nil)
		if len(keys) >= n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("initial pass incomplete: %d/%d", len(keys), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for !store.Following() { // switches at its next wake-up
		if time.Now().After(deadline) {
			b.Fatal("nsd does not follow the index")
		}
		time.Sleep(100 * time.Millisecond)
	}
	lastRSS = rssMiB(os.Getpid())
	sum0, cnt0 := applyHistogram(b, reg)
	var lat []time.Duration
	for c := 0; c < 100; c++ {
		id := fmt.Sprintf("t%d", c%n)
		_, meta, _ := kv.Get(statusKey(id), nil)
		p := tenantPrefix(c % n)
		// /30 and /31 in turn on each tenant's successive changes, never
		// its /29 of the first pass: Consul keeps the ModifyIndex of a
		// write that changes nothing, and the wait below would then wait
		// for a status write that never comes (the 10 s p99 of earlier
		// runs: every third change rewrote the first document).
		bits := 30 + (c/n)%2
		doc := fmt.Sprintf(`{"prefixes": [%q]}`, netip.PrefixFrom(p.Addr(), bits))
		t0 := time.Now()
		ok, resp, _, err := kv.Txn(api.KVTxnOps{{Verb: api.KVSet, Key: fmt.Sprintf("%s/tenants/%s/network", prefix, id), Value: []byte(doc)}}, nil)
		if err != nil || !ok {
			b.Fatalf("change %d: %v", c, err)
		}
		put := resp.Results[0].ModifyIndex
		for {
			pair, m, err := kv.Get(statusKey(id), &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			meta = m
			var st source.Status
			if pair != nil && json.Unmarshal(pair.Value, &st) == nil && st.State == "applied" && st.AppliedIndex >= put {
				break
			}
		}
		if d := time.Since(t0); d > time.Second {
			b.Logf("change %d of %s (index %d) took %v", c, id, put, d)
		}
		lat = append(lat, time.Since(t0))
	}
	sum1, cnt1 := applyHistogram(b, reg)
	meanApply := time.Duration((sum1 - sum0) / float64(cnt1-cnt0) * float64(time.Second))
	return percentiles(lat), meanApply
}

func applyHistogram(b *testing.B, reg *prometheus.Registry) (sum float64, count uint64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nfhost_subsystem_apply_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "subsys" && lp.GetValue() == "routing" {
					h := m.GetHistogram()
					return h.GetSampleSum(), h.GetSampleCount()
				}
			}
		}
	}
	return 0, 0
}

// BenchmarkNSDMemory: resident memory of an nsd process that manages N
// tenants (directory source), after its first pass.
func BenchmarkNSDMemory(b *testing.B) {
	nstest.RequireRoot(b)
	nsdBin, _ := binaries(b)
	n := benchTenants()
	for i := 0; i < b.N; i++ {
		u := nstest.Unique()
		host := nstest.New(b, "nfM"+u+"h")
		np := "nfM" + u + "-"
		cleanupPrefix(b, np)
		cfg, state := b.TempDir(), b.TempDir()
		for j := 0; j < n; j++ {
			os.MkdirAll(filepath.Join(cfg, fmt.Sprintf("t%d", j)), 0o755)
			os.WriteFile(filepath.Join(cfg, fmt.Sprintf("t%d", j), "network.json"), []byte(fmt.Sprintf(`{"prefixes": [%q]}`, tenantPrefix(j))), 0o644)
		}
		cmd := exec.Command(nsdBin, "--source", "dir", "--config-dir", cfg, "--state-dir", state, "--host-id", "mem",
			"--host-netns", host.Name, "--ns-prefix", np, "--log-level", "warn")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			files, _ := filepath.Glob(filepath.Join(state, "status", "mem", "t*.json"))
			if len(files) >= n {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("nsd did not apply %d tenants", n)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		rss := rssMiB(cmd.Process.Pid)
		cmd.Process.Signal(unix.SIGTERM)
		cmd.Wait()
		b.ReportMetric(float64(n), "tenants")
		b.ReportMetric(rss, "rss-MiB")
	}
}

// BenchmarkNoisyNeighbour: a quiet tenant's firewall PUT → nsd has applied
// it (status applied with that firewall index), p50/p99 over quietChanges changes,
// with NFHOST_BENCH_QUIET (default 100) quiet tenants, first alone and then
// while a noisy neighbour with a 200-rule firewall rewrites it 100 times a
// second, in the same run: real Consul, real nsd with the routing and
// firewall reconcilers in a throw-away host namespace. A third phase runs
// the neighbour against nsd with pacing off (MinApplyInterval < 0).
func BenchmarkNoisyNeighbour(b *testing.B) {
	nstest.RequireRoot(b)
	agent := consultest.Start(b)
	n := 100
	if v, err := strconv.Atoi(os.Getenv("NFHOST_BENCH_QUIET")); err == nil && v > 0 {
		n = v
	}
	for i := 0; i < b.N; i++ {
		l := newNoisyLab(b, agent, n)
		stop := l.start(b, nsd.Options{})
		// Alone and with the neighbour, twice, interleaved: the p99 of each
		// pooled 400 changes (the 4th worst), and how far the p99 alone
		// moves from one round to the next on its own (the usual p99).
		alone1 := l.latencies(b, quietChanges)
		w := l.startNoisy(b)
		noisy1 := l.latencies(b, quietChanges)
		w.stop(b)
		alone2 := l.latencies(b, quietChanges)
		w2 := l.startNoisy(b)
		noisy2 := l.latencies(b, quietChanges)
		w2.stop(b)
		alone, noisy := percentiles(append(alone1, alone2...)), percentiles(append(noisy1, noisy2...))
		a1, a2 := percentiles(alone1), percentiles(alone2)
		n1, n2 := percentiles(noisy1), percentiles(noisy2)
		background := l.counter(b, "nfhost_firewall_background_applies_total")
		stop()
		// The same with the lane off (every apply on the reconcile
		// goroutine): what applying the throttled tenant in the
		// background buys.
		stop = l.start(b, nsd.Options{LaneWidth: -1})
		wl := l.startNoisy(b)
		nolane := l.latency(b, quietChanges)
		wl.stop(b)
		stop()
		// The same with pacing off: what the coalescing buys.
		stop = l.start(b, nsd.Options{MinApplyInterval: -1})
		wu := l.startNoisy(b)
		unpaced := l.latency(b, quietChanges)
		wu.stop(b)
		stop()
		b.ReportMetric(ms(nolane[50]), "p50-nolane-ms")
		b.ReportMetric(ms(nolane[99]), "p99-nolane-ms")
		b.ReportMetric(ms(nolane[99])/ms(alone[99]), "p99-nolane-ratio")
		b.ReportMetric(background, "background-applies")
		b.ReportMetric(float64(n), "quiet-tenants")
		b.ReportMetric(ms(alone[50]), "p50-alone-ms")
		b.ReportMetric(ms(alone[99]), "p99-alone-ms")
		b.ReportMetric(ms(noisy[50]), "p50-noisy-ms")
		b.ReportMetric(ms(noisy[99]), "p99-noisy-ms")
		b.ReportMetric(ms(noisy[99])/ms(alone[99]), "p99-ratio")
		b.ReportMetric(ms(a1[99]), "p99-alone1-ms")
		b.ReportMetric(ms(a2[99]), "p99-alone2-ms")
		b.ReportMetric(ms(n1[99]), "p99-noisy1-ms")
		b.ReportMetric(ms(n2[99]), "p99-noisy2-ms")
		b.ReportMetric(max(ms(a1[99]), ms(a2[99]))/min(ms(a1[99]), ms(a2[99])), "p99-alone-spread")
		b.ReportMetric(w.writesPerSec, "noisy-writes/s")
		b.ReportMetric(w.appliesPerSec, "noisy-applies/s")
		b.ReportMetric(ms(w.settle), "noisy-settle-ms")
		b.ReportMetric(ms(unpaced[50]), "p50-unpaced-ms")
		b.ReportMetric(ms(unpaced[99]), "p99-unpaced-ms")
		b.ReportMetric(wu.appliesPerSec, "unpaced-applies/s")
		b.ReportMetric(ms(w.applyMean), "fw-apply-ms")
	}
}

type noisyLab struct {
	kv     *api.KV
	store  *source.Consul
	prefix string
	np     string
	rec    *routing.Reconciler
	n      int
	reg    *prometheus.Registry
	port   int // the next quiet rule's port
}

// noisyFirewall is the neighbour's 200-rule document; v varies one rule so
// that each write is a real change.
func noisyFirewall(v int) []byte {
	var rules []string
	for i := 0; i < 200; i++ {
		e := fwtest.Expression(i)
		if i == 100 {
			e = fmt.Sprintf("tcp.dstport == %d", 40000+v%20000)
		}
		rules = append(rules, fmt.Sprintf(`{"id": "r%d", "expression": %q, "action": "block"}`, i, e))
	}
	return []byte(`{"rules": [` + strings.Join(rules, ",\n") + `]}`)
}

func quietFirewall(port int) []byte {
	return []byte(fmt.Sprintf(`{"rules": [{"id": "p", "expression": "tcp.dstport == %d", "action": "block"}]}`, port))
}

func newNoisyLab(b *testing.B, agent *consultest.Agent, n int) *noisyLab {
	u := nstest.Unique()
	l := &noisyLab{kv: agent.Client.KV(), prefix: "noisy" + u, np: "nfN" + u + "-", n: n, port: 1000}
	hostNS := nstest.New(b, "nfN"+u+"h")
	cleanupPrefix(b, l.np)
	var err error
	if l.rec, err = routing.New(routing.Config{HostNS: hostNS.Handle, NSPrefix: l.np}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.rec.Close() })
	cfg := api.DefaultConfig()
	cfg.Address = agent.Addr
	l.store, _ = source.NewConsul(cfg, l.prefix)
	for j := 0; j <= n; j++ { // t0..t<n-1> are quiet, t<n> is the noisy one
		l.put(b, fmt.Sprintf("t%d", j), "network", []byte(fmt.Sprintf(`{"prefixes": [%q]}`, tenantPrefix(j))))
		fw := quietFirewall(l.port)
		if j == n {
			fw = noisyFirewall(0)
		}
		l.put(b, fmt.Sprintf("t%d", j), "firewall", fw)
	}
	return l
}

// put writes a tenant's key and returns its ModifyIndex.
func (l *noisyLab) put(b *testing.B, id, key string, v []byte) uint64 {
	ok, resp, _, err := l.kv.Txn(api.KVTxnOps{{Verb: api.KVSet, Key: fmt.Sprintf("%s/tenants/%s/%s", l.prefix, id, key), Value: v}}, nil)
	if err != nil || !ok || len(resp.Results) != 1 {
		b.Fatalf("put %s/%s: ok=%v err=%v", id, key, ok, err)
	}
	return resp.Results[0].ModifyIndex
}

func (l *noisyLab) statusKey(id string) string {
	return fmt.Sprintf("%s/tenant-status/%s/bench", l.prefix, id)
}

// start runs nsd until the returned function is called, after its first
// pass applied every tenant.
func (l *noisyLab) start(b *testing.B, o nsd.Options) func() {
	l.reg = prometheus.NewRegistry()
	o.HostID, o.Store, o.Routing, o.Firewall, o.NSPrefix, o.Resync = "bench", l.store, l.rec, &firewall.NSReconciler{}, l.np, time.Hour
	o.Metrics = nsd.NewMetrics(l.reg)
	d := nsd.New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		keys, _, _ := l.kv.Keys(l.prefix+"/tenant-status/", "", nil)
		if len(keys) >= l.n+1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("initial pass incomplete: %d/%d", len(keys), l.n+1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return func() { cancel(); <-done }
}

// applied waits until id's status says applied with its firewall at index
// idx or later, from the status index meta on.
func (l *noisyLab) applied(b *testing.B, id string, idx, meta uint64) uint64 {
	for {
		pair, m, err := l.kv.Get(l.statusKey(id), &api.QueryOptions{WaitIndex: meta, WaitTime: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		meta = m.LastIndex
		var st source.Status
		if pair != nil && json.Unmarshal(pair.Value, &st) == nil && st.State == "applied" && st.FirewallIndex >= idx {
			return meta
		}
	}
}

// latency changes the firewall of quiet tenants, one after the other, and
// returns the PUT → applied percentiles indexed 0..100.
func (l *noisyLab) latency(b *testing.B, changes int) []time.Duration {
	return percentiles(l.latencies(b, changes))
}

// latencies measures changes quiet PUT → applied latencies, in order.
func (l *noisyLab) latencies(b *testing.B, changes int) []time.Duration {
	var lat []time.Duration
	for c := 0; c < changes; c++ {
		id := fmt.Sprintf("t%d", (l.port*7)%l.n)
		_, meta, err := l.kv.Get(l.statusKey(id), nil)
		if err != nil {
			b.Fatal(err)
		}
		l.port++
		t0 := time.Now()
		idx := l.put(b, id, "firewall", quietFirewall(l.port))
		l.applied(b, id, idx, meta.LastIndex)
		lat = append(lat, time.Since(t0))
		time.Sleep(time.Duration(5+c%7) * time.Millisecond) // do not march in step with the neighbour
	}
	return lat
}

// percentiles: p0 … p100 of lat (nearest rank, lower).
func percentiles(lat []time.Duration) []time.Duration {
	lat = slices.Clone(lat)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := make([]time.Duration, 101)
	for q := 0; q <= 100; q++ {
		pct[q] = lat[q*(len(lat)-1)/100]
	}
	return pct
}

type noisyWriter struct {
	l                           *noisyLab
	quit, done                  chan struct{}
	t0                          time.Time
	writes                      int
	last                        uint64
	ok0                         float64
	fwSum0                      float64
	fwCount0                    uint64
	applyMean                   time.Duration
	writesPerSec, appliesPerSec float64
	settle                      time.Duration
}

// startNoisy rewrites the neighbour's firewall 100 times a second until
// stop.
func (l *noisyLab) startNoisy(b *testing.B) *noisyWriter {
	w := &noisyWriter{l: l, quit: make(chan struct{}), done: make(chan struct{}), t0: time.Now(), ok0: l.firewallApplies(b)}
	w.fwSum0, w.fwCount0 = histogram(b, l.reg, "nfhost_subsystem_apply_duration_seconds", "firewall")
	id := fmt.Sprintf("t%d", l.n)
	go func() {
		defer close(w.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-tick.C:
			}
			w.writes++
			w.last = l.put(b, id, "firewall", noisyFirewall(w.writes))
		}
	}()
	time.Sleep(time.Second) // let the neighbour get going
	return w
}

// stop ends the writes and waits until nsd applied the last one.
func (w *noisyWriter) stop(b *testing.B) {
	close(w.quit)
	<-w.done
	t1 := time.Now()
	w.l.applied(b, fmt.Sprintf("t%d", w.l.n), w.last, 0)
	w.settle = time.Since(t1)
	secs := t1.Sub(w.t0).Seconds()
	w.writesPerSec = float64(w.writes) / secs
	// Firewall applies while the neighbour wrote, less the quiet changes.
	w.appliesPerSec = (w.l.firewallApplies(b) - w.ok0 - quietChanges) / secs
	sum, n := histogram(b, w.l.reg, "nfhost_subsystem_apply_duration_seconds", "firewall")
	w.applyMean = time.Duration((sum - w.fwSum0) / float64(n-w.fwCount0) * float64(time.Second))
}

// histogram reads the sum and count of name{subsys=subsys}.
func histogram(b *testing.B, reg *prometheus.Registry, name, subsys string) (sum float64, count uint64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "subsys" && lp.GetValue() == subsys {
					h := m.GetHistogram()
					return h.GetSampleSum(), h.GetSampleCount()
				}
			}
		}
	}
	return 0, 0
}

// quietChanges is how many quiet-tenant changes each phase times.
const quietChanges = 200

// counter reads an unlabelled counter.
func (l *noisyLab) counter(b *testing.B, name string) float64 {
	mfs, err := l.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// firewallApplies reads nfhost_reconcile_total{subsys="firewall",result="ok"}.
func (l *noisyLab) firewallApplies(b *testing.B) float64 {
	mfs, err := l.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nfhost_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["subsys"] == "firewall" && labels["result"] == "ok" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// BenchmarkRestart: nsd restarted over N converged tenants (a new
// routing.Reconciler and daemon, as after a process restart: Observe and
// the first full pass), against the cold start of the same tenants in the
// same run; then the same restart after drift (one tenant's veth deleted,
// another's ip rule removed, the nft mark map flushed), which the first
// pass must repair. Run with -benchtime=1x.
func BenchmarkRestart(b *testing.B) {
	nstest.RequireRoot(b)
	n := benchTenants()
	for i := 0; i < b.N; i++ {
		u := nstest.Unique()
		nh := nstest.New(b, "nfR"+u+"h")
		np := "nfR" + u + "n-"
		cleanupPrefix(b, np)
		st := snapStore{snap: networkSnapshot(n)}
		run := func() (time.Duration, int) {
			b.Helper()
			rec, err := routing.New(routing.Config{HostNS: nh.Handle, NSPrefix: np})
			if err != nil {
				b.Fatal(err)
			}
			defer rec.Close()
			d := nsd.New(nsd.Options{HostID: "bench", Store: st, Routing: rec, NSPrefix: np})
			t0 := time.Now()
			rs, err := d.Once(context.Background())
			took := time.Since(t0)
			if err != nil {
				b.Fatal(err)
			}
			var changes int
			for _, r := range rs {
				if r.Err != nil {
					b.Fatalf("tenant %s: %v", r.Tenant, r.Err)
				}
				changes += r.Changes
			}
			return took, changes
		}
		cold, _ := run()
		// Three restarts, the median (this machine is noisy).
		var rs []time.Duration
		stopProfile := cpuProfile(b, os.Getenv("NFHOST_RESTART_CPUPROFILE"))
		for k := 0; k < 3; k++ {
			d, c := run()
			if c != 0 {
				b.Fatalf("restart over converged tenants made %d changes", c)
			}
			rs = append(rs, d)
		}
		stopProfile()
		sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
		restart, ch := rs[1], 0
		if ch != 0 {
			b.Fatalf("restart over converged tenants made %d changes", ch)
		}
		// Drift: t1's veth, t2's fwmark rule, the whole mark map.
		host, _ := netlink.NewHandleAt(nh.Handle)
		l1, _ := tenantLink(b, host, "t1")
		if err := host.LinkDel(l1); err != nil {
			b.Fatalf("delete t1's veth: %v", err)
		}
		_, table2 := tenantLink(b, host, "t2")
		rules, _ := host.RuleList(netlink.FAMILY_V4)
		removed := false
		for _, r := range rules {
			if r.Priority == owned.RulePriority && r.Table == table2 {
				r := r
				if err := host.RuleDel(&r); err == nil {
					removed = true
				}
			}
		}
		host.Close()
		if !removed {
			b.Fatal("no fwmark rule of t2 to remove")
		}
		if out, err := nh.Exec(b, "nft", "flush", "map", "inet", owned.NFTTable, "tenant_marks4"); err != nil {
			b.Fatalf("flush map: %v %s", err, out)
		}
		drift, ch := run()
		if ch < 3 {
			b.Fatalf("restart after drift repaired %d things, want at least 3", ch)
		}
		again, ch := run()
		if ch != 0 {
			b.Fatalf("drift not repaired by the first pass: %d changes on the next", ch)
		}
		_ = again
		b.ReportMetric(float64(n), "tenants")
		b.ReportMetric(cold.Seconds(), "cold-s")
		b.ReportMetric(restart.Seconds(), "restart-s")
		b.ReportMetric(restart.Seconds()/cold.Seconds(), "restart/cold")
		b.ReportMetric(drift.Seconds(), "restart-drift-s")
		b.ReportMetric(drift.Seconds()/cold.Seconds(), "restart-drift/cold")
	}
}

// cpuProfile profiles the CPU into path until the returned func is called
// (nothing if path is empty).
func cpuProfile(b *testing.B, path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	tf, err := os.Create(path + ".trace")
	if err != nil {
		b.Fatal(err)
	}
	if err := trace.Start(tf); err != nil {
		b.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close(); trace.Stop(); tf.Close() }
}

// networkSnapshot is n tenants t0..t<n-1>, each with a network document
// holding tenantPrefix(i).
func networkSnapshot(n int) source.Snapshot {
	snap := source.Snapshot{Tenants: map[string]map[string]source.Entry{}}
	for j := 0; j < n; j++ {
		doc := fmt.Sprintf(`{"prefixes": [%q]}`, tenantPrefix(j))
		snap.Tenants[fmt.Sprintf("t%d", j)] = map[string]source.Entry{"network": {Value: []byte(doc), ModifyIndex: uint64(j + 1)}}
	}
	return snap
}

// snapStore serves one snapshot and discards status writes.
type snapStore struct {
	nullStore
	snap source.Snapshot
}

func (s snapStore) Read(context.Context) (source.Snapshot, error) { return s.snap, nil }
func (snapStore) ListStatus(context.Context, string) (map[string]map[string]json.RawMessage, error) {
	return nil, nil
}

// tenantLink finds tenant id's host veth (by its alias) and its table.
func tenantLink(b *testing.B, h *netlink.Handle, id string) (netlink.Link, int) {
	links, err := h.LinkList()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range links {
		if t, slot, ok := owned.ParseAlias(l.Attrs().Alias); ok && t == id {
			return l, int(owned.SlotBase) + int(slot)
		}
	}
	b.Fatalf("no host veth of %s", id)
	return nil, 0
}
