package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
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

// simGC sets the simulator process's garbage collector for the run: it
// holds the heaps of every simulated daemon (5 GB at 1,000 servers × 100
// tenants), and at the default GOGC=100 each collection marks all of them
// while the daemons' requests wait, a cost that separate daemons with
// small heaps do not share. GOGC is NFHOST_FLEET_GOGC (default 400) under
// a soft limit of NFHOST_FLEET_MEMLIMIT_GIB (default 16 GiB, of this
// machine's 24); the returned function restores both.
func simGC() func() {
	gogc := debug.SetGCPercent(fleetEnv("NFHOST_FLEET_GOGC", 400))
	limit := debug.SetMemoryLimit(int64(fleetEnv("NFHOST_FLEET_MEMLIMIT_GIB", 16)) << 30)
	return func() { debug.SetGCPercent(gogc); debug.SetMemoryLimit(limit) }
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
	acks    bool // the servers acknowledge (nsd --status-writes ack)
	meter   *consultest.Meter
	stops   []func()
	addrs   []string // where the simulated servers connect
	// server 0 has a meter of its own (cut off in BenchmarkFleetSustained)
	// and its snapshots are recorded.
	meter0 *consultest.Meter
	snap0  *recordingStore
	log    *writeLog // when each server's status and ack writes went through
}

// fleetMode is how the simulated servers watch and report.
type fleetMode struct {
	noIndex bool // every server watches the whole prefix (the design before the index)
	acks    bool // acknowledgements instead of per-tenant status writes
}

// simStore is a simulated server's Consul store that notes in the
// process when each of its status and ack writes went through, so that
// measuring propagation costs Consul nothing (a blocking listing of
// acks/ by the benchmark would return every server's ack on each of a
// change's thousand ack writes: more bytes than the servers read).
type simStore struct {
	*source.Consul
	log *writeLog
}

func (s simStore) PutAck(ctx context.Context, a source.Ack) error {
	err := s.Consul.PutAck(ctx, a)
	if err == nil {
		s.log.ack(a.Host, a.Through, time.Now())
	}
	return err
}

func (s simStore) PutStatus(ctx context.Context, host, name string, st any) error {
	err := s.Consul.PutStatus(ctx, host, name, st)
	if ts, ok := st.(source.Status); ok && err == nil && ts.State == "applied" {
		s.log.applies(ts.Tenant, host, ts.AppliedIndex, time.Now())
	}
	return err
}

// writeLog records, per server, when its acknowledgement moved and when
// it wrote each tenant's applied status.
type writeLog struct {
	mu     sync.Mutex
	acks   map[string][]ackAt            // host → its acks, rising
	status map[string]map[string][]ackAt // tenant → host → applied indexes
}

type ackAt struct {
	through uint64
	at      time.Time
}

func newWriteLog() *writeLog {
	return &writeLog{acks: map[string][]ackAt{}, status: map[string]map[string][]ackAt{}}
}

func (l *writeLog) ack(host string, through uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks[host] = rising(l.acks[host], through, at)
}

func (l *writeLog) applies(tenant, host string, idx uint64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.status[tenant] == nil {
		l.status[tenant] = map[string][]ackAt{}
	}
	l.status[tenant][host] = rising(l.status[tenant][host], idx, at)
}

// rising appends idx at to h if idx is past h's last.
func rising(h []ackAt, idx uint64, at time.Time) []ackAt {
	if len(h) == 0 || h[len(h)-1].through < idx {
		return append(h, ackAt{idx, at})
	}
	return h
}

// acked returns, for a change written at t0 with index idx, how long each
// server took to acknowledge it; ok is false if one has not yet.
func (l *writeLog) acked(idx uint64, t0 time.Time, servers int) ([]time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return firstAt(l.acks, idx, t0, servers)
}

// applied is acked for per-tenant status writes of tenant id.
func (l *writeLog) applied(id string, idx uint64, t0 time.Time, servers int) ([]time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return firstAt(l.status[id], idx, t0, servers)
}

// lastAck is how far host's acknowledgement is.
func (l *writeLog) lastAck(host string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.acks[host]; len(h) > 0 {
		return h[len(h)-1].through
	}
	return 0
}

func firstAt(hosts map[string][]ackAt, idx uint64, t0 time.Time, servers int) ([]time.Duration, bool) {
	if len(hosts) < servers {
		return nil, false
	}
	out := make([]time.Duration, 0, servers)
	for _, h := range hosts {
		i := sort.Search(len(h), func(i int) bool { return h[i].through >= idx })
		if i == len(h) {
			return nil, false
		}
		out = append(out, max(h[i].at.Sub(t0), 0))
	}
	return out, true
}

// recordingStore is a simulated server's store whose last snapshot the
// benchmark can read (what the server holds).
type recordingStore struct {
	simStore
	mu   sync.Mutex
	last source.Snapshot
}

func (r *recordingStore) Watch(ctx context.Context, out chan<- source.Snapshot, onHealth func(error)) error {
	in := make(chan source.Snapshot)
	go r.Consul.Watch(ctx, in, onHealth)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case s := <-in:
			r.mu.Lock()
			r.last = s
			r.mu.Unlock()
			select {
			case out <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

func (r *recordingStore) marks() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]uint64{}
	for id, keys := range r.last.Tenants {
		for _, e := range keys {
			out[id] = max(out[id], e.ModifyIndex)
		}
	}
	return out
}

// newFleet writes the tenants and starts the simulated servers, and waits
// until every server has applied every tenant: it wrote every tenant's
// status or, with acknowledgements, its ack covers the last write.
func newFleet(b *testing.B, c *consultest.Cluster, prefix string, servers, tenants int, mode fleetMode, addrs []string) *fleet {
	noIndex := mode.noIndex
	f := &fleet{cluster: c, prefix: prefix, servers: servers, tenants: tenants, addrs: addrs, acks: mode.acks,
		meter: consultest.NewMeter(), meter0: consultest.NewMeter(), log: newWriteLog()}
	kv := c.Servers[0].Client.KV()
	var ops api.KVTxnOps
	var lastWrite uint64
	flush := func() {
		if len(ops) == 0 {
			return
		}
		ok, resp, _, err := kv.Txn(ops, nil)
		if err != nil || !ok {
			b.Fatalf("write tenants: %v", err)
		}
		lastWrite = resp.Results[0].ModifyIndex
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
		m := f.meter
		if i == 0 {
			m = f.meter0
		}
		st := f.store(b, addrs[i%len(addrs)], noIndex, m)
		stores = append(stores, st)
		var store source.Store = simStore{Consul: st, log: f.log}
		if i == 0 {
			f.snap0 = &recordingStore{simStore: simStore{Consul: st, log: f.log}}
			store = f.snap0
		}
		d := nsd.New(nsd.Options{HostID: fmt.Sprintf("sim%d", i), Store: store, Routing: &noKernel{specs: map[string]rtspec.TenantSpec{}},
			NSPrefix: "nfF-", Resync: time.Hour, MaxDeleteFraction: 1, Acks: mode.acks})
		wg.Add(1)
		go func() { defer wg.Done(); d.Run(ctx) }()
	}
	f.stops = append(f.stops, wg.Wait)
	// Every server has applied every tenant.
	deadline := time.Now().Add(40 * time.Minute)
	for !mode.acks {
		keys, _, err := kv.Keys(prefix+"/tenant-status/", "", &api.QueryOptions{AllowStale: true})
		if err == nil && len(keys) >= servers*tenants {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("fleet did not converge: %d of %d statuses", len(keys), servers*tenants)
		}
		time.Sleep(time.Second)
	}
	for mode.acks {
		if n := f.acked(b, lastWrite); n == servers {
			break
		} else if time.Now().After(deadline) {
			b.Fatalf("fleet did not converge: %d of %d servers acknowledge index %d", n, servers, lastWrite)
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

func (f *fleet) store(b *testing.B, addr string, noIndex bool, m *consultest.Meter) *source.Consul {
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = addr, "", ""
	if m != nil {
		cfg.HttpClient = m.Client()
	}
	st, err := source.NewConsul(cfg, f.prefix)
	if err != nil {
		b.Fatal(err)
	}
	st.NoIndex = noIndex
	return st
}

// acked is how many servers acknowledge index idx.
func (f *fleet) acked(b *testing.B, idx uint64) int {
	pairs, _, err := f.cluster.Servers[0].Client.KV().List(f.prefix+"/acks/", &api.QueryOptions{AllowStale: true})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, p := range pairs {
		var a source.Ack
		if json.Unmarshal(p.Value, &a) == nil && a.Through >= idx {
			n++
		}
	}
	return n
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
// index idx or later (with acknowledgements: until every server's ack is
// at idx or later), and returns when each wrote it, from t0.
func (f *fleet) applied(b *testing.B, id string, idx uint64, t0 time.Time) []time.Duration {
	deadline := t0.Add(2 * time.Minute)
	for {
		var lat []time.Duration
		var ok bool
		if f.acks {
			lat, ok = f.log.acked(idx, t0, f.servers)
		} else {
			lat, ok = f.log.applied(id, idx, t0, f.servers)
		}
		if ok {
			return lat
		}
		if time.Now().After(deadline) {
			b.Fatalf("change of %s (index %d) not applied on every server after 2 minutes", id, idx)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// heapProfile writes the live heap to NFHOST_FLEET_HEAPPROFILE, if set
// (what a converged fleet holds per server × tenant).
func heapProfile(b *testing.B) {
	path := os.Getenv("NFHOST_FLEET_HEAPPROFILE")
	if path == "" {
		return
	}
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// fleetProfiles starts the CPU profiles the environment asks for, of
// the simulator (NFHOST_FLEET_CPUPROFILE) and of the Consul servers
// (NFHOST_FLEET_CONSULPROFILE), and returns what stops them.
func fleetProfiles(b *testing.B, c *consultest.Cluster) func() {
	stopSim := cpuProfile(b, os.Getenv("NFHOST_FLEET_CPUPROFILE"))
	stopConsul := consulProfiles(b, c, os.Getenv("NFHOST_FLEET_CONSULPROFILE"))
	return func() { stopConsul(); stopSim() }
}

// consulProfiles records a CPU profile of each Consul server into
// <prefix>.<n> (n: 0, 1, 2, the leader marked by ".leader") until the
// returned function is called, if prefix is set.
func consulProfiles(b *testing.B, c *consultest.Cluster, prefix string) func() {
	if prefix == "" {
		return func() {}
	}
	leader := c.Leader(b)
	var wg sync.WaitGroup
	start := time.Now()
	done := make(chan struct{})
	for n, a := range c.Servers {
		name := fmt.Sprintf("%s.%d", prefix, n)
		if a == leader {
			name += ".leader"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A CPU profile covers a time fixed when it is asked
			// for: ask for 10 s slices until done (the last ends
			// up to 10 s after it).
			var all []string
			for i := 0; ; i++ {
				select {
				case <-done:
					b.Logf("consul %s: profiles %v after %s", a.Addr, all, time.Since(start))
					return
				default:
				}
				resp, err := http.Get(a.URL + "/debug/pprof/profile?seconds=10")
				if err != nil {
					b.Logf("profile consul %s: %v", a.Addr, err)
					return
				}
				out, err := os.Create(fmt.Sprintf("%s.%02d", name, i))
				if err != nil {
					resp.Body.Close()
					b.Logf("profile consul %s: %v", a.Addr, err)
					return
				}
				io.Copy(out, resp.Body)
				resp.Body.Close()
				out.Close()
				all = append(all, out.Name())
			}
		}()
	}
	return func() { close(done); wg.Wait() }
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
	writesPerServer     float64 // KV writes per single-tenant change per server
	requestsPerServer   float64 // requests to Consul per single-tenant change per server
	p50, p99, max       time.Duration
	consulCPUPerChange  time.Duration
	consulRSS           float64
	convergeAllStatuses time.Duration
}

func (f *fleet) bytes() int64    { return f.meter.Bytes() + f.meter0.Bytes() }
func (f *fleet) writes() int64   { return f.meter.KVWrites() + f.meter0.KVWrites() }
func (f *fleet) requests() int64 { return f.meter.Requests() + f.meter0.Requests() }

func (f *fleet) consulTicks(b *testing.B) (n int) {
	for _, pid := range f.cluster.PIDs() {
		n += cpuTicks(b, pid)
	}
	return n
}

func measureFleet(b *testing.B, f *fleet, changes int) fleetResult {
	var lat []time.Duration
	cpu0, bytes0, writes0, reqs0 := f.consulTicks(b), f.bytes(), f.writes(), f.requests()
	for c := 0; c < changes; c++ {
		lat = append(lat, f.change(b, (c*37)%f.tenants, c+1)...)
		time.Sleep(200 * time.Millisecond) // reads that trail the status writes
	}
	cpu1, bytes1, writes1, reqs1 := f.consulTicks(b), f.bytes(), f.writes(), f.requests()
	pct := percentiles(lat)
	return fleetResult{
		requestsPerServer:  float64(reqs1-reqs0) / float64(changes) / float64(f.servers),
		bytesPerServer:     float64(bytes1-bytes0) / float64(changes) / float64(f.servers),
		writesPerServer:    float64(writes1-writes0) / float64(changes) / float64(f.servers),
		p50:                pct[50],
		p99:                pct[99],
		max:                pct[100],
		consulCPUPerChange: time.Duration(cpu1-cpu0) * (time.Second / 100) / time.Duration(changes),
		consulRSS:          rssMiB(f.cluster.PIDs()...),
	}
}

func fleetCluster(b *testing.B) (*consultest.Cluster, []string) {
	c := consultest.StartCluster(b, 3)
	var addrs []string
	for _, a := range c.Servers {
		addrs = append(addrs, a.Addr)
	}
	return c, addrs
}

// BenchmarkFleet: bytes read and KV writes per single-tenant change per
// server, and PUT → applied on every server, with the index and
// acknowledgements, against every server watching the whole prefix and
// writing each tenant's status (the design before: the baseline) in the
// same run, at NFHOST_FLEET_BASELINE_SERVERS × NFHOST_FLEET_BASELINE_TENANTS
// (default: the same scale; 0 servers: no baseline). Run with
// -benchtime=1x.
func BenchmarkFleet(b *testing.B) {
	servers := fleetEnv("NFHOST_FLEET_SERVERS", 50)
	tenants := fleetEnv("NFHOST_FLEET_TENANTS", 1000)
	changes := fleetEnv("NFHOST_FLEET_CHANGES", 20)
	bServers, bTenants := servers, tenants
	if v, ok := os.LookupEnv("NFHOST_FLEET_BASELINE_SERVERS"); ok {
		bServers, _ = strconv.Atoi(v)
	}
	bTenants = fleetEnv("NFHOST_FLEET_BASELINE_TENANTS", bTenants)
	defer simGC()()
	for i := 0; i < b.N; i++ {
		c, addrs := fleetCluster(b)
		t0 := time.Now()
		fi := newFleet(b, c, "fleetidx", servers, tenants, fleetMode{acks: true}, addrs)
		converge := time.Since(t0)
		b.ReportMetric(rssMiB(os.Getpid()), "sim-process-rss-MiB")
		heapProfile(b)
		stopProfiles := fleetProfiles(b, c)
		idx := measureFleet(b, fi, changes)
		stopProfiles()
		fi.stop()
		b.ReportMetric(float64(servers), "servers")
		b.ReportMetric(float64(tenants), "tenants")
		b.ReportMetric(idx.bytesPerServer/1024, "index-KB/change/server")
		b.ReportMetric(idx.writesPerServer, "index-writes/change/server")
		b.ReportMetric(idx.requestsPerServer, "index-requests/change/server")
		b.ReportMetric(ms(idx.p50), "index-p50-ms")
		b.ReportMetric(ms(idx.p99), "index-p99-ms")
		b.ReportMetric(ms(idx.max), "index-max-ms")
		b.ReportMetric(ms(idx.consulCPUPerChange), "index-consul-cpu-ms/change")
		b.ReportMetric(idx.consulRSS, "index-consul-rss-MiB")
		b.ReportMetric(converge.Seconds(), "index-converge-s")
		if bServers <= 0 {
			continue
		}
		t1 := time.Now()
		fb := newFleet(b, c, "fleetall", bServers, bTenants, fleetMode{noIndex: true}, addrs)
		convergeAll := time.Since(t1)
		all := measureFleet(b, fb, changes)
		fb.stop()
		b.ReportMetric(float64(bServers), "baseline-servers")
		b.ReportMetric(float64(bTenants), "baseline-tenants")
		b.ReportMetric(all.bytesPerServer/1024, "prefix-KB/change/server")
		b.ReportMetric(all.writesPerServer, "prefix-writes/change/server")
		b.ReportMetric(all.requestsPerServer, "prefix-requests/change/server")
		b.ReportMetric(idx.bytesPerServer/all.bytesPerServer, "index/prefix-bytes")
		b.ReportMetric(ms(all.p50), "prefix-p50-ms")
		b.ReportMetric(ms(all.p99), "prefix-p99-ms")
		b.ReportMetric(ms(all.max), "prefix-max-ms")
		b.ReportMetric(ms(all.consulCPUPerChange), "prefix-consul-cpu-ms/change")
		b.ReportMetric(all.consulRSS, "prefix-consul-rss-MiB")
		b.ReportMetric(convergeAll.Seconds(), "prefix-converge-s")
	}
}

type sentChange struct {
	idx uint64
	at  time.Time
}

// writeChanges writes rate single-tenant changes a second for d, from
// version v on, and returns them. Up to 128 writes are in flight: tenants
// do not wait for each other, so the rate is offered whatever a write
// takes (with 16 a loaded Consul's 0.2 s per write held it to 80 a second).
func (f *fleet) writeChanges(b *testing.B, rate int, d time.Duration, v int) []sentChange {
	return f.writeChangesVia(b, f.cluster.Servers[0], rate, d, v, 0)
}

// writeChangesVia is writeChanges through agent a, numbering the changes
// from first. A write that fails is tried again for up to 30 s (a leader
// election); its PUT time stays the first try's.
func (f *fleet) writeChangesVia(b *testing.B, a *consultest.Agent, rate int, d time.Duration, v, first int) []sentChange {
	kv := a.Client.KV()
	n := int(d.Seconds() * float64(rate))
	out := make([]sentChange, n)
	start := time.Now()
	sem := make(chan struct{}, 128)
	var wg sync.WaitGroup
	for c := 0; c < n; c++ {
		time.Sleep(time.Until(start.Add(time.Duration(c) * time.Second / time.Duration(rate))))
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			i := ((first + c) * 37) % f.tenants
			t0 := time.Now()
			var (
				ok   bool
				resp *api.KVTxnResponse
				err  error
			)
			for {
				ok, resp, _, err = kv.Txn(api.KVTxnOps{{Verb: api.KVSet, Key: fmt.Sprintf("%s/tenants/t%d/network", f.prefix, i), Value: fleetDoc(i, v+first+c)}}, nil)
				if err == nil && ok || time.Since(t0) > 30*time.Second {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil || !ok {
				b.Errorf("change %d: %v", first+c, err)
				return
			}
			out[c] = sentChange{resp.Results[0].ModifyIndex, t0}
		}()
	}
	wg.Wait()
	return out
}

// BenchmarkFleetSustained: NFHOST_FLEET_RATE single-tenant changes a second
// (default 100) for NFHOST_FLEET_SECONDS (default 60) on a fleet of
// NFHOST_FLEET_SERVERS × NFHOST_FLEET_TENANTS acknowledging servers: PUT →
// acknowledged by every server, p50/p99/max over all changes and servers,
// and the p99 of the first and of the last 10 s (whether it grows). Then,
// with NFHOST_FLEET_CUT seconds (default 0: skipped), server 0 is cut off
// from Consul (its requests fail) while changes go on at 2 a second, and
// reconnected: the bytes it reads to catch up against one full listing,
// and whether what it holds is then exactly what Consul holds. With
// NFHOST_FLEET_LEADERCHANGE=1 the Consul leader is killed halfway through
// the changes and started again 5 s later (the changes go through another
// server meanwhile): every change must still be acknowledged by every
// server, and the servers that talked to the killed one must catch up.
func BenchmarkFleetSustained(b *testing.B) {
	servers := fleetEnv("NFHOST_FLEET_SERVERS", 50)
	tenants := fleetEnv("NFHOST_FLEET_TENANTS", 1000)
	rate := fleetEnv("NFHOST_FLEET_RATE", 100)
	secs := fleetEnv("NFHOST_FLEET_SECONDS", 60)
	cut := 0
	if v, err := strconv.Atoi(os.Getenv("NFHOST_FLEET_CUT")); err == nil {
		cut = v
	}
	defer simGC()()
	for i := 0; i < b.N; i++ {
		c, addrs := fleetCluster(b)
		f := newFleet(b, c, "fleetrun", servers, tenants, fleetMode{acks: true}, addrs)
		heapProfile(b)
		time.Sleep(time.Second)
		cpu0, bytes0, writes0, reqs0, t0 := f.consulTicks(b), f.bytes(), f.writes(), f.requests(), time.Now()
		stopProfiles := fleetProfiles(b, c)
		var sent []sentChange
		if os.Getenv("NFHOST_FLEET_LEADERCHANGE") == "1" {
			sent = fleetLeaderChange(b, f, rate, secs)
		} else {
			sent = f.writeChanges(b, rate, time.Duration(secs)*time.Second, 1)
		}
		took := time.Since(t0)
		stopProfiles()
		var all []time.Duration
		windows := map[int][]time.Duration{}
		deadline := time.Now().Add(2 * time.Minute)
		for _, s := range sent {
			for {
				lat, ok := f.log.acked(s.idx, s.at, servers)
				if ok {
					all = append(all, lat...)
					w := int(s.at.Sub(t0) / (10 * time.Second))
					windows[w] = append(windows[w], lat...)
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("change at index %d not acknowledged by every server 2 minutes after the run", s.idx)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		cpu1, bytes1, writes1, reqs1 := f.consulTicks(b), f.bytes(), f.writes(), f.requests()
		pct := percentiles(all)
		last := slices.Max(slices.Collect(maps.Keys(windows)))
		for w := 0; w <= last; w++ {
			p := percentiles(windows[w])
			b.Logf("changes written %d–%d s into the run: p50 %.0f ms, p99 %.0f ms", 10*w, 10*w+10, ms(p[50]), ms(p[99]))
		}
		n := float64(len(sent))
		b.ReportMetric(float64(servers), "servers")
		b.ReportMetric(float64(tenants), "tenants")
		b.ReportMetric(n/took.Seconds(), "changes/s")
		b.ReportMetric(ms(pct[50]), "p50-ms")
		b.ReportMetric(ms(pct[99]), "p99-ms")
		b.ReportMetric(ms(pct[100]), "max-ms")
		b.ReportMetric(ms(percentiles(windows[0])[99]), "p99-first10s-ms")
		b.ReportMetric(ms(percentiles(windows[last])[99]), "p99-last10s-ms")
		b.ReportMetric(float64(bytes1-bytes0)/n/float64(servers)/1024, "KB/change/server")
		b.ReportMetric(float64(writes1-writes0)/took.Seconds()/float64(servers), "writes/s/server")
		b.ReportMetric(float64(reqs1-reqs0)/took.Seconds()/float64(servers), "requests/s/server")
		b.ReportMetric(float64(cpu1-cpu0)/took.Seconds(), "consul-cpu-%")
		b.ReportMetric(rssMiB(c.PIDs()...), "consul-rss-MiB")
		b.ReportMetric(rssMiB(os.Getpid()), "sim-process-rss-MiB")
		if cut > 0 {
			fleetCutOff(b, f, time.Duration(cut)*time.Second)
		}
		f.stop()
	}
}

// fleetLeaderChange writes the changes of BenchmarkFleetSustained through
// a server that is not the leader, and kills the leader halfway through,
// restarting it (same data directory, same ports) 5 s later.
func fleetLeaderChange(b *testing.B, f *fleet, rate, secs int) []sentChange {
	leader := f.cluster.Leader(b)
	via := f.cluster.Servers[0]
	if via == leader {
		via = f.cluster.Servers[1]
	}
	half := time.Duration(secs) * time.Second / 2
	sent := f.writeChangesVia(b, via, rate, half, 1, 0)
	leader.Stop()
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(5 * time.Second)
		leader.Restart(b)
	}()
	sent = append(sent, f.writeChangesVia(b, via, rate, half, 1, len(sent))...)
	<-restarted
	b.ReportMetric(1, "leader-changes")
	b.Logf("leader %s killed %s into the run and started again 5 s later; new leader %s", leader.Addr, half, f.cluster.Leader(b).Addr)
	return sent
}

// fleetCutOff cuts server 0 off for d while changes go on, reconnects it
// and checks that it catches up exactly.
func fleetCutOff(b *testing.B, f *fleet, d time.Duration) {
	f.meter0.Cut(true)
	sent := f.writeChanges(b, 2, d, 1_000_000)
	before := f.meter0.Bytes()
	f.meter0.Cut(false)
	t0 := time.Now()
	want := sent[len(sent)-1].idx
	for {
		if f.log.lastAck("sim0") >= want {
			break
		}
		if time.Since(t0) > 5*time.Minute {
			b.Fatal("server 0 did not catch up within 5 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(t0)
	read := f.meter0.Bytes() - before
	// One full listing, for scale, and the marks Consul holds.
	m := consultest.NewMeter()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.HttpClient = f.addrs[0], m.Client()
	cl, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	pairs, _, err := cl.KV().List(f.prefix+"/tenants/", nil)
	if err != nil {
		b.Fatal(err)
	}
	want0 := map[string]uint64{}
	for _, p := range pairs {
		id, _, _ := strings.Cut(strings.TrimPrefix(p.Key, f.prefix+"/tenants/"), "/")
		want0[id] = max(want0[id], p.ModifyIndex)
	}
	got := f.snap0.marks()
	wrong := 0
	for id, idx := range want0 {
		if got[id] != idx {
			wrong++
		}
	}
	wrong += max(len(got)-len(want0), 0)
	if wrong > 0 {
		b.Fatalf("server 0 after the cut: %d tenants differ from Consul's", wrong)
	}
	b.ReportMetric(d.Seconds(), "cut-s")
	b.ReportMetric(float64(len(sent)), "cut-changes")
	b.ReportMetric(float64(read)/1024, "catch-up-KB")
	b.ReportMetric(float64(read)/float64(m.Bytes()), "catch-up/full-listing")
	b.ReportMetric(took.Seconds(), "catch-up-s")
}
