// Package nlh opens the netlink handles every nfhost subsystem uses, and
// reads through them safely.
//
// Contract: a handle from New is bound to one namespace (never the calling
// thread's by accident), gives up on a request after Timeout instead of
// hanging the daemon (vishvananda/netlink#254: a reader hung 66 minutes),
// and, when strict, has the kernel filter dumps (route dumps by table).
// Dumps go through RetryDump, which repeats a dump the kernel reports as
// interrupted by a concurrent change (its result may be inconsistent).
// Package-level netlink calls, which act on whatever namespace the thread
// is in, are never used in nfhost.
package nlh

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Timeout bounds every netlink request.
const Timeout = 5 * time.Second

const dumpRetries = 5

// New opens a rtnetlink handle bound to ns (the caller's own namespace when
// ns is not open, netns.None()), with Timeout. With strict set the kernel
// checks requests strictly and filters dumps for us; rule dumps reject
// strict headers, so rules use a handle without it.
func New(ns netns.NsHandle, strict bool) (*netlink.Handle, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	if err := h.SetSocketTimeout(Timeout); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink timeout: %w", err)
	}
	if !strict {
		return h, nil
	}
	if err := h.SetStrictCheck(true); err != nil {
		h.Close()
		return nil, fmt.Errorf("enable netlink strict check: %w", err)
	}
	return h, nil
}

// RetryDump repeats a dump while the kernel reports it was interrupted by
// a concurrent change.
func RetryDump[T any](what string, f func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for i := 0; i < dumpRetries; i++ {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return v, fmt.Errorf("dump %s: %w", what, err)
	}
	return v, nil
}

// IsNotFound reports whether err says a link (or the object asked for)
// does not exist.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// NewPair opens both sockets a tenant pass needs inside ns, in one switch
// of a locked thread into ns and back: a strict rtnetlink handle (New) and
// a raw socket for the requests the library lacks (OpenNetconf). Opening
// them one after the other switches twice and opens the thread's own
// namespace file twice.
func NewPair(ns netns.NsHandle) (*netlink.Handle, *Netconf, error) {
	h, s, err := socketsIn(ns)
	if err != nil {
		return nil, nil, err
	}
	nc, err := newNetconf(s)
	if err == nil {
		err = h.SetSocketTimeout(Timeout)
	}
	if err == nil {
		err = h.SetStrictCheck(true)
	}
	if err != nil {
		h.Close()
		s.Close()
		return nil, nil, fmt.Errorf("open netlink sockets: %w", err)
	}
	return h, nc, nil
}

// socketsIn creates the two sockets with the thread switched into ns. A
// thread that cannot be switched back stays locked, so that the runtime
// ends it with the goroutine instead of running other goroutines in ns.
func socketsIn(ns netns.NsHandle) (*netlink.Handle, *nl.NetlinkSocket, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, nil, fmt.Errorf("open this thread's netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return nil, nil, fmt.Errorf("enter netns: %w", err)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	var s *nl.NetlinkSocket
	if err == nil {
		if s, err = nl.Subscribe(unix.NETLINK_ROUTE); err != nil {
			h.Close()
		}
	}
	if rerr := netns.Set(orig); rerr != nil {
		if err == nil {
			h.Close()
			s.Close()
		}
		return nil, nil, fmt.Errorf("return from netns: %w", rerr) // the thread stays locked
	}
	runtime.UnlockOSThread()
	if err != nil {
		return nil, nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, s, nil
}
