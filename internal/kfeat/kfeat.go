// Package kfeat names the kernel features nfhost's eBPF programs need and
// probes for them before anything is loaded, so that a kernel too old for
// a part is refused at start with the missing feature and the release
// that has it, instead of a verifier log ("unknown func #189").
//
// The probes are cilium/ebpf's feature tests (a tiny program or map is
// loaded and thrown away); each result is cached by cilium/ebpf for the
// life of the process.
package kfeat

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
)

// Feature is one kernel capability a part of nfhost uses.
type Feature struct {
	Name  string // what the operator reads: "bpf_xdp_load_bytes helper (XDP)"
	Linux string // the first Linux release with it: "5.18"
	probe func() error
}

// Missing reports an absent feature; other probe errors (no permission,
// no BPF at all) are returned as they are.
func (f Feature) Missing() (bool, error) {
	err := f.probe()
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return true, nil
	}
	return false, fmt.Errorf("probe %s: %w", f.Name, err)
}

func helper(pt ebpf.ProgramType, fn asm.BuiltinFunc, linux string) Feature {
	return Feature{Name: fmt.Sprintf("%s helper (%s)", helperName(fn), progName(pt)), Linux: linux,
		probe: func() error { return features.HaveProgramHelper(pt, fn) }}
}

func helperName(fn asm.BuiltinFunc) string {
	s := strings.TrimPrefix(fn.String(), "Fn")
	// FnXdpLoadBytes -> bpf_xdp_load_bytes
	var b strings.Builder
	b.WriteString("bpf")
	for _, r := range s {
		if r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

func progName(pt ebpf.ProgramType) string {
	switch pt {
	case ebpf.XDP:
		return "XDP"
	case ebpf.SchedCLS:
		return "tc"
	}
	return pt.String()
}

func mapType(mt ebpf.MapType, name, linux string) Feature {
	return Feature{Name: name, Linux: linux, probe: func() error { return features.HaveMapType(mt) }}
}

// DoS is what the XDP DoS layer (dos/bpf/xdp_dos.c, tcp_protect.h) calls.
var DoS = []Feature{
	mapType(ebpf.LPMTrie, "LPM trie maps", "4.11"),
	mapType(ebpf.RingBuf, "BPF ring buffers", "5.8"),
	mapType(ebpf.ProgramArray, "program arrays (tail calls)", "4.2"),
	helper(ebpf.XDP, asm.FnXdpLoadBytes, "5.18"),
	helper(ebpf.XDP, asm.FnXdpStoreBytes, "5.18"),
	helper(ebpf.XDP, asm.FnXdpAdjustTail, "4.18"),
	helper(ebpf.XDP, asm.FnKtimeGetCoarseNs, "5.11"),
	helper(ebpf.XDP, asm.FnKtimeGetBootNs, "5.8"),
	helper(ebpf.XDP, asm.FnTcpRawGenSyncookieIpv4, "6.0"),
	helper(ebpf.XDP, asm.FnTcpRawCheckSyncookieIpv4, "6.0"),
	helper(ebpf.XDP, asm.FnTcpRawGenSyncookieIpv6, "6.0"),
	helper(ebpf.XDP, asm.FnTcpRawCheckSyncookieIpv6, "6.0"),
}

// GRE is what the eBPF GRE datapath (tunnels/bpf/gre.c) calls. How it is
// attached (tcx from 6.6, tc clsact before) is the tunnels package's
// choice, not a requirement.
var GRE = []Feature{
	helper(ebpf.SchedCLS, asm.FnSkbAdjustRoom, "4.13"),
	helper(ebpf.SchedCLS, asm.FnRedirectNeigh, "5.10"),
	helper(ebpf.SchedCLS, asm.FnRedirectPeer, "5.10"),
}

// MissingError lists what a part lacks.
type MissingError struct {
	Part    string
	Missing []Feature
}

func (e *MissingError) Error() string {
	var names []string
	newest := ""
	for _, f := range e.Missing {
		names = append(names, fmt.Sprintf("%s, Linux %s+", f.Name, f.Linux))
		if versionLess(newest, f.Linux) {
			newest = f.Linux
		}
	}
	return fmt.Sprintf("the %s needs kernel features this kernel lacks: %s (run Linux %s or later)", e.Part, strings.Join(names, "; "), newest)
}

// Check probes fs and returns a *MissingError naming every absent one.
func Check(part string, fs []Feature) error {
	var missing []Feature
	for _, f := range fs {
		m, err := f.Missing()
		if err != nil {
			return fmt.Errorf("check the kernel for the %s: %w", part, err)
		}
		if m {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return &MissingError{Part: part, Missing: missing}
	}
	return nil
}

// versionLess compares dotted release numbers ("" is the smallest).
func versionLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			fmt.Sscan(as[i], &x)
		}
		if i < len(bs) {
			fmt.Sscan(bs[i], &y)
		}
		if x != y {
			return x < y
		}
	}
	return false
}
