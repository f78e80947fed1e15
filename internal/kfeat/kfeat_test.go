package kfeat

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestHelperNames(t *testing.T) {
	for fn, want := range map[asm.BuiltinFunc]string{
		asm.FnXdpLoadBytes:           "bpf_xdp_load_bytes",
		asm.FnTcpRawGenSyncookieIpv4: "bpf_tcp_raw_gen_syncookie_ipv4",
		asm.FnRedirectPeer:           "bpf_redirect_peer",
		asm.FnKtimeGetCoarseNs:       "bpf_ktime_get_coarse_ns",
	} {
		if got := helperName(fn); got != want {
			t.Errorf("helperName(%v) = %q, want %q", fn, got, want)
		}
	}
}

// The message names each missing feature with its release and the newest
// release needed overall.
func TestMissingError(t *testing.T) {
	absent := func() error { return ebpf.ErrNotSupported }
	present := func() error { return nil }
	fs := []Feature{
		{Name: "bpf_xdp_load_bytes helper (XDP)", Linux: "5.18", probe: absent},
		{Name: "BPF ring buffers", Linux: "5.8", probe: present},
		{Name: "bpf_tcp_raw_gen_syncookie_ipv4 helper (XDP)", Linux: "6.0", probe: absent},
		{Name: "something old", Linux: "4.9", probe: absent},
	}
	err := Check("XDP DoS layer", fs)
	var me *MissingError
	if !errors.As(err, &me) || len(me.Missing) != 3 {
		t.Fatalf("Check: %v", err)
	}
	want := "the XDP DoS layer needs kernel features this kernel lacks: bpf_xdp_load_bytes helper (XDP), Linux 5.18+; bpf_tcp_raw_gen_syncookie_ipv4 helper (XDP), Linux 6.0+; something old, Linux 4.9+ (run Linux 6.0 or later)"
	if err.Error() != want {
		t.Errorf("message:\n got %s\nwant %s", err, want)
	}
	if err := Check("x", fs[1:2]); err != nil {
		t.Errorf("all present: %v", err)
	}
	boom := errors.New("operation not permitted")
	if err := Check("x", []Feature{{Name: "n", probe: func() error { return boom }}}); !errors.Is(err, boom) || !strings.Contains(err.Error(), "probe n") {
		t.Errorf("a failing probe: %v", err)
	}
}

func TestVersionLess(t *testing.T) {
	for _, c := range []struct {
		a, b string
		less bool
	}{{"", "4.2", true}, {"5.18", "6.0", true}, {"5.8", "5.18", true}, {"6.0", "5.18", false}, {"6.0", "6.0", false}} {
		if got := versionLess(c.a, c.b); got != c.less {
			t.Errorf("versionLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// On the test machine (root) every feature nfhost uses is there.
func TestProbesOnThisKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root): loads probe programs")
	}
	for part, fs := range map[string][]Feature{"XDP DoS layer": DoS, "eBPF GRE datapath": GRE} {
		if err := Check(part, fs); err != nil {
			t.Errorf("%v", err)
		}
	}
}
