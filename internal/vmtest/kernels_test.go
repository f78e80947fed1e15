package vmtest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/vmtest"
)

// Kernels and packages TestKernels runs by default (under make test): a
// few minutes. make test-kernels sets NFHOST_TEST_KERNELS and
// NFHOST_TEST_KERNEL_PACKAGES to the full matrix.
const (
	defaultKernels  = "linux-image-6.12-cloud-amd64"
	defaultPackages = "./tunnels:^(TestProbeFeatures|TestTunnelKernel|TestKernelGRE)$"
)

// TestKernels builds the test binaries of packages (go test -c) and runs
// them inside VMs on each kernel package, one VM per package and kernel,
// one at a time:
//
//	NFHOST_TEST_KERNELS="linux-image-cloud-amd64 linux-image-6.12-cloud-amd64"
//	NFHOST_TEST_KERNEL_PACKAGES="./tunnels ./routing:^TestX ./nsd"
//
// (a package may carry a -test.run pattern after a colon). Every test
// that fails in a VM fails TestKernels; skips are listed with their
// reasons, per kernel, and the summary is written to
// $NFHOST_TEST_KERNELS_OUT if set.
func TestKernels(t *testing.T) {
	vmtest.Require(t)
	if _, err := os.Stat(vmtest.Virtiofsd); err != nil {
		t.Skipf("SKIP (needs %s)", vmtest.Virtiofsd)
	}
	kernels := strings.Fields(envOr("NFHOST_TEST_KERNELS", defaultKernels))
	pkgs := strings.Fields(envOr("NFHOST_TEST_KERNEL_PACKAGES", defaultPackages))
	timeout := 30 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("NFHOST_TEST_KERNEL_TIMEOUT")); err == nil {
		timeout = d
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bins, err := os.MkdirTemp("", "nfK-kernels-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(bins) })
	type job struct{ pkg, run, bin string }
	var jobs []job
	for _, p := range pkgs {
		pkg, run, _ := strings.Cut(p, ":")
		bin := filepath.Join(bins, strings.ReplaceAll(strings.Trim(pkg, "./"), "/", "_")+".test")
		cmd := exec.Command("go", "test", "-c", "-o", bin, pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go test -c %s: %v\n%s", pkg, err, out)
		}
		jobs = append(jobs, job{pkg, run, bin})
	}
	// e2e's tests run nsd and nsctl: prebuilt here (no Go in the VM).
	cmd := exec.Command("go", "build", "-o", bins+"/", "./cmd/...")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	env := []string{"NFHOST_E2E_BIN_DIR=" + vmtest.GuestPath(bins)}
	for _, k := range []string{"NFHOST_CONSUL", "NFHOST_REQUIRE_CONSUL"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+vmtest.GuestPath(v))
		}
	}
	var summary strings.Builder
	for _, k := range kernels {
		for _, j := range jobs {
			t.Run(k+"/"+strings.Trim(j.pkg, "./"), func(t *testing.T) {
				vm := vmtest.StartHostRoot(t, k, "nfK", 1024)
				res := vm.RunIn(t, vmtest.RunConfig{Binary: j.bin, Dir: filepath.Join(root, j.pkg), Run: j.run, Skip: "InVM$", Timeout: timeout, Env: env})
				fmt.Fprintf(&summary, "## %s (%s) %s: %d passed, %d failed, %d skipped in %v\n", res.Kernel, k, j.pkg,
					len(res.Passed), len(res.Failed), len(res.Skipped), res.Took.Round(time.Second))
				if len(res.Failed) > 0 {
					fmt.Fprintf(&summary, "   FAILED: %s\n", strings.Join(res.Failed, " "))
				}
				skips := append([]string(nil), res.Skipped...)
				sort.Strings(skips)
				for _, s := range skips {
					fmt.Fprintf(&summary, "   skip %s: %s\n", s, res.SkipReasons[s])
				}
				if res.Err != nil {
					fmt.Fprintf(&summary, "   run: %v\n", firstLine(res.Err.Error()))
				}
				for _, f := range res.Failed {
					t.Errorf("%s failed on %s", f, res.Kernel)
				}
				if res.Err != nil && len(res.Failed) == 0 {
					t.Errorf("%s on %s: %v", j.pkg, res.Kernel, firstLine(res.Err.Error()))
				}
			})
		}
	}
	t.Logf("summary:\n%s", summary.String())
	if out := os.Getenv("NFHOST_TEST_KERNELS_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(summary.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
