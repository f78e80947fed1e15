package routing

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// socketTimeout bounds every netlink request: a reader that never gets an
// answer must not hang the daemon (vishvananda/netlink#254).
const socketTimeout = 5 * time.Second

const dumpRetries = 5

// retryDump repeats a dump while the kernel reports it was interrupted by a
// concurrent change; the result of an interrupted dump may be inconsistent.
func retryDump[T any](what string, f func() (T, error)) (T, error) {
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

// newHandle opens a netlink handle bound to ns, with timeouts. With strict
// set the kernel filters route dumps by table for us (rule dumps reject
// strict headers, so rules use a plain handle).
func newHandle(ns netns.NsHandle, strict bool) (*netlink.Handle, error) {
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink handle: %w", err)
	}
	if err := h.SetSocketTimeout(socketTimeout); err != nil {
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

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
