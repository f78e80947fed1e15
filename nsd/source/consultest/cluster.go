package consultest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Cluster is a real Consul cluster of server agents on 127.0.0.1, each
// with its own ports and data directory (raft on disk, not dev mode).
type Cluster struct {
	Servers []*Agent
}

// StartCluster launches n server agents with bootstrap_expect = n that
// join each other, with limits.http_max_conns_per_client raised so that
// many simulated clients may hold blocking queries on one agent and
// /debug/pprof enabled (benchmarks profile the servers), and waits
// until they have a leader and answer KV reads.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("NFHOST_REQUIRE_CONSUL") == "1" {
			t.Fatal("consul binary not found but NFHOST_REQUIRE_CONSUL=1: run scripts/install-consul.sh")
		}
		t.Skip("SKIP (needs consul): run scripts/install-consul.sh or `make deps`")
	}
	ports := freePorts(t, 4*n)
	var join []string
	for i := 0; i < n; i++ {
		join = append(join, fmt.Sprintf("-retry-join=127.0.0.1:%d", ports[4*i+1]))
	}
	c := &Cluster{}
	for i := 0; i < n; i++ {
		p := ports[4*i : 4*i+4]
		dir := t.TempDir()
		a := &Agent{Addr: "127.0.0.1:" + strconv.Itoa(p[0]), log: &bytes.Buffer{}, stop: make(chan struct{})}
		a.URL = "http://" + a.Addr
		hcl := filepath.Join(dir, "limits.hcl")
		if err := os.WriteFile(hcl, []byte("limits { http_max_conns_per_client = 10000 }\nenable_debug = true\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"agent", "-server", "-bootstrap-expect=" + strconv.Itoa(n),
			"-data-dir=" + filepath.Join(dir, "data"), "-bind=127.0.0.1", "-client=127.0.0.1",
			"-node=nfhost-srv-" + strconv.Itoa(p[0]), "-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1",
			"-http-port=" + strconv.Itoa(p[0]), "-serf-lan-port=" + strconv.Itoa(p[1]), "-serf-wan-port=" + strconv.Itoa(p[2]),
			"-server-port=" + strconv.Itoa(p[3]), "-log-level=warn", "-config-file=" + hcl}, join...)
		a.cmd = exec.Command(bin, args...)
		a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
		if err := a.cmd.Start(); err != nil {
			t.Fatalf("start consul server: %v", err)
		}
		t.Cleanup(a.Stop)
		cfg := api.DefaultConfig()
		cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile = a.Addr, "http", "", ""
		cfg.TLSConfig = api.TLSConfig{}
		cl, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		a.Client = cl
		c.Servers = append(c.Servers, a)
	}
	for _, a := range c.Servers {
		a.waitReady(t, 60*time.Second, "consul cluster did not elect a leader")
	}
	return c
}

// Leader returns the server that is the raft leader.
func (c *Cluster) Leader(t testing.TB) *Agent {
	t.Helper()
	leader, err := c.Servers[0].Client.Status().Leader()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Servers {
		// The leader's raft address is 127.0.0.1:<server port>.
		for _, arg := range a.cmd.Args {
			if strings.HasPrefix(arg, "-server-port=") && leader == "127.0.0.1:"+strings.TrimPrefix(arg, "-server-port=") {
				return a
			}
		}
	}
	t.Fatalf("no server is the leader %s", leader)
	return nil
}

// PIDs are the server processes' IDs (for CPU and RSS).
func (c *Cluster) PIDs() []int {
	var out []int
	for _, a := range c.Servers {
		if a.cmd.Process != nil {
			out = append(out, a.cmd.Process.Pid)
		}
	}
	return out
}
