package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/nsd/source"
)

// TestMain lets the tests run this binary as nsctl (NSCTL_TEST_AS_NSCTL=1),
// so the tmux tests drive the real program in a real terminal.
func TestMain(m *testing.M) {
	if os.Getenv("NSCTL_TEST_AS_NSCTL") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
		code := nsctl(cliutil.StdEnv(ctx), os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// requireTool skips loudly without a tool, and fails instead when
// NFHOST_REQUIRE_TOOLS=1 (make test).
func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("NFHOST_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s not found but NFHOST_REQUIRE_TOOLS=1: run scripts/deps.sh", name)
		}
		t.Skipf("SKIP (needs %s): install it or run `make deps`", name)
	}
}

// tmux is a tmux server of one test (its own socket, prefix nfT) running
// one command in a session of the given size.
type tmux struct {
	t    *testing.T
	sock string
}

func startTmux(t *testing.T, width, height int, args ...string) *tmux {
	t.Helper()
	requireTool(t, "tmux")
	b := make([]byte, 3)
	rand.Read(b)
	x := &tmux{t: t, sock: "nfT" + hex.EncodeToString(b)}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The exit code lands in a file when the program ends (and with it
	// the session).
	shell := fmt.Sprintf("NSCTL_TEST_AS_NSCTL=1 TERM=xterm %s %s; echo $? > %s", exe, shellQuote(args), x.exitFile())
	x.run("-f", "/dev/null", "new-session", "-d", "-s", "nfT", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), shell)
	t.Cleanup(func() { exec.Command("tmux", "-L", x.sock, "kill-server").Run(); os.Remove(x.exitFile()) })
	return x
}

func (x *tmux) exitFile() string { return filepath.Join(os.TempDir(), x.sock+".exit") }

func shellQuote(args []string) string { return top.CommandLine(args) }

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", x.sock}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// capture waits until the pane shows all of want and returns its lines.
func (x *tmux) capture(what string, want ...string) []string {
	x.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := x.run("capture-pane", "-p", "-t", "nfT")
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(out, w)
		}
		if ok {
			return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("%s: the pane never showed %q:\n%s", what, want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// quit presses q and waits for the program to exit; it returns the exit code.
func (x *tmux) quit() string {
	x.t.Helper()
	x.run("send-keys", "-t", "nfT", "q")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, err := os.ReadFile(x.exitFile()); err == nil && len(b) > 0 {
			os.Remove(x.exitFile())
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("q did not end the program:\n%s", x.run("capture-pane", "-p", "-t", "nfT"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkFits fails when the pane's lines exceed the terminal.
func checkFits(t *testing.T, what string, lines []string, width, height int) {
	t.Helper()
	if len(lines) > height {
		t.Errorf("%s: %d lines on a %d-line terminal", what, len(lines), height)
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n > width {
			t.Errorf("%s: a line of %d cells on a %d-cell terminal: %q", what, n, width, l)
		}
	}
}

// fakeEdge serves a frame of an NTP flood to 203.0.113.1 like nsd's
// top.Path endpoint, counting requests.
func fakeEdge(t *testing.T) (addr string, requests *atomic.Int64) {
	now := time.Now()
	var ss []top.Sample
	for i := 0; i < 600; i++ {
		ss = append(ss, top.Sample{At: now.Add(-time.Duration(i) * 3 * time.Millisecond), Tenant: "acme", Rate: 64, Len: 90, Reason: "pass",
			Pkt: detect.Packet{Src: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), Dst: netip.MustParseAddr("203.0.113.1"),
				Proto: 17, SPort: uint16(40000 + i%64), DPort: 123, Len: 76, TTL: 57, ICMPType: -1, Payload: []byte{0x17, 0, 3, 0x2a}}})
	}
	for i := 0; i < 40; i++ {
		ss = append(ss, top.Sample{At: now.Add(-time.Duration(i) * 40 * time.Millisecond), Tenant: "acme", Rate: 64, Len: 74, Reason: "pass",
			Pkt: detect.Packet{Src: netip.MustParseAddr(fmt.Sprintf("2001:db8:7:%x::1", i)), Dst: netip.MustParseAddr("203.0.113.2"),
				Proto: 6, SPort: uint16(50000 + i), DPort: 443, Len: 60, TTL: 64, TCPFlags: 0x18, ICMPType: -1}})
	}
	n := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		q, err := top.ParseQuery(r.URL.Query())
		if r.URL.Path != top.Path || err != nil {
			http.Error(w, fmt.Sprint(r.URL.Path, err), 400)
			return
		}
		s := top.Summarize("edge1", ss, now, top.Options{Window: q.Window, Filter: q.Filter, TopN: q.TopN})
		json.NewEncoder(w).Encode(s)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), n
}

// TestDoSTopTerminal runs nsctl dos top in tmux: the layout fits 80x24
// and uses 200x50 when resized (three columns of full tables, the
// candidate's command whole), and q exits 0.
func TestDoSTopTerminal(t *testing.T) {
	edge, requests := fakeEdge(t)
	x := startTmux(t, 80, 24, "dos", "top", "acme", "--edge", edge, "--interval", "200ms")
	lines := x.capture("80x24", "203.0.113.1 acme", "CANDIDATE SIGNATURES", "q: quit")
	checkFits(t, "80x24", lines, 80, 24)
	text := strings.Join(lines, "\n")
	for _, want := range []string{"198.51.100.0/24", "udp/123", "nsctl dos add-signature acme --id top-"} {
		if !strings.Contains(text, want) {
			t.Errorf("80x24 misses %q:\n%s", want, text)
		}
	}
	sideBySide := false
	for _, l := range lines {
		sideBySide = sideBySide || strings.Contains(l, "DESTINATION") && strings.Contains(l, "SOURCE BLOCK")
	}
	if !sideBySide {
		t.Errorf("80x24: destinations and source blocks not side by side:\n%s", text)
	}
	t.Logf("80x24:\n%s", text)

	x.run("resize-window", "-t", "nfT", "-x", "200", "-y", "50")
	lines = x.capture("200x50", "XDP VERDICT", "--expression 'ip.dst == 203.0.113.1/32 and udp.dstport == 123 and ip.len == 76 and ip.ttl == 57 and payload[0:4] == 0x1700032a'")
	checkFits(t, "200x50", lines, 200, 50)
	three := false
	for _, l := range lines {
		three = three || strings.Contains(l, "DESTINATION") && strings.Contains(l, "SOURCE BLOCK") && strings.Contains(l, "PROTOCOL")
	}
	if !three {
		t.Errorf("200x50: not three columns:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("200x50:\n%s", strings.Join(lines, "\n"))

	// Back to small: the frame is redrawn for the new size.
	x.run("resize-window", "-t", "nfT", "-x", "80", "-y", "24")
	time.Sleep(300 * time.Millisecond)
	lines = x.capture("80x24 again", "203.0.113.1 acme", "q: quit")
	checkFits(t, "80x24 again", lines, 80, 24)
	before := requests.Load()
	if code := x.quit(); code != "0" {
		t.Errorf("exit code %s after q", code)
	}
	if before < 3 {
		t.Errorf("%d requests: the view did not refresh", before)
	}
}

// TestWatchTerminal: nsctl status --watch and tunnels --watch redraw in
// place when the status changes, fit the terminal and exit on q.
func TestWatchTerminal(t *testing.T) {
	l := newDirLab(t)
	l.status("edge1", "acme", source.Status{State: "applied", AppliedIndex: 42, Tunnels: map[string]source.TunnelStatus{"gre1": {State: "healthy"}}})
	x := startTmux(t, 80, 24, l.args([]string{"status", "--watch", "--interval", "200ms"})...)
	lines := x.capture("status", "nsctl status", "edge1  acme    applied  42")
	checkFits(t, "status 80x24", lines, 80, 24)
	l.status("edge1", "acme", source.Status{State: "error", AppliedIndex: 43, Error: "tenants/acme/network: prefixes[0]: overlaps"})
	lines = x.capture("status after a change", "edge1  acme    error  43")
	if strings.Contains(strings.Join(lines, "\n"), "applied  42") {
		t.Errorf("old frame left on screen:\n%s", strings.Join(lines, "\n"))
	}
	if code := x.quit(); code != "0" {
		t.Errorf("status --watch: exit %s after q", code)
	}

	l.status("edge1", "acme", source.Status{State: "applied", Tunnels: map[string]source.TunnelStatus{"gre1": {State: "healthy"}}})
	x = startTmux(t, 200, 50, l.args([]string{"tunnels", "acme", "--watch", "--interval", "200ms"})...)
	x.capture("tunnels", "nsctl tunnels acme", "gre1    healthy")
	l.status("edge1", "acme", source.Status{State: "applied", Tunnels: map[string]source.TunnelStatus{"gre1": {State: "down", LossPercent: 100}}})
	lines = x.capture("tunnels after a change", "gre1    down")
	checkFits(t, "tunnels 200x50", lines, 200, 50)
	if code := x.quit(); code != "0" {
		t.Errorf("tunnels --watch: exit %s after q", code)
	}
}

// TestDoSTopOnce: --once prints one frame (text or JSON) and bad flags
// are usage errors naming the flag.
func TestDoSTopOnce(t *testing.T) {
	edge, _ := fakeEdge(t)
	out, code := run(t, nsctl, "dos", "top", "acme", "--edge", edge, "--once", "-o", "json")
	var s top.Summary
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || len(s.Candidates) == 0 || s.Destinations[0].Key != "203.0.113.1" {
		t.Fatalf("--once -o json: exit %d\n%s", code, out)
	}
	if s.Candidates[0].Argv[0] != "dos" || !strings.HasPrefix(s.Candidates[0].Command, "nsctl dos add-signature acme ") {
		t.Errorf("candidate %+v", s.Candidates[0])
	}
	out, code = run(t, nsctl, "dos", "top", "--edge", edge, "--once", "--proto", "tcp")
	if code != 0 || !strings.Contains(out, "203.0.113.2") || strings.Contains(out, "203.0.113.1 ") || strings.Contains(out, "…") {
		t.Errorf("--once --proto tcp: exit %d\n%s", code, out)
	}
	// Two edges: a fleet view with both hosts' rates.
	out, code = run(t, nsctl, "dos", "top", "--edge", edge, "--edge", edge, "--once", "-o", "json")
	var m top.Summary
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil || len(m.Hosts) != 2 || m.Samples != 2*s.Samples {
		t.Errorf("two edges: exit %d %+v", code, m.Hosts)
	}
	// An edge that does not answer is a note; none answering is an error.
	out, code = run(t, nsctl, "dos", "top", "--edge", edge, "--edge", "127.0.0.1:1", "--once")
	if code != 0 || !strings.Contains(out, "ask edge 127.0.0.1:1") {
		t.Errorf("one edge down: exit %d\n%s", code, out)
	}
	if out, code := run(t, nsctl, "dos", "top", "--edge", "127.0.0.1:1", "--once"); code != ExitFailure || !strings.Contains(out, "127.0.0.1:1") {
		t.Errorf("no edge: exit %d\n%s", code, out)
	}
	if out, code := run(t, nsctl, "dos", "top", "--global", "--once", "--edge", edge); code != ExitUsage || !strings.Contains(out, "--global") {
		t.Errorf("--global: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{{"--proto", "foo"}, {"--dst", "203.0.113.1/24"}, {"--window", "1m"}, {"-o", "yaml"}, {"--top", "0"}, {"Bad_Tenant"}} {
		out, code := run(t, nsctl, append([]string{"dos", "top", "--once", "--edge", edge}, args...)...)
		flag := args[0]
		if !strings.HasPrefix(flag, "-") {
			flag = "TENANT"
		}
		if flag == "-o" {
			flag = "--output"
		}
		if code != ExitUsage || !strings.Contains(out, flag) {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
}

// TestDoSTopViaStore: --via-store writes a watch request to control/top/,
// reads the frames the edges publish to top/<watch>/ (a stand-in nsd here;
// the e2e test runs the real one), merges them, and removes the request
// when it exits; --host goes into the request.
func TestDoSTopViaStore(t *testing.T) {
	l := newDirLab(t)
	store := source.NewDir(l.cfg, l.state)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := make(chan top.WatchRequest, 1)
	go func() { // publishes for every request, as edge1 and edge2
		for ctx.Err() == nil {
			snap, _ := store.Read(ctx)
			for name, e := range snap.Control {
				id, ok := strings.CutPrefix(name, source.TopWatchPrefix)
				if !ok {
					continue
				}
				var r top.WatchRequest
				json.Unmarshal(e.Value, &r)
				select {
				case seen <- r:
				default:
				}
				for _, h := range []string{"edge1", "edge2"} {
					b, _ := json.Marshal(top.Summary{Hosts: []string{h}, At: time.Now(), Samples: 10, PPS: 640,
						Destinations: []top.Entry{{Key: "203.0.113.1", Tenant: "acme", PPS: 640}}})
					store.PutTop(ctx, id, h, b)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	out, code := l.ctl("dos", "top", "acme", "--via-store", "--host", "edge1", "--host", "edge2", "--once", "-o", "json", "--window", "500ms")
	var s top.Summary
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || strings.Join(s.Hosts, ",") != "edge1,edge2" || s.PPS != 1280 || s.Destinations[0].PPS != 1280 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	r := <-seen
	if strings.Join(r.Hosts, ",") != "edge1,edge2" || !strings.Contains(r.Query, "tenant=acme") || time.Until(r.Until) < 20*time.Second {
		t.Errorf("watch request %+v", r)
	}
	snap, _ := store.Read(ctx)
	for name := range snap.Control {
		if strings.HasPrefix(name, source.TopWatchPrefix) {
			t.Errorf("watch request %s left behind", name)
		}
	}
	if out, code := l.ctl("dos", "top", "--host", "edge1", "--once"); code != ExitUsage || !strings.Contains(out, "--host") {
		t.Errorf("--host without --via-store: exit %d\n%s", code, out)
	}
}
