package tunnels

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/vmtest"
)

// TestKernelGREInVM runs the kernel GRE backend's tests (TestKernelGRE*)
// and TestProbeFeatures inside a VM, on Debian's cloud kernel with its
// ip_gre ($NFHOST_VM_KERNEL_PKG chooses the kernel), when this kernel has
// no GRE. It fails if any of them fails or skips there.
func TestKernelGREInVM(t *testing.T) {
	if f := ProbeFeatures(nsHost()); f.IPGRE && os.Getenv("NFHOST_VM_FORCE") == "" {
		t.Skip("SKIP: this kernel has ip_gre; TestKernelGRE* run here directly (NFHOST_VM_FORCE=1 runs them in the VM too)")
	}
	res := vmtest.RunTests(t, vmtest.RunConfig{Run: "^(TestKernelGRE|TestProbeFeatures$)", Skip: "InVM$", TempPrefix: "nfK",
		Timeout: 20 * time.Minute})
	want := []string{"TestProbeFeatures", "TestKernelGRE", "TestKernelGREForeign", "TestKernelGREBackendSwitch"}
	for _, w := range want {
		if !slices.Contains(res.Passed, w) {
			t.Errorf("%s did not pass in the VM (kernel %s): failed %v, skipped %v %v", w, res.Kernel, res.Failed, res.Skipped, res.SkipReasons)
		}
	}
	if res.Err != nil {
		t.Errorf("in the VM: %v", res.Err)
	}
	t.Logf("kernel %s: passed %s in %v", res.Kernel, strings.Join(res.Passed, " "), res.Took.Round(time.Second))
}
