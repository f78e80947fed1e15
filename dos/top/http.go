package top

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Path is where nsd serves the view, on its --metrics-addr listener.
const Path = "/v1/dos/top"

// Server serves frames of a Recorder over HTTP.
type Server struct {
	Host string
	Rec  *Recorder // nil: no DoS layer on this nsd
	// Sampling reports whether any sampling is configured (global or a
	// tenant's sample_rate); nil: unknown.
	Sampling func() bool
	Now      func() time.Time
}

// Query is a request for one frame.
type Query struct {
	Window time.Duration
	Filter Filter
	TopN   int
}

// Values encodes q as URL query parameters.
func (q Query) Values() url.Values {
	v := url.Values{}
	if q.Window > 0 {
		v.Set("window", q.Window.String())
	}
	if q.Filter.Tenant != "" {
		v.Set("tenant", q.Filter.Tenant)
	}
	if q.Filter.Dst.IsValid() {
		v.Set("dst", q.Filter.Dst.String())
	}
	if q.Filter.Proto >= 0 {
		v.Set("proto", strconv.Itoa(q.Filter.Proto))
	}
	if q.TopN > 0 {
		v.Set("top", strconv.Itoa(q.TopN))
	}
	return v
}

// ParseQuery reads query parameters; errors name the parameter.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Window: 2 * time.Second, Filter: Filter{Proto: -1}, TopN: 10}
	if s := v.Get("window"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > MaxWindow {
			return q, fmt.Errorf("window: %q: want a duration in (0, %v]", s, MaxWindow)
		}
		q.Window = d
	}
	q.Filter.Tenant = v.Get("tenant")
	if s := v.Get("dst"); s != "" {
		p, err := ParseDst(s)
		if err != nil {
			return q, fmt.Errorf("dst: %w", err)
		}
		q.Filter.Dst = p
	}
	if s := v.Get("proto"); s != "" {
		p, err := strconv.Atoi(s)
		if err != nil {
			p, err = ParseProto(s)
		}
		if err != nil || p < 0 || p > 255 {
			return q, fmt.Errorf("proto: %q: want a protocol name or 0-255", s)
		}
		q.Filter.Proto = p
	}
	if s := v.Get("top"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return q, fmt.Errorf("top: %q: want 1-100", s)
		}
		q.TopN = n
	}
	return q, nil
}

// ParseDst reads an address or a canonical CIDR.
func ParseDst(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q: want an address or CIDR", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q: want an address or canonical CIDR", s)
	}
	return p, nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ServeHTTP answers GET Path?window=2s&tenant=&dst=&proto=&top= with a
// Summary as JSON. The first request of a watch waits one window.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if s.Rec == nil {
		http.Error(w, "this nsd runs without the XDP DoS layer (--uplink): no packet samples", http.StatusServiceUnavailable)
		return
	}
	if !s.Rec.Watch(s.now()) {
		// Nothing was recorded before this request: wait one window.
		select {
		case <-time.After(q.Window):
		case <-r.Context().Done():
			return
		}
	}
	sum, _ := s.Frame(q)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(sum)
}

// Frame extends the watch and summarises the window ending now. full is
// false while the watch has recorded for less than the window (rates
// would read low); Frame then summarises what it has over that time.
func (s *Server) Frame(q Query) (sum Summary, full bool) {
	now := s.now()
	s.Rec.Watch(now)
	full = true
	if rec := s.Rec.Recording(now); rec < q.Window {
		full = false
		q.Window = max(rec, time.Millisecond)
	}
	sum = Summarize(s.Host, s.Rec.Since(now.Add(-q.Window)), now, Options{Window: q.Window, Filter: q.Filter, TopN: q.TopN})
	if sum.Samples == 0 && s.Sampling != nil && !s.Sampling() {
		sum.Notes = append(sum.Notes, s.Host+": packet sampling is off: set sample_rate in dos/global or the tenant's dos document")
	}
	return sum, full
}

// WatchRequest is what nsctl dos top --via-store writes to
// control/top/<watch> (source.TopWatchKey) and refreshes while it
// watches: every nsd it names (all when Hosts is empty) publishes a frame
// of Query about every second to top/<watch>/<host> until Until.
type WatchRequest struct {
	Until time.Time `json:"until"`
	Query string    `json:"query"` // Query.Values().Encode()
	Hosts []string  `json:"hosts,omitempty"`
}

// For reports whether host is asked to publish.
func (w WatchRequest) For(host string) bool {
	if len(w.Hosts) == 0 {
		return true
	}
	for _, h := range w.Hosts {
		if h == host {
			return true
		}
	}
	return false
}
