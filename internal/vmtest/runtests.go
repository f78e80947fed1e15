package vmtest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// InVMEnv is set (to the guest kernel's release) in the environment of a
// test binary RunTests runs inside the VM: the tests that need the VM's
// kernel run there, and the host-side test that boots the VM skips, so
// the run never recurses.
const InVMEnv = "NFHOST_VM_KERNEL_TESTS"

// InVM reports whether this process is a test binary RunTests started in
// the VM.
func InVM() bool { return os.Getenv(InVMEnv) != "" }

// RunConfig says which tests of the running test binary RunTests runs.
type RunConfig struct {
	// Run is the -test.run pattern.
	Run string
	// Skip is the -test.skip pattern (empty: none).
	Skip string
	// Timeout bounds the whole run in the guest (default 20 minutes:
	// emulation is 10-50 times slower than the host).
	Timeout time.Duration
	// KernelPkg selects the guest kernel (Config.KernelPkg).
	KernelPkg string
	// Env is more KEY=VALUE for the test binary.
	Env []string
	// TempPrefix names the host's temporary directory (the test's tag).
	TempPrefix string
	// Memory in MiB (Config.Memory).
	Memory int
	// Short passes -test.short.
	Short bool
	// Binary is the test binary (default: this one, os.Executable) and
	// Dir its working directory (default: this process's); RunIn runs
	// other packages' binaries (go test -c) this way.
	Binary, Dir string
}

// Result is what the tests did in the guest.
type Result struct {
	Kernel                  string // the guest kernel's release
	Passed, Failed, Skipped []string
	// SkipReasons holds the first line each skipped test logged.
	SkipReasons map[string]string
	Output      string
	Err         error // the run's own error (exit status, timeout)
	Took        time.Duration
}

// RunTests boots a VM on cfg.KernelPkg with the host's root (HostRoot)
// and runs this very test binary (os.Executable, reached in the guest
// under /run/host when it lies under /tmp, /run or /var) with -test.run
// cfg.Run and -test.v, in the same working directory, with InVMEnv set.
// It logs the guest's output and returns what passed, failed and
// skipped; it does not fail t for the guest's failures (the caller
// decides), but fails it when the VM cannot run the binary at all.
func RunTests(t testing.TB, cfg RunConfig) Result {
	t.Helper()
	if InVM() {
		t.Skip("SKIP: already inside the kernel-test VM")
	}
	Require(t)
	if cfg.TempPrefix == "" {
		cfg.TempPrefix = "vmtest"
	}
	vm := StartHostRoot(t, cfg.KernelPkg, cfg.TempPrefix, cfg.Memory)
	res := vm.RunIn(t, cfg)
	if res.Err != nil && len(res.Passed)+len(res.Failed)+len(res.Skipped) == 0 {
		t.Fatalf("vmtest: the test binary did not run in the VM: %v", res.Err)
	}
	return res
}

// StartHostRoot boots a VM with the host's root (Config.HostRoot) on
// the kernel package pkg, for RunIn.
func StartHostRoot(t testing.TB, pkg, tempPrefix string, memory int) *VM {
	t.Helper()
	return Start(t, Config{HostRoot: true, KernelPkg: pkg, TempPrefix: tempPrefix, Memory: memory, BootTimeout: 300 * time.Second})
}

// RunIn runs a test binary in a HostRoot VM (see RunTests) and logs its
// output.
func (vm *VM) RunIn(t testing.TB, cfg RunConfig) Result {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Minute
	}
	bin, wd := cfg.Binary, cfg.Dir
	var err error
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			t.Fatalf("vmtest: find the test binary: %v", err)
		}
	}
	if wd == "" {
		if wd, err = os.Getwd(); err != nil {
			t.Fatal(err)
		}
	}
	res := Result{Kernel: vm.Kernel}
	args := []string{"-test.v", "-test.count=1", fmt.Sprintf("-test.timeout=%ds", int(cfg.Timeout.Seconds())-10)}
	if cfg.Run != "" {
		args = append(args, "-test.run="+cfg.Run)
	}
	if cfg.Skip != "" {
		args = append(args, "-test.skip="+cfg.Skip)
	}
	if cfg.Short {
		args = append(args, "-test.short")
	}
	env := append([]string{InVMEnv + "=" + vm.Kernel}, cfg.Env...)
	var line strings.Builder
	fmt.Fprintf(&line, "cd %s && env", shellQuote(GuestPath(wd)))
	for _, e := range env {
		line.WriteString(" " + shellQuote(e))
	}
	line.WriteString(" " + shellQuote(GuestPath(bin)))
	for _, a := range args {
		line.WriteString(" " + shellQuote(a))
	}
	line.WriteString(" 2>&1")
	start := time.Now()
	res.Output, res.Err = vm.Run(cfg.Timeout, line.String())
	res.Took = time.Since(start)
	res.parse()
	t.Logf("vmtest: %s in the VM (kernel %s, %v):\n%s", filepath.Base(bin), vm.Kernel, res.Took.Round(time.Second), res.Output)
	return res
}

// GuestPath is where a host path is seen by commands in a HostRoot
// guest: the guest has its own /run, /tmp and /var, and the host's root
// once more under /run/host.
func GuestPath(p string) string {
	for _, d := range []string{"/run", "/tmp", "/var", "/dev", "/proc", "/sys"} {
		if p == d || strings.HasPrefix(p, d+"/") {
			return filepath.Join("/run/host", p)
		}
	}
	return p
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var verdictRE = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

// parse reads go test -v output: top-level and subtest verdicts, and
// for each skipped test the last line it logged before its verdict (its
// t.Skip message; -v streams a test's log before the verdict line).
func (r *Result) parse() {
	r.SkipReasons = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.Output))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	last := ""
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "=== ") {
			last = ""
			continue
		}
		m := verdictRE.FindStringSubmatch(l)
		if m == nil {
			if logRE.MatchString(l) {
				last = strings.TrimSpace(l)
			}
			continue
		}
		switch m[1] {
		case "PASS":
			r.Passed = append(r.Passed, m[2])
		case "FAIL":
			r.Failed = append(r.Failed, m[2])
		case "SKIP":
			r.Skipped = append(r.Skipped, m[2])
			r.SkipReasons[m[2]] = last
		}
		last = ""
	}
}

// logRE matches a test's log line ("    file_test.go:12: message").
var logRE = regexp.MustCompile(`^\s+\S+\.go:\d+: `)
