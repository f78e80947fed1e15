// Package nstest provides throw-away network namespaces for privileged
// tests. Every namespace is removed in t.Cleanup, so nothing a test does is
// visible in the machine's root namespace afterwards.
package nstest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/namedns"
)

// RequireRoot skips the test loudly unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP (needs root): kernel test; run `sudo make test-kernel`")
	}
}

// RequireTool skips the test loudly when an oracle binary is missing.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("SKIP (needs %s): install it or run `make deps`", name)
	}
}

// Unique returns a short random suffix for names of test objects.
func Unique() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NS is a named namespace in /run/netns owned by one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// New creates a named namespace and removes it when the test ends.
func New(t testing.TB, name string) *NS {
	t.Helper()
	RequireRoot(t)
	h, err := namedns.Create(namedns.DefaultDir, name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	ns := &NS{Name: name, Handle: h}
	t.Cleanup(func() {
		h.Close()
		if err := namedns.Delete(namedns.DefaultDir, name); err != nil {
			t.Errorf("cleanup netns %s: %v", name, err)
		}
	})
	ip(t, "netns", "exec", name, "ip", "link", "set", "lo", "up")
	return ns
}

// Path is the namespace's bind mount.
func (n *NS) Path() string { return namedns.DefaultDir + "/" + n.Name }

// Exec runs a command inside the namespace with nsenter (which, unlike
// `ip netns exec`, keeps /sys/fs/bpf visible) and returns its output.
func (n *NS) Exec(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Output runs a command inside the namespace and returns its standard
// output only; a failure's error carries the command's stderr. Warnings a
// successful command prints on stderr stay out of what callers parse:
// iproute2, for one, prints "Error: Peer netns reference is invalid." and
// exits 0 when some other namespace is deleted while it lists a veth whose
// peer lives elsewhere, which happens whenever test packages run in
// parallel.
func (n *NS) Output(t testing.TB, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// MustExec is Output that fails the test on error.
func (n *NS) MustExec(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Output(t, args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Link joins a and b with a veth pair, addresses them and brings them up.
// addrA/addrB are CIDRs such as "192.0.2.1/24"; empty skips the address.
func Link(t testing.TB, a *NS, ifA, addrA string, b *NS, ifB, addrB string) {
	t.Helper()
	tmp := "nst" + Unique()
	ip(t, "link", "add", tmp, "netns", a.Name, "type", "veth", "peer", "name", tmp+"p", "netns", b.Name)
	a.MustExec(t, "ip", "link", "set", tmp, "name", ifA)
	b.MustExec(t, "ip", "link", "set", tmp+"p", "name", ifB)
	for _, s := range []struct {
		ns   *NS
		ifn  string
		addr string
	}{{a, ifA, addrA}, {b, ifB, addrB}} {
		if s.addr != "" {
			args := []string{"ip", "addr", "add", s.addr, "dev", s.ifn}
			if strings.Contains(s.addr, ":") {
				args = append(args, "nodad")
			}
			s.ns.MustExec(t, args...)
		}
		s.ns.MustExec(t, "ip", "link", "set", s.ifn, "up")
	}
}

func ip(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
