package tunnels

import (
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/nlh"
)

// AttachMode is how the GRE programs are attached to interfaces.
type AttachMode string

const (
	// AttachAuto picks tcx where the kernel has it (6.6+) and a tc
	// clsact filter otherwise.
	AttachAuto AttachMode = ""
	// AttachTCX attaches through pinned tcx links: owned by nfhost's
	// pins, upgraded in place, never confused with anyone else's filters.
	AttachTCX AttachMode = "tcx"
	// AttachTC attaches a direct-action bpf filter to the clsact qdisc's
	// ingress hook (kernel 4.5+), for kernels without tcx (Debian 12's
	// 6.1). The filter is nfhost's by its priority and name; replacing it
	// in place swaps the program atomically, as a tcx link update does.
	AttachTC AttachMode = "tc"
)

// tcPriority is the clsact ingress priority of nfhost's filters; other
// filters on the same hook (other priorities) are left alone.
const tcPriority = 0x4e46 // "NF"

// tcFilterName names each filter after its program ("nfhost_gre_decap",
// "nfhost_gre_encap"); Detach finds nfhost's filters by it.
const tcNamePrefix = "nfhost_gre_"

// ParseAttachMode checks an --gre-attach value.
func ParseAttachMode(s string) (AttachMode, error) {
	switch m := AttachMode(s); m {
	case AttachAuto, AttachTCX, AttachTC:
		return m, nil
	case "auto":
		return AttachAuto, nil
	}
	return "", fmt.Errorf("GRE attach mode %q: want auto, tcx or tc", s)
}

// nopCloser stands for a tc filter: the kernel holds it, nothing in this
// process needs releasing.
type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// attach attaches prog to ingress of ifindex in the host namespace, by the
// datapath's mode: a pinned tcx link at pin, or nfhost's clsact filter.
// It reports what it did as a bpfpin.LinkState.
func (d *Datapath) attach(pin string, ifindex int, prog *ebpf.Program) (io.Closer, bpfpin.LinkState, error) {
	if d.mode == AttachTC {
		state, err := d.attachTC(ifindex, prog)
		return nopCloser{}, state, err
	}
	l, state, err := bpfpin.PinLink(pin, prog,
		func() (link.Link, error) { return d.attachTCX(ifindex, prog) },
		func(i *link.Info) bool { return i.TCX() != nil && int(i.TCX().Ifindex) == ifindex })
	if err != nil {
		return nil, 0, err
	}
	return l, state, nil
}

// attachTC makes nfhost's filter on ifindex's clsact ingress run prog:
// kept when it already runs a program with prog's tag, replaced in place
// otherwise (the qdisc is added when missing).
func (d *Datapath) attachTC(ifindex int, prog *ebpf.Program) (bpfpin.LinkState, error) {
	l, err := d.nl.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("read program info: %w", err)
	}
	name := tcNamePrefix + trimProgName(info.Name)
	qdiscs, err := d.nl.QdiscList(l)
	if err != nil {
		return 0, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	haveClsact := false
	for _, q := range qdiscs {
		if q.Type() == "clsact" {
			haveClsact = true
		}
	}
	if !haveClsact {
		q := &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}, QdiscType: "clsact"}
		if err := d.nl.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("add clsact qdisc to %s: %w", l.Attrs().Name, err)
		}
	}
	filters, err := d.nl.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return 0, fmt.Errorf("list ingress filters of %s: %w", l.Attrs().Name, err)
	}
	state := bpfpin.LinkCreated
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == tcPriority && bf.Name == name {
			if bf.Tag == info.Tag {
				return bpfpin.LinkReused, nil
			}
			state = bpfpin.LinkUpgraded
		}
	}
	f := &netlink.BpfFilter{
		FilterAttrs:  netlink.FilterAttrs{LinkIndex: ifindex, Parent: netlink.HANDLE_MIN_INGRESS, Handle: 1, Protocol: unix.ETH_P_ALL, Priority: tcPriority},
		Fd:           prog.FD(),
		Name:         name,
		DirectAction: true,
	}
	if err := d.nl.FilterReplace(f); err != nil {
		return 0, fmt.Errorf("attach tc filter %s to %s: %w", name, l.Attrs().Name, err)
	}
	return state, nil
}

// detachTC removes nfhost's filter from ifindex (gone already is fine).
func (d *Datapath) detachTC(ifindex int) error {
	l, err := d.nl.LinkByIndex(ifindex)
	if err != nil {
		return nil // the interface went, and its filters with it
	}
	return removeTCFilters(d.nl, l)
}

func removeTCFilters(h *netlink.Handle, l netlink.Link) error {
	filters, err := h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return fmt.Errorf("list ingress filters of %s: %w", l.Attrs().Name, err)
	}
	var errs []error
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == tcPriority && len(bf.Name) >= len(tcNamePrefix) && bf.Name[:len(tcNamePrefix)] == tcNamePrefix {
			if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove tc filter %s from %s: %w", bf.Name, l.Attrs().Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// trimProgName maps the kernel's program name (truncated to 15 bytes:
// "nfhost_gre_deca") back to the role the filter is named after.
func trimProgName(kernelName string) string {
	switch {
	case len(kernelName) >= len("nfhost_gre_d") && kernelName[:len("nfhost_gre_d")] == "nfhost_gre_d":
		return "decap"
	case len(kernelName) >= len("nfhost_gre_e") && kernelName[:len("nfhost_gre_e")] == "nfhost_gre_e":
		return "encap"
	}
	return kernelName
}

// DetachTC removes nfhost's tc filters from the named interfaces of a
// namespace (the uplink; a tunnel's host end takes its filter with it when
// it is deleted). Interfaces that are gone are skipped.
func DetachTC(hostNS netns.NsHandle, ifnames ...string) error {
	h, err := nlh.New(hostNS, false)
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, n := range ifnames {
		l, err := h.LinkByName(n)
		if err != nil {
			continue
		}
		errs = append(errs, removeTCFilters(h, l))
	}
	return errors.Join(errs...)
}
