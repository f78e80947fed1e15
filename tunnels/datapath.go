package tunnels

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/bpfpin"
	"github.com/nfhost/nfhost/internal/kfeat"
	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
)

// MaxTunnels is the size of the tunnel maps (one host).
const MaxTunnels = 65536

// LoadConfig says where the datapath lives.
type LoadConfig struct {
	// PinDir holds the pinned maps and links: /sys/fs/bpf/nfhost/<host-id>/tunnels.
	PinDir string
	// HostNS is the namespace of the uplink; not open: the caller's own.
	HostNS netns.NsHandle
	Uplink string
	// Attach is how the programs are attached (AttachAuto: tcx where
	// the kernel has it, a tc clsact filter otherwise).
	Attach AttachMode
	Logger *slog.Logger
}

// Datapath is the loaded GRE programs, their maps and the decap link on
// the uplink. Encap links are attached per tunnel by AttachEncap.
type Datapath struct {
	objs   greBPFObjects
	decap  io.Closer
	cfg    LoadConfig
	log    *slog.Logger
	uplink int // ifindex
	mode   AttachMode
	nl     *netlink.Handle // host namespace

	mu    sync.Mutex
	links map[string]io.Closer // encap links by host-end name (tcx)
	// Upgraded and Reused describe the decap link, as in dos.Datapath.
	Upgraded, Reused bool
}

// Load loads the programs (reusing compatible pinned maps) and attaches
// the decap program to the uplink's ingress, kept when it already runs
// this build and upgraded in place otherwise: through a pinned tcx link,
// or, on kernels without tcx (before 6.6), nfhost's clsact filter.
func Load(cfg LoadConfig) (*Datapath, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := kfeat.Check("eBPF GRE datapath", kfeat.GRE); err != nil {
		return nil, err
	}
	spec, err := loadGreBPF()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	d := &Datapath{cfg: cfg, log: log, links: map[string]io.Closer{}}
	keep := func(name string) bool { return name == "decap" || strings.HasPrefix(name, "encap-") }
	if err := bpfpin.LoadPinned(spec, cfg.PinDir, &d.objs, keep, log); err != nil {
		return nil, fmt.Errorf("load GRE programs: %w", err)
	}
	h, err := nlh.New(cfg.HostNS, false)
	if err != nil {
		d.objs.Close()
		return nil, err
	}
	d.nl = h
	up, err := h.LinkByName(cfg.Uplink)
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("find uplink %q: %w", cfg.Uplink, err)
	}
	d.uplink = up.Attrs().Index
	d.mode = cfg.Attach
	if d.mode == AttachAuto {
		d.mode = AttachTCX
	}
	pin := filepath.Join(cfg.PinDir, "decap")
	l, state, err := d.attach(pin, d.uplink, d.objs.NfhostGreDecap)
	if err != nil && errors.Is(err, ebpf.ErrNotSupported) {
		if cfg.Attach == AttachAuto {
			log.Info("the kernel has no tcx (Linux 6.6+): GRE programs attach as tc clsact filters", "uplink", cfg.Uplink)
			d.mode = AttachTC
			l, state, err = d.attach(pin, d.uplink, d.objs.NfhostGreDecap)
		} else {
			err = fmt.Errorf("the kernel has no tcx (Linux 6.6+; use GRE attach mode tc or auto): %w", err)
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("attach GRE decap to %s: %w", cfg.Uplink, err)
	}
	d.decap = l
	d.Upgraded, d.Reused = state == bpfpin.LinkUpgraded, state == bpfpin.LinkReused
	return d, nil
}

// attachTCX attaches prog to tcx ingress of ifindex in the host namespace
// (link creation resolves the ifindex in the calling thread's namespace).
func (d *Datapath) attachTCX(ifindex int, prog *ebpf.Program) (link.Link, error) {
	var l link.Link
	do := func() error {
		var err error
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
		return err
	}
	if err := namedns.Do(d.cfg.HostNS, do); err != nil {
		return nil, fmt.Errorf("attach tcx ingress of ifindex %d: %w", ifindex, err)
	}
	return l, nil
}

// Mode is how the programs are attached (tcx or tc), resolved from auto.
func (d *Datapath) Mode() AttachMode { return d.mode }

// Close releases this process's handles; pins, links, tc filters and
// programs stay.
func (d *Datapath) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.links {
		l.Close()
	}
	if d.decap != nil {
		d.decap.Close()
	}
	if d.nl != nil {
		d.nl.Close()
	}
	d.objs.Close()
}

// Detach removes every pin: with tcx, the programs leave the uplink and
// tunnels. tc filters are not pinned: DetachTC removes them.
func Detach(pinDir string) error {
	ents, _ := os.ReadDir(pinDir)
	for _, e := range ents {
		if l, err := link.LoadPinnedLink(filepath.Join(pinDir, e.Name()), nil); err == nil {
			l.Unpin()
			l.Close()
		}
	}
	return os.RemoveAll(pinDir)
}

// Endpoint is one tunnel as the datapath sees it.
type Endpoint struct {
	ID            uint32
	Local, Remote netip.Addr
	TTL           uint8
	// HostIf is the host end of the tunnel veth; its peer, the tunnel
	// interface, is in the tenant namespace.
	HostIf         string
	HostIndex      int
	HostMAC, NSMAC net.HardwareAddr
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// AttachEncap attaches the encap program to the tunnel's host end (kept or
// upgraded in place when already pinned) and writes both map entries. It
// reports whether anything changed.
func (d *Datapath) AttachEncap(e Endpoint) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pin := filepath.Join(d.cfg.PinDir, "encap-"+e.HostIf)
	l, state, err := d.attach(pin, e.HostIndex, d.objs.NfhostGreEncap)
	if err != nil {
		return false, fmt.Errorf("attach GRE encap to %s: %w", e.HostIf, err)
	}
	changed := state != bpfpin.LinkReused
	if old := d.links[e.HostIf]; old != nil {
		old.Close()
	}
	d.links[e.HostIf] = l
	enc := greBPFEncapVal{Local: be32(e.Local), Remote: be32(e.Remote), Uplink: uint32(d.uplink), Id: e.ID, Ttl: e.TTL}
	c, err := putIfChanged(d.objs.NftEncap, uint32(e.HostIndex), enc)
	if err != nil {
		return false, fmt.Errorf("write encap entry of %s: %w", e.HostIf, err)
	}
	changed = changed || c
	dec := greBPFDecapVal{Ifindex: uint32(e.HostIndex), Id: e.ID}
	copy(dec.Dmac[:], e.NSMAC)
	copy(dec.Smac[:], e.HostMAC)
	c, err = putIfChanged(d.objs.NftDecap, greBPFEpKey{Local: be32(e.Local), Remote: be32(e.Remote)}, dec)
	if err != nil {
		return false, fmt.Errorf("write decap entry of %s: %w", e.HostIf, err)
	}
	return changed || c, nil
}

func putIfChanged[K, V comparable](m *ebpf.Map, k K, v V) (bool, error) {
	var have V
	if err := m.Lookup(k, &have); err == nil && have == v {
		return false, nil
	}
	return true, m.Put(k, v)
}

// RemoveEncap deletes a tunnel's map entries and unpins its link.
func (d *Datapath) RemoveEncap(hostIf string, hostIndex int, local, remote netip.Addr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if err := d.objs.NftEncap.Delete(uint32(hostIndex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, err)
	}
	if local.IsValid() {
		if err := d.objs.NftDecap.Delete(greBPFEpKey{Local: be32(local), Remote: be32(remote)}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, err)
		}
	}
	if l := d.links[hostIf]; l != nil {
		l.Close()
		delete(d.links, hostIf)
	}
	if d.mode == AttachTC {
		if err := d.detachTC(hostIndex); err != nil {
			errs = append(errs, err)
		}
	}
	if l, err := link.LoadPinnedLink(filepath.Join(d.cfg.PinDir, "encap-"+hostIf), nil); err == nil {
		l.Unpin()
		l.Close()
	}
	return errors.Join(errs...)
}

// EncapEntries returns the encap map: host-end ifindex -> (id, endpoints).
func (d *Datapath) EncapEntries() (map[int]Endpoint, error) {
	out := map[int]Endpoint{}
	var k uint32
	var v greBPFEncapVal
	it := d.objs.NftEncap.Iterate()
	for it.Next(&k, &v) {
		var l, r [4]byte
		binary.NativeEndian.PutUint32(l[:], v.Local)
		binary.NativeEndian.PutUint32(r[:], v.Remote)
		out[int(k)] = Endpoint{ID: v.Id, Local: netip.AddrFrom4(l), Remote: netip.AddrFrom4(r), TTL: v.Ttl, HostIndex: int(k)}
	}
	return out, it.Err()
}

// Stats are one tunnel's counters, summed over CPUs.
type Stats struct {
	RxPackets, RxBytes, TxPackets, TxBytes, Drops uint64
}

// Stats reads the counters of tunnel id.
func (d *Datapath) Stats(id uint32) (Stats, error) {
	var per []greBPFTunStats
	if err := d.objs.NftTunStats.Lookup(id, &per); err != nil {
		return Stats{}, err
	}
	var s Stats
	for _, p := range per {
		s.RxPackets += p.RxPackets
		s.RxBytes += p.RxBytes
		s.TxPackets += p.TxPackets
		s.TxBytes += p.TxBytes
		s.Drops += p.Drops
	}
	return s, nil
}

// ResetStats zeroes a tunnel's counters (a new tunnel takes a free ID).
func (d *Datapath) ResetStats(id uint32) error {
	zero := make([]greBPFTunStats, ebpf.MustPossibleCPU())
	return d.objs.NftTunStats.Put(id, zero)
}
