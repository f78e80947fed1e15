package namedns_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nstest"
)

// setup runs inside the new namespace, before it has a name; a failing
// setup leaves no name behind.
func TestCreateWithSetup(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	name := "nfR" + nstest.Unique()
	var sawName bool
	ns, err := namedns.CreateWith(dir, name, func(ns netns.NsHandle) error {
		sawName = namedns.Exists(dir, name)
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetAlias(lo, "marked")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	defer namedns.Delete(dir, name)
	if sawName {
		t.Error("the namespace was mounted under its name before setup ran")
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if lo, err := h.LinkByName("lo"); err != nil || lo.Attrs().Alias != "marked" {
		t.Fatalf("lo in the new namespace: %v, %v", lo, err)
	}

	boom := errors.New("boom")
	bad := name + "x"
	if _, err := namedns.CreateWith(dir, bad, func(netns.NsHandle) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("CreateWith with failing setup = %v, want boom", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, bad)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed CreateWith left %s behind: %v", bad, err)
	}
}

// RemoveStale clears an interrupted Create's empty file and nothing else.
func TestRemoveStale(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	name := "nfR" + nstest.Unique()
	ns, err := namedns.Create(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	defer namedns.Delete(dir, name)
	if err := namedns.RemoveStale(dir, name); !errors.Is(err, os.ErrExist) || !namedns.Exists(dir, name) {
		t.Errorf("RemoveStale on a mounted namespace = %v (exists %v)", err, namedns.Exists(dir, name))
	}
	os.WriteFile(filepath.Join(dir, "full"), []byte("x"), 0o644)
	if err := namedns.RemoveStale(dir, "full"); !errors.Is(err, os.ErrExist) {
		t.Errorf("RemoveStale on a file with content = %v", err)
	}
	os.WriteFile(filepath.Join(dir, "stale"), nil, 0o444)
	if err := namedns.RemoveStale(dir, "stale"); err != nil {
		t.Errorf("RemoveStale on an empty file = %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale file survived")
	}
	if err := namedns.RemoveStale(dir, "missing"); err != nil {
		t.Errorf("RemoveStale on a missing file = %v", err)
	}
}

// Two namespaces have different cookies; one namespace keeps its cookie.
func TestCookie(t *testing.T) {
	nstest.RequireRoot(t)
	a, b := nstest.New(t, "nfC"+nstest.Unique()), nstest.New(t, "nfC"+nstest.Unique())
	ca, err := namedns.Cookie(a.Handle)
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := namedns.Cookie(b.Handle)
	ca2, _ := namedns.Cookie(a.Handle)
	if ca == 0 || ca == cb || ca != ca2 {
		t.Fatalf("cookies: a %d, b %d, a again %d", ca, cb, ca2)
	}
}
