package tunnels

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
)

// GRE backends (nsd --gre-backend).
const (
	BackendEBPF   = "ebpf"
	BackendKernel = "kernel"
	BackendAuto   = "auto"
)

// Features are the kernel features the GRE backends need, as probed.
type Features struct {
	// TCX: BPF_TCX_INGRESS links (Linux 6.6), which the eBPF datapath
	// attaches with.
	TCX    bool
	TCXErr error // why not
	// IPGRE: the kernel makes GRE devices (ip_gre, built in or loadable).
	IPGRE    bool
	IPGREErr error
}

// ChooseBackend is pure: the backend the flag value asks for, given the
// probed features. auto is eBPF where tcx exists, else kernel GRE where
// the kernel has ip_gre, else eBPF attached as tc clsact filters (the
// datapath's fallback without tcx); kernel GRE without ip_gre is refused
// with the missing feature. What the eBPF datapath itself needs beyond
// tcx is checked when it loads (internal/kfeat).
func ChooseBackend(flag string, f Features) (string, error) {
	noGRE := func() error {
		if f.IPGREErr != nil {
			return fmt.Errorf("%w: %v", ErrNoKernelGRE, f.IPGREErr)
		}
		return ErrNoKernelGRE
	}
	switch flag {
	case BackendEBPF:
		return BackendEBPF, nil
	case BackendKernel:
		if !f.IPGRE {
			return "", noGRE()
		}
		return BackendKernel, nil
	case BackendAuto, "":
		if !f.TCX && f.IPGRE {
			return BackendKernel, nil
		}
		return BackendEBPF, nil
	}
	return "", fmt.Errorf("--gre-backend must be ebpf, kernel or auto, got %q", flag)
}

// ProbeFeatures probes tcx and ip_gre. The ip_gre probe creates a GRE
// device (down, nfhost's temporary name, loopback endpoints) in the host
// namespace and deletes it at once; creating one loads ip_gre where it is
// a module and modprobe works.
func ProbeFeatures(hostNS netns.NsHandle) Features {
	var f Features
	f.TCXErr = probeTCX()
	f.TCX = f.TCXErr == nil
	f.IPGREErr = probeIPGRE(hostNS)
	f.IPGRE = f.IPGREErr == nil
	return f
}

// probeTCX attaches a trivial program to ifindex 0: a kernel with tcx
// answers "no such device", one without it fails the feature test of
// cilium/ebpf.
func probeTCX() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		return fmt.Errorf("load a test program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachTCX(link.TCXOptions{Interface: 0, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err == nil {
		l.Close()
		return nil
	}
	if errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

func probeIPGRE(hostNS netns.NsHandle) error {
	h, err := nlh.New(hostNS, false)
	if err != nil {
		return err
	}
	defer h.Close()
	name := fmt.Sprintf("%sprobe%x", owned.KernelTunnelTempPrefix, os.Getpid()&0xffffff)
	g := &netlink.Gretun{LinkAttrs: netlink.LinkAttrs{Name: name, Alias: owned.TunnelAlias("-", "probe")},
		Local: net.IPv4(127, 0, 0, 2), Remote: net.IPv4(127, 0, 0, 3), PMtuDisc: 1}
	if err := h.LinkAdd(g); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return errors.New("no link type gre")
		}
		return fmt.Errorf("create a test GRE device: %w", err)
	}
	if l, err := h.LinkByName(name); err == nil {
		h.LinkDel(l)
	}
	return nil
}
