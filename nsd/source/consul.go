package source

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/nfhost/nfhost/internal/consulacl"
	"github.com/nfhost/nfhost/internal/doc"
)

// Consul is a Store backed by Consul KV.
//
// No request waits without a bound: a Consul that accepts connections but
// never answers (a stopped process, a hung server) makes every call fail
// after Timeout, or after WaitTime plus Timeout for the blocking queries of
// Watch, which also probes the agent every HealthInterval.
type Consul struct {
	client *api.Client
	kv     *api.KV
	addr   string
	prefix string
	// WaitTime bounds each blocking query.
	WaitTime time.Duration
	// Timeout bounds every request that does not block by design.
	Timeout time.Duration
	// HealthInterval is how often Watch checks that the agent answers.
	HealthInterval time.Duration
	// NoIndex makes Watch list the whole tenants/ prefix on every change
	// even when the fleet's indexer keeps a journal (see JournalLen).
	NoIndex bool
	// ShardTenants: an indexer with more tenants than this follows
	// tenants/ through sub-prefixes of about this many tenants each
	// instead of listing the prefix whole on every change (shards.go); 0
	// lists it whole always.
	ShardTenants int
	// FullReadInterval is how often a server following the index reads
	// every tenant anyway (jittered by a tenth), so that nothing the
	// index missed stays unnoticed for long.
	FullReadInterval time.Duration

	// The ACL token of every request. With a token file it is re-read
	// after a 403 and before every retry of a watch, so that an operator
	// can replace a revoked token without restarting nsd.
	tokenMu   sync.Mutex
	token     string
	tokenFile string
	// clientCert: the client has a TLS client certificate.
	clientCert bool
	// following: Watch follows the fleet's index (see JournalLen).
	following atomic.Bool
	// answered is when the latest request that succeeded was sent
	// (nanoseconds after born, on the monotonic clock): proof that the
	// agent answered and took the token then, which spares the probe its
	// requests (see probe).
	answered atomic.Int64
	born     time.Time
}

// Following reports whether Watch follows the fleet's index rather than
// listing the whole tenants/ prefix on every change.
func (c *Consul) Following() bool { return c.following.Load() }

// Default bounds of a Consul store's requests.
const (
	DefaultConsulTimeout  = 10 * time.Second
	DefaultHealthInterval = 5 * time.Second
	// DefaultFullReadInterval: with 10,000 tenants of 2 KB, 20 MB per
	// server per hour, 5.6 KB/s.
	DefaultFullReadInterval = time.Hour
	// DefaultShardTenants: a shard just over it splits into up to 37
	// small ones, so it is large (10,000 tenants of random IDs: 36
	// shards; of the simulator's t0…t9999: 100 of 111).
	DefaultShardTenants = 1024
)

// NewConsul returns a store for prefix. cfg nil means api.DefaultConfig(),
// which honours CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_CACERT and the other standard CONSUL_* variables. A token file
// (cfg.TokenFile) is read now and again whenever Consul refuses the token.
func NewConsul(cfg *api.Config, prefix string) (*Consul, error) {
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	c, err := api.NewClient(cfg) // resolves cfg.Token from cfg.TokenFile and the environment
	if err != nil {
		return nil, fmt.Errorf("create consul client: %w", err)
	}
	// Responses uncompressed: nsd talks to its local agent, and
	// compressing every journal read and tenant read on the agent (and
	// unpacking it here) cost the servers about a tenth of their CPU in a
	// 300-server simulation; what a change costs in bytes is a few KB.
	h := c.Headers()
	h.Set("Accept-Encoding", "identity")
	c.SetHeaders(h)
	return &Consul{client: c, kv: c.KV(), addr: cfg.Scheme + "://" + cfg.Address, prefix: strings.Trim(prefix, "/"), WaitTime: 5 * time.Minute, FullReadInterval: DefaultFullReadInterval,
		Timeout: DefaultConsulTimeout, HealthInterval: DefaultHealthInterval, ShardTenants: DefaultShardTenants, token: cfg.Token, tokenFile: cfg.TokenFile, born: time.Now(),
		clientCert: cfg.TLSConfig.CertFile != ""}, nil
}

// currentToken is the token requests carry now.
func (c *Consul) currentToken() string {
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	return c.token
}

// reloadToken re-reads the token file, if there is one, and reports
// whether the token changed. An unreadable or empty file keeps the token.
func (c *Consul) reloadToken() bool {
	if c.tokenFile == "" {
		return false
	}
	b, err := os.ReadFile(c.tokenFile)
	tok := strings.TrimSpace(string(b))
	if err != nil || tok == "" {
		return false
	}
	c.tokenMu.Lock()
	defer c.tokenMu.Unlock()
	changed := tok != c.token
	c.token = tok
	return changed
}

// qo and wo are the options of one request: its context and the token.
func (c *Consul) qo(ctx context.Context) *api.QueryOptions {
	return (&api.QueryOptions{Token: c.currentToken()}).WithContext(ctx)
}

func (c *Consul) wo(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{Token: c.currentToken()}).WithContext(ctx)
}

// bounded returns ctx limited to d, for one request.
func bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// call runs one non-blocking request under Timeout and names the agent in
// the error when it did not answer in time.
func (c *Consul) call(ctx context.Context, what string, f func(ctx context.Context) error) error {
	rctx, cancel := bounded(ctx, c.Timeout)
	defer cancel()
	sent := time.Now()
	err := f(rctx)
	if err == nil {
		c.noteAnswered(sent)
		return nil
	}
	return fmt.Errorf("%s: %w", what, c.explain(ctx, rctx, what, err))
}

// explain turns the error of request what ("write <key>", "list <key>")
// into one an operator can act on.
func (c *Consul) explain(parent, rctx context.Context, what string, err error) error {
	var se api.StatusError
	var ua x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case parent.Err() == nil && errors.Is(rctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w: consul at %s did not answer within %s", ErrTimeout, c.addr, c.Timeout)
	case errors.As(err, &se) && se.Code == http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		op, key, _ := strings.Cut(what, " ")
		return c.forbidden(op, key, se.Body)
	case errors.As(err, &ua):
		return fmt.Errorf("consul at %s presented a certificate this client does not trust (set CONSUL_CACERT to the CA that signed it): %w", c.addr, err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("consul at %s presented a certificate for another name (set CONSUL_TLS_SERVER_NAME to a name it holds): %w", c.addr, err)
	case !c.clientCert && strings.HasPrefix(c.addr, "https://") && tlsHandshake(err):
		return fmt.Errorf("TLS handshake with consul at %s failed or was broken off; if the agent verifies clients (verify_incoming), set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY: %w", c.addr, err)
	}
	return err
}

// tlsHandshake reports whether err may be a TLS handshake the agent
// broke off: a transport error other than a refused connection (Go's
// HTTP/2 client hides the alert, and the agent may close the connection
// before the client reads it: "broken pipe", "connection reset").
func tlsHandshake(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}

// forbidden is the error for a 403 on op ("read", "list", "write",
// "delete") of key: what was refused, why, and which policy allows it.
// With a token file the file is re-read, so the next attempt carries the
// token an operator may have put there.
func (c *Consul) forbidden(op, key, body string) error {
	body = strings.TrimSpace(body)
	why := "the token lacks permission: " + body
	if strings.Contains(body, "ACL not found") || strings.Contains(body, "token not found") {
		why = "the token was refused: Consul does not know it (revoked, expired or mistyped)"
	}
	if c.currentToken() == "" {
		why += "; no token was given (--token, --token-file, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)"
	}
	if c.reloadToken() {
		why += "; a new token was read from " + c.tokenFile + " for the next attempt"
	}
	return ForbiddenError(c.prefix, op, key, why)
}

// ForbiddenError is the ErrForbidden for op on key (with the prefix):
// why, and the policy that allows it. Callers put the operation and key
// in front ("write <key>: ..."). Stores and nsctl use it when Consul
// refused the request or hid the key from the token.
func ForbiddenError(prefix, op, key, why string) error {
	return fmt.Errorf("%w: %s; allowed by policy %s", ErrForbidden, why, consulacl.Allowing(prefix, op, key))
}

func (c *Consul) key(parts ...string) string {
	return c.prefix + "/" + strings.Join(parts, "/")
}

// Read lists the tenant and control prefixes once.
func (c *Consul) Read(ctx context.Context) (Snapshot, error) {
	var lists [4]api.KVPairs
	hidden := false
	for i, name := range []string{"tenants", "control", "dos", "lists"} {
		pairs, filtered, err := c.listFiltered(ctx, c.key(name)+"/")
		if err != nil {
			return Snapshot{}, err
		}
		lists[i], hidden = pairs, hidden || filtered
	}
	t := newTenantTable(c.key("tenants") + "/")
	t.replaceListing(lists[0], false)
	s := c.build(t, lists)
	s.Hidden = hidden
	return s, nil
}

// build makes a snapshot of the tenants table and the three small
// listings (control, dos, lists; l[0] is unused).
func (c *Consul) build(t *tenantTable, l [4]api.KVPairs) Snapshot {
	controlPairs, dosPairs := l[1], l[2]
	s := Snapshot{Control: map[string]Entry{}, Lists: map[string][]Entry{}}
	s.Tenants, s.Problems, s.Changed = t.snapshot()
	lp := c.key("lists") + "/"
	for _, p := range l[3] { // sorted by key: parts come in order
		if strings.HasSuffix(p.Key, "/") && p.Value == nil {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(p.Key, lp), "/")
		s.Lists[name] = append(s.Lists[name], Entry{Value: p.Value, ModifyIndex: p.ModifyIndex})
	}
	cp := c.key("control") + "/"
	for _, p := range controlPairs {
		s.Control[strings.TrimPrefix(p.Key, cp)] = Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
	}
	mp := c.key("dos", "mitigations") + "/"
	for _, p := range dosPairs {
		switch {
		case p.Key == c.key("dos", "global"):
			s.DoSGlobal = &Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
		case strings.HasSuffix(p.Key, "/") && p.Value == nil:
		case strings.HasPrefix(p.Key, mp):
			if s.Mitigations == nil {
				s.Mitigations = map[string]Entry{}
			}
			s.Mitigations[strings.TrimPrefix(p.Key, mp)] = Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
		default:
			s.Problems = append(s.Problems, fmt.Sprintf("%s: unknown key (the fleet-wide DoS document is %s)", p.Key, c.key("dos", "global")))
		}
	}
	return s
}

// Watch runs one blocking query per watched prefix and sends a merged
// snapshot whenever the content of any of them changes. onHealth is called
// with every failure (of a watch or of the periodic probe of the agent) and
// with nil once everything answers again after a failure.
//
// A blocking query also returns when the index moved for reasons that do
// not concern its prefix (on an empty prefix, any write in the whole KV
// store), so a wake-up is a change only if the listing differs: its number
// of keys or its highest ModifyIndex. Every write raises the highest index
// and every delete lowers the count, so equal pairs mean equal listings.
func (c *Consul) Watch(ctx context.Context, out chan<- Snapshot, onHealth func(error)) error {
	w := &watcher{c: c, onHealth: onHealth, changed: make(chan struct{}, 1), table: newTenantTable(c.key("tenants") + "/")}
	if c.NoIndex {
		go w.watchPrefix(ctx, slotTenants, c.key("tenants")+"/")
		go w.watchPrefix(ctx, slotControl, c.key("control")+"/")
		go w.watchPrefix(ctx, slotDoS, c.key("dos")+"/")
		go w.watchPrefix(ctx, slotLists, c.key("lists")+"/")
	} else {
		// The follower also keeps the small prefixes: through the
		// journal's marks when it carries them, else watched directly.
		go w.followTenants(ctx)
	}
	go w.probe(ctx)
	var (
		sent    [4]listing // the listings of the last snapshot sent
		sentAny bool
	)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.changed:
		}
		w.mu.Lock()
		ready := w.have[0] && w.have[1] && w.have[2] && w.have[3]
		fresh := ready && (!sentAny || w.fps != sent || w.table.moved() || w.reset)
		var snap Snapshot
		if fresh {
			snap, sent, sentAny = c.build(w.table, w.lists), w.fps, true
			snap.StoreReset, w.reset = w.reset, false
			snap.Through = w.through
		}
		w.mu.Unlock()
		if !fresh {
			continue
		}
		select {
		case out <- snap:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// What Watch follows: four prefixes and the probe of the agent.
const (
	slotTenants = iota
	slotControl
	slotDoS
	slotLists
	slotProbe
	nSlots
)

// watcher is the state Watch's goroutines share.
type watcher struct {
	c        *Consul
	onHealth func(error)
	changed  chan struct{} // a listing changed (buffered: one wake-up is enough)

	mu sync.Mutex
	// table holds the tenants slot (lists[0] and fps[0] stay empty).
	table *tenantTable
	lists [4]api.KVPairs
	have  [4]bool
	fps   [4]listing
	errs  [nSlots]error
	sick  bool
	reset bool // an index went backwards since the last snapshot sent
	// through: the tenants listing reflects every write up to this index
	// (0: unknown, e.g. a journal of an older indexer).
	through uint64
}

// report records the outcome of one slot's last request: every failure goes
// to onHealth, and so does (as nil) the recovery once every slot is healthy.
func (w *watcher) report(slot int, err error) {
	w.mu.Lock()
	w.errs[slot] = err
	healthy := true
	for _, e := range w.errs {
		healthy = healthy && e == nil
	}
	recovered := healthy && w.sick
	w.sick = !healthy
	w.mu.Unlock()
	switch {
	case err != nil && w.onHealth != nil:
		w.onHealth(err)
	case recovered && w.onHealth != nil:
		w.onHealth(nil)
	}
}

// watchPrefix runs the blocking queries on one prefix until ctx ends.
func (w *watcher) watchPrefix(ctx context.Context, slot int, prefix string) {
	c := w.c
	var idx, seen uint64 // seen: the highest index read, kept across errors
	var bo backoff
	for ctx.Err() == nil {
		pairs, meta, err := c.watchList(ctx, prefix, idx, c.WaitTime)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.report(slot, err)
			// The store may have restarted with new indexes: start over.
			idx = 0
			sleepCtx(ctx, bo.next())
			continue
		}
		bo.reset()
		w.report(slot, nil)
		backwards := meta.LastIndex < seen
		if meta.LastIndex < idx {
			idx = 0 // index went backwards: Consul restarted or restored
		} else {
			idx = meta.LastIndex
		}
		seen = meta.LastIndex
		if slot == slotTenants {
			w.updateTenants(pairs, backwards, meta.LastIndex)
		} else {
			w.update(slot, pairs, backwards)
		}
	}
}

// blockLimit bounds a request that blocks from idx for up to wait: wait
// plus Consul's jitter (wait/16) plus Timeout; beyond that the agent is
// hung. A first read (idx 0) does not block.
func (c *Consul) blockLimit(idx uint64, wait time.Duration) time.Duration {
	if idx == 0 {
		return c.Timeout
	}
	return c.Timeout + wait + wait/16
}

// watchList is one blocking query on prefix from idx (0: at once), with
// its error explained. A listing the token may not fully read is an
// error: its missing keys would look like deleted tenants.
func (c *Consul) watchList(ctx context.Context, prefix string, idx uint64, wait time.Duration) (api.KVPairs, *api.QueryMeta, error) {
	limit := c.blockLimit(idx, wait)
	rctx, cancel := bounded(ctx, limit)
	defer cancel()
	sent := time.Now()
	pairs, meta, err := c.kv.List(prefix, (&api.QueryOptions{WaitIndex: idx, WaitTime: wait, Token: c.currentToken()}).WithContext(rctx))
	if err == nil {
		c.noteAnswered(sent) // authorised when sent, not when it returned
	}
	if err == nil && meta.ResultsFilteredByACLs {
		err = c.partialListing(prefix)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("watch %s: %w", prefix, c.watchError(rctx, err, prefix, limit))
	}
	return pairs, meta, nil
}

// watchError explains a failed blocking query.
func (c *Consul) watchError(rctx context.Context, err error, prefix string, limit time.Duration) error {
	var se api.StatusError
	switch {
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w: consul at %s did not answer within %s", ErrTimeout, c.addr, limit)
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		return c.forbidden("list", prefix, se.Body)
	}
	c.reloadToken() // every retry carries the token file's current token
	return err
}

// updateTenants is update of the tenants slot, with the store index the
// listing reflects every write up to (the snapshot's Through).
func (w *watcher) updateTenants(pairs api.KVPairs, backwards bool, through uint64) {
	byTenant, extra := groupTenants(w.table.keyPrefix, pairs)
	w.setTenants(byTenant, extra, nil, backwards, through)
}

// setTenants updates the tenants slot: with changed, only those tenants'
// keys (of byTenant, the whole state) may differ from what the table
// holds; without, byTenant is compared whole. It wakes Watch if anything
// changed.
func (w *watcher) setTenants(byTenant map[string]api.KVPairs, extra api.KVPairs, changed map[string]bool, backwards bool, through uint64) {
	w.mu.Lock()
	w.through = through
	w.reset = w.reset || backwards
	if changed == nil || backwards {
		w.table.replace(byTenant, extra, backwards)
	} else {
		for id := range changed {
			w.table.set(id, byTenant[id], false)
		}
		w.table.setExtra(extra)
	}
	first := !w.have[slotTenants]
	w.have[slotTenants] = true
	moved := w.table.moved() || backwards || first
	w.mu.Unlock()
	if !moved {
		return
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// update stores one slot's listing and wakes Watch if it changed.
func (w *watcher) update(slot int, pairs api.KVPairs, backwards bool) {
	fp := listingOf(pairs)
	w.mu.Lock()
	w.reset = w.reset || backwards
	same := w.have[slot] && w.fps[slot] == fp && !backwards
	w.lists[slot], w.fps[slot], w.have[slot] = pairs, fp, true
	w.mu.Unlock()
	if same {
		return
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// noteAnswered records that a request sent at sent succeeded.
func (c *Consul) noteAnswered(sent time.Time) {
	at := int64(sent.Sub(c.born)) // monotonic: a clock step changes nothing
	for {
		old := c.answered.Load()
		if at <= old || c.answered.CompareAndSwap(old, at) {
			return
		}
	}
}

// answeredWithin reports whether a request sent within d succeeded.
func (c *Consul) answeredWithin(d time.Duration) bool {
	return time.Since(c.born)-time.Duration(c.answered.Load()) < d
}

// probe checks every HealthInterval that the agent answers and that the
// token is still good. A request of nsd's own sent within the interval
// that succeeded proves both (it was authorised when it was sent), so
// under a stream of changes, when every server reads and writes anyway,
// the probe costs Consul nothing (two requests per server every 5 s
// were a sixth of a 1,000-server fleet's requests per change). A probe
// that failed runs again at every interval until it succeeds (a skip
// reports nothing, so it clears no error), and an agent that stops
// answering is found within about two intervals.
func (w *watcher) probe(ctx context.Context) {
	c := w.c
	for sleepCtx(ctx, c.HealthInterval) {
		w.mu.Lock()
		failing := w.errs[slotProbe] != nil
		w.mu.Unlock()
		if !failing && c.answeredWithin(c.HealthInterval) {
			continue
		}
		err := c.call(ctx, "probe consul", func(ctx context.Context) error {
			_, err := c.client.Status().LeaderWithQueryOptions(c.qo(ctx))
			return err
		})
		if err == nil {
			// The leader answers any token; a read proves that the
			// token is still good (a revoked one is found within
			// HealthInterval, not at the next change of the watched keys).
			k := c.key("tenants") + "/"
			err = c.call(ctx, "read "+k, func(ctx context.Context) error {
				_, _, err := c.kv.Get(k, c.qo(ctx))
				return err
			})
		}
		if ctx.Err() != nil {
			return
		}
		w.report(slotProbe, err)
	}
}

// listing identifies a prefix's listing: see Watch.
type listing struct {
	keys     int
	maxIndex uint64
}

func listingOf(pairs api.KVPairs) listing {
	l := listing{keys: len(pairs)}
	for _, p := range pairs {
		l.maxIndex = max(l.maxIndex, p.ModifyIndex)
	}
	return l
}

// Put writes with check-and-set.
func (c *Consul) Put(ctx context.Context, tenant, key string, value []byte, cas uint64) error {
	return c.cas(ctx, c.key("tenants", tenant, key), value, cas)
}

// PutTenant writes the keys in one transaction of check-and-set
// operations (at most TxnOps).
func (c *Consul) PutTenant(ctx context.Context, tenant string, writes []KeyWrite) error {
	if len(writes) > TxnOps {
		return fmt.Errorf("write tenant %s: %d keys, at most %d in one transaction", tenant, len(writes), TxnOps)
	}
	ops := make(api.KVTxnOps, 0, len(writes))
	size := 0
	for _, w := range writes {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVCAS, Key: c.key("tenants", tenant, w.Key), Value: w.Value, Index: w.CAS})
		size += len(w.Value)
	}
	what := "write " + c.key("tenants", tenant) + "/"
	var ok bool
	var resp *api.KVTxnResponse
	err := c.call(ctx, what, func(ctx context.Context) error {
		var err error
		ok, resp, _, err = c.kv.Txn(ops, c.qo(ctx))
		if err != nil && strings.Contains(err.Error(), "too large") && strings.Contains(err.Error(), "txn_max_req_len") {
			// The API client reports Consul's 413 for a transaction
			// as text, not as a status code.
			return ErrTxnTooLarge
		}
		return err
	})
	if errors.Is(err, ErrTxnTooLarge) {
		return fmt.Errorf("%w (%d keys, %d bytes of values before base64)", err, len(writes), size)
	}
	if err != nil {
		return err
	}
	if !ok {
		why := txnErrors(resp)
		if strings.Contains(strings.ToLower(why), "permission denied") {
			return fmt.Errorf("%s: %w: %s", what, ErrForbidden, why)
		}
		return fmt.Errorf("%s: %w (%s)", what, ErrConflict, why)
	}
	return nil
}

func (c *Consul) cas(ctx context.Context, k string, value []byte, cas uint64) error {
	var ok bool
	err := c.call(ctx, "write "+k, func(ctx context.Context) error {
		var err error
		ok, _, err = c.kv.CAS(&api.KVPair{Key: k, Value: value, ModifyIndex: cas}, c.wo(ctx))
		return err
	})
	if err != nil {
		return sized(err, value)
	}
	if !ok {
		return fmt.Errorf("write %s: %w", k, ErrConflict)
	}
	return nil
}

// DeleteTenant removes the tenant's whole subtree, and a key named like
// the tenant itself (Consul stores "tenants//x" as "tenants/x"). Any name
// without a "/" is accepted, so that keys nsd reports as problems (invalid
// tenant IDs, stray keys) can be removed too.
func (c *Consul) DeleteTenant(ctx context.Context, tenant string) error {
	k := c.key("tenants", tenant)
	var keys []string
	if err := c.call(ctx, "list "+k, func(ctx context.Context) error {
		var err error
		keys, _, err = c.kv.Keys(k, "", c.qo(ctx))
		return err
	}); err != nil {
		return err
	}
	var tree, exact bool
	for _, key := range keys {
		tree = tree || strings.HasPrefix(key, k+"/")
		exact = exact || key == k
	}
	if !tree && !exact {
		return fmt.Errorf("tenant %s: %w", tenant, ErrNotFound)
	}
	return c.call(ctx, "delete "+k, func(ctx context.Context) error {
		if tree {
			if _, err := c.kv.DeleteTree(k+"/", c.wo(ctx)); err != nil {
				return err
			}
		}
		if exact {
			_, err := c.kv.Delete(k, c.wo(ctx))
			return err
		}
		return nil
	})
}

// PutDoSGlobal writes <prefix>/dos/global with check-and-set.
func (c *Consul) PutDoSGlobal(ctx context.Context, value []byte, cas uint64) error {
	return c.cas(ctx, c.key("dos", "global"), value, cas)
}

// PutMitigation writes <prefix>/dos/mitigations/<name> with
// check-and-set (dos/fleet).
func (c *Consul) PutMitigation(ctx context.Context, name string, value []byte, cas uint64) error {
	return c.cas(ctx, c.key("dos", "mitigations", name), value, cas)
}

// DeleteMitigation deletes <prefix>/dos/mitigations/<name> if its index is
// still cas; a lost race is ErrConflict.
func (c *Consul) DeleteMitigation(ctx context.Context, name string, cas uint64) error {
	k := c.key("dos", "mitigations", name)
	var ok bool
	err := c.call(ctx, "delete "+k, func(ctx context.Context) error {
		var err error
		ok, _, err = c.kv.DeleteCAS(&api.KVPair{Key: k, ModifyIndex: cas}, c.wo(ctx))
		return err
	})
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("delete %s: %w", k, ErrConflict)
	}
	return nil
}

// PutControl writes an operator control key.
func (c *Consul) PutControl(ctx context.Context, name string, value []byte) error {
	return c.put(ctx, c.key("control", name), value)
}

func (c *Consul) put(ctx context.Context, k string, value []byte) error {
	return sized(c.call(ctx, "write "+k, func(ctx context.Context) error {
		_, err := c.kv.Put(&api.KVPair{Key: k, Value: value}, c.wo(ctx))
		return err
	}), value)
}

// sized adds the value's size to a too-large error.
func sized(err error, value []byte) error {
	if errors.Is(err, ErrTooLarge) {
		return fmt.Errorf("%w (this value is %d bytes)", err, len(value))
	}
	return err
}

// statusKey is where a status document lives. A tenant's status from every
// host is one prefix, tenant-status/<tenant>/, so that a Consul ACL policy
// can grant a tenant exactly its own; host-wide reports are under
// host-status/<host>. The layout before was status/<host>/<name>, which no
// per-tenant prefix rule can cover (RemoveLegacyStatus deletes it).
func (c *Consul) statusKey(host, name string) string {
	if name == HostStatusName {
		return c.key("host-status", host)
	}
	return c.key("tenant-status", name, host)
}

// PutStatus writes a status document.
func (c *Consul) PutStatus(ctx context.Context, host, name string, st any) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	return c.put(ctx, c.statusKey(host, name), b)
}

// DeleteStatus removes a status document.
func (c *Consul) DeleteStatus(ctx context.Context, host, name string) error {
	k := c.statusKey(host, name)
	return c.call(ctx, "delete "+k, func(ctx context.Context) error {
		_, err := c.kv.Delete(k, c.wo(ctx))
		return err
	})
}

// list reads the pairs under prefix p.
func (c *Consul) list(ctx context.Context, p string) (api.KVPairs, error) {
	pairs, _, err := c.listFiltered(ctx, p)
	return pairs, err
}

// listFiltered reads the pairs under prefix p and whether Consul's ACLs
// hid some of them from the token.
func (c *Consul) listFiltered(ctx context.Context, p string) (api.KVPairs, bool, error) {
	pairs, filtered, _, err := c.listAt(ctx, p, false)
	return pairs, filtered, err
}

// listWhole reads the pairs under prefix p and the listing's index,
// refusing a listing the token may not fully read (missing keys would
// look like deleted tenants). consistent asks for a leader that knows it
// leads (RequireConsistent).
func (c *Consul) listWhole(ctx context.Context, p string, consistent bool) (api.KVPairs, uint64, error) {
	pairs, filtered, idx, err := c.listAt(ctx, p, consistent)
	if err == nil && filtered {
		err = c.partialListing(p)
	}
	return pairs, idx, err
}

// partialListing is the error of a listing of prefix that Consul's ACLs
// cut short.
func (c *Consul) partialListing(prefix string) error {
	return ForbiddenError(c.prefix, "list", prefix, "the token may not read every key under it, and nsd must")
}

// listAt is listFiltered with the listing's index; consistent as for
// listWhole.
func (c *Consul) listAt(ctx context.Context, p string, consistent bool) (api.KVPairs, bool, uint64, error) {
	var pairs api.KVPairs
	var filtered bool
	var idx uint64
	err := c.call(ctx, "list "+p, func(ctx context.Context) error {
		var err error
		var meta *api.QueryMeta
		qo := c.qo(ctx)
		qo.RequireConsistent = consistent
		pairs, meta, err = c.kv.List(p, qo)
		if err == nil {
			filtered, idx = meta.ResultsFilteredByACLs, meta.LastIndex
		}
		return err
	})
	return pairs, filtered, idx, err
}

// ListStatus reads status documents, of one host or of all (""), by host
// and then by name (tenant ID, or HostStatusName).
func (c *Consul) ListStatus(ctx context.Context, host string) (map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]json.RawMessage{}
	add := func(h, name string, v []byte) {
		if (host != "" && h != host) || !json.Valid(v) {
			return
		}
		if out[h] == nil {
			out[h] = map[string]json.RawMessage{}
		}
		out[h][name] = v
	}
	tp := c.key("tenant-status") + "/"
	pairs, err := c.list(ctx, tp)
	if err != nil {
		return nil, err
	}
	for _, kv := range pairs {
		if tenant, h, ok := strings.Cut(strings.TrimPrefix(kv.Key, tp), "/"); ok {
			add(h, tenant, kv.Value)
		}
	}
	hp := c.key("host-status") + "/"
	if host != "" {
		hp += host
	}
	if pairs, err = c.list(ctx, hp); err != nil {
		return nil, err
	}
	for _, kv := range pairs {
		add(strings.TrimPrefix(kv.Key, c.key("host-status")+"/"), HostStatusName, kv.Value)
	}
	return out, nil
}

// ListTenantStatus reads one tenant's status from every host: one prefix,
// readable with the tenant's own token.
func (c *Consul) ListTenantStatus(ctx context.Context, tenant string) (map[string]json.RawMessage, error) {
	p := c.key("tenant-status", tenant) + "/"
	pairs, filtered, err := c.listFiltered(ctx, p)
	if err != nil {
		return nil, err
	}
	if filtered && len(pairs) == 0 {
		return nil, fmt.Errorf("read %s: %w", p, ForbiddenError(c.prefix, "read", p, "Consul hid every key under it from the token"))
	}
	out := map[string]json.RawMessage{}
	for _, kv := range pairs {
		if json.Valid(kv.Value) {
			out[strings.TrimPrefix(kv.Key, p)] = kv.Value
		}
	}
	return out, nil
}

// RemoveLegacyStatus deletes what an older nsd on host wrote in the old
// status layout, status/<host>/.
func (c *Consul) RemoveLegacyStatus(ctx context.Context, host string) (bool, error) {
	p := c.key("status", host) + "/"
	var keys []string
	if err := c.call(ctx, "list "+p, func(ctx context.Context) error {
		var err error
		keys, _, err = c.kv.Keys(p, "", c.qo(ctx))
		return err
	}); err != nil || len(keys) == 0 {
		return false, err
	}
	return true, c.call(ctx, "delete "+p, func(ctx context.Context) error {
		_, err := c.kv.DeleteTree(p, c.wo(ctx))
		return err
	})
}

func (c *Consul) ackKey(host string) string { return c.key("acks", host) }

// PutAck writes acks/<host>.
func (c *Consul) PutAck(ctx context.Context, a Ack) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode ack: %w", err)
	}
	return c.put(ctx, c.ackKey(a.Host), b)
}

// DeleteAck removes acks/<host>.
func (c *Consul) DeleteAck(ctx context.Context, host string) error {
	k := c.ackKey(host)
	return c.call(ctx, "delete "+k, func(ctx context.Context) error {
		_, err := c.kv.Delete(k, c.wo(ctx))
		return err
	})
}

// ListAcks reads every host's acknowledgement (acks/ is readable by
// tenants' tokens: it names hosts and indexes, nothing of any tenant).
func (c *Consul) ListAcks(ctx context.Context) (map[string]Ack, error) {
	pairs, err := c.list(ctx, c.key("acks")+"/")
	if err != nil {
		return nil, err
	}
	out := make(map[string]Ack, len(pairs))
	for _, p := range pairs {
		var a Ack
		if json.Unmarshal(p.Value, &a) == nil && a.Host == strings.TrimPrefix(p.Key, c.key("acks")+"/") {
			out[a.Host] = a
		}
	}
	return out, nil
}

// TenantIndexes reads the ModifyIndex of tenant's known keys (network,
// firewall, dos: those a tenant's own token may read): the highest, and
// the network key's (0: absent).
func (c *Consul) TenantIndexes(ctx context.Context, tenant string) (highest, network uint64, err error) {
	for _, k := range []string{doc.KeyNetwork, doc.KeyFirewall, doc.KeyDoS} {
		key := c.key("tenants", tenant, k)
		var pair *api.KVPair
		if err := c.call(ctx, "read "+key, func(ctx context.Context) error {
			var err error
			pair, _, err = c.kv.Get(key, c.qo(ctx))
			return err
		}); err != nil {
			return 0, 0, err
		}
		if pair == nil {
			continue
		}
		highest = max(highest, pair.ModifyIndex)
		if k == doc.KeyNetwork {
			network = pair.ModifyIndex
		}
	}
	return highest, network, nil
}
