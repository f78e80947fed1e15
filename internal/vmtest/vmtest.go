// Package vmtest boots a small Linux VM for kernel tests that need a real
// peer with kernel features the test machine lacks (kernel GRE above all:
// the VM plays a customer's Linux router). The VM is Debian's cloud kernel
// with a busybox initrd built and cached by scripts/vm-kernel.sh; it runs
// under qemu-system-x86_64 in software emulation (-accel tcg: /dev/kvm may
// exist on test machines and hang), its one NIC a tap device inside a test
// namespace, so the test wires it like any other namespace.
//
// Commands run in the guest over a virtio-serial port (not the console, so
// kernel messages never mix with output); every call has a timeout, and
// the VM is killed in t.Cleanup. A missing qemu or image is a loud skip.
//
// With Config.HostRoot the guest instead mounts this machine's root
// filesystem read-only (virtiofs, served by qemu's virtiofsd) and runs
// every command chrooted into it: RunTests runs this repository's test
// binaries on the VM's kernel that way (runtests.go).
package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Config describes one VM.
type Config struct {
	// NSPath is the network namespace the tap lives in (/run/netns/X);
	// qemu is started inside it.
	NSPath string
	// Tap is an existing tap device in that namespace (ip tuntap add ...
	// mode tap); the guest's eth0 is its other end.
	Tap string
	// Addr (CIDR) and Gateway configure the guest's eth0; Forward turns on
	// IPv4 forwarding (a router). Nothing else departs from the kernel's
	// default sysctls.
	Addr, Gateway string
	Forward       bool
	// TempPrefix names the temporary directory (socket, console log):
	// the test's tag.
	TempPrefix string
	// BootTimeout bounds the boot (default 180 s: emulation on a loaded
	// machine; it takes about 5 s on an idle one).
	BootTimeout time.Duration
	// Memory in MiB (default 256; 768 with HostRoot).
	Memory int
	// HostRoot: no NIC (NSPath and Tap empty); the guest runs commands
	// chrooted into this machine's root filesystem (read-only, tmpfs on
	// /run /tmp /var, bpffs on /sys/fs/bpf; the host's own /tmp under
	// /run/host/tmp).
	HostRoot bool
	// KernelPkg is the Debian kernel package to boot
	// (linux-image-<version>-cloud-amd64); empty: $NFHOST_VM_KERNEL_PKG,
	// or the one scripts/vm-kernel.sh picks.
	KernelPkg string
}

// VM is a running guest.
type VM struct {
	cfg     Config
	cmd     *exec.Cmd
	dir     string
	conn    net.Conn
	r       *bufio.Reader
	mu      sync.Mutex
	exited  chan struct{}
	waitErr error
	fsd     *exec.Cmd // virtiofsd (HostRoot)
	// Kernel is the guest kernel's release (from the image).
	Kernel string
}

// Image returns the kernel and initrd, building them with
// scripts/vm-kernel.sh if needed ($NFHOST_VM_DIR overrides).
func Image() (kernel, initrd string, err error) { return ImageFor("") }

// ImageFor is Image for one kernel package (empty: as Image).
func ImageFor(pkg string) (kernel, initrd string, err error) {
	dir := os.Getenv("NFHOST_VM_DIR")
	if dir == "" || pkg != "" {
		root, err := repoRoot()
		if err != nil {
			return "", "", err
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "vm-kernel.sh"))
		if pkg != "" {
			cmd.Env = append(os.Environ(), "NFHOST_VM_KERNEL_PKG="+pkg)
		}
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", "", fmt.Errorf("build the VM image: %v: %s", err, ee.Stderr)
			}
			return "", "", fmt.Errorf("build the VM image: %w", err)
		}
		dir = strings.TrimSpace(string(out))
	}
	kernel, initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return "", "", fmt.Errorf("VM image: %w", err)
		}
	}
	return kernel, initrd, nil
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "scripts", "vm-kernel.sh")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("find scripts/vm-kernel.sh above the working directory")
		}
		d = parent
	}
}

// Require skips the test loudly when qemu or the tools to build the image
// are missing, and under -short (make test-unit).
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("SKIP (-short): boots a VM")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root): VM test")
	}
	if InVM() {
		t.Skip("SKIP (inside the kernel-test VM): no VM in a VM (emulation within emulation)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIP (needs %s): install qemu-system-x86 (scripts/deps.sh does)", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil && os.Getenv("NFHOST_VM_DIR") == "" {
		t.Skip("SKIP (needs busybox-static to build the VM image; scripts/deps.sh installs it)")
	}
}

// Start boots a VM and waits until its control channel answers. The VM is
// killed when the test ends.
func Start(t testing.TB, cfg Config) *VM {
	t.Helper()
	Require(t)
	if cfg.HostRoot {
		if _, err := os.Stat(Virtiofsd); err != nil {
			t.Skipf("SKIP (needs %s, from qemu-system-common): the VM mounts the host's root over virtiofs", Virtiofsd)
		}
	}
	kernel, initrd, err := ImageFor(cfg.KernelPkg)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 180 * time.Second
	}
	if cfg.Memory == 0 {
		cfg.Memory = 256
		if cfg.HostRoot {
			cfg.Memory = 768
		}
	}
	if cfg.TempPrefix == "" {
		cfg.TempPrefix = "vmtest"
	}
	dir, err := os.MkdirTemp("", cfg.TempPrefix+"-vm-")
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{cfg: cfg, dir: dir, exited: make(chan struct{})}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "version")); err == nil {
		v.Kernel = strings.TrimSpace(string(b))
	}
	t.Cleanup(func() { v.stop(t) })
	sock, console := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "console.log")
	// no_timer_check: under emulation on a loaded machine the kernel's
	// check of the IO-APIC timer can fail and panic the boot.
	app := "console=ttyS0 panic=-1 quiet no_timer_check nfhost.ip=" + cfg.Addr
	if cfg.Gateway != "" {
		app += " nfhost.gw=" + cfg.Gateway
	}
	if cfg.Forward {
		app += " nfhost.forward=1"
	}
	args := []string{"qemu-system-x86_64",
		"-accel", "tcg", "-m", strconv.Itoa(cfg.Memory), "-nographic", "-monitor", "none", "-no-reboot",
		"-serial", "file:" + console,
		"-kernel", kernel, "-initrd", initrd}
	if cfg.Tap != "" {
		args = append(args, "-netdev", "tap,id=n0,ifname="+cfg.Tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=n0")
	} else {
		args = append(args, "-nic", "none")
	}
	if cfg.HostRoot {
		fs, err := v.startVirtiofsd(t)
		if err != nil {
			t.Fatalf("vmtest: %v", err)
		}
		app += " nfhost.root=" + hostRootTag
		// vhost-user needs the guest's memory shared with virtiofsd.
		args = append(args, "-chardev", "socket,id=fs0,path="+fs, "-device", "vhost-user-fs-pci,chardev=fs0,tag="+hostRootTag,
			"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", cfg.Memory), "-numa", "node,memdev=mem")
	}
	args = append(args, "-append", app,
		"-chardev", "socket,id=c0,path="+sock+",server=on,wait=off",
		"-device", "virtio-serial-pci", "-device", "virtserialport,chardev=c0,name=ctl")
	if cfg.NSPath != "" {
		v.cmd = exec.Command("nsenter", append([]string{"--net=" + cfg.NSPath, "--"}, args...)...)
	} else {
		v.cmd = exec.Command(args[0], args[1:]...)
	}
	var stderr bytes.Buffer
	v.cmd.Stdout, v.cmd.Stderr = &stderr, &stderr
	if err := v.cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() {
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	start := time.Now()
	deadline := start.Add(cfg.BootTimeout)
	for v.conn == nil {
		if c, err := net.Dial("unix", sock); err == nil {
			v.conn = c
			break
		}
		v.checkAlive(t, deadline, &stderr, console)
		time.Sleep(50 * time.Millisecond)
	}
	v.r = bufio.NewReader(v.conn)
	for {
		if b, _ := os.ReadFile(console); bytes.Contains(b, []byte("nfhost-vm: ready")) {
			break
		}
		v.checkAlive(t, deadline, &stderr, console)
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := v.Run(30*time.Second, "true"); err != nil {
		t.Fatalf("vmtest: control channel: %v\nconsole:\n%s", err, v.Console())
	}
	if cfg.HostRoot {
		if !strings.Contains(v.Console(), "nfhost-vm: host root at /newroot") {
			t.Fatalf("vmtest: the guest did not mount the host's root\nconsole:\n%s", v.Console())
		}
		t.Logf("vmtest: VM up in %v (kernel %s, the host's root read-only)", time.Since(start).Round(time.Millisecond), v.Kernel)
		return v
	}
	t.Logf("vmtest: VM up in %v (%s on %s)", time.Since(start).Round(time.Millisecond), cfg.Addr, cfg.Tap)
	return v
}

// Virtiofsd is qemu's virtiofs daemon (Debian's qemu-system-common).
const Virtiofsd = "/usr/lib/qemu/virtiofsd"

const hostRootTag = "hostroot"

// startVirtiofsd serves / to the guest (the guest mounts it read-only)
// and returns its socket once it listens. sandbox=chroot: the namespace
// sandbox pivots into the shared directory, which fails for / (EBUSY).
func (v *VM) startVirtiofsd(t testing.TB) (string, error) {
	sock := filepath.Join(v.dir, "fs.sock")
	v.fsd = exec.Command(Virtiofsd, "--socket-path="+sock, "-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot",
		"-o", "log_level=warn")
	var out bytes.Buffer
	v.fsd.Stdout, v.fsd.Stderr = &out, &out
	if err := v.fsd.Start(); err != nil {
		return "", fmt.Errorf("start virtiofsd: %w", err)
	}
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock, nil
		}
	}
	return "", fmt.Errorf("virtiofsd did not listen on %s in 20 s: %s", sock, out.String())
}

func (v *VM) checkAlive(t testing.TB, deadline time.Time, stderr *bytes.Buffer, console string) {
	t.Helper()
	select {
	case <-v.exited:
		b, _ := os.ReadFile(console)
		t.Fatalf("qemu exited during boot: %v\n%s\nconsole:\n%s", v.waitErr, stderr.String(), b)
	default:
	}
	if time.Now().After(deadline) {
		b, _ := os.ReadFile(console)
		t.Fatalf("VM did not boot in %v\nconsole:\n%s", v.cfg.BootTimeout, b)
	}
}

// Console returns what the guest printed on its console so far.
func (v *VM) Console() string {
	b, _ := os.ReadFile(filepath.Join(v.dir, "console.log"))
	return string(b)
}

// ErrExit is returned (wrapped) by Run when the command exits non-zero.
var ErrExit = errors.New("guest command failed")

// Run runs one command line in the guest with sh -c and returns its
// output (stdout and stderr). A non-zero exit is an error wrapping ErrExit;
// a command still running after timeout leaves the channel unusable and
// is an error.
func (v *VM) Run(timeout time.Duration, cmdline string) (string, error) {
	if strings.ContainsAny(cmdline, "\n\r") {
		return "", fmt.Errorf("guest command %q: one line only", cmdline)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conn == nil {
		return "", errors.New("VM not running")
	}
	dl := time.Now().Add(timeout)
	v.conn.SetDeadline(dl)
	if _, err := v.conn.Write([]byte(cmdline + "\n")); err != nil {
		return "", fmt.Errorf("send guest command: %w", err)
	}
	var out strings.Builder
	for {
		line, err := v.r.ReadString('\n')
		if err != nil {
			return out.String(), fmt.Errorf("guest command %q: %w (output so far %q)", cmdline, err, out.String())
		}
		if rest, ok := strings.CutPrefix(line, "\036rc="); ok {
			s := strings.TrimRight(out.String(), "\n")
			rc, _ := strconv.Atoi(strings.TrimSpace(rest))
			if rc != 0 {
				return s, fmt.Errorf("guest command %q: exit %d: %w\n%s", cmdline, rc, ErrExit, s)
			}
			return s, nil
		}
		out.WriteString(line)
	}
}

// MustRun is Run that fails the test on error (60 s timeout).
func (v *VM) MustRun(t testing.TB, cmdline string) string {
	t.Helper()
	out, err := v.Run(60*time.Second, cmdline)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunContext is Run bounded by ctx's deadline too.
func (v *VM) RunContext(ctx context.Context, cmdline string) (string, error) {
	timeout := 60 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	return v.Run(timeout, cmdline)
}

func (v *VM) stop(t testing.TB) {
	if v.conn != nil {
		v.conn.Close()
	}
	if v.cmd != nil && v.cmd.Process != nil {
		v.cmd.Process.Kill()
		select {
		case <-v.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("vmtest: qemu (pid %d) did not exit after SIGKILL", v.cmd.Process.Pid)
		}
	}
	if v.fsd != nil && v.fsd.Process != nil {
		v.fsd.Process.Kill()
		v.fsd.Wait()
	}
	if t.Failed() {
		t.Logf("vmtest: guest console:\n%s", v.Console())
	}
	os.RemoveAll(v.dir)
}
