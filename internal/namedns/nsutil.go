// Package namedns is the only place in nfhost that moves an OS thread into
// another network namespace. Everything else binds sockets to a namespace
// (netlink.NewHandleAt, nftables.WithNetNSFd) and never switches.
//
// Switching is needed where the kernel resolves against the calling thread:
// creating a namespace (unshare; CreateWith lets the caller set it up before
// it gets its name) and /proc/sys/net sysctls. Do runs a
// function on a fresh, locked OS thread inside the target namespace; if the
// thread cannot be switched back it stays locked, so the Go runtime
// terminates it instead of reusing a thread in the wrong namespace.
package namedns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultDir is where iproute2 keeps named network namespaces.
const DefaultDir = "/run/netns"

// Do runs fn on a locked OS thread inside ns and waits for it. An ns that
// is not open (netns.None()) means the caller's own namespace, as for
// Netlink: fn then runs directly.
func Do(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return nil
	}, fn)
}

// Go starts fn on a fresh OS thread locked inside ns and returns once the
// thread is there (or could not get there). It is for a server loop whose
// sockets must be created in ns for the life of the process (the BGP
// speaker's listener under --host-netns); goroutines fn starts run on other
// threads, in the caller's namespace. The thread never leaves ns: when fn
// returns it stays locked and the runtime terminates it. An ns that is not
// open means the caller's own namespace: fn runs on a new goroutine.
func Go(ns netns.NsHandle, fn func()) error {
	if !ns.IsOpen() {
		go fn()
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with fn
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		errc <- nil
		fn()
	}()
	return <-errc
}

// onThread runs enter and then fn on a fresh locked OS thread, and moves
// the thread back to its original namespace afterwards. If enter fails the
// thread has not moved. If moving back fails the thread stays locked, so
// the runtime terminates it instead of reusing it in the wrong namespace.
func onThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Open opens the named namespace in dir.
func Open(dir, name string) (netns.NsHandle, error) {
	h, err := netns.GetFromPath(filepath.Join(dir, name))
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %s: %w", name, err)
	}
	return h, nil
}

// Exists reports whether a named namespace is mounted in dir.
func Exists(dir, name string) bool {
	var st, parent unix.Stat_t
	p := filepath.Join(dir, name)
	if unix.Stat(p, &st) != nil || unix.Stat(dir, &parent) != nil {
		return false
	}
	// A bind-mounted nsfs file lives on a different device than the directory.
	return st.Dev != parent.Dev
}

// Inode returns the inode of the namespace mounted at dir/name, which
// identifies the namespace while it exists (the kernel may reuse the
// number after it is gone). ok is false if no namespace is mounted there.
func Inode(dir, name string) (ino uint64, ok bool) {
	var st, parent unix.Stat_t
	if unix.Stat(filepath.Join(dir, name), &st) != nil || unix.Stat(dir, &parent) != nil || st.Dev == parent.Dev {
		return 0, false
	}
	return st.Ino, true
}

// List returns the names in dir that start with prefix.
func List(dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns dir: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Create makes a new named network namespace in dir, the way `ip netns add`
// does (the directory is made a shared mount so the namespace is visible in
// other mount namespaces), and returns a handle to it. It fails with
// os.ErrExist if the name is taken.
func Create(dir, name string) (netns.NsHandle, error) { return CreateWith(dir, name, nil) }

// CreateWith is Create with setup run inside the new namespace before it
// is bind-mounted under its name: the name appears only after setup has
// succeeded, so neither an error nor a crash can leave a named namespace
// without what setup puts in it (nfhost's ownership mark). If setup fails
// the namespace is not mounted and goes away with its last reference.
//
// setup runs on the locked OS thread that unshared the namespace; ns
// refers to the new namespace and is closed when setup returns. setup must
// not leave the thread in another namespace.
func CreateWith(dir, name string, setup func(ns netns.NsHandle) error) (netns.NsHandle, error) {
	if err := ensureSharedDir(dir); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(dir, name)
	// The mount point has to exist first. A crash before the mount leaves
	// this empty file behind, never an unnamed or unmarked namespace;
	// RemoveStale clears it.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns file %s: %w", name, err)
	}
	f.Close()

	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare netns: %w", err)
		}
		return nil
	}, func() error {
		if setup != nil {
			ns, err := netns.Get()
			if err != nil {
				return fmt.Errorf("get new netns: %w", err)
			}
			err = setup(ns)
			ns.Close()
			if err != nil {
				return fmt.Errorf("set up netns %s: %w", name, err)
			}
		}
		if err := unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount netns %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(path)
		return netns.None(), err
	}
	return Open(dir, name)
}

// RemoveStale removes dir/name if it is what an interrupted Create leaves
// behind: an empty regular file that is not a mount point. Anything else
// (a mounted namespace, a directory, a file with content) is left alone
// and reported with os.ErrExist. A missing file is not an error.
func RemoveStale(dir, name string) error {
	p := filepath.Join(dir, name)
	var st, parent unix.Stat_t
	if err := unix.Lstat(p, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if err := unix.Stat(dir, &parent); err != nil {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 || st.Dev != parent.Dev {
		return fmt.Errorf("remove stale netns file %s: %w and is not an empty file", p, os.ErrExist)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale netns file %s: %w", p, err)
	}
	return nil
}

// Delete unmounts and removes a named namespace. The namespace itself (and
// every device in it) goes away once no process or fd holds it.
func Delete(dir, name string) error {
	path := filepath.Join(dir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

// ensureSharedDir mirrors iproute2: make dir a shared mount point, bind
// mounting it onto itself first if it is not a mount point yet.
func ensureSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// Sysctl is one /proc/sys entry, e.g. "net/ipv4/ip_forward".
type Sysctl struct {
	Path  string
	Value string
}

// EnsureSysctls sets each sysctl inside ns whose value differs, and returns
// the ones it changed. Reads come first, so a converged namespace costs no
// writes.
func EnsureSysctls(ns netns.NsHandle, want []Sysctl) (changed []string, err error) {
	err = Do(ns, func() error {
		for _, s := range want {
			p := filepath.Join("/proc/sys", s.Path)
			cur, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("read sysctl %s: %w", s.Path, err)
			}
			if strings.TrimSpace(string(cur)) == s.Value {
				continue
			}
			if err := os.WriteFile(p, []byte(s.Value), 0o644); err != nil {
				return fmt.Errorf("write sysctl %s=%s: %w", s.Path, s.Value, err)
			}
			changed = append(changed, s.Path+"="+s.Value)
		}
		return nil
	})
	return changed, err
}

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14+; x/sys/unix lacks it).
const soNetnsCookie = 71

// Cookie returns the kernel's cookie for ns: a 64-bit number no other
// namespace gets while the machine runs, unlike its inode number, which a
// namespace created after ns was freed may reuse. Caches keyed by
// namespace use it so that a recreated namespace never inherits its
// predecessor's entries. An ns that is not open is the caller's own.
func Cookie(ns netns.NsHandle) (uint64, error) {
	var cookie uint64
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open socket: %w", err)
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, soNetnsCookie)
		if err != nil {
			return fmt.Errorf("read netns cookie: %w", err)
		}
		return nil
	})
	return cookie, err
}
