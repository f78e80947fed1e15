package dos

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nstest"
)

// internet 192.0.2.1 (client), 192.0.2.66 (attacker) ── eth0 ═ uplink ── 192.0.2.2 edge [XDP]
func TestAttachPinUpgrade(t *testing.T) {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	inet, edge := nstest.New(t, "nfD"+u+"i"), nstest.New(t, "nfD"+u+"e")
	nstest.Link(t, inet, "eth0", "192.0.2.1/24", edge, "uplink", "192.0.2.2/24")
	inet.MustExec(t, "ip", "addr", "add", "192.0.2.66/24", "dev", "eth0")
	pinDir := filepath.Join(bpfpin.BPFFS, "nfhost-test-"+u)
	t.Cleanup(func() { Detach(pinDir) })
	cfg := LoadConfig{PinDir: pinDir, HostNS: edge.Handle, Uplink: "uplink", Mode: ModeAuto}

	d, err := Load(cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Logf("attached in %s mode", d.Mode)
	r, err := NewReconciler(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(dosspec.Spec{Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26")}}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	attacker := func() bool {
		_, err := inet.Exec(t, "ping", "-c3", "-i", "0.2", "-W1", "-I", "192.0.2.66", "192.0.2.2")
		return err == nil
	}
	client := func() bool {
		_, err := inet.Exec(t, "ping", "-c2", "-i", "0.2", "-W1", "-I", "192.0.2.1", "192.0.2.2")
		return err == nil
	}
	if attacker() || !client() {
		t.Fatal("deny list not enforced, or client blocked")
	}
	if got := countPackets(t, d.Counters(), 2); got != 3 {
		t.Errorf("deny counter = %d, want 3 (the attacker's echo requests)", got)
	}
	// The loading process goes away (nsd killed): filtering continues.
	d.Close()
	if attacker() || !client() {
		t.Fatal("filtering stopped when the loader's handles closed")
	}
	// A new build starts: the pinned link is switched in place and the
	// pinned maps (with the deny entry) are reused.
	// An older version's map this one no longer has is unpinned.
	stale, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nfh_sig_dst", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := stale.Pin(filepath.Join(pinDir, "nfh_sig_dst")); err != nil {
		t.Fatal(err)
	}
	stale.Close()
	d2, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pinDir, "nfh_sig_dst")); !os.IsNotExist(err) {
		t.Errorf("stale pinned map left behind: %v", err)
	}
	defer d2.Close()
	if !d2.Reused || d2.Upgraded {
		t.Fatalf("a restart of the same build changed the attached program (reused=%v upgraded=%v)", d2.Reused, d2.Upgraded)
	}
	if attacker() || !client() {
		t.Fatal("filtering lost across the restart")
	}
	// A different build (stamped instructions) replaces the program
	// through the pinned link.
	BuildStamp = "test-upgrade"
	t.Cleanup(func() { BuildStamp = "" })
	d3, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close()
	if !d3.Upgraded {
		t.Fatal("a new build attached a new link instead of updating the pinned one")
	}
	if attacker() || !client() {
		t.Fatal("filtering lost across the in-place upgrade")
	}
	if got := countPackets(t, d3.Counters(), 2); got != 12 {
		t.Errorf("deny counter after upgrade = %d, want 12: four rounds of three, kept across close, restart and upgrade", got)
	}
	out := edge.MustExec(t, "ip", "link", "show", "uplink")
	if !strings.Contains(out, "xdp") {
		t.Errorf("no XDP program on the uplink:\n%s", out)
	}
}

func TestIncompatiblePinnedMapIsReplaced(t *testing.T) {
	nstest.RequireRoot(t)
	u := nstest.Unique()
	inet, edge := nstest.New(t, "nfD"+u+"i"), nstest.New(t, "nfD"+u+"e")
	nstest.Link(t, inet, "eth0", "192.0.2.1/24", edge, "uplink", "192.0.2.2/24")
	pinDir := filepath.Join(bpfpin.BPFFS, "nfhost-test-"+u)
	t.Cleanup(func() { Detach(pinDir) })
	if err := bpfpin.EnsureBPFFS(); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(pinDir, 0o700)
	// An older "version" pinned nfh_counters as a plain hash map.
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "nfh_counters", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(pinDir, "nfh_counters")); err != nil {
		t.Fatal(err)
	}
	old.Close()
	d, err := Load(LoadConfig{PinDir: pinDir, HostNS: edge.Handle, Uplink: "uplink", Mode: ModeGeneric})
	if err != nil {
		t.Fatalf("Load with an incompatible pinned map: %v", err)
	}
	defer d.Close()
	if d.Counters().Type() != ebpf.PerCPUArray {
		t.Fatalf("counters map is %v", d.Counters().Type())
	}
	pinned, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "nfh_counters"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	if pinned.Type() != ebpf.PerCPUArray {
		t.Fatalf("pin still holds the old map: %v", pinned.Type())
	}
}

func countPackets(t *testing.T, m *ebpf.Map, idx uint32) uint64 {
	t.Helper()
	var per []dosBPFStats
	if err := m.Lookup(idx, &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, s := range per {
		n += s.Packets
	}
	return n
}
