// Package consultest runs a real Consul dev agent for integration tests, on
// 127.0.0.1 with non-default ports, and stops it when the test ends.
//
// The binary is found in $NFHOST_CONSUL, then in the repository's .cache/,
// then in ~/.cache/nfhost (scripts/install-consul.sh puts it there), then
// on $PATH. Without it the
// test is skipped loudly, unless NFHOST_REQUIRE_CONSUL=1 (set by `make
// test`), in which case it fails: CI must never pass by skipping.
package consultest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Agent is a running dev agent.
type Agent struct {
	Addr   string // host:port of the HTTP API
	Client *api.Client
	cmd    *exec.Cmd
	log    *bytes.Buffer
	stop   chan struct{}
}

// Binary returns the consul binary path or "".
func Binary() string {
	if p := os.Getenv("NFHOST_CONSUL"); p != "" {
		return p
	}
	if dir, err := os.Getwd(); err == nil {
		for ; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				matches, _ := filepath.Glob(filepath.Join(dir, ".cache", "consul-*", "consul"))
				if len(matches) > 0 {
					return matches[len(matches)-1]
				}
				break
			}
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		matches, _ := filepath.Glob(filepath.Join(home, ".cache", "nfhost", "consul-*", "consul"))
		if len(matches) > 0 {
			return matches[len(matches)-1]
		}
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	return ""
}

// Start launches an agent and waits until it has a leader.
func Start(t testing.TB) *Agent {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("NFHOST_REQUIRE_CONSUL") == "1" {
			t.Fatal("consul binary not found but NFHOST_REQUIRE_CONSUL=1: run scripts/install-consul.sh")
		}
		t.Skip("SKIP (needs consul): run scripts/install-consul.sh or `make deps`")
	}
	ports := freePorts(t, 5)
	a := &Agent{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), log: &bytes.Buffer{}, stop: make(chan struct{})}
	a.cmd = exec.Command(bin, "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-node=nfhost-test-"+strconv.Itoa(ports[0]),
		"-http-port="+strconv.Itoa(ports[0]), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port="+strconv.Itoa(ports[1]), "-serf-wan-port="+strconv.Itoa(ports[2]),
		"-server-port="+strconv.Itoa(ports[3]), "-log-level=warn")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start consul: %v", err)
	}
	t.Cleanup(a.Stop)
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Client = c
	deadline := time.Now().Add(30 * time.Second)
	for {
		if leader, err := c.Status().Leader(); err == nil && leader != "" {
			if _, _, err := c.KV().List("nfhost-probe", nil); err == nil {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul dev agent did not become ready in 30s:\n%s", a.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop kills the agent; its dev-mode data is gone with it.
func (a *Agent) Stop() {
	select {
	case <-a.stop:
		return
	default:
		close(a.stop)
	}
	if a.cmd.Process != nil {
		a.cmd.Process.Kill()
		a.cmd.Wait()
	}
}

// Restart stops the agent and starts a new one on the same HTTP port, with
// an empty store, as after a Consul outage without persistence.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	args := a.cmd.Args
	a.stop = make(chan struct{})
	a.log.Reset()
	a.cmd = exec.Command(args[0], args[1:]...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("restart consul: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if leader, err := a.Client.Status().Leader(); err == nil && leader != "" {
			if _, _, err := a.Client.KV().List("nfhost-probe", nil); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul did not come back in 30s:\n%s", a.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick free port: %v", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

// Put writes a key or fails the test.
func (a *Agent) Put(t testing.TB, key, value string) {
	t.Helper()
	if _, err := a.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(value)}, nil); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// Signal sends sig to the agent process (SIGSTOP/SIGCONT: a hung agent).
func (a *Agent) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := a.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal consul: %v", err)
	}
}

// String describes the agent for logs.
func (a *Agent) String() string { return fmt.Sprintf("consul dev agent at %s", a.Addr) }
