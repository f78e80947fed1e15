package source_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

func meteredStore(t *testing.T, a *consultest.Agent) (*source.Consul, *consultest.Meter) {
	m := consultest.NewMeter()
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	cfg.HttpClient = m.Client()
	st, err := source.NewConsul(cfg, "nfhost")
	if err != nil {
		t.Fatal(err)
	}
	st.WaitTime, st.Timeout = time.Second, 5*time.Second
	return st, m
}

func plainStore(t *testing.T, a *consultest.Agent) *source.Consul {
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	st, err := source.NewConsul(cfg, "nfhost")
	if err != nil {
		t.Fatal(err)
	}
	st.WaitTime = time.Second
	return st
}

// tenantDoc is a network document of about 1 KB.
func tenantDoc(i, v int) string {
	return fmt.Sprintf(`{"prefixes": ["198.18.%d.%d/32"], "note": %q}`, i/256, i%256, strings.Repeat(fmt.Sprint(v), 1000))
}

// snapshots collects Watch's snapshots.
type snapshots struct {
	mu   sync.Mutex
	last source.Snapshot
	n    int
	ch   chan source.Snapshot
}

func watch(t *testing.T, ctx context.Context, st *source.Consul) *snapshots {
	s := &snapshots{ch: make(chan source.Snapshot)}
	go st.Watch(ctx, s.ch, nil)
	go func() {
		for {
			select {
			case snap := <-s.ch:
				s.mu.Lock()
				s.last, s.n = snap, s.n+1
				s.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	return s
}

// until waits for a snapshot that satisfies ok.
func (s *snapshots) until(t *testing.T, what string, ok func(source.Snapshot) bool) source.Snapshot {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		snap, n := s.last, s.n
		s.mu.Unlock()
		if n > 0 && ok(snap) {
			return snap
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no snapshot with %s", what)
	return source.Snapshot{}
}

func (s *snapshots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// waitFollowing waits until st's Watch follows the journal (a follower
// that started before the first journal switches at its next wake-up).
func waitFollowing(t *testing.T, st *source.Consul) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !st.Following() {
		if time.Now().After(deadline) {
			t.Fatal("the follower does not follow the journal")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func indexOf(snap source.Snapshot, id string) uint64 {
	return snap.Tenants[id]["network"].ModifyIndex
}

func startIndexer(t *testing.T, ctx context.Context, a *consultest.Agent) (context.CancelFunc, <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	st := plainStore(t, a)
	host := fmt.Sprintf("test-%p", st)
	go func() { st.RunIndexer(ctx, host, slog.New(slog.DiscardHandler), nil); close(done) }()
	return cancel, done
}

// With an indexer, one tenant's change costs a watching server the journal
// and that tenant's keys, not the whole prefix; a write elsewhere in the
// store costs nothing; deletes and raw writes are picked up.
func TestIndexedWatchReadsOnlyWhatChanged(t *testing.T) {
	a := consultest.Start(t)
	const n = 200
	for i := 0; i < n; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopIdx, _ := startIndexer(t, ctx, a)
	defer stopIdx()
	st, m := meteredStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, fmt.Sprintf("%d tenants", n), func(s source.Snapshot) bool { return len(s.Tenants) == n })
	full := m.Bytes()
	// The follower switches to the journal within a blocking wait.
	time.Sleep(2500 * time.Millisecond)

	for round := 1; round <= 5; round++ {
		before := m.Bytes()
		a.Put(t, "nfhost/tenants/t7/network", tenantDoc(7, round))
		pair, _, _ := a.Client.KV().Get("nfhost/tenants/t7/network", nil)
		s.until(t, "t7's change", func(s source.Snapshot) bool { return indexOf(s, "t7") == pair.ModifyIndex })
		time.Sleep(200 * time.Millisecond) // let any further reads of this change happen
		got := m.Bytes() - before
		t.Logf("change %d: %d bytes read (the whole prefix: %d)", round, got, full)
		if got > 16<<10 || got*5 > full {
			t.Fatalf("one tenant's change read %d bytes; the whole prefix is %d", got, full)
		}
	}

	// A write outside the tenants: no snapshot, no tenant read.
	before, sent := m.Bytes(), s.count()
	a.Put(t, "elsewhere/x", "1")
	time.Sleep(1500 * time.Millisecond)
	if s.count() != sent || m.Bytes()-before > 8<<10 {
		t.Fatalf("a write elsewhere: %d snapshots, %d bytes", s.count()-sent, m.Bytes()-before)
	}

	// A delete, and a second key of a tenant.
	if _, err := a.Client.KV().DeleteTree("nfhost/tenants/t8/", nil); err != nil {
		t.Fatal(err)
	}
	a.Put(t, "nfhost/tenants/t9/firewall", `{"rules": []}`)
	s.until(t, "t8 gone and t9's firewall", func(s source.Snapshot) bool {
		_, t8 := s.Tenants["t8"]
		_, fw := s.Tenants["t9"]["firewall"]
		return !t8 && fw
	})
	// And the firewall key deleted again (the tenant's highest index does
	// not move, its key count does).
	a.Client.KV().Delete("nfhost/tenants/t9/firewall", nil)
	s.until(t, "t9's firewall deleted", func(s source.Snapshot) bool {
		_, fw := s.Tenants["t9"]["firewall"]
		return !fw && len(s.Tenants["t9"]) == 1
	})
}

// A server cut off from Consul while more tenants change than the journal
// holds catches up exactly from the digest, reading only the tenants that
// changed; a second indexer takes over when the first stops.
func TestIndexCatchUpAndFailover(t *testing.T) {
	a := consultest.Start(t)
	const n = 300
	for i := 0; i < n; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopA, doneA := startIndexer(t, ctx, a)
	stopB, _ := startIndexer(t, ctx, a)
	defer stopB()
	st, m := meteredStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "every tenant", func(s source.Snapshot) bool { return len(s.Tenants) == n })
	full := m.Bytes()
	time.Sleep(2500 * time.Millisecond)

	m.Cut(true)
	changes := source.JournalLen + 18
	for i := 0; i < changes; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i*5), tenantDoc(i*5, 1))
	}
	a.Client.KV().DeleteTree("nfhost/tenants/t1/", nil)
	a.Put(t, "nfhost/tenants/new/network", tenantDoc(999, 0))
	time.Sleep(1500 * time.Millisecond) // the indexer publishes
	before := m.Bytes()
	m.Cut(false)
	want, err := plainStore(t, a).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	same := func(s source.Snapshot) bool {
		if len(s.Tenants) != len(want.Tenants) {
			return false
		}
		for id := range want.Tenants {
			if indexOf(s, id) != indexOf(want, id) {
				return false
			}
		}
		return true
	}
	s.until(t, "the caught-up state", same)
	time.Sleep(300 * time.Millisecond)
	got := m.Bytes() - before
	t.Logf("catch-up after %d changes: %d bytes (the whole prefix: %d)", changes+2, got, full)
	if got*2 > full {
		t.Fatalf("catch-up read %d bytes, the whole prefix is %d", got, full)
	}

	// The first indexer stops (releasing the lock): the second takes over.
	stopA()
	<-doneA
	a.Put(t, "nfhost/tenants/t2/network", tenantDoc(2, 7))
	pair, _, _ := a.Client.KV().Get("nfhost/tenants/t2/network", nil)
	s.until(t, "a change after the failover", func(s source.Snapshot) bool { return indexOf(s, "t2") == pair.ModifyIndex })
}

// A Consul that comes back empty (a dev agent restarted: a new cluster)
// makes the follower read everything, with StoreReset set.
func TestIndexStoreReset(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 20; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, _ := startIndexer(t, ctx, a)
	defer stop()
	st, _ := meteredStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "20 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 20 })
	time.Sleep(2500 * time.Millisecond)
	a.Restart(t)
	for i := 0; i < 3; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/n%d/network", i), tenantDoc(i, 0))
	}
	s.until(t, "the new store's tenants", func(s source.Snapshot) bool {
		_, old := s.Tenants["t5"]
		return len(s.Tenants) == 3 && !old
	})
}

// A Consul leader change while tenants change loses no change: a
// three-server cluster, the indexer and a follower on the two servers that
// are not the leader, the leader killed in the middle of the writes.
func TestIndexSurvivesLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("SKIP (-short): starts a three-server Consul cluster")
	}
	c := consultest.StartCluster(t, 3)
	leader := c.Leader(t)
	var others []*consultest.Agent
	for _, a := range c.Servers {
		if a != leader {
			others = append(others, a)
		}
	}
	for i := 0; i < 50; i++ {
		others[0].Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, _ := startIndexer(t, ctx, others[0])
	defer stop()
	st, _ := meteredStore(t, others[1])
	s := watch(t, ctx, st)
	s.until(t, "50 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 50 })
	waitFollowing(t, st)
	want := map[string]uint64{}
	put := func(a *consultest.Agent, i, v int) {
		t.Helper()
		key := fmt.Sprintf("nfhost/tenants/t%d/network", i)
		for try := 0; ; try++ {
			_, err := a.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(tenantDoc(i, v))}, nil)
			if err == nil {
				break
			}
			if try == 100 {
				t.Fatalf("put %s: %v", key, err)
			}
			time.Sleep(200 * time.Millisecond) // no leader for a moment
		}
		pair, _, err := a.Client.KV().Get(key, nil)
		for err != nil || pair == nil {
			time.Sleep(200 * time.Millisecond)
			pair, _, err = a.Client.KV().Get(key, nil)
		}
		want[fmt.Sprintf("t%d", i)] = pair.ModifyIndex
	}
	for i := 0; i < 10; i++ {
		put(others[0], i, 1)
	}
	leader.Stop()
	for i := 10; i < 30; i++ {
		put(others[i%2], i, 1)
	}
	s.until(t, "every change after the leader change", func(s source.Snapshot) bool {
		for id, idx := range want {
			if indexOf(s, id) != idx {
				return false
			}
		}
		return true
	})
}

// lockedLog is a log destination safe for concurrent writes.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// An indexer cut off from its agent while it leads steps down, and its
// session outlives it (the release needs the agent; a session lasts until
// twice its TTL without renewal). Once the agent answers again it destroys
// that session itself rather than leaving every change to wait until the
// session expires, and changes flow again.
func TestIndexerReclaimsLockAfterAgentLoss(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 20; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &lockedLog{}
	ist, m := meteredStore(t, a)
	ist.Timeout = 2 * time.Second
	done := make(chan struct{})
	go func() {
		ist.RunIndexer(ctx, "reclaim-test", slog.New(slog.NewTextHandler(log, nil)), nil)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	st := plainStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "20 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 20 })
	waitFollowing(t, st)
	m.Cut(true)
	for !strings.Contains(log.String(), "no longer the fleet's indexer") {
		time.Sleep(100 * time.Millisecond) // the lock's monitor gives up after its retries
	}
	a.Put(t, "nfhost/tenants/t3/network", tenantDoc(3, 1))
	p, _, err := a.Client.KV().Get("nfhost/tenants/t3/network", nil)
	if err != nil || p == nil {
		t.Fatalf("read back t3: %v", err)
	}
	m.Cut(false)
	s.until(t, "t3's change after the indexer's agent came back", func(s source.Snapshot) bool { return indexOf(s, "t3") == p.ModifyIndex })
	if !strings.Contains(log.String(), "released the indexer lock a session of this host's held") {
		t.Fatalf("the indexer did not destroy its old session; its log:\n%s", log.String())
	}
}

// When no nsd stands as indexer any more, a journal nobody keeps must not
// hide changes: the follower goes back to watching the prefix.
func TestNoIndexerFallsBackToThePrefix(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 10; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, done := startIndexer(t, ctx, a)
	st, _ := meteredStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "10 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 10 })
	waitFollowing(t, st)
	// A change seen while following: the follower's first round after the
	// switch (a full read, which would also see t3's change below) is
	// behind it.
	a.Put(t, "nfhost/tenants/t1/network", tenantDoc(1, 9))
	p1, _, _ := a.Client.KV().Get("nfhost/tenants/t1/network", nil)
	s.until(t, "a change through the journal", func(s source.Snapshot) bool { return indexOf(s, "t1") == p1.ModifyIndex })
	stop()
	<-done
	a.Put(t, "nfhost/tenants/t3/network", tenantDoc(3, 9))
	pair, _, _ := a.Client.KV().Get("nfhost/tenants/t3/network", nil)
	s.until(t, "a change with no indexer", func(s source.Snapshot) bool { return indexOf(s, "t3") == pair.ModifyIndex })
	if st.Following() {
		t.Fatal("still following a journal nobody keeps")
	}
}

// Ten tenants changed in one transaction cost a follower one read of
// their keys (a read-only transaction), not ten; the snapshot says through
// which index it holds every write (what a host acknowledges), and acks
// round-trip.
func TestIndexedWatchBatchesReadsAndSaysThrough(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 100; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopIdx, _ := startIndexer(t, ctx, a)
	defer stopIdx()
	st, m := meteredStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "100 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 100 })
	waitFollowing(t, st)
	time.Sleep(1500 * time.Millisecond)

	var ops api.KVTxnOps
	for i := 0; i < 10; i++ {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("nfhost/tenants/t%d/network", i*7), Value: []byte(tenantDoc(i*7, 1))})
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVDeleteTree, Key: "nfhost/tenants/t99/"})
	reqs := m.Requests()
	ok, resp, _, err := a.Client.KV().Txn(ops, nil)
	if err != nil || !ok {
		t.Fatalf("write ten tenants: %v", err)
	}
	at := resp.Results[0].ModifyIndex
	snap := s.until(t, "the ten changes and the delete", func(s source.Snapshot) bool {
		_, t99 := s.Tenants["t99"]
		for i := 0; i < 10; i++ {
			if indexOf(s, fmt.Sprintf("t%d", i*7)) != at {
				return false
			}
		}
		return !t99
	})
	if snap.Through < at {
		t.Fatalf("snapshot through %d, before the write at %d", snap.Through, at)
	}
	time.Sleep(300 * time.Millisecond)
	// The journal's wake-up, one transaction of reads, the next blocking
	// journal read; the other watches may wake too (any write wakes them
	// at this index) but read nothing new. Ten reads of tenants would be
	// more than ten.
	if got := m.Requests() - reqs; got > 9 {
		t.Fatalf("%d requests for one transaction of ten tenants' changes", got)
	}

	// Writes elsewhere (hosts' acks, statuses) wake no watch of a follower:
	// it blocks on the journal alone, and control/, dos/ and lists/
	// (empty here: a blocking query on an empty prefix wakes on every
	// write) come through the journal's marks.
	reqs = m.Requests()
	for i := 0; i < 20; i++ {
		a.Put(t, fmt.Sprintf("nfhost/acks/host%d", i), `{}`)
	}
	time.Sleep(500 * time.Millisecond)
	if got := m.Requests() - reqs; got > 2 {
		t.Fatalf("20 writes outside what nsd watches cost the follower %d requests", got)
	}
	a.Put(t, "nfhost/control/drain/edge1", "true")
	s.until(t, "the drain key", func(s source.Snapshot) bool { return string(s.Control["drain/edge1"].Value) == "true" })
	a.Put(t, "nfhost/lists/bad", `["192.0.2.0/24"]`)
	s.until(t, "the shared list", func(s source.Snapshot) bool { return len(s.Lists["bad"]) == 1 })
	if _, err := a.Client.KV().Delete("nfhost/control/drain/edge1", nil); err != nil {
		t.Fatal(err)
	}
	s.until(t, "the drain key deleted", func(s source.Snapshot) bool { _, ok := s.Control["drain/edge1"]; return !ok })
	for i := 0; i < 20; i++ {
		a.Client.KV().Delete(fmt.Sprintf("nfhost/acks/host%d", i), nil)
	}

	if err := st.PutAck(ctx, source.Ack{Host: "edge1", Through: snap.Through, At: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	acks, err := st.ListAcks(ctx)
	if err != nil || acks["edge1"].Through != snap.Through || len(acks) != 1 {
		t.Fatalf("acks %v, %v", acks, err)
	}
	if err := st.DeleteAck(ctx, "edge1"); err != nil {
		t.Fatal(err)
	}
	if acks, _ := st.ListAcks(ctx); len(acks) != 0 {
		t.Fatalf("acks after delete: %v", acks)
	}
	if hi, nw, err := st.TenantIndexes(ctx, "t7"); err != nil || hi != at || nw != at {
		t.Fatalf("TenantIndexes(t7) = %d, %d, %v; want %d", hi, nw, err, at)
	}
}

// The indexer watches control/, dos/ and lists/ to carry their marks in the
// journal. A blocking query on an empty prefix wakes on every write in the
// store: at fleet scale on every host's ack (a thousand per change), each
// wake a request. A wake that changed nothing waits a while before the
// next blocking query; a real change is still published.
func TestIndexerPacesEmptyPrefixWakes(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 10; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	idx, m := meteredStore(t, a)
	go idx.RunIndexer(ctx, "indexer", slog.New(slog.DiscardHandler), nil)
	st := plainStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "10 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 10 })
	waitFollowing(t, st)
	time.Sleep(1500 * time.Millisecond)

	reqs := m.Requests()
	for i := 0; i < 50; i++ {
		a.Put(t, fmt.Sprintf("nfhost/acks/host%d", i), `{}`)
	}
	time.Sleep(300 * time.Millisecond)
	if got := m.Requests() - reqs; got > 15 {
		t.Fatalf("50 writes outside what the indexer watches cost it %d requests", got)
	}
	a.Put(t, "nfhost/control/drain/edge1", "true")
	s.until(t, "the drain key", func(s source.Snapshot) bool { return string(s.Control["drain/edge1"].Value) == "true" })

	// dos/ is not left empty: the indexer anchors it with the folder key
	// dos/mitigations/, which no snapshot shows, so that a fleet
	// mitigation written while hosts ack is read at once, not after a
	// pause (CI's TestFleetMitigation saw edge2 take an edge's signature
	// 964 ms after it was published).
	if p, _, err := a.Client.KV().Get("nfhost/dos/mitigations/", nil); err != nil || p == nil {
		t.Fatalf("the anchor of dos/: %v %v", p, err)
	}
	if snap := s.until(t, "a snapshot", func(source.Snapshot) bool { return true }); len(snap.Mitigations) != 0 || len(snap.Problems) != 0 {
		t.Fatalf("the anchor shows: %v %v", snap.Mitigations, snap.Problems)
	}
	reqs = m.Requests()
	for i := 0; i < 50; i++ {
		a.Put(t, fmt.Sprintf("nfhost/acks/host%d", i), `{"n": 2}`)
	}
	time.Sleep(300 * time.Millisecond)
	a.Put(t, "nfhost/dos/mitigations/acme/auto-1a", `{}`)
	s.until(t, "the mitigation", func(s source.Snapshot) bool { _, ok := s.Mitigations["acme/auto-1a"]; return ok })
	if got := m.Requests() - reqs; got > 15 {
		t.Fatalf("50 writes outside what the indexer watches and one mitigation cost it %d requests", got)
	}
}

// indexedFollower writes n tenants to a, starts an indexer and a follower
// whose requests go through rt, and returns once the follower holds every
// tenant and follows the journal.
func indexedFollower(t *testing.T, ctx context.Context, a *consultest.Agent, n int, rt http.RoundTripper) (*source.Consul, *snapshots) {
	t.Helper()
	for i := 0; i < n; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	stopIdx, _ := startIndexer(t, ctx, a)
	t.Cleanup(stopIdx)
	st := storeVia(t, a, rt)
	st.WaitTime = time.Second
	s := watch(t, ctx, st)
	s.until(t, fmt.Sprintf("%d tenants", n), func(s source.Snapshot) bool { return len(s.Tenants) == n })
	waitFollowing(t, st)
	// Following starts with a full read of the journal's epoch; a change
	// made now reaches the snapshot only after it, through the journal.
	// (A test that cut the follower off before that round would see it
	// read everything, not catch up.)
	a.Put(t, "nfhost/tenants/t0/network", tenantDoc(0, -1))
	p, _, err := a.Client.KV().Get("nfhost/tenants/t0/network", nil)
	if err != nil || p == nil {
		t.Fatalf("read back t0: %v", err)
	}
	s.until(t, "the first change through the journal", func(s source.Snapshot) bool { return indexOf(s, "t0") == p.ModifyIndex })
	return st, s
}

// laggingServer is an http.RoundTripper in front of one Consul agent that,
// while lag is on, answers stale reads as a server that has not applied the
// latest writes would: the journal absent, a tenant read empty. Consistent
// reads go through.
type laggingServer struct {
	lag                 atomic.Bool
	staleTxn, freshTxn  atomic.Int64
	staleJournal, fresh atomic.Int64
	listings            atomic.Int64 // whole-prefix listings of tenants/
}

func (l *laggingServer) RoundTrip(r *http.Request) (*http.Response, error) {
	_, stale := r.URL.Query()["stale"]
	journal := strings.HasSuffix(r.URL.Path, "/index/journal")
	if _, rec := r.URL.Query()["recurse"]; rec && r.URL.Path == "/v1/kv/nfhost/tenants/" {
		l.listings.Add(1)
	}
	switch {
	case r.URL.Path == "/v1/txn" && stale:
		l.staleTxn.Add(1)
	case r.URL.Path == "/v1/txn":
		l.freshTxn.Add(1)
	case journal && stale:
		l.staleJournal.Add(1)
	case journal:
		l.fresh.Add(1)
	}
	if !l.lag.Load() || !stale || !journal && r.URL.Path != "/v1/txn" {
		return http.DefaultTransport.RoundTrip(r)
	}
	if journal && r.URL.Query().Get("index") != "" {
		// Block as a blocking query would, then answer as a server
		// that lost the journal: absent, at a low index.
		time.Sleep(50 * time.Millisecond)
		return &http.Response{StatusCode: http.StatusNotFound, Header: http.Header{"X-Consul-Index": {"1"}},
			Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	body := `{"Results": [], "Errors": null}`
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}, "X-Consul-Index": {"1"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// A follower reads the journal and tenants stale (from the agent's own
// server) and checks what it gets: a journal that went back or vanished,
// and a tenant whose keys are not at the mark the journal names, are read
// again consistently, so a server behind the indexer neither drops the
// journal nor takes an old (here: missing) tenant.
func TestFollowerChecksStaleReads(t *testing.T) {
	a := consultest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lag := &laggingServer{}
	st, s := indexedFollower(t, ctx, a, 5, lag)
	// Not lagging: a change is a stale journal wake and a stale read. The
	// first round after the switch to the journal is a full read, and
	// until the journal's through passes it reads are consistent: what
	// the full read holds may be newer than the marks the journal names
	// next, and a stale answer equal to an older one would take the
	// tenant back.
	for v := 1; v <= 4; v++ {
		staleTxn, freshTxn := lag.staleTxn.Load(), lag.freshTxn.Load()
		a.Put(t, "nfhost/tenants/t1/network", tenantDoc(1, v))
		p1, _, _ := a.Client.KV().Get("nfhost/tenants/t1/network", nil)
		s.until(t, "t1's change", func(s source.Snapshot) bool { return indexOf(s, "t1") == p1.ModifyIndex })
		time.Sleep(100 * time.Millisecond)
		if v >= 3 && (lag.staleTxn.Load() == staleTxn || lag.freshTxn.Load() != freshTxn) {
			t.Fatalf("change %d read %d stale and %d consistent transactions, want stale only", v, lag.staleTxn.Load()-staleTxn, lag.freshTxn.Load()-freshTxn)
		}
	}
	lag.lag.Store(true)
	fresh, listings := lag.fresh.Load(), lag.listings.Load()
	a.Put(t, "nfhost/tenants/t2/network", tenantDoc(2, 1))
	a.Put(t, "nfhost/tenants/t5/network", tenantDoc(5, 1)) // a new tenant
	p2, _, _ := a.Client.KV().Get("nfhost/tenants/t2/network", nil)
	p5, _, _ := a.Client.KV().Get("nfhost/tenants/t5/network", nil)
	snap := s.until(t, "t2's change and t5", func(s source.Snapshot) bool {
		return indexOf(s, "t2") == p2.ModifyIndex && indexOf(s, "t5") == p5.ModifyIndex
	})
	if len(snap.Tenants) != 6 || snap.StoreReset {
		t.Fatalf("with a lagging server: %d tenants, store reset %v", len(snap.Tenants), snap.StoreReset)
	}
	if !st.Following() || lag.listings.Load() != listings {
		t.Fatalf("a stale answer without the journal: following %v, %d listings of the whole prefix", st.Following(), lag.listings.Load()-listings)
	}
	if lag.fresh.Load() == fresh || lag.freshTxn.Load() == 0 {
		t.Fatalf("consistent re-reads: %d of the journal, %d transactions; want both", lag.fresh.Load()-fresh, lag.freshTxn.Load())
	}
}

// Snapshots share the maps of tenants whose keys were not read again
// (snapshots are read-only), and building one never changes another; a
// tenant whose keys come in two runs (a folder key made by the UI between
// them) gets all of them.
func TestSnapshotsShareUnchangedTenants(t *testing.T) {
	a := consultest.Start(t)
	for i := 0; i < 3; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, 0))
	}
	a.Put(t, "nfhost/tenants/t1/zdos", `{}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopIdx, _ := startIndexer(t, ctx, a)
	defer stopIdx()
	st := plainStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "3 tenants", func(s source.Snapshot) bool { return len(s.Tenants) == 3 })
	waitFollowing(t, st)
	mapOf := func(m map[string]source.Entry) uintptr { return reflect.ValueOf(m).Pointer() }
	change := func(key, value string) source.Snapshot {
		t.Helper()
		a.Put(t, key, value)
		p, _, _ := a.Client.KV().Get(key, nil)
		id := strings.Split(strings.TrimPrefix(key, "nfhost/tenants/"), "/")[0]
		name := strings.TrimPrefix(key, "nfhost/tenants/"+id+"/")
		return s.until(t, key, func(s source.Snapshot) bool { return s.Tenants[id][name].ModifyIndex == p.ModifyIndex })
	}
	before := change("nfhost/tenants/t0/network", tenantDoc(0, 1))
	t1 := maps.Clone(before.Tenants["t1"])
	after := change("nfhost/tenants/t2/network", tenantDoc(2, 1))
	if mapOf(after.Tenants["t1"]) != mapOf(before.Tenants["t1"]) || mapOf(after.Tenants["t0"]) != mapOf(before.Tenants["t0"]) {
		t.Error("unchanged tenants got new maps")
	}
	if !after.Changed["t2"] || after.Changed["t0"] || after.Changed["t1"] {
		t.Errorf("the snapshot after t2's change says %v changed, want t2", after.Changed)
	}
	if mapOf(after.Tenants["t2"]) == mapOf(before.Tenants["t2"]) || string(before.Tenants["t2"]["network"].Value) != tenantDoc(2, 0) {
		t.Error("the changed tenant's map is shared with the snapshot before, or that one changed")
	}
	// A folder key between t1's two keys: two runs of one tenant.
	a.Put(t, "nfhost/tenants/t1/sub/", "")
	third := change("nfhost/tenants/t1/network", tenantDoc(1, 1))
	if len(third.Tenants["t1"]) != 2 || !reflect.DeepEqual(before.Tenants["t1"], t1) || !reflect.DeepEqual(after.Tenants["t1"], t1) {
		t.Fatalf("t1 now has %d keys; the snapshots before changed: %v", len(third.Tenants["t1"]), !reflect.DeepEqual(before.Tenants["t1"], t1))
	}
}

// A server that falls behind the journal by less than HistoryLen changes
// catches up through the history (no digest read); further behind, from
// the digest. Both end exactly at Consul's state.
func TestCatchUpThroughHistory(t *testing.T) {
	a := consultest.Start(t)
	const n = 100
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &requestLog{}
	_, s := indexedFollower(t, ctx, a, n, log)
	journalSeq := func() uint64 {
		p, _, err := a.Client.KV().Get("nfhost/index/journal", nil)
		if err != nil || p == nil {
			t.Fatalf("read the journal: %v", err)
		}
		var j struct{ Seq uint64 }
		json.Unmarshal(p.Value, &j)
		return j.Seq
	}
	// behind writes rounds of changes to every tenant until the journal
	// is past more entries than want, with the follower cut off, then
	// lets it back and waits for Consul's state.
	v := 0
	behind := func(want uint64) {
		t.Helper()
		log.cut.Store(true)
		seq0 := journalSeq()
		for journalSeq() < seq0+want {
			v++
			r0 := journalSeq()
			for i := 0; i < n; i++ {
				a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), tenantDoc(i, v))
			}
			// Every tenant of the round has its entry before the next
			// round (else the indexer may fold two rounds into one).
			for deadline := time.Now().Add(10 * time.Second); journalSeq() < r0+n && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(500 * time.Millisecond) // the indexer publishes the last round
		want2, err := plainStore(t, a).Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		log.cut.Store(false)
		s.until(t, "the caught-up state", func(s source.Snapshot) bool {
			for id := range want2.Tenants {
				if indexOf(s, id) != indexOf(want2, id) {
					return false
				}
			}
			return len(s.Tenants) == len(want2.Tenants)
		})
	}
	digest0, history0 := log.count("/v1/kv/nfhost/index/digest/"), log.count("/v1/kv/nfhost/index/history")
	behind(source.JournalLen + 40)
	if d, h := log.count("/v1/kv/nfhost/index/digest/")-digest0, log.count("/v1/kv/nfhost/index/history")-history0; d != 0 || h == 0 {
		t.Fatalf("%d changes behind: %d digest and %d history reads, want the history only", source.JournalLen+40, d, h)
	}
	digest0 = log.count("/v1/kv/nfhost/index/digest/")
	behind(source.HistoryLen + 100)
	if d := log.count("/v1/kv/nfhost/index/digest/") - digest0; d == 0 {
		t.Fatalf("%d changes behind: no digest read", source.HistoryLen+100)
	}
}

// With more tenants than ShardTenants the indexer follows tenants/ through
// sub-prefixes: a change costs it the keys of the shards and one shard's
// values, not the prefix. Every kind of change still reaches a follower
// (an edit, a new key, a deleted key, a deleted tenant, a new tenant in an
// empty shard, a shard that grows past twice the size and is split), and
// the journal's through still covers every write up to it.
func TestShardedIndexer(t *testing.T) {
	a := consultest.Start(t)
	const n = 200
	var ops api.KVTxnOps
	for i := 0; i < n; i++ {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("nfhost/tenants/t%d/network", i), Value: []byte(tenantDoc(i, 0))})
		if len(ops) == 64 || i == n-1 {
			if ok, _, _, err := a.Client.KV().Txn(ops, nil); err != nil || !ok {
				t.Fatalf("write tenants: %v", err)
			}
			ops = nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	idx, im := meteredStore(t, a)
	idx.ShardTenants = 16
	go idx.RunIndexer(ctx, "sharded", slog.New(slog.DiscardHandler), nil)
	st := plainStore(t, a)
	s := watch(t, ctx, st)
	s.until(t, "every tenant", func(s source.Snapshot) bool { return len(s.Tenants) == n })
	waitFollowing(t, st)
	full := im.Bytes() // the first listing, whole
	put := func(key, value string) uint64 {
		t.Helper()
		a.Put(t, "nfhost/tenants/"+key, value)
		p, _, _ := a.Client.KV().Get("nfhost/tenants/"+key, nil)
		return p.ModifyIndex
	}
	for v := 1; v <= 3; v++ {
		before, reqs := im.Bytes(), im.Requests()
		at := put("t42/network", tenantDoc(42, v))
		s.until(t, "t42's change", func(s source.Snapshot) bool { return indexOf(s, "t42") == at })
		time.Sleep(200 * time.Millisecond)
		got := im.Bytes() - before
		t.Logf("change %d cost the indexer %d bytes and %d requests (its first reads: %d bytes)", v, got, im.Requests()-reqs, full)
		if got*5 > full {
			t.Fatalf("one change cost the indexer %d bytes; the whole listing is %d", got, full)
		}
	}
	put("t43/firewall", `{"rules": []}`)
	s.until(t, "t43's new key", func(s source.Snapshot) bool { _, ok := s.Tenants["t43"]["firewall"]; return ok })
	a.Client.KV().Delete("nfhost/tenants/t43/firewall", nil)
	s.until(t, "t43's key deleted", func(s source.Snapshot) bool { return len(s.Tenants["t43"]) == 1 })
	a.Client.KV().DeleteTree("nfhost/tenants/t44/", nil)
	s.until(t, "t44 deleted", func(s source.Snapshot) bool { _, ok := s.Tenants["t44"]; return !ok })
	at := put("zeta/network", tenantDoc(1, 1)) // an empty shard
	s.until(t, "zeta", func(s source.Snapshot) bool { return indexOf(s, "zeta") == at })
	a.Put(t, "nfhost/tenants/Bad/network", `{}`) // no valid ID: in no shard, and harmless
	for i := 0; i < 40; i++ {                    // shard "q" grows past 2 × 16 and is split
		put(fmt.Sprintf("q%d/network", i), tenantDoc(i, 1))
	}
	at = put("q39/network", tenantDoc(39, 2))
	s.until(t, "40 tenants in one shard", func(s source.Snapshot) bool { return indexOf(s, "q39") == at && indexOf(s, "q0") != 0 })
	at = put("q7/network", tenantDoc(7, 3)) // in a part of the split shard
	s.until(t, "a change after the split", func(s source.Snapshot) bool { return indexOf(s, "q7") == at })
	// The indexer's requests fail for a while (its rounds fail and change
	// nothing); the changes made meanwhile arrive when they work again.
	im.Cut(true)
	at7 := put("t7/network", tenantDoc(7, 5))
	at8 := put("q8/network", tenantDoc(8, 5))
	time.Sleep(1500 * time.Millisecond)
	im.Cut(false)
	s.until(t, "the changes made while the indexer was cut off", func(s source.Snapshot) bool {
		return indexOf(s, "t7") == at7 && indexOf(s, "q8") == at8
	})
	// Writes to many shards at once: the snapshot whose through covers
	// them holds them all.
	ops = nil
	for i := 0; i < 30; i++ {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("nfhost/tenants/t%d/network", i*6), Value: []byte(tenantDoc(i*6, 9))})
	}
	ok, resp, _, err := a.Client.KV().Txn(ops, nil)
	if err != nil || !ok {
		t.Fatalf("write 30 tenants: %v", err)
	}
	at = resp.Results[0].ModifyIndex
	snap := s.until(t, "through past the 30 writes", func(s source.Snapshot) bool { return s.Through >= at })
	for i := 0; i < 30; i++ {
		if id := fmt.Sprintf("t%d", i*6); indexOf(snap, id) != at {
			t.Fatalf("through %d covers the write at %d, but %s is at %d", snap.Through, at, id, indexOf(snap, id))
		}
	}
	want, err := plainStore(t, a).Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.until(t, "Consul's state", func(s source.Snapshot) bool {
		for id := range want.Tenants {
			if indexOf(s, id) != indexOf(want, id) {
				return false
			}
		}
		return len(s.Tenants) == len(want.Tenants) // Bad is a problem, not a tenant, in both
	})
}
