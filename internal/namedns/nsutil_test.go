package namedns

import (
	"testing"

	"github.com/vishvananda/netns"
)

// An unopened handle is the caller's own namespace (nsd without
// --host-netns): Do runs fn instead of failing to enter fd -1.
func TestDoOwnNamespace(t *testing.T) {
	ran := false
	if err := Do(netns.None(), func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do(None): ran=%v err=%v", ran, err)
	}
}
