package tunnels

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/nstest"
	"github.com/nfhost/nfhost/internal/owned"
)

func TestChooseBackend(t *testing.T) {
	all := Features{TCX: true, IPGRE: true}
	noTCX := Features{IPGRE: true, TCXErr: errors.New("probe says no")}
	noGRE := Features{TCX: true, IPGREErr: errors.New("no link type gre")}
	none := Features{}
	for _, c := range []struct {
		flag string
		f    Features
		want string
		err  string
	}{
		{"auto", all, BackendEBPF, ""},
		{"", all, BackendEBPF, ""},
		{"auto", noTCX, BackendKernel, ""},
		{"auto", noGRE, BackendEBPF, ""},
		{"auto", none, BackendEBPF, ""}, // tc clsact filters
		{"ebpf", all, BackendEBPF, ""},
		{"ebpf", noTCX, BackendEBPF, ""}, // tc clsact filters
		{"kernel", all, BackendKernel, ""},
		{"kernel", noGRE, "", "kernel GRE backend: the kernel has no ip_gre (modprobe ip_gre or use --gre-backend ebpf): no link type gre"},
		{"kernel", none, "", "kernel GRE backend: the kernel has no ip_gre (modprobe ip_gre or use --gre-backend ebpf)"},
		{"vxlan", all, "", `--gre-backend must be ebpf, kernel or auto, got "vxlan"`},
	} {
		got, err := ChooseBackend(c.flag, c.f)
		if got != c.want || (err == nil) != (c.err == "") || err != nil && !strings.HasPrefix(err.Error(), c.err) {
			t.Errorf("ChooseBackend(%q, %+v) = %q, %v; want %q, %q", c.flag, c.f, got, err, c.want, c.err)
		}
		if c.flag == "kernel" && err != nil && !errors.Is(err, ErrNoKernelGRE) {
			t.Errorf("kernel refusal does not wrap ErrNoKernelGRE: %v", err)
		}
	}
}

func TestGRESpec(t *testing.T) {
	tu := tunnel("gre-acme1", "192.0.2.10", "198.51.100.130", "169.254.20.0/31", "169.254.20.1")
	tu.TTL = 32
	g := GRESpec("acme", tu)
	if g.Name != "nfg"+owned.TunnelIfName("acme", "gre-acme1")[3:] || len(g.Name) > 15 {
		t.Errorf("temporary name %q", g.Name)
	}
	if g.Alias != "nfhost:tunnel=acme/gre-acme1" || g.MTU != 1476 || g.Ttl != 32 || g.PMtuDisc != 1 ||
		g.Local.String() != "192.0.2.10" || g.Remote.String() != "198.51.100.130" || g.IKey != 0 || g.OKey != 0 || g.IFlags != 0 || g.OFlags != 0 {
		t.Errorf("device spec %+v", g)
	}
	if d := greMismatch(g, GRESpec("acme", tu)); d != "" {
		t.Errorf("same spec differs: %s", d)
	}
	other := tu
	other.Remote = tAnycast
	other.TTL = 64
	if d := greMismatch(GRESpec("acme", other), g); d != "remote 192.0.2.10 (want 198.51.100.130), ttl 64 (want 32)" {
		t.Errorf("mismatch: %q", d)
	}
	if r := AnycastRoute(tAnycast, 1); r.Table != 255 || r.Type != 2 || r.Protocol != 110 || r.Dst.String() != "192.0.2.10/32" || r.Scope != 254 {
		t.Errorf("anycast route %+v", r)
	}
}

// TestProbeFeatures logs what this kernel has (root: the probes load a
// BPF program and create a GRE device). Inside the VM test run
// (NFHOST_VM_KERNEL_TESTS) ip_gre must be found.
func TestProbeFeatures(t *testing.T) {
	nstest.RequireRoot(t)
	f := ProbeFeatures(netns.None())
	t.Logf("tcx %v (%v), ip_gre %v (%v)", f.TCX, f.TCXErr, f.IPGRE, f.IPGREErr)
	if inVM() && !f.IPGRE {
		t.Errorf("the VM's kernel has no ip_gre: %v", f.IPGREErr)
	}
	b, err := ChooseBackend(BackendAuto, f)
	t.Logf("auto: %q %v", b, err)
}

// inVM reports whether this test binary runs inside the kernel-test VM
// (internal/vmtest.RunTests sets the variable).
func inVM() bool { return os.Getenv("NFHOST_VM_KERNEL_TESTS") != "" }

func nsHost() netns.NsHandle { return netns.None() }
