package consultest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

// Meter is an http.RoundTripper for Consul clients under test: it counts
// the response bytes they read (what a watch design costs) and can cut
// them off (a server that loses Consul for a while).
type Meter struct {
	base  http.RoundTripper
	bytes atomic.Int64
	reqs  atomic.Int64
	kvw   atomic.Int64
	cut   atomic.Bool
	// inflight cancels the requests under way, so that a cut fails a
	// blocking query at once, as a dead agent's reset connections do.
	mu       sync.Mutex
	inflight map[*inflight]struct{}
}

type inflight struct{ cancel context.CancelFunc }

// NewMeter returns a Meter over a transport of its own, with room for
// many idle connections (simulated fleets share one).
func NewMeter() *Meter {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4096
	return &Meter{base: t, inflight: map[*inflight]struct{}{}}
}

// Client is an http.Client through the meter, for api.Config.HttpClient.
func (m *Meter) Client() *http.Client { return &http.Client{Transport: m} }

// Bytes is the response bytes read so far.
func (m *Meter) Bytes() int64 { return m.bytes.Load() }

// Requests is the requests sent so far.
func (m *Meter) Requests() int64 { return m.reqs.Load() }

// KVWrites is the KV writes (PUT or DELETE of /v1/kv/) sent so far.
func (m *Meter) KVWrites() int64 { return m.kvw.Load() }

// Cut makes every request fail (on), those under way included, or go
// through again (off).
func (m *Meter) Cut(on bool) {
	m.cut.Store(on)
	if !on {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for f := range m.inflight {
		f.cancel()
	}
}

// RoundTrip implements http.RoundTripper.
func (m *Meter) RoundTrip(r *http.Request) (*http.Response, error) {
	if m.cut.Load() {
		return nil, errors.New("cut off (test)")
	}
	m.reqs.Add(1)
	if r.Method != http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/kv/") {
		m.kvw.Add(1)
	}
	ctx, cancel := context.WithCancel(r.Context())
	f := &inflight{cancel: cancel}
	m.mu.Lock()
	m.inflight[f] = struct{}{}
	m.mu.Unlock()
	done := func() {
		m.mu.Lock()
		delete(m.inflight, f)
		m.mu.Unlock()
		cancel()
	}
	resp, err := m.base.RoundTrip(r.WithContext(ctx))
	if err != nil {
		done()
		return nil, err
	}
	resp.Body = &countBody{ReadCloser: resp.Body, n: &m.bytes, done: done}
	return resp, nil
}

type countBody struct {
	io.ReadCloser
	n    *atomic.Int64
	once sync.Once
	done func()
}

func (b *countBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
