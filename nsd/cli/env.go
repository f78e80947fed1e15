// Package cli holds the nsd and nsctl commands as functions that tests can
// call; cmd/nsd and cmd/nsctl only hand them os.Args and the standard streams.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/source"
)

// Env is what a command may touch of its process.
type Env struct {
	Ctx    context.Context
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// StdEnv is the real process environment.
func StdEnv(ctx context.Context) Env {
	return Env{Ctx: ctx, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Exit codes scripts can rely on.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the operation failed (kernel, store unreachable, ...)
	ExitUsage    = 2 // bad flags or arguments
	ExitInvalid  = 3 // the configuration is invalid
	ExitConflict = 4 // a check-and-set lost a race; read again and retry
	ExitNotFound = 5 // the tenant or key does not exist
)

// storeFlags are shared by nsd and nsctl.
type storeFlags struct {
	source     string
	consulAddr string
	kvPrefix   string
	configDir  string
	stateDir   string
	timeout    time.Duration // bound of each Consul request that does not block by design
}

func (f *storeFlags) open(env Env) (source.Store, error) {
	switch f.source {
	case "consul":
		cfg := api.DefaultConfig() // honours CONSUL_HTTP_ADDR, _TOKEN, _SSL, CONSUL_CACERT, ...
		if f.consulAddr != "" {
			cfg.Address = f.consulAddr
		}
		c, err := source.NewConsul(cfg, f.kvPrefix)
		if err != nil {
			return nil, err
		}
		if f.timeout < 0 {
			return nil, usageError("--timeout must not be negative, got %v", f.timeout)
		}
		if f.timeout > 0 {
			c.Timeout = f.timeout
		}
		return c, nil
	case "dir":
		return source.NewDir(f.configDir, f.stateDir), nil
	default:
		return nil, usageError("--source must be consul or dir, got %q", f.source)
	}
}

// read opens the store and reads one snapshot.
func (f *storeFlags) read(env Env) (source.Store, source.Snapshot, error) {
	st, err := f.open(env)
	if err != nil {
		return nil, source.Snapshot{}, err
	}
	snap, err := st.Read(env.Ctx)
	return st, snap, err
}

// status opens the store and lists status documents (of one host or all).
func (f *storeFlags) status(env Env, host string) (map[string]map[string]json.RawMessage, error) {
	st, err := f.open(env)
	if err != nil {
		return nil, err
	}
	return st.ListStatus(env.Ctx, host)
}

// tenantStatuses returns a tenant's status from each host (one host if
// set), sorted by host, keeping those keep accepts; none is ErrNotFound
// with what (e.g. "no status").
func (f *storeFlags) tenantStatuses(env Env, host, tenant, what string, keep func(source.Status) bool) ([]hostStatus, error) {
	all, err := f.status(env, host)
	if err != nil {
		return nil, err
	}
	var out []hostStatus
	for _, h := range slices.Sorted(maps.Keys(all)) {
		var s source.Status
		raw, ok := all[h][tenant]
		if !ok || json.Unmarshal(raw, &s) != nil || keep != nil && !keep(s) {
			continue
		}
		out = append(out, hostStatus{h, s})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s for tenant %s: %w", what, tenant, source.ErrNotFound)
	}
	return out, nil
}

type hostStatus struct {
	host string
	source.Status
}

type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return usageErr{msg: sprintf(format, args...)}
}
