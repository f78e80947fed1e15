package source_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// storeContract runs the same behaviour checks on every Store.
func storeContract(t *testing.T, st source.Store, rawPut func(key, value string)) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snaps := make(chan source.Snapshot, 16)
	go st.Watch(ctx, snaps, func(err error) { t.Logf("watch error: %v", err) })
	next := func() source.Snapshot {
		t.Helper()
		select {
		case s := <-snaps:
			return s
		case <-ctx.Done():
			t.Fatal("no snapshot")
			return source.Snapshot{}
		}
	}
	if s := next(); len(s.Tenants) != 0 {
		t.Fatalf("initial snapshot %+v", s)
	}
	if err := st.Put(ctx, "acme", "network", []byte(`{"prefixes":[]}`), 0); err != nil {
		t.Fatal(err)
	}
	s := next()
	e, ok := s.Tenants["acme"]["network"]
	if !ok || string(e.Value) != `{"prefixes":[]}` || e.ModifyIndex == 0 {
		t.Fatalf("snapshot after put: %+v", s)
	}
	// Check-and-set: a stale index loses.
	if err := st.Put(ctx, "acme", "network", []byte(`{"prefixes":["203.0.113.0/24"]}`), e.ModifyIndex+12345); !errors.Is(err, source.ErrConflict) {
		t.Fatalf("stale CAS: %v", err)
	}
	if err := st.Put(ctx, "acme", "network", []byte(`{}`), 0); !errors.Is(err, source.ErrConflict) {
		t.Fatalf("create over existing: %v", err)
	}
	if err := st.Put(ctx, "acme", "network", []byte(`{"prefixes":["203.0.113.0/24"]}`), e.ModifyIndex); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.Tenants["acme"]["network"].ModifyIndex == e.ModifyIndex {
		t.Fatal("index did not move")
	}
	// Bad tenant IDs are reported, not fatal.
	rawPut("Bad_Tenant", `{}`)
	if s := next(); len(s.Problems) != 1 || len(s.Tenants) != 1 {
		t.Fatalf("problems %v tenants %v", s.Problems, s.Tenants)
	}
	if err := st.PutControl(ctx, "confirm-deletes/edge1", []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if s := next(); string(s.Control["confirm-deletes/edge1"].Value) != "abc" {
		t.Fatalf("control %+v", s.Control)
	}
	// The fleet-wide DoS document, with check-and-set.
	if err := st.PutDoSGlobal(ctx, []byte(`{"deny":["192.0.2.66"]}`), 0); err != nil {
		t.Fatal(err)
	}
	g := next().DoSGlobal
	if g == nil || string(g.Value) != `{"deny":["192.0.2.66"]}` {
		t.Fatalf("dos/global %+v", g)
	}
	if err := st.PutDoSGlobal(ctx, []byte(`{}`), g.ModifyIndex+999); !errors.Is(err, source.ErrConflict) {
		t.Fatalf("stale CAS on dos/global: %v", err)
	}
	if err := st.PutDoSGlobal(ctx, []byte(`{"mode":"monitor"}`), g.ModifyIndex); err != nil {
		t.Fatal(err)
	}
	if g2 := next().DoSGlobal; g2 == nil || string(g2.Value) != `{"mode":"monitor"}` {
		t.Fatalf("dos/global after update %+v", g2)
	}
	if err := st.PutStatus(ctx, "edge1", "acme", source.Status{Tenant: "acme", State: "applied"}); err != nil {
		t.Fatal(err)
	}
	all, err := st.ListStatus(ctx, "")
	if err != nil || len(all["edge1"]) != 1 {
		t.Fatalf("status %v %v", all, err)
	}
	if err := st.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteTenant(ctx, "acme"); !errors.Is(err, source.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if s, err := st.Read(ctx); err != nil || len(s.Tenants) != 0 {
		t.Fatalf("read after delete: %+v %v", s, err)
	}
}

func TestConsulStore(t *testing.T) {
	a := consultest.Start(t)
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	st, err := source.NewConsul(cfg, "nfhost")
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, st, func(k, v string) { a.Put(t, "nfhost/tenants/"+k+"/network", v) })
}

func TestDirStore(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	st := source.NewDir(root, state)
	st.Poll = 10 * time.Millisecond
	storeContract(t, st, func(k, v string) {
		os.MkdirAll(filepath.Join(root, k), 0o755)
		os.WriteFile(filepath.Join(root, k, "network.json"), []byte(v), 0o644)
	})
}

func TestConsulUnreachableRetries(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.Address = "127.0.0.1:1" // nothing listens
	st, _ := source.NewConsul(cfg, "nfhost")
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	errs := 0
	st.Watch(ctx, make(chan source.Snapshot), func(error) { errs++ })
	// Backoff 250ms, 500ms, ...: a handful of attempts per watched prefix
	// (tenants, control, dos, lists), not a busy loop.
	if errs < 2 || errs > 14 {
		t.Fatalf("%d attempts in 1.2s", errs)
	}
}

// A Consul that accepts connections and never answers (a stopped process,
// a hung server): every request gives up after Timeout with ErrTimeout,
// and Watch reports the source unhealthy within a bounded time.
func TestConsulHungAnswersWithTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	cfg := api.DefaultConfig()
	cfg.Address = ln.Addr().String()
	st, _ := source.NewConsul(cfg, "nfhost")
	st.Timeout, st.HealthInterval, st.WaitTime = 300*time.Millisecond, 200*time.Millisecond, time.Minute
	start := time.Now()
	if _, err := st.Read(context.Background()); !errors.Is(err, source.ErrTimeout) {
		t.Fatalf("read from a hung consul: %v", err)
	}
	if err := st.Put(context.Background(), "acme", "network", []byte(`{}`), 0); !errors.Is(err, source.ErrTimeout) || !strings.Contains(err.Error(), "did not answer within") {
		t.Fatalf("put to a hung consul: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("two requests took %v with a 300ms timeout", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	unhealthy := make(chan error, 16)
	go st.Watch(ctx, make(chan source.Snapshot), func(err error) {
		if err != nil {
			select {
			case unhealthy <- err:
			default:
			}
		}
	})
	select {
	case err := <-unhealthy:
		if !errors.Is(err, source.ErrTimeout) {
			t.Fatalf("health report: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("a hung consul was not reported while blocking queries hang")
	}
}

// Status layout: a tenant's status from every host is one prefix; the
// host report lives apart; the old layout of a host is removed.
func TestConsulStatusLayout(t *testing.T) {
	a := consultest.Start(t)
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	st, _ := source.NewConsul(cfg, "nfhost")
	ctx := context.Background()
	for _, h := range []string{"edge1", "edge2"} {
		st.PutStatus(ctx, h, "acme", source.Status{Tenant: "acme", Host: h, State: "applied"})
		st.PutStatus(ctx, h, source.HostStatusName, source.HostStatus{Host: h})
	}
	st.PutStatus(ctx, "edge1", "beta", source.Status{Tenant: "beta", State: "applied"})
	keys, _, _ := a.Client.KV().Keys("nfhost/", "", nil)
	want := "[nfhost/host-status/edge1 nfhost/host-status/edge2 nfhost/tenant-status/acme/edge1 nfhost/tenant-status/acme/edge2 nfhost/tenant-status/beta/edge1]"
	if fmt.Sprint(keys) != want {
		t.Fatalf("keys %v\nwant %s", keys, want)
	}
	acme, err := st.ListTenantStatus(ctx, "acme")
	if err != nil || len(acme) != 2 || acme["edge2"] == nil {
		t.Fatalf("acme's status: %v %v", acme, err)
	}
	one, _ := st.ListStatus(ctx, "edge1")
	if len(one) != 1 || len(one["edge1"]) != 3 {
		t.Fatalf("edge1's status: %v", one)
	}
	a.Put(t, "nfhost/status/edge1/acme", `{}`)
	a.Put(t, "nfhost/status/edge1/_host", `{}`)
	a.Put(t, "nfhost/status/edge2/acme", `{}`)
	if removed, err := st.RemoveLegacyStatus(ctx, "edge1"); !removed || err != nil {
		t.Fatalf("remove legacy: %v %v", removed, err)
	}
	left, _, _ := a.Client.KV().Keys("nfhost/status/", "", nil)
	if fmt.Sprint(left) != "[nfhost/status/edge2/acme]" {
		t.Fatalf("legacy keys left: %v (only edge1's may go)", left)
	}
}

// ConfirmKey is part of the store layout: nsd and nsctl must agree on it,
// and operators write it by hand with consul kv put.
func TestConfirmKey(t *testing.T) {
	if got := source.ConfirmKey("edge1"); got != "confirm-deletes/edge1" {
		t.Fatalf("ConfirmKey(edge1) = %q", got)
	}
}

// Shared lists: <prefix>/lists/<name> and its parts <name>/<part>, in
// key order; the directory source's DIR/_lists/<name>.json.
func TestSharedLists(t *testing.T) {
	check := func(t *testing.T, st source.Store, put func(key, value string)) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		snaps := make(chan source.Snapshot, 16)
		go st.Watch(ctx, snaps, nil)
		wait := func(ok func(source.Snapshot) bool) source.Snapshot {
			t.Helper()
			for {
				select {
				case s := <-snaps:
					if ok(s) {
						return s
					}
				case <-ctx.Done():
					t.Fatal("no snapshot with the lists")
				}
			}
		}
		<-snaps
		put("threats", `["192.0.2.0/24"]`)
		s := wait(func(s source.Snapshot) bool { return len(s.Lists["threats"]) == 1 })
		if string(s.Lists["threats"][0].Value) != `["192.0.2.0/24"]` {
			t.Fatalf("lists %+v", s.Lists)
		}
		put("threats", `["192.0.2.0/25"]`)
		wait(func(s source.Snapshot) bool {
			return len(s.Lists["threats"]) == 1 && string(s.Lists["threats"][0].Value) == `["192.0.2.0/25"]`
		})
	}
	t.Run("consul", func(t *testing.T) {
		a := consultest.Start(t, consultest.WithPorts(28700))
		cfg := api.DefaultConfig()
		cfg.Address = a.Addr
		st, err := source.NewConsul(cfg, "nfhost")
		if err != nil {
			t.Fatal(err)
		}
		check(t, st, func(k, v string) { a.Put(t, "nfhost/lists/"+k, v) })
		// Parts are concatenated in key order.
		a.Put(t, "nfhost/lists/big/0001", `["198.51.100.0/24"]`)
		a.Put(t, "nfhost/lists/big/0000", `["203.0.113.0/24"]`)
		s, err := st.Read(context.Background())
		if err != nil || len(s.Lists["big"]) != 2 || string(s.Lists["big"][0].Value) != `["203.0.113.0/24"]` {
			t.Fatalf("parts %+v %v", s.Lists, err)
		}
	})
	t.Run("dir", func(t *testing.T) {
		root := t.TempDir()
		st := source.NewDir(root, t.TempDir())
		st.Poll = 10 * time.Millisecond
		os.MkdirAll(filepath.Join(root, "_lists"), 0o755)
		check(t, st, func(k, v string) { os.WriteFile(filepath.Join(root, "_lists", k+".json"), []byte(v), 0o644) })
	})
}

// A control key being written (the temporary file of writeAtomic, renamed
// into place a moment later) is not a control key of its own, and a file
// that goes away while the tree is read is simply not there: the dir
// store once listed ".<name>.tmp" with its partial content as a key, and
// failed the whole read when the file had been renamed before it was read.
func TestDirControlSkipsFilesBeingWritten(t *testing.T) {
	root := t.TempDir()
	st := source.NewDir(root, t.TempDir())
	ctx := context.Background()
	if err := st.PutControl(ctx, "top/watch/req1", []byte(`{"query": "tenant=acme"}`)); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(root, "_control", "top", "watch", ".req2.tmp")
	if err := os.WriteFile(tmp, []byte(`{"qu`), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := st.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Control) != 1 || string(s.Control["top/watch/req1"].Value) != `{"query": "tenant=acme"}` {
		t.Fatalf("control keys: %v", s.Control)
	}
}

// storeVia is a store of a's whose requests go through rt.
func storeVia(t *testing.T, a *consultest.Agent, rt http.RoundTripper) *source.Consul {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.HttpClient = a.Addr, &http.Client{Transport: rt}
	st, err := source.NewConsul(cfg, "nfhost")
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// requestLog is an http.RoundTripper that notes each request's path and
// Accept-Encoding header, and the Content-Encoding of its answer.
type requestLog struct {
	mu   sync.Mutex
	reqs []string    // "<path> <accept-encoding> <content-encoding>"
	cut  atomic.Bool // every request fails
}

func (l *requestLog) RoundTrip(r *http.Request) (*http.Response, error) {
	if l.cut.Load() {
		return nil, errors.New("cut off (test)")
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	enc := "-"
	if err == nil {
		enc = resp.Header.Get("Content-Encoding")
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, r.URL.Path+" "+r.Header.Get("Accept-Encoding")+" "+enc)
	l.mu.Unlock()
	return resp, err
}

func (l *requestLog) count(path string) (n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reqs {
		if strings.HasPrefix(r, path+" ") {
			n++
		}
	}
	return n
}

// The store asks for uncompressed answers (compressing them costs the
// agent CPU, for a few KB on loopback), and its health probe makes no
// request while nsd's own requests succeed: a request sent within the
// interval proves that the agent answers and takes the token. On a quiet
// store the probe runs again.
func TestConsulProbeAndEncoding(t *testing.T) {
	a := consultest.Start(t)
	log := &requestLog{}
	st := storeVia(t, a, log)
	st.HealthInterval = 100 * time.Millisecond
	big := strings.Repeat(`{"id": "r", "expression": "tcp.dstport == 22", "action": "block"},`, 100)
	a.Put(t, "nfhost/tenants/acme/firewall", `{"rules": [`+strings.TrimSuffix(big, ",")+`]}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan source.Snapshot, 64)
	go st.Watch(ctx, snaps, func(error) {})
	<-snaps
	// Busy: a write every 20 ms for a second.
	probes := log.count("/v1/status/leader")
	for i := 0; i < 50; i++ {
		if err := st.PutStatus(ctx, "edge1", "acme", map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := log.count("/v1/status/leader") - probes; n > 1 {
		t.Errorf("%d probes during a second of successful writes, want at most 1", n)
	}
	// Quiet: the probe asks again.
	probes = log.count("/v1/status/leader")
	time.Sleep(time.Second)
	if n := log.count("/v1/status/leader") - probes; n < 3 {
		t.Errorf("%d probes in a quiet second with a 100 ms interval, want several", n)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, r := range log.reqs {
		if f := strings.Fields(r); len(f) < 2 || f[1] != "identity" || strings.Contains(r, "gzip") {
			t.Errorf("request %q: want Accept-Encoding identity and no gzip answer", r)
		}
	}
}
