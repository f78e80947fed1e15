package e2e

// Faults an operator meets: a fresh or wiped Consul, a hung Consul, held
// deletions confirmed once, prefixes swapped in one transaction, nsd killed
// during a cold start, status of tenants that are gone, values too large.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/internal/namedns"
)

// kvIndex is Consul's KV index: it moves with every KV write.
func (l *lab) kvIndex() uint64 {
	l.t.Helper()
	_, meta, err := l.consul.Client.KV().Get("nfhost-index-probe", nil)
	if err != nil {
		l.t.Fatalf("read kv index: %v", err)
	}
	return meta.LastIndex
}

// cpuTicks is the CPU time a process used, in clock ticks (1/100 s).
func cpuTicks(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read process stat: %v", err)
	}
	// Fields after the command name (which may hold spaces): utime is the
	// 14th field, stime the 15th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// quiet measures KV writes per second and nsd's CPU share over d.
func (l *lab) quiet(d time.Duration) (writesPerSec, cpuShare float64) {
	i0, c0 := l.kvIndex(), cpuTicks(l.t, l.nsd.cmd.Process.Pid)
	time.Sleep(d)
	i1, c1 := l.kvIndex(), cpuTicks(l.t, l.nsd.cmd.Process.Pid)
	return float64(i1-i0) / d.Seconds(), float64(c1-c0) / 100 / d.Seconds()
}

// assertQuiet fails if nsd writes to Consul in a loop or burns CPU. With
// --resync-interval 1s nsd may write its host status once a second.
func (l *lab) assertQuiet(what string) {
	l.t.Helper()
	w, cpu := l.quiet(3 * time.Second)
	l.t.Logf("%s: %.1f KV writes/s, nsd CPU %.1f%%", what, w, cpu*100)
	if w > 3 {
		l.t.Errorf("%s: %.1f KV writes a second (a write loop?)", what, w)
	}
	if cpu > 0.15 {
		l.t.Errorf("%s: nsd used %.0f%% of a core while nothing changed", what, cpu*100)
	}
}

func (l *lab) token() string {
	l.t.Helper()
	out, _ := l.nsctl("status", "--host", l.hostID)
	i := strings.Index(out, "--token ")
	if i < 0 {
		l.t.Fatalf("no confirm token in status:\n%s", out)
	}
	return strings.Fields(out[i+len("--token "):])[0]
}

// confirmDeletes lets the host's held deletions through with the token its
// status shows.
func (l *lab) confirmDeletes() {
	l.t.Helper()
	if out, code := l.nsctl("confirm-deletes", "--host", l.hostID, "--token", l.token()); code != 0 {
		l.t.Fatalf("confirm: %d %s", code, out)
	}
}

func (l *lab) waitApplied(ids ...string) {
	l.t.Helper()
	for _, id := range ids {
		eventuallyFor(l.t, 30*time.Second, id+" applied", func() bool { return strings.Contains(l.status(id), "applied") })
	}
}

func (l *lab) namespaces() int {
	l.t.Helper()
	names, err := namedns.List(namedns.DefaultDir, l.nsPrefix)
	if err != nil {
		l.t.Fatal(err)
	}
	return len(names)
}

// A fresh Consul (no key ever written under nfhost/tenants/) and a wiped
// one: nsd neither writes in a loop nor spins, logs the hold once, and a
// confirmation lets exactly one hold through.
func TestFreshAndWipedStore(t *testing.T) {
	l := newLab(t)
	p := l.startNSD()
	eventually(t, "host status written", func() bool {
		kv, _, _ := l.consul.Client.KV().Get("nfhost/host-status/"+l.hostID, nil)
		return kv != nil
	})
	l.assertQuiet("fresh store")

	ids := []string{"w0", "w1", "w2"}
	for i, id := range ids {
		l.applyTenant(id, fmt.Sprintf(`{"prefixes": ["203.0.113.%d/26"]}`, i*64))
	}
	l.waitApplied(ids...)
	wipe := func() {
		if _, err := l.consul.Client.KV().DeleteTree("nfhost/tenants/", nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, "hold reported", func() bool {
			out, _ := l.nsctl("status", "--host", l.hostID)
			return strings.Contains(out, "HOLDING deletion of 3 tenants")
		})
	}
	wipe()
	l.assertQuiet("wiped store, deletions held")
	if n := strings.Count(p.Log(), "HOLDING mass delete"); n != 1 {
		t.Errorf("the hold was logged %d times, want once", n)
	}
	if l.namespaces() != 3 {
		t.Fatalf("held tenants lost their namespaces")
	}
	first := l.token()
	if out, code := l.nsctl("confirm-deletes", "--host", l.hostID, "--token", first); code != 0 {
		t.Fatalf("confirm: %d %s", code, out)
	}
	eventually(t, "deletions after the confirmation", func() bool { return l.namespaces() == 0 })

	// The same tenants back, the store wiped again: the confirmation
	// still in the control key is spent and lets nothing through.
	for i, id := range ids {
		l.applyTenant(id, fmt.Sprintf(`{"prefixes": ["203.0.113.%d/26"]}`, i*64))
	}
	l.waitApplied(ids...)
	wipe()
	time.Sleep(3 * time.Second) // several resyncs
	if n := l.namespaces(); n != 3 {
		t.Fatalf("an old confirmation deleted %d tenants", 3-n)
	}
	if second := l.token(); second == first {
		t.Fatalf("the second hold has the first one's token %s", first)
	}
}

// Consul restarts empty (a new cluster): the host's only tenant is held,
// not deleted, through restarts of nsd too.
func TestNewConsulClusterHoldsOnlyTenant(t *testing.T) {
	l := newLab(t)
	l.startNSD()
	l.applyTenant("solo", `{"prefixes": ["203.0.113.0/24"]}`)
	l.waitApplied("solo")
	l.consul.Restart(t)
	defer func() {
		if t.Failed() {
			t.Log(l.nsd.Log())
		}
	}()
	eventually(t, "hold reported", func() bool {
		out, _ := l.nsctl("status", "--host", l.hostID)
		return strings.Contains(out, "HOLDING deletion of 1 tenants")
	})
	l.nsd.stop(t)
	l.startNSD()
	time.Sleep(3 * time.Second)
	if l.namespaces() != 1 {
		t.Fatal("the only tenant was deleted after Consul came back empty")
	}
	l.confirmDeletes()
	eventually(t, "deleted after the confirmation", func() bool { return l.namespaces() == 0 })
}

// One Consul transaction swaps two prefixes between tenants: both apply,
// and the nft map sends each prefix to its new owner.
func TestPrefixSwapInOneTransaction(t *testing.T) {
	l := newLab(t)
	l.startNSD()
	a, b := "203.0.113.128/28", "203.0.113.112/28"
	l.applyTenant("mv1", fmt.Sprintf(`{"prefixes": [%q]}`, a))
	l.applyTenant("mv2", fmt.Sprintf(`{"prefixes": [%q]}`, b))
	l.waitApplied("mv1", "mv2")
	ops := api.TxnOps{
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "nfhost/tenants/mv1/network", Value: []byte(fmt.Sprintf(`{"prefixes": [%q]}`, b))}},
		{KV: &api.KVTxnOp{Verb: api.KVSet, Key: "nfhost/tenants/mv2/network", Value: []byte(fmt.Sprintf(`{"prefixes": [%q]}`, a))}},
	}
	if ok, resp, _, err := l.consul.Client.Txn().Txn(ops, nil); err != nil || !ok {
		t.Fatalf("txn: %v %+v", err, resp)
	}
	index := func(id string) uint64 {
		kv, _, _ := l.consul.Client.KV().Get("nfhost/tenants/"+id+"/network", nil)
		return kv.ModifyIndex
	}
	for _, id := range []string{"mv1", "mv2"} {
		want := strconv.FormatUint(index(id), 10)
		eventually(t, id+" applies the swap", func() bool {
			f := strings.Fields(l.status(id))
			return len(f) >= 4 && f[2] == "applied" && f[3] == want
		})
	}
	// Traffic to each prefix reaches its new owner.
	l.tenantNS("mv1").MustExec(t, "ip", "addr", "add", "203.0.113.113/32", "dev", "lo")
	l.tenantNS("mv2").MustExec(t, "ip", "addr", "add", "203.0.113.129/32", "dev", "lo")
	l.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.113")
	l.client.MustExec(t, "ping", "-c1", "-W2", "203.0.113.129")
}

// Consul hangs (SIGSTOP: the socket stays open, nothing answers): nsctl
// gives up after its timeout with a clear error, an nsd started meanwhile
// reports the source unhealthy in its metrics within a bounded time, and
// both recover once Consul answers again.
func TestHungConsul(t *testing.T) {
	l := newLab(t)
	l.consul.Signal(t, syscall.SIGSTOP)
	defer l.consul.Signal(t, syscall.SIGCONT)

	start := time.Now()
	out, code := l.nsctl("--timeout", "2s", "status")
	if took := time.Since(start); code != 1 || !strings.Contains(out, "did not answer within 2s") || took > 10*time.Second {
		t.Fatalf("nsctl status against a hung consul: exit %d after %v:\n%s", code, took, out)
	}
	f := filepath.Join(t.TempDir(), "t.json")
	os.WriteFile(f, []byte(`{"id": "hung", "network": {"prefixes": ["203.0.113.0/24"]}}`), 0o644)
	if out, code := l.nsctl("--timeout", "2s", "tenant", "apply", "-f", f); code != 1 || !strings.Contains(out, "did not answer") {
		t.Fatalf("nsctl tenant apply against a hung consul: exit %d:\n%s", code, out)
	}

	addr := freeAddr(t)
	p := l.startNSD("--metrics-addr", addr)
	metric := func(name string) string { return metricText(addr, name) }
	took := eventuallyFor(t, 30*time.Second, "nsd reports the hung source", func() bool {
		return metric("nfhost_source_up") == "0" && metric("nfhost_source_errors_total") != "0" && metric("nfhost_source_errors_total") != ""
	})
	t.Logf("hung consul reported after %v", took)
	if !strings.Contains(p.Log(), "config source unavailable") {
		t.Errorf("no warning logged:\n%s", p.Log())
	}

	l.consul.Signal(t, syscall.SIGCONT)
	eventuallyFor(t, 30*time.Second, "recovery logged", func() bool {
		return strings.Contains(p.Log(), "config source available again") && metric("nfhost_source_up") == "1"
	})
	l.applyTenant("after", `{"prefixes": ["203.0.113.0/24"]}`)
	l.waitApplied("after")
}

// nsd is killed (SIGKILL) at random points of a 300-tenant cold start,
// three times; the fourth run converges to exactly 300 tenants with
// nothing leaked, and deleting them all leaves nothing behind.
func TestKilledDuringColdStart(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP (-short): 300-tenant cold start")
	}
	l := newLab(t)
	const n = 300
	var ops api.TxnOps
	flush := func() {
		if ok, resp, _, err := l.consul.Client.Txn().Txn(ops, nil); err != nil || !ok {
			t.Fatalf("txn: %v %+v", err, resp)
		}
		ops = nil
	}
	for i := 0; i < n; i++ {
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("nfhost/tenants/k%03d/network", i),
			Value: []byte(fmt.Sprintf(`{"prefixes": ["198.18.%d.%d/30"]}`, i/64, (i%64)*4))}})
		if len(ops) == 64 {
			flush()
		}
	}
	flush()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for round := 0; round < 3; round++ {
		p := l.startNSD()
		d := time.Duration(300+rng.IntN(2500)) * time.Millisecond
		time.Sleep(d)
		p.cmd.Process.Kill()
		<-p.done
		t.Logf("round %d: killed after %v with %d namespaces", round, d, l.namespaces())
	}
	l.startNSD()
	eventuallyFor(t, 90*time.Second, "all tenants applied", func() bool {
		out, _ := l.nsctl("status", "--host", l.hostID)
		return strings.Count(out, " applied ") == n
	})
	count := func() (ns, links, rules, elems int) {
		ns = l.namespaces()
		links = strings.Count(l.edge.MustExec(t, "ip", "-o", "link", "show"), "nfhost:tenant=")
		rules = strings.Count(l.edge.MustExec(t, "ip", "rule"), "1600:") + strings.Count(l.edge.MustExec(t, "ip", "-6", "rule"), "1600:")
		elems = strings.Count(l.edge.MustExec(t, "nft", "list", "map", "inet", "nfhost", "tenant_marks4"), "198.18.")
		return
	}
	if ns, links, rules, elems := count(); ns != n || links != n || rules != 2*n || elems != n {
		t.Fatalf("after convergence: %d namespaces, %d links, %d rules, %d map elements; want %d, %d, %d, %d", ns, links, rules, elems, n, n, 2*n, n)
	}
	l.consul.Client.KV().DeleteTree("nfhost/tenants/", nil)
	eventually(t, "hold", func() bool {
		out, _ := l.nsctl("status", "--host", l.hostID)
		return strings.Contains(out, "HOLDING")
	})
	l.confirmDeletes()
	eventuallyFor(t, 60*time.Second, "everything removed", func() bool {
		ns, links, rules, elems := count()
		return ns == 0 && links == 0 && rules == 0 && elems == 0
	})
}

// The status of a tenant that never applied goes with its keys, also when
// the keys are deleted while nsd is down; nsctl status stops listing it.
func TestStatusOfGoneTenants(t *testing.T) {
	l := newLab(t)
	l.startNSD()
	l.applyTenant("good", `{"prefixes": ["203.0.113.0/24"]}`)
	l.applyTenantRaw("bad1", `{"prefixes": ["198.51.100.0/33"]}`)
	l.applyTenantRaw("bad2", `{"prefixes": ["198.51.100.0/33"]}`)
	l.waitApplied("good")
	for _, id := range []string{"bad1", "bad2"} {
		eventually(t, id+" error", func() bool { return strings.Contains(l.status(id), "error") })
	}
	l.nsctl("tenant", "delete", "bad1")
	eventually(t, "bad1's status removed", func() bool { return l.status("bad1") == "" })
	l.nsd.stop(t)
	l.nsctl("tenant", "delete", "bad2")
	l.startNSD()
	eventually(t, "bad2's status removed after a restart", func() bool { return l.status("bad2") == "" })
	if l.status("good") == "" {
		t.Fatal("the good tenant's status went too")
	}
}

// A document over Consul's value limit (512 KiB by default) gets an error
// that names the limit, from nsctl.
func TestValueTooLarge(t *testing.T) {
	l := newLab(t)
	l.applyTenantRaw("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	var b strings.Builder
	b.WriteString(`{"default": "allow", "rules": [], "lists": {"big": [`)
	for i := 0; i < 40000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"10.%d.%d.0/24"`, i/256, i%256)
	}
	b.WriteString(`]}}`)
	f := filepath.Join(t.TempDir(), "fw.json")
	os.WriteFile(f, []byte(b.String()), 0o644)
	out, code := l.nsctl("fw", "put", "acme", "-f", f)
	if code != 1 || !strings.Contains(out, "kv_max_value_size") || !strings.Contains(out, "bytes") {
		t.Fatalf("nsctl fw put of %d bytes: exit %d\n%s", b.Len(), code, out)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A tunnel's first health verdict reaches its status at once, not at the
// next resync (here a minute away).
func TestFirstTunnelHealthPublishedAtOnce(t *testing.T) {
	l := newLab(t)
	l.addCustomer()
	l.startNSD("--resync-interval", "60s")
	l.consul.Put(t, "nfhost/tenants/acme/network", tunnelNetwork)
	l.waitApplied("acme")
	took := eventuallyFor(t, 15*time.Second, "both tunnels healthy in the status", func() bool {
		out, _ := l.nsctl("tunnels", "acme", "--host", l.hostID)
		return strings.Count(out, "healthy") == 2
	})
	t.Logf("first health state published %v after the tenant applied", took)
}

// An uplink without an IPv4 address (and no --probe-address): nsd starts
// and applies tenants without tunnels; only a tenant with tunnels fails,
// saying what is missing.
func TestUplinkWithoutIPv4(t *testing.T) {
	l := newLab(t)
	l.edge.MustExec(t, "ip", "addr", "del", "192.0.2.2/24", "dev", "uplink")
	p := l.startNSD()
	l.applyTenant("plain", `{"prefixes": ["203.0.113.0/25"]}`)
	l.waitApplied("plain")
	l.consul.Put(t, "nfhost/tenants/acme/network", strings.Replace(tunnelNetwork, "203.0.113.0/24", "203.0.113.128/25", -1))
	eventually(t, "the tenant with tunnels fails, naming the probe address", func() bool {
		st := l.status("acme")
		return strings.Contains(st, "error") && strings.Contains(st, "set --probe-address")
	})
	if strings.Contains(p.Log(), "level=ERROR msg=\"start") {
		t.Fatalf("nsd failed to start:\n%s", p.Log())
	}
}
