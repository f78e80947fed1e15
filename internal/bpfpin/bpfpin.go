// Package bpfpin keeps BPF programs, maps and links pinned in bpffs so that
// the datapath outlives nsd and a new nsd adopts it in place.
//
// Contract: LoadPinned reuses a pinned map whose type, sizes and flags
// match the new object and replaces one that does not (so a restart keeps
// state and an upgrade never reads a map in the wrong layout); PinLink
// keeps a pinned link whose program has the same tag (LinkReused: the same
// program id, nothing changes), swaps a different program in through the
// link's Update (LinkUpgraded), and attaches and pins a new link only when
// none is pinned (LinkCreated). Nothing here removes a pin the caller did
// not ask to remove.
package bpfpin

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// BPFFS is where bpffs is (or gets) mounted.
const BPFFS = "/sys/fs/bpf"

// EnsureBPFFS mounts bpffs at BPFFS unless it is mounted already.
func EnsureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(BPFFS, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", BPFFS, err)
	}
	if err := unix.Mount("bpffs", BPFFS, "bpf", 0, ""); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", BPFFS, err)
	}
	return nil
}

// LoadPinned loads spec into objs (a bpf2go objects struct) reusing the
// maps pinned in pinDir. A pinned map whose spec no longer matches (a new
// program version changed it) is logged, unpinned and recreated empty; the
// caller rewrites it from its desired state. Pins in pinDir that are
// neither a map of spec nor kept by keep (links) are removed.
func LoadPinned(spec *ebpf.CollectionSpec, pinDir string, objs any, keep func(name string) bool, log *slog.Logger) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	if err := EnsureBPFFS(); err != nil {
		return err
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	err := spec.LoadAndAssign(objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		for name := range spec.Maps {
			m, lerr := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
			if lerr != nil {
				continue
			}
			cerr := spec.Maps[name].Compatible(m)
			m.Close()
			if cerr != nil {
				// bpffs cannot rename; unpin it. A program still attached
				// keeps the old map alive until its link is switched.
				if rerr := os.Remove(filepath.Join(pinDir, name)); rerr != nil {
					return fmt.Errorf("unpin incompatible map %s: %w", name, rerr)
				}
				log.Warn("pinned map incompatible with this program version; unpinned and recreated empty",
					"map", name, "reason", cerr)
			}
		}
		err = spec.LoadAndAssign(objs, opts)
	}
	if err != nil {
		return fmt.Errorf("load BPF objects: %w", err)
	}
	if ents, err := os.ReadDir(pinDir); err == nil {
		for _, e := range ents {
			if _, ok := spec.Maps[e.Name()]; !ok && !e.IsDir() && (keep == nil || !keep(e.Name())) {
				log.Info("removing pinned map this program version no longer uses", "map", e.Name())
				os.Remove(filepath.Join(pinDir, e.Name()))
			}
		}
	}
	return nil
}

// LinkState says what PinLink did.
type LinkState int

const (
	LinkCreated  LinkState = iota // attached and pinned
	LinkReused                    // the pinned link already ran this program (same tag)
	LinkUpgraded                  // the pinned link was switched to this program in place
)

// PinLink makes the link pinned at path run prog: a pinned link running a
// program with the same tag is kept, another one is switched with
// link.Update (no detach, no gap); without a usable pinned link, attach
// creates one and it is pinned. valid, if set, vets a pinned link (for
// example that it is still attached to the expected interface); a link it
// refuses is unpinned and replaced.
func PinLink(path string, prog *ebpf.Program, attach func() (link.Link, error), valid func(*link.Info) bool) (link.Link, LinkState, error) {
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		info, ierr := l.Info()
		if ierr == nil && (valid == nil || valid(info)) {
			if same, _ := SameProgram(info.Program, prog); same {
				return l, LinkReused, nil
			}
			if err := l.Update(prog); err == nil {
				return l, LinkUpgraded, nil
			}
		}
		l.Unpin()
		l.Close()
	}
	l, err := attach()
	if err != nil {
		return nil, 0, err
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return nil, 0, fmt.Errorf("pin link %s: %w", path, err)
	}
	return l, LinkCreated, nil
}

// SameProgram reports whether the program with the given ID has prog's tag
// (a hash of the instructions with map references masked).
func SameProgram(id ebpf.ProgramID, prog *ebpf.Program) (bool, error) {
	cur, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false, fmt.Errorf("open attached program %d: %w", id, err)
	}
	defer cur.Close()
	ci, err := cur.Info()
	if err != nil {
		return false, fmt.Errorf("read attached program info: %w", err)
	}
	ni, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("read program info: %w", err)
	}
	return ci.Tag != "" && ci.Tag == ni.Tag, nil
}
