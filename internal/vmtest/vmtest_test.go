package vmtest_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/vmtest"
)

// TestBoot boots the VM on a tap in a namespace, reaches it over the tap,
// runs commands (exit codes included) and makes a kernel GRE device.
func TestBoot(t *testing.T) {
	vmtest.Require(t)
	u := nstest.Unique()
	ns := nstest.New(t, "nfH"+u+"v")
	tap := "nfH" + u + "tap"
	ns.MustExec(t, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	ns.MustExec(t, "ip", "addr", "add", "198.51.100.1/24", "dev", tap)
	ns.MustExec(t, "ip", "link", "set", tap, "up")
	vm := vmtest.Start(t, vmtest.Config{NSPath: ns.Path(), Tap: tap, Addr: "198.51.100.130/24", Gateway: "198.51.100.1",
		Forward: true, TempPrefix: "nfH"})
	if out := vm.MustRun(t, "echo hello; echo world"); out != "hello\nworld" {
		t.Errorf("output %q", out)
	}
	if _, err := vm.Run(10*time.Second, "exit 3"); !errors.Is(err, vmtest.ErrExit) || !strings.Contains(err.Error(), "exit 3") {
		t.Errorf("exit 3: %v", err)
	}
	if out := vm.MustRun(t, "sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.all.accept_local"); out != "1\n0\n0" {
		t.Errorf("guest sysctls (forward, rp_filter, accept_local) = %q, want 1 0 0", out)
	}
	if out, err := ns.Exec(t, "ping", "-c1", "-W5", "198.51.100.130"); err != nil {
		t.Fatalf("guest unreachable over the tap: %v\n%s", err, out)
	}
	vm.MustRun(t, "ip link add nfHgre type gre local 198.51.100.130 remote 192.0.2.10 ttl 64 && ip link set nfHgre up")
	if out := vm.MustRun(t, "ip -d link show nfHgre"); !strings.Contains(out, "gre remote 192.0.2.10") {
		t.Errorf("no kernel GRE device in the guest:\n%s", out)
	}
}
