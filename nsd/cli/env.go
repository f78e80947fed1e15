// Package cli holds the nsd command as a function that tests can call;
// cmd/nsd only hands it os.Args and the standard streams. (nsctl and
// nfcustomer live in cmd/nsctl and cmd/nfcustomer.)
package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/internal/doc"
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

// storeFlags are nsd's store flags.
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

type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

func usageError(format string, args ...any) error {
	return usageErr{msg: sprintf(format, args...)}
}

// exitFor maps an error to an exit code.
func exitFor(err error) int {
	var fe *doc.FieldError
	var fes doc.Errors
	switch {
	case errors.Is(err, source.ErrConflict):
		return ExitConflict
	case errors.Is(err, source.ErrNotFound):
		return ExitNotFound
	case errors.As(err, &fe), errors.As(err, &fes):
		return ExitInvalid
	case errors.Is(err, errOnceFailed):
		return ExitFailure
	}
	return ExitFailure
}
