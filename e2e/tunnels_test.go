package e2e

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/tunnels"
)

// addCustomer builds the tenant's side behind the client (the internet):
// a GRE box G holding the customer endpoints 198.51.100.130 and .131, and
// the customer's router R behind it with 203.0.113.5 (the tenant's
// prefix) and two tunnel interfaces. G runs the customer-side endpoint of
// the tunnels package, since this kernel has no GRE.
//
//	client ── gcust 198.51.100.129 ══ eth0 198.51.100.130/.131 G ══ gre1/gre2 R 203.0.113.5
func (l *lab) addCustomer() (g, r *nstest.NS, cust *tunnels.Customer) {
	t := l.t
	u := nstest.Unique()
	g, r = nstest.New(t, l.prefix+u+"g"), nstest.New(t, l.prefix+u+"r")
	// The lab's client routes 198.51.100.0/24 to the edge (a tenant range
	// in other tests); the customer endpoints use the more specific /25.
	nstest.Link(t, l.client, "gcust", "198.51.100.129/25", g, "eth0", "198.51.100.130/25")
	g.MustExec(t, "ip", "addr", "add", "198.51.100.131/25", "dev", "eth0")
	g.MustExec(t, "ip", "route", "add", "default", "via", "198.51.100.129")
	l.client.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.client.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2") // the anycast endpoint
	l.edge.MustExec(t, "ip", "route", "add", "198.51.100.128/25", "via", "192.0.2.1")
	r.MustExec(t, "ip", "addr", "add", "203.0.113.5/32", "dev", "lo")
	r.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	pin := filepath.Join(bpfpin.BPFFS, "nfhost-e2e-customer-"+u)
	if l.prefix != "nfE" {
		pin = filepath.Join(bpfpin.BPFFS, l.prefix+"-customer-"+u) // a test's own tag
	}
	t.Cleanup(func() { tunnels.Detach(pin) })
	mk := func(name, local, addr, peer string) tunnels.Tunnel {
		return tunnels.Tunnel{Name: name, Local: netip.MustParseAddr(local), Remote: netip.MustParseAddr("192.0.2.10"),
			Addr: netip.MustParsePrefix(addr), Peer: netip.MustParseAddr(peer), MTU: 1476, TTL: 64, MSS: 1436}
	}
	cust, err := tunnels.StartCustomer(context.Background(), tunnels.CustomerConfig{HostNS: g.Handle, Uplink: "eth0", PinDir: pin, Inner: r.Name,
		Tunnels: []tunnels.Tunnel{mk("gre1", "198.51.100.130", "169.254.20.1/31", "169.254.20.0"), mk("gre2", "198.51.100.131", "169.254.21.1/31", "169.254.21.0")},
		Routes: []tunnels.Route{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Nexthop: netip.MustParseAddr("169.254.20.0"), Tunnel: "gre1", Priority: 100, Weight: 1},
			{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Nexthop: netip.MustParseAddr("169.254.21.0"), Tunnel: "gre2", Priority: 200, Weight: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cust.Close)
	return g, r, cust
}

const tunnelNetwork = `{"prefixes": ["203.0.113.0/24"],
 "tunnels": [
  {"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/31",
   "health_check": {"type": "reply", "rate": "high"}},
  {"name": "gre-acme2", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.131", "interface_address": "169.254.21.0/31",
   "health_check": {"type": "request", "rate": "high"}}],
 "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1", "priority": 100},
            {"prefix": "203.0.113.0/24", "nexthop": "169.254.21.1", "priority": 200}]}`

// TestTunnelsThroughConsul: a client on the internet reaches an address
// behind the tenant's router through the edge and GRE, both ways, with
// GRE on the wire and full-size TCP; when the first tunnel stops
// answering health checks the backup carries the traffic, and the first
// takes it back after it recovers. Bad tunnel fields are refused.
func TestTunnelsThroughConsul(t *testing.T) {
	l := newLab(t)
	nstest.RequireTool(t, "tcpdump")
	_, r, _ := l.addCustomer()
	p := l.startNSD()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	eventually(t, "GRE datapath attached", func() bool { return strings.Contains(p.Log(), "GRE datapath attached") })

	// Validation: a bad field is refused with its path, nothing applied.
	out, code := l.nsctl("validate", "-f", writeTemp(t, `{"id": "acme", "network": {"prefixes": ["203.0.113.0/24"],
	  "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130", "interface_address": "169.254.20.0/29"}]}}`))
	if code != 3 || !strings.Contains(out, `tunnels[0].interface_address: "169.254.20.0/29": must be a /31 or /30`) {
		t.Fatalf("bad tunnel: exit %d\n%s", code, out)
	}

	l.applyTenant("acme", tunnelNetwork)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })
	tn := l.tenantNS("acme")
	if out := tn.MustExec(t, "ip", "-d", "link", "show", "gre-acme1"); !strings.Contains(out, "mtu 1476") {
		t.Fatalf("tunnel interface:\n%s", out)
	}

	// Both ways through GRE, visible on the wire between client and G.
	dump := exec.Command("nsenter", "--net="+l.client.Path(), "--", "tcpdump", "-l", "-n", "-c", "4", "-i", "gcust", "proto", "gre")
	var dumpOut strings.Builder
	dump.Stdout = &dumpOut
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := l.client.Exec(t, "ping", "-c3", "-i", "0.2", "-W1", "203.0.113.5"); err != nil {
		t.Fatalf("client cannot reach 203.0.113.5 behind the customer router:\n%s", tn.MustExec(t, "ip", "route"))
	}
	if _, err := r.Exec(t, "ping", "-c2", "-i", "0.2", "-W1", "-I", "203.0.113.5", "192.0.2.1"); err != nil {
		t.Fatal("the customer router cannot reach the client through the tunnel")
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- dump.Wait() }()
	select {
	case <-waitDone:
	case <-time.After(5 * time.Second):
		dump.Process.Kill()
	}
	if !strings.Contains(dumpOut.String(), "GREv0") || !strings.Contains(dumpOut.String(), "192.0.2.10 > 198.51.100.130") {
		t.Errorf("no GRE on the wire:\n%s", dumpOut.String())
	}

	// Full-size TCP through the edge and the tunnel.
	srv := exec.Command("nsenter", "--net="+r.Path(), "--", "iperf3", "-s", "-B", "203.0.113.5", "-1")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	iout, err := l.client.Exec(t, "iperf3", "-c", "203.0.113.5", "-t", "1", "-J")
	srv.Wait()
	var res struct {
		End struct {
			SumReceived struct {
				Bytes uint64 `json:"bytes"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err != nil || json.Unmarshal([]byte(iout), &res) != nil || res.End.SumReceived.Bytes < 1<<20 {
		t.Fatalf("iperf3 through the tunnel: %v %d bytes\n%.2000s", err, res.End.SumReceived.Bytes, iout)
	}

	// Health: both tunnels healthy in nsctl tunnels.
	eventually(t, "tunnels healthy in status", func() bool {
		out, _ := l.nsctl("tunnels", "acme")
		return strings.Count(out, "healthy") == 2
	})
	via := func() string { return tn.MustExec(t, "ip", "route", "show", "203.0.113.0/24") }
	if !strings.Contains(via(), "169.254.20.1") {
		t.Fatalf("primary tunnel not in use: %s", via())
	}
	// The internet loses the path to the first customer endpoint.
	l.client.MustExec(t, "nft", "add table inet cut; add chain inet cut f { type filter hook forward priority 0; }; add rule inet cut f ip daddr 198.51.100.130 drop")
	eventuallyFor(t, 20*time.Second, "traffic on the backup tunnel", func() bool { return strings.Contains(via(), "169.254.21.1") })
	if _, err := l.client.Exec(t, "ping", "-c2", "-i", "0.2", "-W1", "203.0.113.5"); err != nil {
		t.Fatal("no traffic over the backup tunnel")
	}
	eventually(t, "down in nsctl tunnels", func() bool {
		out, _ := l.nsctl("tunnels", "acme")
		return strings.Contains(out, "gre-acme1") && strings.Contains(out, "down")
	})
	// The path heals; after a sustained healthy period the primary is back.
	l.client.MustExec(t, "nft", "delete table inet cut")
	eventuallyFor(t, 30*time.Second, "traffic back on the primary", func() bool { return strings.Contains(via(), "169.254.20.1") })
	if _, err := l.client.Exec(t, "ping", "-c2", "-i", "0.2", "-W1", "203.0.113.5"); err != nil {
		t.Fatal("no traffic after recovery")
	}

	// A restarted nsd finds everything in place and changes nothing.
	p.stop(t)
	p2 := l.startNSD()
	eventually(t, "restarted nsd applied", func() bool {
		return strings.Contains(p2.Log(), "GRE datapath attached") && strings.Contains(p2.Log(), "nsd started")
	})
	time.Sleep(1500 * time.Millisecond) // a resync pass
	if strings.Contains(p2.Log(), "subsys=tunnels change=") || !strings.Contains(grep(p2.Log(), "GRE datapath attached"), "unchanged=true") {
		t.Errorf("restart changed tunnels:\n%s", grep(p2.Log(), "tunnel"))
	}
	if _, err := l.client.Exec(t, "ping", "-c2", "-i", "0.2", "-W1", "203.0.113.5"); err != nil {
		t.Fatal("no traffic after the restart")
	}

	// Deleting the tenant removes its tunnels from the edge.
	if out, code := l.nsctl("tenant", "delete", "acme"); code != 0 {
		t.Fatalf("delete: %d %s", code, out)
	}
	eventually(t, "tunnel host ends removed", func() bool {
		return !strings.Contains(l.edge.MustExec(t, "ip", "-o", "link"), "nfhost:tunnel=")
	})
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "doc.json")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
