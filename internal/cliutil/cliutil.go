// Package cliutil is what nfhost's command-line programs (nsd, nsctl,
// nfcustomer) share: the process environment a command runs in, the exit
// codes scripts rely on, usage errors, and opening the configuration store
// the --source flags select.
//
// It links no kernel code (no netlink, nftables or BPF): nsctl, which only
// talks to Consul or a directory, depends on it.
package cliutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// Env is what a command may touch of its process. Tests fill it with
// buffers; main passes StdEnv.
type Env struct {
	Ctx    context.Context
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// StdEnv is the real process environment.
func StdEnv(ctx context.Context) Env {
	return Env{Ctx: ctx, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}

// Exit codes scripts can rely on.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the operation failed (kernel, store unreachable, ...)
	ExitUsage    = 2 // bad flags or arguments
	ExitInvalid  = 3 // the configuration is invalid
	ExitConflict = 4 // a check-and-set lost a race; read again and retry
	ExitNotFound = 5 // the tenant or key does not exist
	// ExitForbidden: Consul's ACLs refused the token (unknown, revoked,
	// or without a policy that allows the operation); the message names
	// the key and the policy that would allow it.
	ExitForbidden = 6
)

// usageError is an error that exits with ExitUsage: a bad flag or
// argument. It keeps the error it wraps for errors.Is and errors.As.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// Usagef returns an error that exits with ExitUsage.
func Usagef(format string, args ...any) error {
	return usageError{err: fmt.Errorf(format, args...)}
}

// asUsage makes err, unless nil, a usage error.
func asUsage(err error) error {
	if err == nil || errors.As(err, new(usageError)) {
		return err
	}
	return usageError{err: err}
}

// ExitCode maps a command's error to the process exit code. A cancelled
// context (SIGTERM, ^C) is a clean exit.
func ExitCode(err error) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return ExitOK
	}
	var ue usageError
	var fe *doc.FieldError
	var fes doc.Errors
	switch {
	case errors.As(err, &ue) || cobraUsage(err):
		return ExitUsage
	case errors.Is(err, source.ErrConflict):
		return ExitConflict
	case errors.Is(err, source.ErrForbidden):
		return ExitForbidden
	case errors.Is(err, source.ErrNotFound):
		return ExitNotFound
	case errors.As(err, &fe), errors.As(err, &fes):
		return ExitInvalid
	}
	return ExitFailure
}

// cobraUsage recognises the usage errors cobra makes where it offers no
// hook to mark them (markUsageErrors marks the others): an unknown
// command of the root (Find), a required flag missing and a flag group
// violated. They are plain errors known only by their text, which
// Execute gets as cobra made it.
func cobraUsage(err error) bool {
	msg := err.Error()
	for _, s := range []string{
		"unknown command ",                         // cobra.Command.Find, legacyArgs
		`required flag(s) "`,                       // ValidateRequiredFlags
		"if any flags in the group [",              // MarkFlagsRequiredTogether, MarkFlagsMutuallyExclusive
		"at least one of the flags in the group [", // MarkFlagsOneRequired
	} {
		if strings.HasPrefix(msg, s) {
			return true
		}
	}
	return false
}

// markUsageErrors makes every flag-parsing error (cobra's FlagErrorFunc
// gets each one: unknown flags and shorthands, bad values, missing
// values, bad syntax) and every positional-argument error (the commands'
// Args) of cmd and its subcommands a usage error, keeping whatever
// FlagErrorFunc a command set of its own.
func markUsageErrors(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		markUsageErrors(sub) // first: a subcommand must not inherit the wrapped parent's function and wrap it again
	}
	flagErr := cmd.FlagErrorFunc()
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return asUsage(flagErr(c, err)) })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return asUsage(args(c, a)) }
	}
}

// Execute runs cmd with args in env, prints an error as "error: ..." on
// stderr and returns the exit code. Bad flags and arguments exit with
// ExitUsage.
func Execute(env Env, cmd *cobra.Command, args []string) int {
	markUsageErrors(cmd)
	cmd.SetArgs(args)
	cmd.SetIn(env.Stdin)
	cmd.SetOut(env.Stdout)
	cmd.SetErr(env.Stderr)
	err := cmd.ExecuteContext(env.Ctx)
	code := ExitCode(err)
	if code != ExitOK {
		fmt.Fprintln(env.Stderr, "error:", err)
	}
	return code
}

// StoreFlags select and address the configuration store. nsd and nsctl
// register them with their own defaults and help texts.
type StoreFlags struct {
	Source     string // consul or dir
	ConsulAddr string // empty: $CONSUL_HTTP_ADDR or Consul's default
	KVPrefix   string
	ConfigDir  string // directory store: tenant configs
	StateDir   string // directory store: status
	// Timeout bounds each Consul request that does not block by design;
	// 0 keeps the store's default.
	Timeout time.Duration
	// Token and TokenFile are Consul's ACL token, given directly or in a
	// file that is re-read whenever Consul refuses the token. Either one
	// beats CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE.
	Token, TokenFile string
}

// AddConsulFlags registers --consul-addr, --token and --token-file.
func (f *StoreFlags) AddConsulFlags(fl *pflag.FlagSet) {
	fl.StringVar(&f.ConsulAddr, "consul-addr", "", "Consul HTTP address, [http://|https://]host:port (default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500; TLS from CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME)")
	fl.StringVar(&f.Token, "token", "", "Consul ACL token (default: $CONSUL_HTTP_TOKEN)")
	fl.StringVar(&f.TokenFile, "token-file", "", "file holding the Consul ACL token, re-read when Consul refuses it (default: $CONSUL_HTTP_TOKEN_FILE)")
}

// ConsulConfig is the Consul client configuration the flags and the
// standard environment select: api.DefaultConfig() (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL,
// CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
// CONSUL_TLS_SERVER_NAME), then the flags. A --consul-addr without a
// scheme keeps the scheme the environment chose (https from
// CONSUL_HTTP_ADDR=https://... or CONSUL_HTTP_SSL=true), and the TLS
// settings stay whatever the address.
func (f *StoreFlags) ConsulConfig() (*api.Config, error) {
	if f.Token != "" && f.TokenFile != "" {
		return nil, Usagef("--token and --token-file: give one of them")
	}
	cfg := api.DefaultConfig()
	if f.ConsulAddr != "" {
		if !strings.Contains(f.ConsulAddr, "://") && strings.HasPrefix(cfg.Address, "https://") {
			cfg.Scheme = "https" // api.NewClient would have learnt it from the address we replace
		}
		cfg.Address = f.ConsulAddr
	}
	switch {
	case f.Token != "":
		cfg.Token, cfg.TokenFile = f.Token, ""
	case f.TokenFile != "":
		cfg.TokenFile = f.TokenFile
	}
	return cfg, nil
}

// Open opens the store the flags select. Bad flag values are usage errors.
func (f *StoreFlags) Open() (source.Store, error) {
	switch f.Source {
	case "consul":
		cfg, err := f.ConsulConfig()
		if err != nil {
			return nil, err
		}
		c, err := source.NewConsul(cfg, f.KVPrefix)
		if err != nil {
			return nil, err
		}
		if f.Timeout < 0 {
			return nil, Usagef("--timeout must not be negative, got %v", f.Timeout)
		}
		if f.Timeout > 0 {
			c.Timeout = f.Timeout
		}
		return c, nil
	case "dir":
		return source.NewDir(f.ConfigDir, f.StateDir), nil
	default:
		return nil, Usagef("--source must be consul or dir, got %q", f.Source)
	}
}
