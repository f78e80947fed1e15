package top

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nfhost/nfhost/dos/detect"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// flood is 2 s of samples at 1 in 64: an NTP monlist flood of 18k pps
// from 198.51.100.0/24 to 203.0.113.1 and 1k pps of web traffic to
// 203.0.113.2 from 2001:db8:7::/48.
func flood() []Sample {
	var ss []Sample
	at := t0.Add(-2 * time.Second)
	for i := 0; i < 2*18000/64; i++ {
		ss = append(ss, Sample{At: at.Add(time.Duration(i) * 2 * time.Second / (2 * 18000 / 64)), Tenant: "acme", Rate: 64, Len: 90, Reason: "pass",
			Pkt: detect.Packet{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Dst: netip.MustParseAddr("203.0.113.1"),
				Proto: 17, SPort: uint16(40000 + i%64), DPort: 123, Len: 76, TTL: 57, ICMPType: -1, Payload: []byte{0x17, 0, 3, 0x2a}}})
	}
	for i := 0; i < 2*1000/64; i++ {
		ss = append(ss, Sample{At: at.Add(time.Duration(i) * 60 * time.Millisecond), Tenant: "acme", Rate: 64, Len: 74, Reason: "pass",
			Pkt: detect.Packet{Src: netip.MustParseAddr(fmt.Sprintf("2001:db8:7:%x::1", i)), Dst: netip.MustParseAddr("203.0.113.2"),
				Proto: 6, SPort: uint16(50000 + i), DPort: 443, Len: uint16(60 + i%4), TTL: byte(50 + i%10), TCPFlags: 0x02, ICMPType: -1}})
	}
	return ss
}

func TestSummarize(t *testing.T) {
	s := Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1}})
	if s.Samples != 562+31 {
		t.Errorf("samples %d", s.Samples)
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if got < want*0.95 || got > want*1.05 {
			t.Errorf("%s: %.0f, want about %.0f", what, got, want)
		}
	}
	near("pps", s.PPS, 19000)
	if d := s.Destinations[0]; d.Key != "203.0.113.1" || d.Tenant != "acme" {
		t.Errorf("top destination %+v", d)
	} else {
		near("victim pps", d.PPS, 18000)
		near("victim bps", d.BPS, 18000*90*8)
	}
	if s.Sources[0].Key != "198.51.100.0/24" || s.Sources[1].Key != "2001:db8:7::/48" {
		t.Errorf("source blocks %+v", s.Sources)
	}
	if s.Protocols[0].Key != "udp" || s.DstPorts[0].Key != "udp/123" || s.Payloads[0].Key != "0x1700032a" || s.TCPFlags[0].Key != "SYN" {
		t.Errorf("tables %+v %+v %+v %+v", s.Protocols, s.DstPorts, s.Payloads, s.TCPFlags)
	}
	if len(s.Candidates) != 2 {
		t.Fatalf("candidates %+v", s.Candidates)
	}
	c := s.Candidates[0]
	want := "ip.dst == 203.0.113.1/32 and udp.dstport == 123 and ip.len == 76 and ip.ttl == 57 and payload[0:4] == 0x1700032a"
	if c.Victim != "203.0.113.1" || c.Expression != want || c.Action != "drop" {
		t.Errorf("candidate %+v", c)
	}
	wantCmd := "nsctl dos add-signature acme --id " + c.ID + " --expires-in 1h --expression '" + want + "'"
	if c.Command != wantCmd || strings.Join(c.Argv, " ") != strings.TrimPrefix(strings.ReplaceAll(wantCmd, "'", ""), "nsctl ") {
		t.Errorf("command\n%s\nwant\n%s\nargv %q", c.Command, wantCmd, c.Argv)
	}
	// The SYN flood has no content in common: rate limited, not dropped.
	if c := s.Candidates[1]; c.Victim != "203.0.113.2" || c.Action != "ratelimit" || c.LimitPPS == 0 || !strings.Contains(c.Command, "--pps") {
		t.Errorf("SYN candidate %+v", c)
	}

	// Filters.
	f := Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: 6}})
	if len(f.Destinations) != 1 || f.Destinations[0].Key != "203.0.113.2" || len(f.Candidates) != 1 {
		t.Errorf("proto filter: %+v", f.Destinations)
	}
	f = Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1, Dst: netip.MustParsePrefix("203.0.113.1/32")}})
	if len(f.Destinations) != 1 || f.Destinations[0].Key != "203.0.113.1" {
		t.Errorf("dst filter: %+v", f.Destinations)
	}
	f = Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1, Tenant: "other"}})
	if f.Samples != 0 || len(f.Candidates) != 0 {
		t.Errorf("tenant filter: %+v", f)
	}
	// Samples outside the window do not count.
	f = Summarize("edge1", flood(), t0, Options{Window: time.Second, Filter: Filter{Proto: -1}})
	if f.Samples > s.Samples/2+20 || f.Samples < s.Samples/2-20 {
		t.Errorf("1 s window: %d samples of %d", f.Samples, s.Samples)
	}
}

func TestMerge(t *testing.T) {
	a := Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1}})
	b := Summarize("edge2", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1}})
	m := Merge([]Summary{a, b}, 10)
	if strings.Join(m.Hosts, ",") != "edge1,edge2" || m.Samples != 2*a.Samples || m.PPS != 2*a.PPS ||
		m.Destinations[0].PPS != 2*a.Destinations[0].PPS || len(m.Candidates) != 2 || m.Candidates[0].PPS != 2*a.Candidates[0].PPS {
		t.Errorf("merged %+v", m)
	}
}

func TestRecorderWatch(t *testing.T) {
	r := NewRecorder()
	if r.Watching(t0) {
		t.Fatal("watching before any request")
	}
	if r.Watch(t0) {
		t.Error("first Watch reports a watch on")
	}
	if !r.Watching(t0.Add(WatchTTL-time.Millisecond)) || r.Watching(t0.Add(WatchTTL)) {
		t.Error("watch does not last WatchTTL")
	}
	for _, s := range flood() {
		r.Add(s)
	}
	if n := len(r.Since(t0.Add(-time.Second))); n < 250 || n > 350 {
		t.Errorf("%d samples in the last second", n)
	}
	if !r.Watch(t0.Add(time.Second)) {
		t.Error("second Watch within the TTL reports no watch")
	}
	// Released after the watch ends, not before.
	r.Release(t0.Add(2 * time.Second))
	if len(r.Since(time.Time{})) == 0 {
		t.Error("released during a watch")
	}
	r.Release(t0.Add(time.Minute))
	if len(r.Since(time.Time{})) != 0 || r.held.Load() {
		t.Error("not released after the watch")
	}
	for _, s := range flood() {
		r.Add(s)
	}
	// A new watch after the old one ended starts empty.
	r.Watch(t0.Add(time.Minute))
	if n := len(r.Since(time.Time{})); n != 0 {
		t.Errorf("%d stale samples", n)
	}
	// The ring keeps the newest Capacity samples.
	for i := 0; i < Capacity+10; i++ {
		r.Add(Sample{At: t0.Add(time.Duration(i))})
	}
	ss := r.Since(time.Time{})
	if len(ss) != Capacity || ss[0].At != t0.Add(10) {
		t.Errorf("%d samples, first at %v", len(ss), ss[0].At.Sub(t0))
	}
}

func TestRenderFits(t *testing.T) {
	s := Summarize("edge1", flood(), t0, Options{Window: 2 * time.Second, Filter: Filter{Proto: -1}})
	for _, sz := range [][2]int{{80, 24}, {200, 50}, {100, 30}, {40, 10}, {250, 80}} {
		lines := Render(s, sz[0], sz[1])
		if len(lines) > sz[1] {
			t.Errorf("%dx%d: %d lines", sz[0], sz[1], len(lines))
		}
		for _, l := range lines {
			if utf8.RuneCountInString(l) > sz[0] {
				t.Errorf("%dx%d: line of %d cells: %q", sz[0], sz[1], utf8.RuneCountInString(l), l)
			}
		}
		text := strings.Join(lines, "\n")
		if sz[0] >= 80 && (!strings.Contains(text, "203.0.113.1") || !strings.Contains(text, "CANDIDATE") || !strings.Contains(text, "nsctl dos add-signature")) {
			t.Errorf("%dx%d misses the victim or the candidates:\n%s", sz[0], sz[1], text)
		}
	}
	// 200x50 shows every table and both candidates' commands whole.
	text := strings.Join(Render(s, 200, 50), "\n")
	for _, want := range []string{"XDP VERDICT", "SRC PORT", s.Candidates[0].Command, "198.51.100.0/24", "udp/123"} {
		if !strings.Contains(text, want) {
			t.Errorf("200x50 misses %q:\n%s", want, text)
		}
	}
	// Unlimited (--once): everything, nothing cut.
	text = strings.Join(Render(s, 0, 0), "\n")
	if strings.Contains(text, "…") || !strings.Contains(text, s.Candidates[1].Command) {
		t.Errorf("unlimited render cut something:\n%s", text)
	}
}

func TestParseQuery(t *testing.T) {
	q, err := ParseQuery(url.Values{"window": {"3s"}, "tenant": {"acme"}, "dst": {"203.0.113.0/24"}, "proto": {"udp"}, "top": {"5"}})
	if err != nil || q.Window != 3*time.Second || q.Filter.Tenant != "acme" || q.Filter.Dst.String() != "203.0.113.0/24" || q.Filter.Proto != 17 || q.TopN != 5 {
		t.Fatalf("%+v %v", q, err)
	}
	back, err := ParseQuery(q.Values())
	if err != nil || back != q {
		t.Errorf("round trip %+v %v", back, err)
	}
	for v, want := range map[string]string{
		"window=1h": "window:", "dst=203.0.113.1/24": "dst:", "proto=foo": "proto:", "top=0": "top:", "dst=nope": "dst:",
	} {
		vals, _ := url.ParseQuery(v)
		if _, err := ParseQuery(vals); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %s...", v, err, want)
		}
	}
}

func TestServer(t *testing.T) {
	now := t0
	rec := NewRecorder()
	srv := &Server{Host: "edge1", Rec: rec, Now: func() time.Time { return now }, Sampling: func() bool { return true }}
	rec.Watch(now.Add(-2 * time.Second)) // recording for the whole window
	for _, s := range flood() {
		rec.Add(s)
	}
	if _, full := srv.Frame(Query{Window: 2 * time.Second, Filter: Filter{Proto: -1}}); !full {
		t.Error("a watch of 2 s: frame of 2 s not full")
	}
	if s, full := srv.Frame(Query{Window: 5 * time.Second, Filter: Filter{Proto: -1}}); full || s.WindowSeconds != 2 {
		t.Errorf("a watch of 2 s: 5 s frame full %v, window %v", full, s.WindowSeconds)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	resp, err := http.Get(ts.URL + Path + "?proto=udp")
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if resp.StatusCode != 200 || s.Hosts[0] != "edge1" || len(s.Destinations) != 1 || len(s.Candidates) != 1 {
		t.Errorf("%d %+v", resp.StatusCode, s)
	}
	resp, _ = http.Get(ts.URL + Path + "?proto=foo")
	if resp.StatusCode != 400 {
		t.Errorf("bad query: %d", resp.StatusCode)
	}
	resp.Body.Close()
	// No DoS layer: 503 saying why.
	ts2 := httptest.NewServer(&Server{Host: "edge2"})
	defer ts2.Close()
	resp, _ = http.Get(ts2.URL + Path)
	if resp.StatusCode != 503 {
		t.Errorf("no DoS layer: %d", resp.StatusCode)
	}
	resp.Body.Close()
	// Sampling off: an empty frame says so (and the first request of a
	// watch waits one window).
	ts3 := httptest.NewServer(&Server{Host: "edge3", Rec: NewRecorder(), Sampling: func() bool { return false }})
	defer ts3.Close()
	start := time.Now()
	resp, _ = http.Get(ts3.URL + Path + "?window=100ms")
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if time.Since(start) < 100*time.Millisecond || len(s.Notes) != 1 || !strings.Contains(s.Notes[0], "sampling is off") {
		t.Errorf("sampling off: %+v after %v", s.Notes, time.Since(start))
	}
}
