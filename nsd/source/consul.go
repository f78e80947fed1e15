package source

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/config"
)

// Consul is a Store backed by Consul KV.
type Consul struct {
	kv     *api.KV
	prefix string
	// WaitTime bounds each blocking query.
	WaitTime time.Duration
}

// NewConsul returns a store for prefix. cfg nil means api.DefaultConfig(),
// which honours CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT and the
// other standard CONSUL_HTTP_* variables.
func NewConsul(cfg *api.Config, prefix string) (*Consul, error) {
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create consul client: %w", err)
	}
	return &Consul{kv: c.KV(), prefix: strings.Trim(prefix, "/"), WaitTime: 5 * time.Minute}, nil
}

func (c *Consul) key(parts ...string) string {
	return c.prefix + "/" + strings.Join(parts, "/")
}

// Read lists the tenant and control prefixes once.
func (c *Consul) Read(ctx context.Context) (Snapshot, error) {
	var s Snapshot
	pairs, _, err := c.kv.List(c.key("tenants")+"/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return s, fmt.Errorf("list %s: %w", c.key("tenants"), err)
	}
	ctl, _, err := c.kv.List(c.key("control")+"/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return s, fmt.Errorf("list %s: %w", c.key("control"), err)
	}
	dos, _, err := c.kv.List(c.key("dos")+"/", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return s, fmt.Errorf("list %s: %w", c.key("dos"), err)
	}
	return c.build(pairs, ctl, dos), nil
}

func (c *Consul) build(tenantPairs, controlPairs, dosPairs api.KVPairs) Snapshot {
	s := Snapshot{Tenants: map[string]map[string]Entry{}, Control: map[string]Entry{}}
	tp := c.key("tenants") + "/"
	for _, p := range tenantPairs {
		rest := strings.TrimPrefix(p.Key, tp)
		id, key, ok := strings.Cut(rest, "/")
		switch {
		case strings.HasSuffix(p.Key, "/") && p.Value == nil:
			continue // a "folder" key made by the UI
		case !ok || key == "":
			s.Problems = append(s.Problems, fmt.Sprintf("%s: not a tenant key (want %s<tenant>/<key>)", p.Key, tp))
			continue
		case config.ValidateTenantID(id) != nil:
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %v", p.Key, config.ValidateTenantID(id)))
			continue
		}
		if s.Tenants[id] == nil {
			s.Tenants[id] = map[string]Entry{}
		}
		s.Tenants[id][key] = Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
	}
	cp := c.key("control") + "/"
	for _, p := range controlPairs {
		s.Control[strings.TrimPrefix(p.Key, cp)] = Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
	}
	for _, p := range dosPairs {
		switch {
		case p.Key == c.key("dos", "global"):
			s.DoSGlobal = &Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
		case strings.HasSuffix(p.Key, "/") && p.Value == nil:
		default:
			s.Problems = append(s.Problems, fmt.Sprintf("%s: unknown key (the fleet-wide DoS document is %s)", p.Key, c.key("dos", "global")))
		}
	}
	return s
}

// Watch runs one blocking query per watched prefix and sends a merged
// snapshot whenever either changes.
func (c *Consul) Watch(ctx context.Context, out chan<- Snapshot, onError func(error)) error {
	var (
		mu      sync.Mutex
		tenants api.KVPairs
		control api.KVPairs
		dos     api.KVPairs
		have    [3]bool
		index   [3]uint64 // index of the data in tenants, control and dos
	)
	changed := make(chan struct{}, 1)
	watch := func(slot int, prefix string, set func(api.KVPairs)) {
		var idx uint64
		var bo backoff
		for ctx.Err() == nil {
			opts := (&api.QueryOptions{WaitIndex: idx, WaitTime: c.WaitTime}).WithContext(ctx)
			pairs, meta, err := c.kv.List(prefix, opts)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if onError != nil {
					onError(fmt.Errorf("watch %s: %w", prefix, err))
				}
				// The store may have restarted with new indexes: start over.
				idx = 0
				sleepCtx(ctx, bo.next())
				continue
			}
			bo.reset()
			if meta.LastIndex == idx && idx != 0 {
				continue // wait time elapsed, nothing new
			}
			if meta.LastIndex < idx {
				idx = 0 // index went backwards: Consul restarted or restored
			} else {
				idx = meta.LastIndex
			}
			mu.Lock()
			set(pairs)
			have[slot] = true
			index[slot] = meta.LastIndex
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
	go watch(0, c.key("tenants")+"/", func(p api.KVPairs) { tenants = p })
	go watch(1, c.key("control")+"/", func(p api.KVPairs) { control = p })
	go watch(2, c.key("dos")+"/", func(p api.KVPairs) { dos = p })
	// Snapshots are deduplicated by the pair of indexes they were built
	// from: both watchers signal at start, and a control change must not
	// resend unchanged tenants as new. Comparing indexes keeps this O(1).
	type key struct {
		tenants uint64
		control string
	}
	var last key
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
		mu.Lock()
		ready := have[0] && have[1] && have[2]
		// A blocking query on an empty prefix wakes on any KV write, so the
		// control and dos indexes alone say nothing; their few entries are
		// compared.
		k := key{tenants: index[0]}
		for _, p := range append(append(api.KVPairs(nil), control...), dos...) {
			k.control += fmt.Sprintf("%s=%d;", p.Key, p.ModifyIndex)
		}
		var snap Snapshot
		if ready && k != last {
			snap = c.build(tenants, control, dos)
		}
		mu.Unlock()
		if !ready || k == last {
			continue
		}
		last = k
		select {
		case out <- snap:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Put writes with check-and-set.
func (c *Consul) Put(ctx context.Context, tenant, key string, value []byte, cas uint64) error {
	ok, _, err := c.kv.CAS(&api.KVPair{Key: c.key("tenants", tenant, key), Value: value, ModifyIndex: cas},
		(&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("write %s: %w", c.key("tenants", tenant, key), err)
	}
	if !ok {
		return fmt.Errorf("write %s: %w", c.key("tenants", tenant, key), ErrConflict)
	}
	return nil
}

// DeleteTenant removes the tenant's whole subtree.
func (c *Consul) DeleteTenant(ctx context.Context, tenant string) error {
	pairs, _, err := c.kv.Keys(c.key("tenants", tenant)+"/", "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list %s: %w", c.key("tenants", tenant), err)
	}
	if len(pairs) == 0 {
		return fmt.Errorf("tenant %s: %w", tenant, ErrNotFound)
	}
	if _, err := c.kv.DeleteTree(c.key("tenants", tenant)+"/", (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete %s: %w", c.key("tenants", tenant), err)
	}
	return nil
}

// PutDoSGlobal writes <prefix>/dos/global with check-and-set.
func (c *Consul) PutDoSGlobal(ctx context.Context, value []byte, cas uint64) error {
	k := c.key("dos", "global")
	ok, _, err := c.kv.CAS(&api.KVPair{Key: k, Value: value, ModifyIndex: cas}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("write %s: %w", k, err)
	}
	if !ok {
		return fmt.Errorf("write %s: %w", k, ErrConflict)
	}
	return nil
}

// PutControl writes an operator control key.
func (c *Consul) PutControl(ctx context.Context, name string, value []byte) error {
	if _, err := c.kv.Put(&api.KVPair{Key: c.key("control", name), Value: value}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("write %s: %w", c.key("control", name), err)
	}
	return nil
}

// PutStatus writes a status document.
func (c *Consul) PutStatus(ctx context.Context, host, name string, st any) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if _, err := c.kv.Put(&api.KVPair{Key: c.key("status", host, name), Value: b}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("write %s: %w", c.key("status", host, name), err)
	}
	return nil
}

// DeleteStatus removes a status document.
func (c *Consul) DeleteStatus(ctx context.Context, host, name string) error {
	if _, err := c.kv.Delete(c.key("status", host, name), (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("delete %s: %w", c.key("status", host, name), err)
	}
	return nil
}

// ListStatus reads status documents, of one host or of all ("").
func (c *Consul) ListStatus(ctx context.Context, host string) (map[string]map[string]json.RawMessage, error) {
	p := c.key("status") + "/"
	if host != "" {
		p += host + "/"
	}
	pairs, _, err := c.kv.List(p, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	out := map[string]map[string]json.RawMessage{}
	for _, kv := range pairs {
		h, name, ok := strings.Cut(strings.TrimPrefix(kv.Key, c.key("status")+"/"), "/")
		if !ok || !json.Valid(kv.Value) {
			continue
		}
		if out[h] == nil {
			out[h] = map[string]json.RawMessage{}
		}
		out[h][name] = kv.Value
	}
	return out, nil
}
