package consultest

import (
	"errors"
	"io"
	"net/http"
	"strings"
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
}

// NewMeter returns a Meter over a transport of its own, with room for
// many idle connections (simulated fleets share one).
func NewMeter() *Meter {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4096
	return &Meter{base: t}
}

// Client is an http.Client through the meter, for api.Config.HttpClient.
func (m *Meter) Client() *http.Client { return &http.Client{Transport: m} }

// Bytes is the response bytes read so far.
func (m *Meter) Bytes() int64 { return m.bytes.Load() }

// Requests is the requests sent so far.
func (m *Meter) Requests() int64 { return m.reqs.Load() }

// KVWrites is the KV writes (PUT or DELETE of /v1/kv/) sent so far.
func (m *Meter) KVWrites() int64 { return m.kvw.Load() }

// Cut makes every request fail (on) or go through again (off).
func (m *Meter) Cut(on bool) { m.cut.Store(on) }

// RoundTrip implements http.RoundTripper.
func (m *Meter) RoundTrip(r *http.Request) (*http.Response, error) {
	if m.cut.Load() {
		return nil, errors.New("cut off (test)")
	}
	m.reqs.Add(1)
	if r.Method != http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/kv/") {
		m.kvw.Add(1)
	}
	resp, err := m.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &countBody{ReadCloser: resp.Body, n: &m.bytes}
	return resp, nil
}

type countBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
