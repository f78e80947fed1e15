package vmtest_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestRunTests runs TestGuestSide of this test binary inside a VM with
// the host's root: the binary starts there, sees the guest's kernel, a
// bpffs, its own /run and /tmp, the host's tools, and makes a GRE device.
func TestRunTests(t *testing.T) {
	res := vmtest.RunTests(t, vmtest.RunConfig{Run: "^TestGuestSide$", TempPrefix: "nfK", Timeout: 5 * time.Minute})
	if len(res.Failed) > 0 || len(res.Passed) != 1 || res.Err != nil {
		t.Fatalf("in the VM: passed %v failed %v skipped %v (%v)", res.Passed, res.Failed, res.Skipped, res.Err)
	}
	t.Logf("kernel %s: %v", res.Kernel, res.Took)
}

// TestGuestSide only runs inside the VM (RunTests sets vmtest.InVMEnv).
func TestGuestSide(t *testing.T) {
	if !vmtest.InVM() {
		t.Skip("SKIP: runs inside the kernel-test VM (TestRunTests)")
	}
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil || strings.TrimSpace(string(rel)) != os.Getenv(vmtest.InVMEnv) {
		t.Errorf("kernel %q (%v), want %q", rel, err, os.Getenv(vmtest.InVMEnv))
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Errorf("no bpffs at /sys/fs/bpf: %v", err)
	}
	if err := os.WriteFile(filepath.Join(t.TempDir(), "x"), []byte("x"), 0o644); err != nil {
		t.Errorf("write a temporary file: %v", err)
	}
	if err := os.WriteFile("/usr/nfK-must-not-exist", nil, 0o644); err == nil {
		os.Remove("/usr/nfK-must-not-exist")
		t.Errorf("the host's root is writable from the VM")
	}
	for _, tool := range []string{"ip", "nft", "ping", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Errorf("%s: %v", tool, err)
		}
	}
	ns := nstest.New(t, "nfK"+nstest.Unique()+"g")
	ns.MustExec(t, "ip", "link", "add", "nfKgre", "type", "gre", "local", "192.0.2.10", "remote", "198.51.100.130", "ttl", "64")
	if out := ns.MustExec(t, "ip", "-d", "link", "show", "nfKgre"); !strings.Contains(out, "gre remote 198.51.100.130") {
		t.Errorf("no GRE device:\n%s", out)
	}
	// A module the initrd does not load at boot, loaded on demand.
	ns.MustExec(t, "tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio")
	ns.MustExec(t, "nft", "add table inet nfKt; add chain inet nfKt c { type filter hook forward priority 0; }; add rule inet nfKt c tcp flags syn tcp option maxseg size set 1400")
}

func TestParseResult(t *testing.T) {
	out := `=== RUN   TestA
--- PASS: TestA (0.00s)
=== RUN   TestB
    b_test.go:10: setting up
    b_test.go:12: SKIP (this kernel lacks tcx)
--- SKIP: TestB (0.01s)
=== RUN   TestC
=== RUN   TestC/sub
    c_test.go:3: boom
    --- FAIL: TestC/sub (0.00s)
--- FAIL: TestC (0.00s)
FAIL`
	r := vmtest.ParseForTest(out)
	if strings.Join(r.Passed, " ") != "TestA" || strings.Join(r.Failed, " ") != "TestC/sub TestC" || strings.Join(r.Skipped, " ") != "TestB" {
		t.Errorf("parsed %+v", r)
	}
	if got := r.SkipReasons["TestB"]; got != "b_test.go:12: SKIP (this kernel lacks tcx)" {
		t.Errorf("skip reason %q", got)
	}
}
