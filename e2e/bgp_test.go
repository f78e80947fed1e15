package e2e

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/nsd/source/consultest"
	"github.com/nfhost/nfhost/routing/bgp/birdtest"
	"github.com/nfhost/nfhost/tunnels"
)

// bgpLab is an anycast site: a router running BIRD (the internet, with the
// client at 192.0.2.100) peering with two edges that run nsd, and the
// customer's GRE box and router behind the internet. Nothing is static:
// the router learns the tenant's prefix and the anycast endpoint from the
// edges and merges equal paths into an ECMP route.
//
//	nfB…e1 uplink 198.18.1.2 ══ eth1 198.18.1.1 ┐
//	  (nsd edge1, AS 65001, passive)            nfB…r: BIRD AS 65000, client 192.0.2.100 on lo
//	nfB…e2 uplink 198.18.2.2 ══ eth2 198.18.2.1 ┘        │ gcust 198.51.100.129
//	                                      eth0 198.51.100.130 nfB…g (customer GRE, tunnels.Customer)
//	                                                              ║ gre1 169.254.20.1/31
//	                                                       nfB…c: the customer's router, 203.0.113.5
//
// Names, pins and Consul ports carry the nfB tag (28500-28599).
type bgpLab struct {
	t         testing.TB
	u         string
	router    *nstest.NS
	cust      *nstest.NS
	edges     [2]*nstest.NS
	hosts     [2]string
	nsd       [2]*proc
	bird      *birdtest.Bird
	consul    *consultest.Agent
	nsdBin    string
	ctlBin    string
	bgpConfig [2]string
	// logLevel of nsd (default debug; benchmarks use info: GoBGP logs
	// every UPDATE at debug).
	logLevel string
}

const bgpTenantNetwork = `{"prefixes": ["203.0.113.0/24"], %s
 "tunnels": [{"name": "gre-acme", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130",
   "interface_address": "169.254.20.0/31", "health_check": {"type": "reply", "rate": "high"}}],
 "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}]}`

func newBGPLab(t testing.TB) *bgpLab {
	nstest.RequireRoot(t)
	for _, tool := range []string{"ip", "nft", "ping", "nsenter", "python3"} {
		nstest.RequireTool(t, tool)
	}
	birdtest.Require(t)
	u := nstest.Unique()
	l := &bgpLab{t: t, u: u}
	l.nsdBin, l.ctlBin = binaries(t)
	l.router = nstest.New(t, "nfB"+u+"r")
	g := nstest.New(t, "nfB"+u+"g")
	l.cust = nstest.New(t, "nfB"+u+"c")
	l.router.MustExec(t, "ip", "addr", "add", "192.0.2.100/32", "dev", "lo")
	l.router.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	var neighbors []birdtest.Neighbor
	for i := range 2 {
		n := i + 1
		l.edges[i] = nstest.New(t, fmt.Sprintf("nfB%se%d", u, n))
		l.hosts[i] = fmt.Sprintf("nfB%s-edge%d", u, n)
		nstest.Link(t, l.router, fmt.Sprintf("eth%d", n), fmt.Sprintf("198.18.%d.1/30", n), l.edges[i], "uplink", fmt.Sprintf("198.18.%d.2/30", n))
		l.edges[i].MustExec(t, "ip", "route", "add", "default", "via", fmt.Sprintf("198.18.%d.1", n))
		neighbors = append(neighbors, birdtest.Neighbor{Name: fmt.Sprintf("edge%d", n), Address: fmt.Sprintf("198.18.%d.2", n), ASN: 65001, HoldTime: 6})
		l.bgpConfig[i] = writeTempTB(t, fmt.Sprintf(`{"asn": 65001, "communities": ["65001:100"],
		  "peers": [{"address": "198.18.%d.1", "asn": 65000, "passive": true, "hold_time": "6s"}]}`, n))
		pin := l.pinDir(i)
		t.Cleanup(func() {
			dos.Detach(pin)
			tunnels.Detach(filepath.Join(pin, "tunnels"))
			os.RemoveAll(pin)
		})
	}
	t.Cleanup(func() {
		names, _ := namedns.List(namedns.DefaultDir, "nfB"+u+"-")
		for _, n := range names {
			namedns.Delete(namedns.DefaultDir, n)
		}
	})
	nstest.Link(t, l.router, "gcust", "198.51.100.129/25", g, "eth0", "198.51.100.130/25")
	g.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.129")
	l.cust.MustExec(t, "ip", "addr", "add", "203.0.113.5/32", "dev", "lo")
	l.cust.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	pin := filepath.Join(bpfpin.BPFFS, "nfB"+u+"-customer")
	t.Cleanup(func() { tunnels.Detach(pin); os.RemoveAll(pin) })
	cust, err := tunnels.StartCustomer(context.Background(), tunnels.CustomerConfig{HostNS: g.Handle, Uplink: "eth0", PinDir: pin, Inner: l.cust.Name,
		Tunnels: []tunnels.Tunnel{{Name: "gre1", Local: netip.MustParseAddr("198.51.100.130"), Remote: netip.MustParseAddr("192.0.2.10"),
			Addr: netip.MustParsePrefix("169.254.20.1/31"), Peer: netip.MustParseAddr("169.254.20.0"), MTU: 1476, TTL: 64, MSS: 1436}},
		Routes: []tunnels.Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Nexthop: netip.MustParseAddr("169.254.20.0"), Tunnel: "gre1", Priority: 100, Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cust.Close)
	l.bird = birdtest.Start(t, l.router.Name, t.TempDir(), birdtest.Config{RouterID: "198.18.1.1", ASN: 65000, Kernel: true, Neighbors: neighbors})
	l.consul = consultest.Start(t, consultest.WithPorts(28510))
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range l.nsd {
				if p != nil {
					t.Logf("nsd edge%d:\n%s", i+1, tail(p.Log(), 60))
				}
			}
			t.Logf("bird:\n%s\n%s", l.bird.Protocol("edge1"), tail(l.bird.Log(), 40))
		}
	})
	return l
}

func writeTempTB(t testing.TB, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (l *bgpLab) pinDir(i int) string {
	return filepath.Join(bpfpin.BPFFS, fmt.Sprintf("nfB%s-edge%d", l.u, i+1))
}

// startNSD starts nsd for edge i (0 or 1).
func (l *bgpLab) startNSD(i int) *proc {
	t := l.t
	t.Helper()
	args := []string{"--source", "consul", "--consul-addr", l.consul.Addr, "--host-id", l.hosts[i],
		"--host-netns", l.edges[i].Name, "--uplink", "uplink", "--ns-prefix", fmt.Sprintf("nfB%s-%d", l.u, i+1),
		"--bpf-pin-dir", l.pinDir(i), "--resync-interval", "1s", "--log-level", cmp.Or(l.logLevel, "debug"), "--bgp-config", l.bgpConfig[i]}
	p := &proc{cmd: exec.Command(l.nsdBin, args...), done: make(chan struct{})}
	pr, pw, _ := os.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start nsd: %v", err)
	}
	pw.Close()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}()
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	l.nsd[i] = p
	return p
}

func (l *bgpLab) nsctl(args ...string) string {
	l.t.Helper()
	out, err := exec.Command(l.ctlBin, append([]string{"--consul-addr", l.consul.Addr}, args...)...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("nsctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (l *bgpLab) applyTenant(extra string) {
	l.t.Helper()
	f := writeTempTB(l.t, fmt.Sprintf(`{"id": "acme", "network": %s}`, fmt.Sprintf(bgpTenantNetwork, extra)))
	l.nsctl("tenant", "apply", "-f", f)
}

// nexthops lists the router's kernel next hops for prefix.
func (l *bgpLab) nexthops(prefix string) []string {
	out, _ := l.router.Exec(l.t, "ip", "-o", "route", "show", prefix)
	var hops []string
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			hops = append(hops, f[i+1])
		}
	}
	return hops
}

func (l *bgpLab) hasHops(prefix string, want ...string) bool {
	return strings.Join(l.nexthops(prefix), ",") == strings.Join(want, ",")
}

const both1, both2 = "198.18.1.2", "198.18.2.2"

// watchHops records, every 20 ms until stop is called, whether the
// router's route to prefix ever had other next hops than want.
func (l *bgpLab) watchHops(prefix string, want ...string) (stop func() []string) {
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if h := strings.Join(l.nexthops(prefix), ","); h != strings.Join(want, ",") {
				mu.Lock()
				if len(seen) == 0 || seen[len(seen)-1] != h {
					seen = append(seen, h)
				}
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

const tcpServerPy = `
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.5", 5001)); s.listen(64)
def h(c):
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
print("ready", flush=True)
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()
`

// tcpClientPy: N connections from 192.0.2.100 (different source ports, so
// the router hashes them over both edges), each sending for S seconds;
// each must get back the exact byte count, and no send may stall for 5 s.
const tcpClientPy = `
import socket, sys, threading, time
n, secs = int(sys.argv[1]), float(sys.argv[2])
res = []
def run(i):
    try:
        c = socket.create_connection(("203.0.113.5", 5001), timeout=5, source_address=("192.0.2.100", 0))
        sent, end, buf = 0, time.time() + secs, b"x" * 4096
        while time.time() < end:
            c.sendall(buf); sent += len(buf); time.sleep(0.005)
        c.shutdown(socket.SHUT_WR)
        got = int(c.recv(64) or b"-1")
        res.append(got == sent)
        if got != sent:
            print("conn %d: sent %d, server got %d" % (i, sent, got), file=sys.stderr)
    except Exception as e:
        res.append(False); print("conn %d: %s" % (i, e), file=sys.stderr)
ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print("%d of %d connections delivered every byte" % (sum(res), n))
sys.exit(0 if len(res) == n and all(res) else 1)
`

// tcpTransfer starts n TCP transfers lasting secs; wait returns their
// verdict line and whether every byte arrived.
func (l *bgpLab) tcpTransfer(n int, secs float64) (wait func() (string, bool)) {
	t := l.t
	cmd := exec.Command("nsenter", "--net="+l.router.Path(), "--", "python3", writeTempTB(t, tcpClientPy), fmt.Sprint(n), fmt.Sprint(secs))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() (string, bool) {
		err := cmd.Wait()
		return strings.TrimSpace(out.String()), err == nil
	}
}

func (l *bgpLab) startTCPServer() {
	t := l.t
	cmd := exec.Command("nsenter", "--net="+l.cust.Path(), "--", "python3", writeTempTB(t, tcpServerPy))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("tcp server did not start: %q", line)
	}
}

// up starts both edges and the tenant and waits for the ECMP route.
func (l *bgpLab) up() {
	t := l.t
	l.startNSD(0)
	l.startNSD(1)
	l.applyTenant("")
	took := eventuallyFor(t, 60*time.Second, "the router's ECMP route to 203.0.113.0/24 via both edges", func() bool {
		return l.hasHops("203.0.113.0/24", both1, both2) && l.hasHops("192.0.2.10", both1, both2)
	})
	t.Logf("tenant applied and announced by both edges: ECMP route at the router after %s", took.Round(time.Millisecond))
	l.startTCPServer()
}

// TestBGPAnycast: scenarios 1, 2, 3 and 6 of the lab. A new tenant's
// prefix and the anycast endpoint appear at the router from both edges and
// TCP flows through them; drain withdraws edge1 and undrain brings it
// back with no loss on running transfers; kill -9 and a restart of nsd on
// edge1 never remove its path (graceful restart); advertise false
// withdraws the tenant's prefix from both edges (the endpoint stays).
func TestBGPAnycast(t *testing.T) {
	l := newBGPLab(t)
	l.up()
	if wait := l.tcpTransfer(8, 1); true {
		if out, ok := wait(); !ok {
			t.Fatalf("TCP through both edges: %s", out)
		} else {
			t.Log(out)
		}
	}
	bgpOut := l.nsctl("bgp")
	for _, want := range []string{l.hosts[0] + ": AS 65001", "198.18.1.1  65000  established", "announced (2): 192.0.2.10/32 203.0.113.0/24"} {
		if !strings.Contains(bgpOut, want) {
			t.Errorf("nsctl bgp lacks %q:\n%s", want, bgpOut)
		}
	}
	if out := l.bird.Routes("master4"); !strings.Contains(out, "(65001,100)") {
		t.Errorf("the configured community is not on the route:\n%s", out)
	}

	// 2. drain edge1 during transfers.
	wait := l.tcpTransfer(8, 6)
	time.Sleep(1500 * time.Millisecond)
	l.nsctl("drain", l.hosts[0])
	took := eventuallyFor(t, 20*time.Second, "the router drops edge1's path", func() bool {
		return l.hasHops("203.0.113.0/24", both2) && l.hasHops("192.0.2.10", both2)
	})
	t.Logf("drain: router converged on edge2 after %s", took.Round(time.Millisecond))
	if out, ok := wait(); !ok {
		t.Errorf("TCP transfers during the drain lost data: %s", out)
	} else {
		t.Logf("during the drain: %s", out)
	}
	eventually(t, "nsctl bgp shows the drain", func() bool {
		out, _ := exec.Command(l.ctlBin, "--consul-addr", l.consul.Addr, "bgp", "--host", l.hosts[0]).CombinedOutput()
		return strings.Contains(string(out), "DRAINED") && strings.Contains(string(out), "announced (0)")
	})
	l.nsctl("undrain", l.hosts[0])
	took = eventuallyFor(t, 20*time.Second, "undrain brings edge1's path back", func() bool {
		return l.hasHops("203.0.113.0/24", both1, both2)
	})
	t.Logf("undrain: ECMP again after %s", took.Round(time.Millisecond))

	// 3. kill -9 nsd on edge1 and restart it: the path never leaves.
	stop := l.watchHops("203.0.113.0/24", both1, both2)
	wait = l.tcpTransfer(8, 6)
	time.Sleep(time.Second)
	l.nsd[0].cmd.Process.Signal(syscall.SIGKILL)
	<-l.nsd[0].done
	eventuallyFor(t, 15*time.Second, "bird sees edge1's session go down", func() bool { return !l.bird.Established("edge1") })
	restarted := time.Now()
	l.startNSD(0)
	eventuallyFor(t, 30*time.Second, "edge1's session back", func() bool { return l.bird.Established("edge1") })
	t.Logf("restarted nsd re-established its session after %s", time.Since(restarted).Round(time.Millisecond))
	if out, ok := wait(); !ok {
		t.Errorf("TCP transfers during the restart lost data: %s", out)
	} else {
		t.Logf("during the restart: %s", out)
	}
	time.Sleep(2 * time.Second) // End-of-RIB: stale routes refreshed or flushed
	if seen := stop(); len(seen) > 0 {
		t.Errorf("the router's route changed during the restart (graceful restart failed): %q", seen)
	}
	if out := l.bird.Routes("master4"); strings.Contains(out, "stale") {
		t.Errorf("routes still stale after End-of-RIB:\n%s", out)
	}

	// 6. advertise false: withdrawn from both edges; the endpoint stays.
	l.applyTenant(`"advertise": false,`)
	eventuallyFor(t, 20*time.Second, "advertise false withdraws 203.0.113.0/24 from both edges", func() bool {
		return len(l.nexthops("203.0.113.0/24")) == 0 && l.hasHops("192.0.2.10", both1, both2)
	})
	l.applyTenant(`"advertise": true,`)
	eventuallyFor(t, 20*time.Second, "advertise true announces it again", func() bool {
		return l.hasHops("203.0.113.0/24", both1, both2)
	})
}

// TestBGPFlowSpec: scenario 5. A signature marked for export appears in
// the router's flow4 table from both edges and disappears when removed; a
// signature FlowSpec cannot express is reported as not exported.
func TestBGPFlowSpec(t *testing.T) {
	l := newBGPLab(t)
	l.up()
	l.nsctl("dos", "add-signature", "acme", "--id", "ntp", "--expression", "udp.dstport == 123 and ip.len >= 400", "--export", "flowspec")
	l.nsctl("dos", "add-signature", "acme", "--id", "monlist", "--expression", "udp.dstport == 123 and payload[0:4] & 0x070000ff == 0x0700002a", "--export", "flowspec")
	rule := "flow4 { dst 203.0.113.0/24; proto 17; dport 123; length 400..65535; }"
	took := eventuallyFor(t, 20*time.Second, "the rule in bird's flowtab4 from both edges", func() bool {
		out := l.bird.Routes("flowtab4")
		return strings.Contains(out, rule) && strings.Contains(out, "from 198.18.1.2") && strings.Contains(out, "from 198.18.2.2")
	})
	t.Logf("signature written → FlowSpec rule at the router from both edges after %s:\n%s", took.Round(time.Millisecond), l.bird.Routes("flowtab4"))
	if out := l.bird.Routes("flowtab4"); !strings.Contains(out, "(generic, 0x80060000, 0x0)") {
		t.Errorf("no traffic-rate 0 (discard) action:\n%s", out)
	}
	eventually(t, "nsctl bgp lists the rule and the signature it cannot export", func() bool {
		out, _ := exec.Command(l.ctlBin, "--consul-addr", l.consul.Addr, "bgp").CombinedOutput()
		return strings.Count(string(out), "flowspec: acme/ntp@203.0.113.0/24") == 2 &&
			strings.Count(string(out), "not exported: acme/monlist: payload bytes cannot be expressed in FlowSpec") == 2
	})
	// A rate limit for the whole rule becomes traffic-rate in bytes/s.
	l.nsctl("dos", "add-signature", "acme", "--id", "syn", "--expression", "ip.dst == 203.0.113.5 and tcp.flags.syn and tcp.dstport == 80",
		"--action", "ratelimit", "--bps", "8000000", "--per", "rule", "--export", "flowspec")
	eventuallyFor(t, 20*time.Second, "the rate-limit rule in flowtab4", func() bool {
		out := l.bird.Routes("flowtab4")
		return strings.Contains(out, "flow4 { dst 203.0.113.5/32; proto 6; dport 80; tcp flags 0x2/0x2; }") &&
			strings.Contains(out, "(generic, 0x80060000, 0x49742400)") // 1,000,000 B/s as an IEEE float
	})
	l.nsctl("dos", "delete-signature", "acme", "ntp")
	l.nsctl("dos", "delete-signature", "acme", "syn")
	eventuallyFor(t, 20*time.Second, "the rules gone from flowtab4", func() bool {
		return !strings.Contains(l.bird.Routes("flowtab4"), "203.0.113.")
	})
}

// TestBGPBadPeers: edge1 also has a peer that never shows up, and edge2
// expects the wrong ASN of the router. Both nsds apply the tenant and
// serve traffic as usual (through edge1, the only edge the router
// accepts); nsctl bgp reports each session's state and error, and the
// refused one backs off.
func TestBGPBadPeers(t *testing.T) {
	l := newBGPLab(t)
	l.bgpConfig[0] = writeTempTB(t, `{"asn": 65001, "peers": [
	  {"address": "198.18.1.1", "asn": 65000, "passive": true, "hold_time": "6s"},
	  {"address": "198.18.1.3", "asn": 65000, "passive": true}]}`)
	l.bgpConfig[1] = writeTempTB(t, `{"asn": 65001, "peers": [{"address": "198.18.2.1", "asn": 65099, "passive": true, "hold_time": "6s"}]}`)
	l.startNSD(0)
	l.startNSD(1)
	l.applyTenant("")
	eventuallyFor(t, 30*time.Second, "the tenant applied on both edges", func() bool {
		out, _ := exec.Command(l.ctlBin, "--consul-addr", l.consul.Addr, "status").CombinedOutput()
		return strings.Count(string(out), "applied") == 2
	})
	eventuallyFor(t, 30*time.Second, "the route via edge1 only", func() bool { return l.hasHops("203.0.113.0/24", both1) })
	l.startTCPServer()
	if out, ok := l.tcpTransfer(4, 1)(); !ok {
		t.Errorf("TCP through edge1: %s", out)
	}
	eventuallyFor(t, 60*time.Second, "nsctl bgp reports the bad sessions", func() bool {
		out, _ := exec.Command(l.ctlBin, "--consul-addr", l.consul.Addr, "bgp").CombinedOutput()
		s := string(out)
		return strings.Contains(s, "198.18.1.1  65000  established") && strings.Contains(s, "198.18.1.3  65000  active") &&
			strings.Contains(s, "198.18.2.1  65099  backoff")
	})
	out, _ := exec.Command(l.ctlBin, "--consul-addr", l.consul.Addr, "bgp").CombinedOutput()
	t.Logf("nsctl bgp:\n%s", out)
}

// TestBGPEdgeLost: scenario 4. edge1 fails silently (an nft table in its
// namespace drops everything its own stack sends and receives; the link
// keeps its carrier, so the router sees no interface event): the router
// drops edge1's path when the hold time (6 s here) runs out, and new
// flows go through edge2. When edge1 recovers its path comes back.
func TestBGPEdgeLost(t *testing.T) {
	l := newBGPLab(t)
	l.up()
	dead := writeTempTB(t, `table inet nfB_dead {
  chain in { type filter hook input priority -500; policy drop; }
  chain out { type filter hook output priority -500; policy drop; }
}`)
	l.edges[0].MustExec(t, "nft", "-f", dead)
	t0 := time.Now()
	took := eventuallyFor(t, 30*time.Second, "the router drops edge1's path", func() bool {
		return l.hasHops("203.0.113.0/24", both2) && l.hasHops("192.0.2.10", both2)
	})
	t.Logf("edge1 failed silently: the router dropped its path after %s (hold time 6 s, keepalive 2 s)", took.Round(100*time.Millisecond))
	if out, ok := l.tcpTransfer(8, 1)(); !ok {
		t.Errorf("TCP after edge1 was lost: %s", out)
	}
	l.edges[0].MustExec(t, "nft", "delete", "table", "inet", "nfB_dead")
	back := eventuallyFor(t, 60*time.Second, "edge1's path back", func() bool { return l.hasHops("203.0.113.0/24", both1, both2) })
	t.Logf("edge1 recovered: ECMP again after %s (%s since it failed)", back.Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
}
