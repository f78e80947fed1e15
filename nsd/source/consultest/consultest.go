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
	"crypto/rand"
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
	Addr string // host:port of the HTTP API (HTTPS only with WithTLS)
	// URL is the API's address with its scheme, as CONSUL_HTTP_ADDR takes it.
	URL string
	// Token is the bootstrap (initial management) token of an agent
	// started WithACL; Client uses it.
	Token string
	// TLS holds the certificate files of an agent started WithTLS.
	TLS    *TLSFiles
	Client *api.Client
	cmd    *exec.Cmd
	log    *bytes.Buffer
	stop   chan struct{}
}

// TLSFiles are the PEM files `consul tls` made for an agent: the CA, the
// agent's server certificate and a client certificate signed by the CA.
type TLSFiles struct {
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string
}

// Env is what a Consul client needs in its environment to reach the agent
// (CONSUL_HTTP_ADDR, and CONSUL_CACERT, CONSUL_CLIENT_CERT and
// CONSUL_CLIENT_KEY for TLS); the token is left to the caller.
func (a *Agent) Env() []string {
	env := []string{"CONSUL_HTTP_ADDR=" + a.URL}
	if a.TLS != nil {
		env = append(env, "CONSUL_CACERT="+a.TLS.CAFile, "CONSUL_CLIENT_CERT="+a.TLS.ClientCert, "CONSUL_CLIENT_KEY="+a.TLS.ClientKey)
	}
	return env
}

// Option changes how Start runs the agent.
type Option func(*options)

type options struct {
	acl, tls bool
	portBase int
}

// WithPorts puts the agent on the five TCP ports from base (HTTP first),
// for tests that keep to a port range of their own.
func WithPorts(base int) Option { return func(o *options) { o.portBase = base } }

// WithACL enables ACLs with default_policy "deny" and a random initial
// management token, returned in Agent.Token.
func WithACL() Option { return func(o *options) { o.acl = true } }

// WithTLS makes a CA and certificates with `consul tls` in a temporary
// directory and serves the HTTP API over HTTPS only, verifying client
// certificates. The files are in Agent.TLS.
func WithTLS() Option { return func(o *options) { o.tls = true } }

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
func Start(t testing.TB, opts ...Option) *Agent {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("NFHOST_REQUIRE_CONSUL") == "1" {
			t.Fatal("consul binary not found but NFHOST_REQUIRE_CONSUL=1: run scripts/install-consul.sh")
		}
		t.Skip("SKIP (needs consul): run scripts/install-consul.sh or `make deps`")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var ports []int
	if o.portBase != 0 {
		ports = []int{o.portBase, o.portBase + 1, o.portBase + 2, o.portBase + 3, o.portBase + 4}
	} else {
		ports = freePorts(t, 5)
	}
	a := &Agent{Addr: "127.0.0.1:" + strconv.Itoa(ports[0]), log: &bytes.Buffer{}, stop: make(chan struct{})}
	a.URL = "http://" + a.Addr
	args := []string{"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-node=nfhost-test-" + strconv.Itoa(ports[0]),
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
		"-serf-lan-port=" + strconv.Itoa(ports[1]), "-serf-wan-port=" + strconv.Itoa(ports[2]),
		"-server-port=" + strconv.Itoa(ports[3]), "-log-level=warn"}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = a.Addr, "http", "", ""
	cfg.TLSConfig = api.TLSConfig{}
	if o.acl {
		a.Token = newUUID(t)
		cfg.Token = a.Token
		args = append(args, "-hcl", fmt.Sprintf(`acl { enabled = true, default_policy = "deny", enable_token_persistence = false, tokens { initial_management = %q, agent = %q } }`, a.Token, a.Token))
	}
	if o.tls {
		a.TLS = makeCerts(t, bin)
		a.URL = "https://" + a.Addr
		cfg.Scheme = "https"
		cfg.TLSConfig = api.TLSConfig{CAFile: a.TLS.CAFile, CertFile: a.TLS.ClientCert, KeyFile: a.TLS.ClientKey}
		args = append(args, "-hcl", fmt.Sprintf(`ports { http = -1, https = %d }
tls { defaults { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = true, verify_outgoing = true } }`,
			ports[0], a.TLS.CAFile, a.TLS.ServerCert, a.TLS.ServerKey))
	} else {
		args = append(args, "-http-port="+strconv.Itoa(ports[0]))
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start consul: %v", err)
	}
	t.Cleanup(a.Stop)
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.Client = c
	// 90 s, not 30: an agent once did not answer within 30 s on a machine
	// that had just deleted 10,000 network namespaces (the kernel tears
	// them down in the background); ready agents answer well within 1 s.
	a.waitReady(t, 90*time.Second, "consul dev agent did not become ready")
	return a
}

// ready reports whether the agent has a leader and answers KV reads.
func (a *Agent) ready() bool {
	leader, err := a.Client.Status().Leader()
	if err != nil || leader == "" {
		return false
	}
	_, _, err = a.Client.KV().List("nfhost-probe", nil)
	return err == nil
}

// waitReady waits until the agent is ready, or fails the test after d
// saying what did not happen.
func (a *Agent) waitReady(t testing.TB, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !a.ready() {
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s:\n%s", what, d, a.log)
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

// Restart stops the agent and starts a new one with the same arguments: a
// dev agent comes back with an empty store, as after a Consul outage
// without persistence; a cluster's server with its data directory, and
// rejoins.
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
	a.waitReady(t, 30*time.Second, "consul did not come back")
}

// newUUID returns a random UUID, the form Consul's tokens take.
func newUUID(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// makeCerts creates a CA, a server certificate (for 127.0.0.1 and
// localhost) and a client certificate with `consul tls` in a temporary
// directory.
func makeCerts(t testing.TB, bin string) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{{"tls", "ca", "create"}, {"tls", "cert", "create", "-server", "-dc", "dc1"},
		{"tls", "cert", "create", "-client", "-dc", "dc1"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("consul %v: %v\n%s", args, err, out)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	return &TLSFiles{CAFile: p("consul-agent-ca.pem"), ServerCert: p("dc1-server-consul-0.pem"), ServerKey: p("dc1-server-consul-0-key.pem"),
		ClientCert: p("dc1-client-consul-0.pem"), ClientKey: p("dc1-client-consul-0-key.pem")}
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
