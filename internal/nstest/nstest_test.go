package nstest

import "testing"

// A successful command's stderr (iproute2's "Peer netns reference is
// invalid" while another namespace goes away) must not end up in the output
// tests parse: TestPrefixChangeAndDelete once read "Error" as an ifindex.
func TestMustExecReturnsStdoutOnly(t *testing.T) {
	RequireRoot(t)
	ns := New(t, "nstest")
	got := ns.MustExec(t, "sh", "-c", "echo out; echo 'Error: Peer netns reference is invalid.' >&2")
	if got != "out\n" {
		t.Fatalf("MustExec returned %q, want only stdout %q", got, "out\n")
	}
}
