// Package birdtest runs BIRD 2 (Debian's bird2) as the site's router in a
// test namespace: tests and the lab use it as the oracle for what an
// nfhost edge announces. It skips the test loudly when bird is missing.
package birdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Neighbor is one BGP session of the router.
type Neighbor struct {
	Name    string // protocol name, e.g. edge1
	Address string
	ASN     uint32
	// Port: the neighbor's port when bird dials it (0: 179).
	Port int
	// Passive: bird waits for the neighbor to connect.
	Passive  bool
	Password string
	HoldTime int // seconds (0: 9)
	// Multihop: the neighbor is not on a directly connected network (a
	// loopback address); next hops resolve through the Loopback routes.
	Multihop bool
}

// Config is the router's configuration.
type Config struct {
	RouterID string
	ASN      uint32
	// Local is the address bird listens on and dials from ("" any);
	// ListenPort its BGP port (0: 179).
	Local      string
	ListenPort int
	Neighbors  []Neighbor
	// Kernel exports the best routes, ECMP merged, into the namespace's
	// main table.
	Kernel bool
	// Loopback imports the loopback interface's routes (protocol direct),
	// against which multihop next hops on 127.0.0.0/8 resolve.
	Loopback bool
}

// Render is the bird.conf for c: an ipv4 and a flow4 table (flowtab4),
// graceful restart, and short timers so that tests do not wait for
// bird's defaults.
func (c Config) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\nlog stderr all;\nprotocol device { scan time 1; }\nflow4 table flowtab4;\n", c.RouterID)
	if c.Loopback {
		b.WriteString("protocol direct { ipv4; interface \"lo\"; }\n")
	}
	if c.Kernel {
		b.WriteString("protocol kernel {\n  ipv4 { import none; export all; };\n  merge paths on;\n  learn off;\n}\n")
	}
	for _, n := range c.Neighbors {
		hold := n.HoldTime
		if hold == 0 {
			hold = 9
		}
		fmt.Fprintf(&b, "protocol bgp %s {\n", n.Name)
		local := ""
		if c.Local != "" {
			local = " " + c.Local
		}
		if c.ListenPort != 0 {
			fmt.Fprintf(&b, "  local%s port %d as %d;\n", local, c.ListenPort, c.ASN)
		} else {
			fmt.Fprintf(&b, "  local%s as %d;\n", local, c.ASN)
		}
		if n.Port != 0 {
			fmt.Fprintf(&b, "  neighbor %s port %d as %d;\n", n.Address, n.Port, n.ASN)
		} else {
			fmt.Fprintf(&b, "  neighbor %s as %d;\n", n.Address, n.ASN)
		}
		if n.Passive {
			b.WriteString("  passive on;\n")
		}
		if n.Multihop {
			b.WriteString("  multihop;\n")
		}
		if n.Password != "" {
			fmt.Fprintf(&b, "  password %q;\n", n.Password)
		}
		fmt.Fprintf(&b, "  hold time %d;\n  keepalive time %d;\n  connect retry time 2;\n  connect delay time 1;\n  error wait time 1, 4;\n", hold, max(hold/3, 1))
		if strings.Contains(n.Address, ":") {
			b.WriteString("  graceful restart on;\n  ipv6 { import all; export none; };\n}\n")
		} else {
			b.WriteString("  graceful restart on;\n  ipv4 { import all; export none; };\n  flow4 { table flowtab4; import all; export none; };\n}\n")
		}
	}
	return b.String()
}

// Bird is a running bird.
type Bird struct {
	NS   string // namespace name ("" the test's own)
	Dir  string
	Sock string
	cmd  *exec.Cmd
	log  *os.File
}

// Require skips the test loudly without bird and birdc.
func Require(t testing.TB) {
	t.Helper()
	for _, b := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("SKIP (needs %s): apt-get install bird2, or run `make deps`", b)
		}
	}
}

func nsCmd(ns string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.Command(args[0], args[1:]...)
	}
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + ns, "--"}, args...)...)
}

// Start runs bird with c in namespace ns (the test's own if "") and stops
// it when the test ends. dir holds its config, socket and log.
func Start(t testing.TB, ns, dir string, c Config) *Bird {
	t.Helper()
	Require(t)
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(c.Render()), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Bird{NS: ns, Dir: dir, Sock: filepath.Join(dir, "bird.ctl")}
	lf, err := os.Create(filepath.Join(dir, "bird.log"))
	if err != nil {
		t.Fatal(err)
	}
	b.log = lf
	b.cmd = nsCmd(ns, "bird", "-f", "-c", conf, "-s", b.Sock)
	b.cmd.Stdout, b.cmd.Stderr = lf, lf
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start bird: %v", err)
	}
	t.Cleanup(b.stop)
	for range 100 {
		if _, err := b.Ctl("show status"); err == nil {
			return b
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("bird did not start: %s", b.Log())
	return nil
}

func (b *Bird) stop() {
	if b.cmd.Process != nil {
		b.cmd.Process.Kill()
		b.cmd.Wait()
	}
	b.log.Close()
}

// Log is bird's output so far.
func (b *Bird) Log() string {
	out, _ := os.ReadFile(b.log.Name())
	return string(out)
}

// Ctl runs a birdc command and returns its output.
func (b *Bird) Ctl(cmd string) (string, error) {
	c := exec.Command("birdc", append([]string{"-s", b.Sock}, strings.Fields(cmd)...)...)
	out, err := c.CombinedOutput()
	if err == nil && strings.Contains(string(out), "Unable to connect") {
		err = fmt.Errorf("%s", out)
	}
	return string(out), err
}

// Routes is `show route table T all` as text.
func (b *Bird) Routes(table string) string {
	out, _ := b.Ctl("show route table " + table + " all")
	return out
}

// Protocol is `show protocols all NAME`.
func (b *Bird) Protocol(name string) string {
	out, _ := b.Ctl("show protocols all " + name)
	return out
}

// Established reports whether the protocol's session is up.
func (b *Bird) Established(name string) bool {
	out, _ := b.Ctl("show protocols " + name)
	return strings.Contains(out, "Established")
}

// WaitFor polls cond every 100 ms until it holds or d passes.
func WaitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}
