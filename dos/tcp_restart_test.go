package dos

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
)

// attachedProgram is the program the pinned link runs.
func attachedProgram(t *testing.T, pinDir string) *ebpf.Program {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(pinDir, "link"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestTCPProtectionSurvivesRestart: the attached program keeps answering
// SYNs with cookies after the process that loaded it exits (the kernel
// empties a program array whose last user reference goes: the pinned one
// keeps its entry), after a restart of the same build (the link is
// reused, the new process fills the pinned array), and after an in-place
// upgrade.
func TestTCPProtectionSurvivesRestart(t *testing.T) {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	inet, edge := nstest.New(t, "nfS"+u+"i"), nstest.New(t, "nfS"+u+"e")
	nstest.Link(t, inet, "eth0", "192.0.2.1/24", edge, "uplink", "192.0.2.2/24")
	pinDir := filepath.Join(bpfpin.BPFFS, "nfS-"+u)
	t.Cleanup(func() { Detach(pinDir) })
	cfg := LoadConfig{PinDir: pinDir, HostNS: edge.Handle, Uplink: "uplink", Mode: ModeGeneric}
	tenants := []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Spec: mustSpec(t, "acme", `{"tcp_protection": {"engage_pps": 0}}`)}}
	syn := tcpPkt{src: "192.0.2.7", dst: "203.0.113.5", sport: 1, dport: 80, seq: 1, flags: "S", opts: linuxSYNOpts(5, 7)}.bytes(t)
	answers := func(what string) {
		t.Helper()
		ret, err := attachedProgram(t, pinDir).Run(&ebpf.RunOptions{Data: syn, DataOut: make([]byte, 256)})
		if err != nil || ret != xdpTX {
			t.Fatalf("%s: the attached program's verdict on a SYN: %d (%v), want XDP_TX", what, ret, err)
		}
	}

	d, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReconciler(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(*mustSpec(t, "dos/global", `{}`), tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	answers("loaded")
	d.Close() // nsd exits
	answers("after the loading process exited")

	d, err = Load(cfg) // the same build again
	if err != nil {
		t.Fatal(err)
	}
	if !d.Reused {
		t.Error("the same build did not reuse the pinned link")
	}
	r, _ = NewReconciler(d, nil)
	if _, err := r.Apply(*mustSpec(t, "dos/global", `{}`), tenants, time.Now()); err != nil || r.Writes() != 0 {
		t.Fatalf("apply after restart: %d writes, %v", r.Writes(), err)
	}
	d.Close()
	answers("after a restart")

	BuildStamp = "nfS-upgrade-" + u // a new build
	defer func() { BuildStamp = "" }()
	d, err = Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Upgraded {
		t.Error("a new build did not upgrade in place")
	}
	d.Close()
	answers("after an in-place upgrade")
}
