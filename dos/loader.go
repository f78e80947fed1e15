package dos

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/kfeat"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
)

// Mode selects how the program is attached.
type Mode string

// Attach modes. Native XDP on a veth uplink needs nothing on the peer for
// DROP/PASS but turns TSO off on the peer (TCP from the peer fell from about
// 20 to 5 Gbit/s in the prototype); generic XDP does not. auto tries native
// and falls back to generic, logged.
const (
	ModeNative  Mode = "native"
	ModeGeneric Mode = "generic"
	ModeAuto    Mode = "auto"
)

// LoadConfig says where to load and attach.
type LoadConfig struct {
	// PinDir holds the pinned maps and link, one directory per host:
	// /sys/fs/bpf/nfhost/<host-id>.
	PinDir string
	// HostNS is the namespace of the uplink (ifindexes are per namespace).
	HostNS netns.NsHandle
	Uplink string
	Mode   Mode
	Logger *slog.Logger
}

// Datapath is the loaded program with its maps and link.
type Datapath struct {
	objs dosBPFObjects
	link link.Link
	// Upgraded is true when an already pinned link was switched to this
	// program in place (no detach, no gap in filtering).
	Upgraded bool
	// Reused is true when the pinned link already ran this very program
	// (same instructions, by tag): it was left alone.
	Reused bool
	// Mode is how the program is attached.
	Mode Mode
}

// Close releases this process's handles; pins, link and program stay.
func (d *Datapath) Close() {
	d.objs.Close()
	if d.link != nil {
		d.link.Close()
	}
}

// Counters is the per-CPU counter array.
func (d *Datapath) Counters() *ebpf.Map { return d.objs.NfhCounters }

// Program is the XDP program.
func (d *Datapath) Program() *ebpf.Program { return d.objs.NfhostDos }

// Load loads the program, reusing compatible pinned maps, and attaches it
// to the uplink through a pinned bpf_link. If a link is already pinned it
// is switched to the new program in place. A pinned map whose spec no
// longer matches (a new program version changed it) is detected, logged,
// unpinned and recreated empty; the caller then writes its contents from
// the desired state.
func Load(cfg LoadConfig) (*Datapath, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := kfeat.Check("XDP DoS layer", kfeat.DoS); err != nil {
		return nil, err
	}
	spec, err := loadDosBPF()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	stampProgram(spec)
	d := &Datapath{}
	_, linkErr := os.Stat(filepath.Join(cfg.PinDir, "link"))
	_, src24Err := os.Stat(filepath.Join(cfg.PinDir, "nfh_src24"))
	if err := bpfpin.LoadPinned(spec, cfg.PinDir, &d.objs, func(name string) bool { return name == "link" }, log); err != nil {
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	if err := wireTailCalls(&d.objs); err != nil {
		d.objs.Close()
		return nil, err
	}
	if linkErr == nil && src24Err != nil {
		// Upgrading from a version without the /24 table: until the
		// reconciler writes it, every block defers to the trie, so the
		// new program filters exactly like the old one from the switch.
		if err := fillSrc24(d.objs.NfhSrc24); err != nil {
			d.objs.Close()
			return nil, err
		}
	}
	l, state, err := bpfpin.PinLink(filepath.Join(cfg.PinDir, "link"), d.objs.NfhostDos,
		func() (link.Link, error) { return d.attach(cfg, log) }, nil)
	if err != nil {
		d.objs.Close()
		return nil, err
	}
	d.link = l
	if state != bpfpin.LinkCreated {
		// The link was there before this process: ask the kernel how
		// the program is attached.
		d.Mode = attachedMode(cfg)
	}
	switch state {
	case bpfpin.LinkReused:
		// A restart of the same build: the kernel state stays as it is
		// (same program, same id), so a restart is a no-op.
		d.Reused = true
		log.Info("XDP program unchanged; the pinned link keeps it", "uplink", cfg.Uplink)
	case bpfpin.LinkUpgraded:
		d.Upgraded = true
		log.Info("XDP program replaced in place through the pinned link", "uplink", cfg.Uplink)
	}
	return d, nil
}

// attachedMode reads how XDP is attached to the uplink ("" if unknown).
func attachedMode(cfg LoadConfig) Mode {
	h, err := nlh.New(cfg.HostNS, false)
	if err != nil {
		return ""
	}
	defer h.Close()
	l, err := h.LinkByName(cfg.Uplink)
	if err != nil || l.Attrs().Xdp == nil {
		return ""
	}
	switch l.Attrs().Xdp.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return ModeNative
	case nl.XDP_ATTACHED_SKB:
		return ModeGeneric
	}
	return ""
}

// attach creates the bpf_link on the uplink. The ifindex is resolved and
// the link created inside the host namespace.
func (d *Datapath) attach(cfg LoadConfig, log *slog.Logger) (link.Link, error) {
	h, err := nlh.New(cfg.HostNS, false)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	l, err := h.LinkByName(cfg.Uplink)
	if err != nil {
		return nil, fmt.Errorf("find uplink %q: %w", cfg.Uplink, err)
	}
	var lk link.Link
	try := func(flags link.XDPAttachFlags) error {
		do := func() error {
			var err error
			lk, err = link.AttachXDP(link.XDPOptions{Program: d.objs.NfhostDos, Interface: l.Attrs().Index, Flags: flags})
			return err
		}
		return namedns.Do(cfg.HostNS, do)
	}
	mode := cfg.Mode
	if mode == "" {
		mode = ModeAuto
	}
	switch mode {
	case ModeNative:
		err = try(link.XDPDriverMode)
	case ModeGeneric:
		err = try(link.XDPGenericMode)
	case ModeAuto:
		if err = try(link.XDPDriverMode); err != nil {
			log.Warn("native XDP unavailable on the uplink; falling back to generic mode", "uplink", cfg.Uplink, "err", err)
			mode = ModeGeneric
			err = try(link.XDPGenericMode)
		} else {
			mode = ModeNative
		}
	default:
		return nil, fmt.Errorf("xdp mode %q: want native, generic or auto", mode)
	}
	if err != nil {
		return nil, fmt.Errorf("attach XDP (%s) to %s: %w", mode, cfg.Uplink, err)
	}
	d.Mode = mode
	return lk, nil
}

// Detach removes the link pin and the pinned maps: the program leaves the
// uplink. nsd never calls this on exit; it is for explicit teardown.
func Detach(pinDir string) error {
	if l, err := link.LoadPinnedLink(filepath.Join(pinDir, "link"), nil); err == nil {
		l.Unpin()
		l.Close()
	}
	return os.RemoveAll(pinDir)
}

// BuildStamp, set at link time (-ldflags "-X
// github.com/nfhost/nfhost/dos.BuildStamp=N"), makes the program's
// instructions differ from an unstamped build: the e2e test uses it to
// start "a new build" and watch the in-place upgrade. Empty: no change.
var BuildStamp string

// stampProgram prepends "r0 = hash(BuildStamp)" to the program: r0 is
// scratch on entry, so behaviour is unchanged and only the tag differs.
func stampProgram(spec *ebpf.CollectionSpec) {
	if BuildStamp == "" {
		return
	}
	p := spec.Programs["nfhost_dos"]
	if p == nil || len(p.Instructions) == 0 {
		return
	}
	var h int32
	for _, c := range BuildStamp {
		h = h*31 + int32(c)
	}
	// The entry symbol, function info and first line info move to the new
	// first instruction; relocations stay with the instruction they fix.
	first := p.Instructions[0]
	ins := asm.Mov.Imm(asm.R0, h).WithSymbol(first.Symbol()).WithSource(first.Source())
	if fn := btf.FuncMetadata(&first); fn != nil {
		ins = btf.WithFuncMetadata(ins, fn)
		first = btf.WithFuncMetadata(first, nil)
	}
	first = first.WithSymbol("")
	p.Instructions[0] = first
	p.Instructions = append(asm.Instructions{ins}, p.Instructions...)
}
