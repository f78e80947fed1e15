package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/vmtest"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
	"github.com/nfhost/nfhost/tunnels"
)

// TestTunnelHealthLinuxRouter: nsd, driven through Consul, with a tunnel
// whose health check is all defaults, to a customer router that is a
// Linux VM terminating GRE with the kernel's ip_gre (default sysctls but
// forwarding; its egress is direct, not through the tunnel):
//
//	client 192.0.2.1 (the internet) ── uplink 192.0.2.2 edge (nsd) ; client tap 198.51.100.1/25 ── VM 198.51.100.10, gre1 169.254.20.1/31, 203.0.113.5 on lo
//
// The tunnel turns healthy and carries the client's traffic to
// 203.0.113.5; `nsctl tunnels` shows the check, the probe window and the
// reason; a blocked path is down with its reason at once in the status,
// then degraded, then healthy, each with the documented reason.
func TestTunnelHealthLinuxRouter(t *testing.T) {
	vmtest.Require(t)
	// Consul on this test's own ports (28600-28604).
	l := newLabPrefix(t, "nfH", consultest.WithPorts(28600))
	pin := filepath.Join(bpfpin.BPFFS, "nfH-"+l.hostID)
	t.Cleanup(func() {
		tunnels.Detach(filepath.Join(pin, "tunnels"))
		dos.Detach(pin)
		os.RemoveAll(pin)
	})
	tap := "nfH" + strings.TrimPrefix(l.hostID, "edge-") + "tap"
	c := l.client
	c.MustExec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	c.MustExec(t, "ip", "addr", "add", "198.51.100.1/25", "dev", tap)
	c.MustExec(t, "ip", "link", "set", tap, "up")
	c.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	c.MustExec(t, "ip", "route", "add", "192.0.2.10/32", "via", "192.0.2.2") // the anycast endpoint
	vm := vmtest.Start(t, vmtest.Config{NSPath: c.Path(), Tap: tap, Addr: "198.51.100.10/25", Gateway: "198.51.100.1",
		Forward: true, TempPrefix: "nfH"})
	vm.MustRun(t, "ip addr add 203.0.113.5/32 dev lo && ip link add gre1 type gre local 198.51.100.10 remote 192.0.2.10 ttl 64 && "+
		"ip addr add 169.254.20.1/31 dev gre1 && ip link set gre1 up")

	p := l.startNSD("--bpf-pin-dir", pin, "--metrics-addr", "127.0.0.1:28605")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(p.Log())
		}
	})
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"],
	  "tunnels": [{"name": "gre-acme1", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.10", "interface_address": "169.254.20.0/31"}],
	  "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}]}`)
	l.waitApplied("acme")
	tunnelsOut := func() string {
		out, _ := l.nsctl("tunnels", "acme", "--host", l.hostID)
		return out
	}
	status := func() source.TunnelStatus {
		var s source.Status
		resp, err := http.Get(l.consul.URL + "/v1/kv/nfhost/tenant-status/acme/" + l.hostID + "?raw")
		if err != nil {
			return source.TunnelStatus{}
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&s)
		return s.Tunnels["gre-acme1"]
	}
	eventuallyFor(t, 30*time.Second, "tunnel healthy in nsctl tunnels", func() bool {
		return strings.Contains(tunnelsOut(), "healthy") && status().WindowProbes >= 3
	})
	out := tunnelsOut()
	t.Logf("nsctl tunnels:\n%s", out)
	if !strings.Contains(out, "reply/unidirectional") || !strings.Contains(out, "gre-acme1: probes answered") {
		t.Errorf("nsctl tunnels without the check or the reason:\n%s", out)
	}
	if _, err := c.Exec(t, "ping", "-c2", "-W2", "203.0.113.5"); err != nil {
		t.Fatal("no traffic from the internet to the router through the tunnel")
	}

	// The internet loses the path to the customer endpoint.
	c.MustExec(t, "nft", "add table inet nfHcut; add chain inet nfHcut f { type filter hook forward priority 0; }; add rule inet nfHcut f ip daddr 198.51.100.10 drop")
	eventuallyFor(t, 15*time.Second, "down in the status", func() bool { return status().State == tunnels.StateDown })
	st := status()
	if !strings.Contains(st.Reason, "probes of the last 1s lost") || st.WindowLost < 3 || st.LastFailure.IsZero() || st.Type != "reply" ||
		st.Direction != "unidirectional" {
		t.Errorf("down status: %+v", st)
	}
	c.MustExec(t, "nft", "delete table inet nfHcut")
	eventuallyFor(t, 15*time.Second, "degraded in the status", func() bool { return status().State == tunnels.StateDegraded })
	if st := status(); !strings.Contains(st.Reason, "3 probes answered in a row") {
		t.Errorf("degraded status: %+v", st)
	}
	eventuallyFor(t, 90*time.Second, "healthy again", func() bool { return status().State == tunnels.StateHealthy })
	out = tunnelsOut()
	t.Logf("nsctl tunnels after recovery:\n%s", out)
	if !strings.Contains(out, "the last 30 probes answered") {
		t.Errorf("recovered without the reason:\n%s", out)
	}
	resp, err := http.Get("http://127.0.0.1:28605/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var probes []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "nfhost_tunnel_probes_total{") {
			probes = append(probes, line)
		}
	}
	if m := strings.Join(probes, "\n"); !strings.Contains(m, `result="lost"`) || !strings.Contains(m, `result="answered"`) {
		t.Errorf("probe counters:\n%s", m)
	}
}
