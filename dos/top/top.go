// Package top summarises the XDP DoS layer's packet samples for a live
// view (nsctl dos top): what is hitting the edge right now, by
// destination, source block, protocol and port, length, TTL, TCP flags and
// first payload bytes, with rates scaled back from 1-in-N sampling, and
// the signatures dos/detect would derive from it, each with the nsctl
// command that adds it.
//
// nsd keeps a Recorder beside its sample reader. Nothing is recorded
// while nobody watches: the reader asks Watching (one atomic load per
// sample) and a request to the Handler starts a watch that lasts
// WatchTTL after the last request. The first request of a watch waits
// one window for samples to arrive. The package is pure (no kernel code):
// nsctl imports it for the types and the rendering.
package top

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
)

// Sample is one sampled packet as the view uses it.
type Sample struct {
	At     time.Time
	Tenant string // "" when the destination is no tenant's
	// Rate is the 1-in-N sampling rate the packet was sampled at.
	Rate    uint32
	Len     uint32 // the frame's length on the wire
	Dropped bool
	Reason  string
	Pkt     detect.Packet
}

// Capacity is how many samples a Recorder holds (newest kept).
const Capacity = 1 << 16

// WatchTTL is how long a watch lasts after the last request.
const WatchTTL = 10 * time.Second

// MaxWindow bounds the window a request may ask for.
const MaxWindow = 10 * time.Second

// Recorder keeps the newest samples while someone watches. Safe for
// concurrent use.
type Recorder struct {
	watchUntil atomic.Int64 // unix nanoseconds
	watchStart atomic.Int64 // when the current watch began
	held       atomic.Bool  // ring allocated
	mu         sync.Mutex
	ring       []Sample
	next       int
	full       bool
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{} }

// Watching reports whether samples should be recorded at now.
func (r *Recorder) Watching(now time.Time) bool { return now.UnixNano() < r.watchUntil.Load() }

// Watch extends the watch to now+WatchTTL and reports whether a watch was
// already on (samples of the last window are there).
func (r *Recorder) Watch(now time.Time) (wasOn bool) {
	wasOn = r.Watching(now)
	until := now.Add(WatchTTL).UnixNano()
	for {
		old := r.watchUntil.Load()
		if old >= until || r.watchUntil.CompareAndSwap(old, until) {
			break
		}
	}
	if !wasOn {
		r.watchStart.Store(now.UnixNano())
		r.mu.Lock()
		r.ring, r.next, r.full = nil, 0, false // samples of an earlier watch are stale
		r.mu.Unlock()
	}
	return wasOn
}

// Recording is how long the current watch has recorded samples at now.
func (r *Recorder) Recording(now time.Time) time.Duration {
	if !r.Watching(now) {
		return 0
	}
	return now.Sub(time.Unix(0, r.watchStart.Load()))
}

// Add records a sample.
func (r *Recorder) Add(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ring == nil {
		r.ring = make([]Sample, Capacity)
		r.held.Store(true)
	}
	r.ring[r.next] = s
	r.next++
	if r.next == len(r.ring) {
		r.next, r.full = 0, true
	}
}

// Release frees the samples once no watch is on (the sample reader calls
// it when Watching is false: one atomic load unless there is memory to
// free).
func (r *Recorder) Release(now time.Time) {
	if !r.held.Load() || r.Watching(now) {
		return
	}
	r.mu.Lock()
	r.ring, r.next, r.full = nil, 0, false
	r.held.Store(false)
	r.mu.Unlock()
}

// Since returns the recorded samples seen at or after t, oldest first.
func (r *Recorder) Since(t time.Time) []Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Sample
	take := func(ss []Sample) {
		for _, s := range ss {
			if !s.At.Before(t) {
				out = append(out, s)
			}
		}
	}
	if r.full {
		take(r.ring[r.next:])
	}
	take(r.ring[:r.next])
	return out
}

// Filter selects the samples a view shows.
type Filter struct {
	Tenant string       `json:"tenant,omitempty"`
	Dst    netip.Prefix `json:"dst,omitzero"`
	Proto  int          `json:"proto"` // -1: any
}

// Match reports whether s passes f.
func (f Filter) Match(s Sample) bool {
	return (f.Tenant == "" || s.Tenant == f.Tenant) &&
		(!f.Dst.IsValid() || s.Pkt.Dst.IsValid() && f.Dst.Contains(s.Pkt.Dst)) &&
		(f.Proto < 0 || int(s.Pkt.Proto) == f.Proto)
}

// Entry is one row of a table: a value and the traffic that carries it.
type Entry struct {
	Key    string  `json:"key"`
	Tenant string  `json:"tenant,omitempty"` // destinations only
	PPS    float64 `json:"pps"`
	BPS    float64 `json:"bps"`
	// Share is the part of the view's packets (0–1).
	Share float64 `json:"share"`
	// Dropped is the part of this row's packets XDP dropped (0–1).
	Dropped float64 `json:"dropped"`
}

// Candidate is a signature dos/detect derives from the traffic to one
// victim, with the command that adds it.
type Candidate struct {
	Tenant     string  `json:"tenant"`
	Victim     string  `json:"victim"`
	ID         string  `json:"id"`
	Expression string  `json:"expression"`
	Action     string  `json:"action"`              // drop or ratelimit
	LimitPPS   uint64  `json:"limit_pps,omitempty"` // ratelimit
	PPS        float64 `json:"pps"`                 // estimated traffic it matches
	// Dropped is the part of the victim's packets already dropped (a
	// mitigation in force).
	Dropped float64 `json:"dropped"`
	// Command is the nsctl command line (shell-quoted); Argv the same
	// arguments after "nsctl", for scripts.
	Command string   `json:"command"`
	Argv    []string `json:"argv"`
}

// Summary is one frame of the view.
type Summary struct {
	Hosts         []string  `json:"hosts"`
	At            time.Time `json:"at"`
	WindowSeconds float64   `json:"window_seconds"`
	Filter        Filter    `json:"filter"`
	Samples       int       `json:"samples"`
	PPS           float64   `json:"pps"`
	BPS           float64   `json:"bps"`
	DroppedPPS    float64   `json:"dropped_pps"`

	Destinations []Entry `json:"destinations"`
	Sources      []Entry `json:"sources"` // /24 (IPv4) and /48 (IPv6) blocks
	Protocols    []Entry `json:"protocols"`
	DstPorts     []Entry `json:"dst_ports"` // "udp/123"
	SrcPorts     []Entry `json:"src_ports"`
	Lengths      []Entry `json:"lengths"` // IP length
	TTLs         []Entry `json:"ttls"`
	TCPFlags     []Entry `json:"tcp_flags"`
	Payloads     []Entry `json:"payloads"` // first 4 payload bytes, hex
	Reasons      []Entry `json:"reasons"`  // the XDP verdict's reason

	Candidates []Candidate `json:"candidates"`
	// Notes say why a view may be empty (sampling off, no DoS layer).
	Notes []string `json:"notes,omitempty"`
}

// Options shape a summary.
type Options struct {
	Window time.Duration
	Filter Filter
	TopN   int // rows per table (default 10)
	// MinSamples to a destination before a candidate is derived (default 16).
	MinSamples int
	// Coverage passed to detect.Signature (default 0.9).
	Coverage float64
	// ExpiresIn goes into the printed command (default 1h).
	ExpiresIn time.Duration
}

func (o *Options) defaults() {
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	if o.TopN <= 0 {
		o.TopN = 10
	}
	if o.MinSamples <= 0 {
		o.MinSamples = 16
	}
	if o.Coverage <= 0 {
		o.Coverage = 0.9
	}
	if o.ExpiresIn <= 0 {
		o.ExpiresIn = time.Hour
	}
}

// Summarize builds a frame from samples (those of the window ending at now).
func Summarize(host string, samples []Sample, now time.Time, o Options) Summary {
	o.defaults()
	secs := o.Window.Seconds()
	sum := Summary{Hosts: []string{host}, At: now.UTC(), WindowSeconds: secs, Filter: o.Filter}
	from := now.Add(-o.Window)
	var tables [nTables]table
	for i := range tables {
		tables[i].rows = map[string]*row{}
	}
	type victim struct {
		tenant string
		dst    netip.Addr
	}
	byVictim := map[victim][]detect.Packet{}
	victimPPS := map[victim]*row{}
	for _, s := range samples {
		if s.At.Before(from) || s.At.After(now) || !o.Filter.Match(s) {
			continue
		}
		sum.Samples++
		w := float64(max(s.Rate, 1))
		c := contrib{pkts: w / secs, bits: w * float64(s.Len) * 8 / secs, dropped: s.Dropped}
		sum.PPS += c.pkts
		sum.BPS += c.bits
		if s.Dropped {
			sum.DroppedPPS += c.pkts
		}
		p := s.Pkt
		tables[tReasons].add(s.Reason, "", c)
		if !p.Dst.IsValid() {
			continue
		}
		tables[tDst].add(p.Dst.String(), s.Tenant, c)
		if p.Src.IsValid() {
			bits := 24
			if p.Src.Is6() {
				bits = 48
			}
			pfx, _ := p.Src.Prefix(bits)
			tables[tSrc].add(pfx.String(), "", c)
		}
		proto := ProtoName(p.Proto)
		tables[tProto].add(proto, "", c)
		switch p.Proto {
		case 6, 17:
			tables[tDPort].add(proto+"/"+strconv.Itoa(int(p.DPort)), "", c)
			tables[tSPort].add(proto+"/"+strconv.Itoa(int(p.SPort)), "", c)
		case 1, 58:
			if p.ICMPType >= 0 {
				tables[tDPort].add(proto+"/type "+strconv.Itoa(p.ICMPType), "", c)
			}
		}
		if p.Proto == 6 {
			tables[tFlags].add(FlagNames(p.TCPFlags), "", c)
		}
		tables[tLen].add(strconv.Itoa(int(p.Len)), "", c)
		tables[tTTL].add(strconv.Itoa(int(p.TTL)), "", c)
		if len(p.Payload) > 0 {
			tables[tPayload].add("0x"+hex.EncodeToString(p.Payload), "", c)
		}
		if s.Tenant != "" {
			v := victim{s.Tenant, p.Dst}
			byVictim[v] = append(byVictim[v], p)
			if victimPPS[v] == nil {
				victimPPS[v] = &row{}
			}
			victimPPS[v].pps += c.pkts
			if s.Dropped {
				victimPPS[v].dropped += c.pkts
			}
		}
	}
	list := func(t int) []Entry { return tables[t].top(o.TopN, sum.PPS) }
	sum.Destinations, sum.Sources, sum.Protocols = list(tDst), list(tSrc), list(tProto)
	sum.DstPorts, sum.SrcPorts, sum.Lengths, sum.TTLs = list(tDPort), list(tSPort), list(tLen), list(tTTL)
	sum.TCPFlags, sum.Payloads, sum.Reasons = list(tFlags), list(tPayload), list(tReasons)

	for v, pkts := range byVictim {
		if len(pkts) < o.MinSamples {
			continue
		}
		expr, content, ok := detect.Signature(v.dst, pkts, o.Coverage)
		if !ok {
			continue
		}
		r := victimPPS[v]
		c := Candidate{Tenant: v.tenant, Victim: v.dst.String(), ID: "top-" + shortHash(expr), Expression: expr, Action: "drop",
			PPS: r.pps, Dropped: r.dropped / r.pps}
		if !content {
			// Like the detector: without content the attack may look like
			// legitimate traffic to the victim, so limit instead of drop.
			c.Action, c.LimitPPS = "ratelimit", uint64(r.pps/10)+1
		}
		c.Argv = []string{"dos", "add-signature", c.Tenant, "--id", c.ID, "--expires-in", shortDuration(o.ExpiresIn)}
		if c.Action == "ratelimit" {
			c.Argv = append(c.Argv, "--action", "ratelimit", "--pps", fmt.Sprint(c.LimitPPS))
		}
		c.Argv = append(c.Argv, "--expression", c.Expression)
		c.Command = CommandLine(append([]string{"nsctl"}, c.Argv...))
		sum.Candidates = append(sum.Candidates, c)
	}
	sortCandidates(sum.Candidates)
	return sum
}

func sortCandidates(cs []Candidate) {
	slices.SortFunc(cs, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(b.PPS, a.PPS), strings.Compare(a.Tenant, b.Tenant), strings.Compare(a.Expression, b.Expression))
	})
}

// The tables of a summary.
const (
	tDst = iota
	tSrc
	tProto
	tDPort
	tSPort
	tLen
	tTTL
	tFlags
	tPayload
	tReasons
	nTables
)

// contrib is what one sample adds to each row it falls in.
type contrib struct {
	pkts, bits float64
	dropped    bool
}

func (t *table) add(key, tenant string, c contrib) {
	r := t.rows[key]
	if r == nil {
		r = &row{}
		t.rows[key] = r
	}
	r.tenant = tenant
	r.pps += c.pkts
	r.bps += c.bits
	if c.dropped {
		r.dropped += c.pkts
	}
}

type row struct {
	tenant            string
	pps, bps, dropped float64
}

type table struct{ rows map[string]*row }

func (t *table) top(n int, total float64) []Entry {
	out := make([]Entry, 0, len(t.rows))
	for k, r := range t.rows {
		e := Entry{Key: k, Tenant: r.tenant, PPS: r.pps, BPS: r.bps}
		if total > 0 {
			e.Share = r.pps / total
		}
		if r.pps > 0 {
			e.Dropped = r.dropped / r.pps
		}
		out = append(out, e)
	}
	sortEntries(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func sortEntries(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int { return cmp.Or(cmp.Compare(b.PPS, a.PPS), strings.Compare(a.Key, b.Key)) })
}

// Merge combines the frames of several edges into one fleet view (rates
// add up; a candidate derived on several edges is listed once with the
// sum of their rates).
func Merge(ss []Summary, topN int) Summary {
	if len(ss) == 1 {
		return ss[0]
	}
	if topN <= 0 {
		topN = 10
	}
	var out Summary
	for _, s := range ss {
		out.Hosts = append(out.Hosts, s.Hosts...)
		if s.At.After(out.At) {
			out.At = s.At
		}
		out.WindowSeconds = max(out.WindowSeconds, s.WindowSeconds)
		out.Filter = s.Filter
		out.Samples += s.Samples
		out.PPS += s.PPS
		out.BPS += s.BPS
		out.DroppedPPS += s.DroppedPPS
		out.Notes = append(out.Notes, s.Notes...)
	}
	merge := func(get func(*Summary) []Entry) []Entry {
		m := map[string]*Entry{}
		for i := range ss {
			for _, e := range get(&ss[i]) {
				x := m[e.Key]
				if x == nil {
					x = &Entry{Key: e.Key, Tenant: e.Tenant}
					m[e.Key] = x
				}
				x.Dropped = (x.Dropped*x.PPS + e.Dropped*e.PPS) / max(x.PPS+e.PPS, 1e-9)
				x.PPS += e.PPS
				x.BPS += e.BPS
			}
		}
		var es []Entry
		for _, e := range m {
			if out.PPS > 0 {
				e.Share = e.PPS / out.PPS
			}
			es = append(es, *e)
		}
		sortEntries(es)
		if len(es) > topN {
			es = es[:topN]
		}
		return es
	}
	out.Destinations = merge(func(s *Summary) []Entry { return s.Destinations })
	out.Sources = merge(func(s *Summary) []Entry { return s.Sources })
	out.Protocols = merge(func(s *Summary) []Entry { return s.Protocols })
	out.DstPorts = merge(func(s *Summary) []Entry { return s.DstPorts })
	out.SrcPorts = merge(func(s *Summary) []Entry { return s.SrcPorts })
	out.Lengths = merge(func(s *Summary) []Entry { return s.Lengths })
	out.TTLs = merge(func(s *Summary) []Entry { return s.TTLs })
	out.TCPFlags = merge(func(s *Summary) []Entry { return s.TCPFlags })
	out.Payloads = merge(func(s *Summary) []Entry { return s.Payloads })
	out.Reasons = merge(func(s *Summary) []Entry { return s.Reasons })
	byExpr := map[string]int{}
	for _, s := range ss {
		for _, c := range s.Candidates {
			if i, ok := byExpr[c.Tenant+"\x00"+c.Expression]; ok {
				out.Candidates[i].PPS += c.PPS
				continue
			}
			byExpr[c.Tenant+"\x00"+c.Expression] = len(out.Candidates)
			out.Candidates = append(out.Candidates, c)
		}
	}
	sortCandidates(out.Candidates)
	return out
}

// ProtoName names an IP protocol as the rule language does.
func ProtoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 47:
		return "gre"
	case 58:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}

// ParseProto reads a --proto value: a name ProtoName gives, or 0–255.
func ParseProto(s string) (int, error) {
	for p := 0; p < 256; p++ {
		if ProtoName(uint8(p)) == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown protocol %q: want tcp, udp, icmp, icmpv6, gre or a number 0-255", s)
}

// FlagNames writes TCP flags like tcpdump ("SYN", "SYN|ACK", "none").
func FlagNames(f uint8) string {
	names := []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "|")
}

// CommandLine quotes args for a POSIX shell.
func CommandLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// shortDuration writes d without zero units ("1h", "30m", "1h30m").
func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.Replace(s, "m0s", "m", 1)
	return strings.Replace(s, "h0m", "h", 1)
}

func shortHash(s string) string {
	h := uint32(2166136261) // FNV-1a: stable, short IDs
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}
