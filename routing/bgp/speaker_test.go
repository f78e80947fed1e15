package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
	"github.com/nfhost/nfhost/routing/bgp/birdtest"
)

// Test ports (nfB's range, 28500-28599) for sessions on loopback.
const (
	portBirdDialOut = 28501
	portRefused     = 28502
	portSilent      = 28503
	portWrongASN    = 28504
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func desired(t *testing.T, prefixes ...string) bgpspec.Desired {
	var d bgpspec.Desired
	for _, p := range prefixes {
		d.Routes = append(d.Routes, bgpspec.Route{Prefix: netip.MustParsePrefix(p)})
	}
	return d
}

// edgeAndRouter: an edge namespace (where the speaker's listener lives)
// and a router namespace running bird, joined by a veth.
func edgeAndRouter(t *testing.T, tag string, birdASN uint32) (*nstest.NS, *nstest.NS, *birdtest.Bird) {
	birdtest.Require(t)
	edge := nstest.New(t, "nfB"+tag+"e"+nstest.Unique())
	rtr := nstest.New(t, "nfB"+tag+"r"+nstest.Unique())
	nstest.Link(t, edge, "nfBup", "198.18.0.2/30", rtr, "nfBe1", "198.18.0.1/30")
	b := birdtest.Start(t, rtr.Name, t.TempDir(), birdtest.Config{RouterID: "198.18.0.1", ASN: birdASN, Local: "198.18.0.1", Kernel: true,
		Neighbors: []birdtest.Neighbor{{Name: "edge1", Address: "198.18.0.2", ASN: 65001, HoldTime: 6}}})
	return edge, rtr, b
}

func startSpeaker(t *testing.T, ctx context.Context, ns netns.NsHandle, spec bgpspec.Valid) *Speaker {
	s, err := Start(ctx, Config{Spec: spec, RouterID: netip.MustParseAddr("198.18.0.2"), HostNS: ns, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func passiveSpec(t *testing.T) bgpspec.Valid {
	v, err := bgpspec.Parse("test", []byte(`{"asn": 65001, "peers": [{"address": "198.18.0.1", "asn": 65000, "passive": true, "hold_time": "6s"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The speaker announces and withdraws prefixes and FlowSpec rules; bird
// installs the prefix into the router's kernel table and the rule into
// flowtab4. The listener lives in the edge namespace (--host-netns).
func TestSpeakerAnnounceWithdraw(t *testing.T) {
	nstest.RequireRoot(t)
	edge, rtr, b := edgeAndRouter(t, "aw", 65000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startSpeaker(t, ctx, edge.Handle, passiveSpec(t))
	spec, err := dosspec.Parse("acme", []byte(`{"signatures": [{"id": "ntp", "expression": "udp.dstport == 123 and ip.len >= 400", "action": "drop", "export": "flowspec"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	d := bgpspec.Announce(bgpspec.Input{Tenants: []bgpspec.Tenant{{ID: "acme", Advertise: true,
		Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Endpoints: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, DoS: &spec}}})
	s.Set(d)
	if !birdtest.WaitFor(20*time.Second, func() bool { return strings.Contains(b.Routes("master4"), "203.0.113.0/24") }) {
		t.Fatalf("bird never learned 203.0.113.0/24:\n%s\n%s\n%+v", b.Protocol("edge1"), b.Log(), s.Status())
	}
	if !birdtest.WaitFor(5*time.Second, func() bool {
		return strings.Contains(b.Routes("flowtab4"), "flow4 { dst 203.0.113.0/24; proto 17; dport 123; length 400..65535; }")
	}) {
		t.Errorf("flowtab4:\n%s", b.Routes("flowtab4"))
	}
	if out := rtr.MustExec(t, "ip", "route", "show", "192.0.2.10"); !strings.Contains(out, "via 198.18.0.2") {
		t.Errorf("router's kernel route to the anycast endpoint: %q", out)
	}
	birdtest.WaitFor(5*time.Second, func() bool { st := s.Status(); return st.Sessions[0].State == "established" && st.Sessions[0].FlowSpec })
	st := s.Status()
	if len(st.Sessions) != 1 || st.Sessions[0].State != "established" || !st.Sessions[0].FlowSpec || len(st.Announced) != 2 || len(st.FlowSpec) != 1 {
		t.Errorf("status: %+v", st)
	}
	// Withdraw the prefix and the rule; the endpoint stays.
	d.Routes = d.Routes[:1]
	d.FlowSpec = nil
	if d.Routes[0].Prefix.String() != "192.0.2.10/32" {
		t.Fatalf("routes: %+v", d.Routes)
	}
	s.Set(d)
	if !birdtest.WaitFor(10*time.Second, func() bool {
		return !strings.Contains(b.Routes("master4"), "203.0.113.0/24") && !strings.Contains(b.Routes("flowtab4"), "203.0.113.0/24")
	}) {
		t.Errorf("not withdrawn:\n%s\n%s", b.Routes("master4"), b.Routes("flowtab4"))
	}
	if !strings.Contains(b.Routes("master4"), "192.0.2.10/32") {
		t.Errorf("the endpoint went too:\n%s", b.Routes("master4"))
	}
}

// TestMain doubles as the speaker process of TestSpeakerGracefulRestart:
// with NFB_SPEAKER_NETNS set it runs a speaker in that namespace announcing
// NFB_SPEAKER_PREFIX until it is killed.
func TestMain(m *testing.M) {
	if ns := os.Getenv("NFB_SPEAKER_NETNS"); ns != "" {
		h, err := namedns.Open(namedns.DefaultDir, ns)
		if err != nil {
			panic(err)
		}
		v, err := bgpspec.Parse("test", []byte(os.Getenv("NFB_SPEAKER_CONFIG")))
		if err != nil {
			panic(err)
		}
		s, err := Start(context.Background(), Config{Spec: v, RouterID: netip.MustParseAddr("198.18.0.2"), HostNS: h})
		if err != nil {
			panic(err)
		}
		var d bgpspec.Desired
		d.Routes = []bgpspec.Route{{Prefix: netip.MustParsePrefix(os.Getenv("NFB_SPEAKER_PREFIX"))}}
		s.Set(d)
		select {}
	}
	os.Exit(m.Run())
}

const grConfig = `{"asn": 65001, "peers": [{"address": "198.18.0.1", "asn": 65000, "passive": true, "hold_time": "6s"}]}`

func startChild(t *testing.T, ns string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "NFB_SPEAKER_NETNS="+ns, "NFB_SPEAKER_CONFIG="+grConfig, "NFB_SPEAKER_PREFIX=203.0.113.0/24")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// Graceful restart: the speaker's process is killed (SIGKILL: no
// NOTIFICATION, its sockets just close); bird keeps the routes as stale,
// and the restarted speaker with the same set refreshes them (End-of-RIB):
// the route never leaves the router's kernel table.
func TestSpeakerGracefulRestart(t *testing.T) {
	nstest.RequireRoot(t)
	edge, rtr, b := edgeAndRouter(t, "gr", 65000)
	first := startChild(t, edge.Name)
	if !birdtest.WaitFor(20*time.Second, func() bool { return strings.Contains(b.Routes("master4"), "203.0.113.0/24") }) {
		t.Fatalf("bird never learned the prefix:\n%s", b.Protocol("edge1"))
	}
	lost := make(chan bool, 1)
	stop := make(chan struct{})
	go func() {
		gone := false
		for {
			select {
			case <-stop:
				lost <- gone
				return
			default:
			}
			if out, _ := rtr.Exec(t, "ip", "route", "show", "203.0.113.0/24"); !strings.Contains(out, "via") {
				gone = true
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	if !birdtest.WaitFor(10*time.Second, func() bool { return !b.Established("edge1") }) {
		t.Fatalf("the session did not go down:\n%s", b.Protocol("edge1"))
	}
	if !strings.Contains(b.Routes("master4"), "203.0.113.0/24") {
		t.Errorf("bird dropped the route when the session went down (no graceful restart):\n%s", b.Protocol("edge1"))
	}
	startChild(t, edge.Name)
	if !birdtest.WaitFor(30*time.Second, func() bool { return b.Established("edge1") }) {
		t.Fatalf("the session did not come back:\n%s\n%s", b.Protocol("edge1"), b.Log())
	}
	time.Sleep(2 * time.Second) // End-of-RIB processed
	close(stop)
	if <-lost {
		t.Errorf("the router's kernel route went away during the restart")
	}
	if out := b.Routes("master4"); !strings.Contains(out, "203.0.113.0/24") || strings.Contains(out, "stale") {
		t.Errorf("after the restart:\n%s", out)
	}
	t.Logf("bird after the restart:\n%s", b.Protocol("edge1"))
}

// loopbackBird runs bird in the test's own namespace on loopback only: it
// listens on local:port and waits for the speaker (127.0.0.1) to dial. No
// kernel protocol: it touches no table.
func loopbackBird(t *testing.T, local string, port int, expectASN uint32) *birdtest.Bird {
	return birdtest.Start(t, "", t.TempDir(), birdtest.Config{RouterID: local, ASN: 65000, Local: local, ListenPort: port, Loopback: true,
		Neighbors: []birdtest.Neighbor{{Name: "nfb", Address: "127.0.0.1", ASN: expectASN, Passive: true, HoldTime: 6, Multihop: true}}})
}

func session(s *Speaker, peer string) Session {
	for _, x := range s.Status().Sessions {
		if x.Peer.String() == peer {
			return x
		}
	}
	return Session{}
}

// Bad peers: one that refuses connections (nothing listens), one that
// accepts and never answers, one that expects another ASN, and one that
// resets an established session in a loop. The speaker reports each
// session's state, backs off the failing ones, keeps the good one's
// routes, and Set never blocks on any of them.
func TestSpeakerBadPeers(t *testing.T) {
	nstest.RequireRoot(t) // bird's control socket and BGP ports
	birdtest.Require(t)
	defer func(f int, b time.Duration) { FailuresBeforeBackoff, BackoffMin = f, b }(FailuresBeforeBackoff, BackoffMin)
	FailuresBeforeBackoff, BackoffMin = 2, 3*time.Second

	silent, err := net.Listen("tcp", "127.0.0.4:"+fmt.Sprint(portSilent))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // holds the connection open, never writes
		}
	}()
	wrong := loopbackBird(t, "127.0.0.2", portWrongASN, 65099)
	flappy := loopbackBird(t, "127.0.0.3", portBirdDialOut, 65001)
	cfg := fmt.Sprintf(`{"asn": 65001, "router_id": "192.0.2.1", "peers": [
	  {"address": "127.0.0.5", "asn": 65000, "port": %d, "local_address": "127.0.0.1"},
	  {"address": "127.0.0.4", "asn": 65000, "port": %d, "local_address": "127.0.0.1"},
	  {"address": "127.0.0.2", "asn": 65000, "port": %d, "local_address": "127.0.0.1"},
	  {"address": "127.0.0.3", "asn": 65000, "port": %d, "local_address": "127.0.0.1", "hold_time": "6s"}]}`,
		portRefused, portSilent, portWrongASN, portBirdDialOut)
	v, err := bgpspec.Parse("test", []byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startSpeaker(t, ctx, netns.None(), v)
	// Set never waits for the sessions, however broken.
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			s.Set(desired(t, fmt.Sprintf("198.18.%d.0/24", i%200)))
		}
		s.Set(desired(t, "203.0.113.0/24"))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Set blocked")
	}
	if !birdtest.WaitFor(30*time.Second, func() bool { return strings.Contains(flappy.Routes("master4"), "203.0.113.0/24") }) {
		t.Fatalf("the good peer never got the route: %+v\n%s", s.Status(), flappy.Protocol("nfb"))
	}
	// The wrong ASN is refused in OPEN; after two failures the peer backs off.
	if !birdtest.WaitFor(40*time.Second, func() bool { return session(s, "127.0.0.2").State == "backoff" }) {
		t.Errorf("wrong ASN: %+v\n%s", session(s, "127.0.0.2"), wrong.Protocol("nfb"))
	}
	if e := session(s, "127.0.0.2").LastError; !strings.Contains(strings.ToLower(e), "as") {
		t.Logf("wrong ASN last error: %q", e)
	}
	// Reset the good session in a loop: the speaker backs it off, then
	// comes back and announces the route again.
	for range 3 {
		birdtest.WaitFor(20*time.Second, func() bool { return flappy.Established("nfb") })
		flappy.Ctl("restart nfb")
		time.Sleep(300 * time.Millisecond)
	}
	if !birdtest.WaitFor(30*time.Second, func() bool { st := session(s, "127.0.0.3"); return st.State == "backoff" || st.Failures >= 2 }) {
		t.Errorf("reset loop: %+v", session(s, "127.0.0.3"))
	}
	t.Logf("after the reset loop: %+v", session(s, "127.0.0.3"))
	if !birdtest.WaitFor(40*time.Second, func() bool {
		return flappy.Established("nfb") && strings.Contains(flappy.Routes("master4"), "203.0.113.0/24")
	}) {
		t.Errorf("the flapping peer did not come back after its backoff: %+v", session(s, "127.0.0.3"))
	}
	for _, peer := range []string{"127.0.0.5", "127.0.0.4"} {
		if st := session(s, peer); st.State == "established" || st.State == "" {
			t.Errorf("%s: %+v", peer, st)
		}
	}
	t.Logf("sessions: %+v", s.Status().Sessions)
}

var birdCount = regexp.MustCompile(`(\d+) of (\d+) routes for (\d+) networks in table master4`)

func birdNetworks(b *birdtest.Bird) int {
	out, _ := b.Ctl("show route count")
	if m := birdCount.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[3])
		return n
	}
	return 0
}

// BenchmarkSpeaker10k: the speaker alone (no nsd) announces 10,000
// prefixes in one Set to BIRD, which installs them into the router's
// kernel table; the baseline in the same run is the time for one prefix
// after the session is up. Also with BIRD's kernel export off, to tell
// BIRD's kernel sync from the BGP transfer.
func BenchmarkSpeaker10k(b *testing.B) {
	for range b.N {
		for _, kernel := range []bool{true, false} {
			birdtest.Require(b)
			edge := nstest.New(b, "nfBbke"+nstest.Unique())
			rtr := nstest.New(b, "nfBbkr"+nstest.Unique())
			nstest.Link(b, edge, "nfBup", "198.18.0.2/30", rtr, "nfBe1", "198.18.0.1/30")
			bd := birdtest.Start(b, rtr.Name, b.TempDir(), birdtest.Config{RouterID: "198.18.0.1", ASN: 65000, Local: "198.18.0.1", Kernel: kernel,
				Neighbors: []birdtest.Neighbor{{Name: "edge1", Address: "198.18.0.2", ASN: 65001, HoldTime: 6}}})
			v, _ := bgpspec.Parse("bench", []byte(`{"asn": 65001, "peers": [{"address": "198.18.0.1", "asn": 65000, "passive": true, "hold_time": "6s"}]}`))
			ctx, cancel := context.WithCancel(context.Background())
			s, err := Start(ctx, Config{Spec: v, RouterID: netip.MustParseAddr("198.18.0.2"), HostNS: edge.Handle})
			if err != nil {
				b.Fatal(err)
			}
			var one bgpspec.Desired
			one.Routes = []bgpspec.Route{{Prefix: netip.MustParsePrefix("203.0.113.0/24")}}
			s.Set(one)
			birdtest.WaitFor(30*time.Second, func() bool { return bd.Established("edge1") && birdNetworks(bd) == 1 })
			var d bgpspec.Desired
			for j := range 10000 {
				d.Routes = append(d.Routes, bgpspec.Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(j * 4 >> 8), byte(j * 4)}), 30)})
			}
			d.Routes = append(d.Routes, one.Routes...)
			var ru0 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			t0 := time.Now()
			if kernel {
				s.Set(d)
			} else {
				// As nsd does when tenants come one after another: ten
				// Sets, each 1,000 prefixes more.
				for k := 1; k <= 10; k++ {
					var part bgpspec.Desired
					part.Routes = append(append(part.Routes, d.Routes[:k*1000]...), one.Routes...)
					s.Set(part)
					time.Sleep(100 * time.Millisecond)
				}
			}
			if !birdtest.WaitFor(120*time.Second, func() bool { return birdNetworks(bd) == 10001 }) {
				b.Fatalf("bird has %d networks", birdNetworks(bd))
			}
			all := time.Since(t0)
			var ru1 syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			one.Routes[0].Prefix = netip.MustParsePrefix("203.0.113.0/25")
			d.Routes = append(d.Routes, one.Routes...)
			t0 = time.Now()
			s.Set(d)
			birdtest.WaitFor(30*time.Second, func() bool { return birdNetworks(bd) == 10002 })
			single := time.Since(t0)
			name := "kernel-oneset"
			if !kernel {
				name = "nokernel-tensets"
			}
			b.ReportMetric(all.Seconds(), "announce-10k-"+name+"-s")
			b.ReportMetric(float64(single.Microseconds())/1000, "one-more-"+name+"-ms")
			b.ReportMetric(float64(all)/float64(single), "10k/one-"+name)
			b.ReportMetric(cpu.Seconds(), "cpu-10k-"+name+"-s")
			s.Stop()
			cancel()
		}
	}
}

// TCP-MD5 (RFC 2385) on a passive session in another namespace: the right
// password establishes it, a wrong one never does and is reported.
func TestSpeakerPassword(t *testing.T) {
	nstest.RequireRoot(t)
	birdtest.Require(t)
	for _, tc := range []struct {
		name, ours string
		up         bool
	}{{"right", "s3cret", true}, {"wrong", "other", false}} {
		t.Run(tc.name, func(t *testing.T) {
			edge := nstest.New(t, "nfBpwe"+nstest.Unique())
			rtr := nstest.New(t, "nfBpwr"+nstest.Unique())
			nstest.Link(t, edge, "nfBup", "198.18.0.2/30", rtr, "nfBe1", "198.18.0.1/30")
			b := birdtest.Start(t, rtr.Name, t.TempDir(), birdtest.Config{RouterID: "198.18.0.1", ASN: 65000, Local: "198.18.0.1",
				Neighbors: []birdtest.Neighbor{{Name: "edge1", Address: "198.18.0.2", ASN: 65001, HoldTime: 6, Password: "s3cret"}}})
			v, err := bgpspec.Parse("test", []byte(fmt.Sprintf(`{"asn": 65001, "peers": [{"address": "198.18.0.1", "asn": 65000, "passive": true, "password": %q}]}`, tc.ours)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := startSpeaker(t, ctx, edge.Handle, v)
			s.Set(desired(t, "203.0.113.0/24"))
			up := birdtest.WaitFor(15*time.Second, func() bool { return strings.Contains(b.Routes("master4"), "203.0.113.0/24") })
			if up != tc.up {
				t.Errorf("route at the router: %v, want %v: %+v\n%s", up, tc.up, s.Status().Sessions, b.Protocol("edge1"))
			}
			if !tc.up && session(s, "198.18.0.1").State == "established" {
				t.Errorf("established with a wrong password")
			}
		})
	}
}

// An IPv6 session carries the IPv6 prefixes (and an IPv4 session does not).
func TestSpeakerIPv6(t *testing.T) {
	nstest.RequireRoot(t)
	birdtest.Require(t)
	edge := nstest.New(t, "nfB6e"+nstest.Unique())
	rtr := nstest.New(t, "nfB6r"+nstest.Unique())
	nstest.Link(t, edge, "nfBup", "2001:db8:ff::2/64", rtr, "nfBe1", "2001:db8:ff::1/64")
	conf := birdtest.Config{RouterID: "198.18.0.1", ASN: 65000, Local: "2001:db8:ff::1",
		Neighbors: []birdtest.Neighbor{{Name: "edge1", Address: "2001:db8:ff::2", ASN: 65001, HoldTime: 6}}}
	b := birdtest.Start(t, rtr.Name, t.TempDir(), conf)
	v, err := bgpspec.Parse("test", []byte(`{"asn": 65001, "router_id": "198.18.0.2", "peers": [{"address": "2001:db8:ff::1", "asn": 65000, "passive": true}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := startSpeaker(t, ctx, edge.Handle, v)
	s.Set(desired(t, "2001:db8:1::/48", "203.0.113.0/24"))
	if !birdtest.WaitFor(20*time.Second, func() bool { return strings.Contains(b.Routes("master6"), "2001:db8:1::/48") }) {
		t.Fatalf("bird never learned 2001:db8:1::/48:\n%s\n%s", b.Protocol("edge1"), b.Routes("master6"))
	}
	if out := b.Routes("master6"); !strings.Contains(out, "2001:db8:ff::2") {
		t.Errorf("next hop is not the edge's address:\n%s", out)
	}
	if out := b.Routes("master4"); strings.Contains(out, "203.0.113.0/24") {
		t.Errorf("an IPv4 prefix over the IPv6 session:\n%s", out)
	}
}
