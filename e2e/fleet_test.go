package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/firewall/fwspec/fwtest"
	"github.com/nfhost/nfhost/nsd"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
	"github.com/nfhost/nfhost/routing"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// The fleet simulator: N simulated edge servers in this process, each
// running nsd's real source (Watch, following the index or the whole
// prefix), planning, reconcile loop and status writes, with a kernel that
// does nothing, against a real three-server Consul cluster on loopback.
// Sizes come from the environment: NFHOST_FLEET_SERVERS (default 50),
// NFHOST_FLEET_TENANTS (default 1000), NFHOST_FLEET_CHANGES (default 20).

// noKernel is a routing reconciler that only remembers what it was asked.
type noKernel struct {
	mu    sync.Mutex
	specs map[string]rtspec.TenantSpec
}

func (k *noKernel) Observe(context.Context) (map[string]routing.Observed, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]routing.Observed{}
	for id, s := range k.specs {
		out[id] = routing.Observed{ID: id, Slot: s.Slot, HostIf: s.HostIf, Namespace: s.Namespace}
	}
	return out, nil
}

func (k *noKernel) Apply(_ context.Context, s rtspec.TenantSpec) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.specs[s.ID] = s
	return nil, nil
}

func (k *noKernel) Delete(_ context.Context, o routing.Observed) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.specs, o.ID)
	return nil, nil
}

func (k *noKernel) GC(context.Context, map[uint16]bool) ([]string, error) { return nil, nil }

// byteMeter counts response bytes of every simulated server's client.
type byteMeter struct {
	base  http.RoundTripper
	bytes atomic.Int64
}

func (m *byteMeter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := m.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &meteredBody{ReadCloser: resp.Body, n: &m.bytes}
	return resp, nil
}

type meteredBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func fleetEnv(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// fleetDoc is a tenant's network document; fleetRules its firewall, about
// 2 KB together.
func fleetDoc(i, v int) []byte {
	return []byte(fmt.Sprintf(`{"prefixes": [%q]%s}`, tenantPrefix(i), strings.Repeat(" ", v%64))) // each version differs
}

func fleetRules(i int) []byte {
	var rules []string
	for r := 0; r < 22; r++ {
		rules = append(rules, fmt.Sprintf(`{"id": "r%d", "expression": %q, "action": "block"}`, r, fwtest.Expression(i+r)))
	}
	return []byte(`{"rules": [` + strings.Join(rules, ",") + `]}`)
}

type fleet struct {
	cluster *consultest.Cluster
	prefix  string
	servers int
	tenants int
	meter   *byteMeter
	stops   []func()
	addrs   []string // where the simulated servers connect
}

// newFleet writes the tenants and starts the simulated servers (indexed
// or, with noIndex, each watching the whole prefix), and waits until
// every server wrote every tenant's status.
func newFleet(b *testing.B, c *consultest.Cluster, prefix string, servers, tenants int, noIndex bool, addrs []string) *fleet {
	f := &fleet{cluster: c, prefix: prefix, servers: servers, tenants: tenants, addrs: addrs,
		meter: &byteMeter{base: &http.Transport{MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0, IdleConnTimeout: time.Minute}}}
	kv := c.Servers[0].Client.KV()
	var ops api.KVTxnOps
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if ok, _, _, err := kv.Txn(ops, nil); err != nil || !ok {
			b.Fatalf("write tenants: %v", err)
		}
		ops = nil
	}
	for i := 0; i < tenants; i++ {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("%s/tenants/t%d/network", prefix, i), Value: fleetDoc(i, 0)},
			&api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("%s/tenants/t%d/firewall", prefix, i), Value: fleetRules(i)})
		if len(ops) >= 63 {
			flush()
		}
	}
	flush()
	ctx, cancel := context.WithCancel(context.Background())
	f.stops = append(f.stops, cancel)
	if !noIndex {
		// Three candidates, as a fleet would have many; one is elected.
		for i := 0; i < 3; i++ {
			st := f.store(b, addrs[i%len(addrs)], false, nil)
			go st.RunIndexer(ctx, fmt.Sprintf("candidate%d", i), slog.New(slog.DiscardHandler), nil)
		}
	}
	var wg sync.WaitGroup
	var stores []*source.Consul
	for i := 0; i < servers; i++ {
		st := f.store(b, addrs[i%len(addrs)], noIndex, f.meter)
		stores = append(stores, st)
		d := nsd.New(nsd.Options{HostID: fmt.Sprintf("sim%d", i), Store: st, Routing: &noKernel{specs: map[string]rtspec.TenantSpec{}},
			NSPrefix: "nfF-", Resync: time.Hour, MaxDeleteFraction: 1})
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	f.stops = append(f.stops, wg.Wait)
	// Every server has written every tenant's status.
	deadline := time.Now().Add(20 * time.Minute)
	for {
		keys, _, err := kv.Keys(prefix+"/tenant-status/", "", &api.QueryOptions{AllowStale: true})
		if err == nil && len(keys) >= servers*tenants {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("fleet did not converge: %d of %d statuses", len(keys), servers*tenants)
		}
		time.Sleep(time.Second)
	}
	// ... and follows the index (a server that started before the first
	// journal switches at its next wake-up, within 30 s).
	for !noIndex {
		n := 0
		for _, st := range stores {
			if st.Following() {
				n++
			}
		}
		if n == servers {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d servers follow the index", n, servers)
		}
		time.Sleep(time.Second)
	}
	return f
}

func (f *fleet) store(b *testing.B, addr string, noIndex bool, m *byteMeter) *source.Consul {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = addr, "", ""
	if m != nil {
		cfg.HttpClient = &http.Client{Transport: m}
	}
	st, err := source.NewConsul(cfg, f.prefix)
	if err != nil {
		b.Fatal(err)
	}
	st.NoIndex = noIndex
	return st
}

func (f *fleet) stop() {
	for _, s := range f.stops { // cancel, then wait
		s()
	}
}

// change rewrites tenant id's network and returns, for every server, how
// long after the PUT its status said applied with the new index.
func (f *fleet) change(b *testing.B, i, v int) []time.Duration {
	kv := f.cluster.Servers[0].Client.KV()
	key := fmt.Sprintf("%s/tenants/t%d/network", f.prefix, i)
	t0 := time.Now()
	if _, err := kv.Put(&api.KVPair{Key: key, Value: fleetDoc(i, v)}, nil); err != nil {
		b.Fatal(err)
	}
	pair, _, err := kv.Get(key, nil)
	if err != nil || pair == nil {
		b.Fatalf("read back %s: %v", key, err)
	}
	return f.applied(b, fmt.Sprintf("t%d", i), pair.ModifyIndex, t0)
}

// applied waits until every server's status of tenant id says applied at
// index idx or later, and returns when each did, from t0.
func (f *fleet) applied(b *testing.B, id string, idx uint64, t0 time.Time) []time.Duration {
	kv := f.cluster.Servers[0].Client.KV()
	done := map[string]time.Duration{}
	var wait uint64
	deadline := t0.Add(2 * time.Minute)
	for len(done) < f.servers {
		pairs, meta, err := kv.List(f.prefix+"/tenant-status/"+id+"/", &api.QueryOptions{WaitIndex: wait, WaitTime: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		now := time.Since(t0)
		wait = meta.LastIndex
		for _, p := range pairs {
			var st source.Status
			if _, ok := done[p.Key]; ok || json.Unmarshal(p.Value, &st) != nil {
				continue
			}
			if st.State == "applied" && st.AppliedIndex >= idx {
				done[p.Key] = now
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("change of %s applied on %d of %d servers after 2 minutes", id, len(done), f.servers)
		}
	}
	out := make([]time.Duration, 0, len(done))
	for _, d := range done {
		out = append(out, d)
	}
	return out
}

// rssMiB is the resident memory of pids together.
func rssMiB(pids ...int) float64 {
	var kb float64
	for _, pid := range pids {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				v, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
				kb += v
			}
		}
	}
	return kb / 1024
}

type fleetResult struct {
	bytesPerServer      float64 // per single-tenant change, on average
	p50, p99, max       time.Duration
	consulCPUPerChange  time.Duration
	consulRSS           float64
	convergeAllStatuses time.Duration
}

func measureFleet(b *testing.B, f *fleet, changes int) fleetResult {
	var lat []time.Duration
	pids := f.cluster.PIDs()
	ticks := func() (n int) {
		for _, pid := range pids {
			n += cpuTicks(b, pid)
		}
		return n
	}
	cpu0, bytes0 := ticks(), f.meter.bytes.Load()
	for c := 0; c < changes; c++ {
		lat = append(lat, f.change(b, (c*37)%f.tenants, c+1)...)
		time.Sleep(200 * time.Millisecond) // reads that trail the status writes
	}
	cpu1, bytes1 := ticks(), f.meter.bytes.Load()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(q int) time.Duration { return lat[q*(len(lat)-1)/100] }
	return fleetResult{
		bytesPerServer:     float64(bytes1-bytes0) / float64(changes) / float64(f.servers),
		p50:                pct(50),
		p99:                pct(99),
		max:                lat[len(lat)-1],
		consulCPUPerChange: time.Duration(cpu1-cpu0) * (time.Second / 100) / time.Duration(changes),
		consulRSS:          rssMiB(pids...),
	}
}

// BenchmarkFleet: bytes read per single-tenant change per server, and PUT
// → applied on every server, with the index, against every server
// watching the whole prefix (the baseline) at the same scale in the same
// run. Run with -benchtime=1x.
func BenchmarkFleet(b *testing.B) {
	servers := fleetEnv("NFHOST_FLEET_SERVERS", 50)
	tenants := fleetEnv("NFHOST_FLEET_TENANTS", 1000)
	changes := fleetEnv("NFHOST_FLEET_CHANGES", 20)
	for i := 0; i < b.N; i++ {
		c := consultest.StartCluster(b, 3)
		var addrs []string
		for _, a := range c.Servers {
			addrs = append(addrs, a.Addr)
		}
		t0 := time.Now()
		fi := newFleet(b, c, "fleetidx", servers, tenants, false, addrs)
		converge := time.Since(t0)
		idx := measureFleet(b, fi, changes)
		fi.stop()
		t1 := time.Now()
		fb := newFleet(b, c, "fleetall", servers, tenants, true, addrs)
		convergeAll := time.Since(t1)
		all := measureFleet(b, fb, changes)
		fb.stop()
		b.ReportMetric(float64(servers), "servers")
		b.ReportMetric(float64(tenants), "tenants")
		b.ReportMetric(idx.bytesPerServer/1024, "index-KB/change/server")
		b.ReportMetric(all.bytesPerServer/1024, "prefix-KB/change/server")
		b.ReportMetric(idx.bytesPerServer/all.bytesPerServer, "index/prefix-bytes")
		b.ReportMetric(ms(idx.p50), "index-p50-ms")
		b.ReportMetric(ms(idx.p99), "index-p99-ms")
		b.ReportMetric(ms(idx.max), "index-max-ms")
		b.ReportMetric(ms(all.p50), "prefix-p50-ms")
		b.ReportMetric(ms(all.p99), "prefix-p99-ms")
		b.ReportMetric(ms(all.max), "prefix-max-ms")
		b.ReportMetric(ms(idx.consulCPUPerChange), "index-consul-cpu-ms/change")
		b.ReportMetric(ms(all.consulCPUPerChange), "prefix-consul-cpu-ms/change")
		b.ReportMetric(all.consulRSS, "consul-rss-MiB")
		b.ReportMetric(converge.Seconds(), "index-converge-s")
		b.ReportMetric(convergeAll.Seconds(), "prefix-converge-s")
	}
}
