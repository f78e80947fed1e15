package cliutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{context.Canceled, ExitOK},
		{fmt.Errorf("run: %w", context.Canceled), ExitOK},
		{errors.New("netlink: operation not permitted"), ExitFailure},
		{Usagef("--source must be consul or dir, got %q", "zk"), ExitUsage},
		{fmt.Errorf("flags: %w", Usagef("bad")), ExitUsage},
		// cobra's usage errors without a hook, known by their text
		{errors.New(`unknown command "frob" for "nsctl"`), ExitUsage},
		{errors.New(`required flag(s) "file" not set`), ExitUsage},
		{errors.New("if any flags in the group [a b] are set none of the others can be; [a b] were all set"), ExitUsage},
		{errors.New("at least one of the flags in the group [a b] is required"), ExitUsage},
		// ... and nothing else that reads a little like them
		{errors.New("dial: the server accepts only TLS"), ExitFailure},
		{errors.New(`tenant acme: unknown command "frob" in its control key`), ExitFailure},
		{&doc.FieldError{Tenant: "acme", Key: doc.KeyNetwork, Msg: "bad"}, ExitInvalid},
		{fmt.Errorf("write: %w", doc.Errors{&doc.FieldError{Msg: "bad"}}), ExitInvalid},
		{fmt.Errorf("put: %w", source.ErrConflict), ExitConflict},
		{fmt.Errorf("tenant ghost: %w", source.ErrNotFound), ExitNotFound},
		{source.ErrTimeout, ExitFailure},
		{fmt.Errorf("write k: %w", source.ForbiddenError("nfhost", "write", "nfhost/dos/global", "no")), ExitForbidden},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestExecute(t *testing.T) {
	var out, errs bytes.Buffer
	env := Env{Ctx: context.Background(), Stdin: strings.NewReader("piped"), Stdout: &out, Stderr: &errs}
	cmd := &cobra.Command{Use: "x", SilenceUsage: true, SilenceErrors: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := make([]byte, 5)
			n, _ := cmd.InOrStdin().Read(b)
			fmt.Fprintf(cmd.OutOrStdout(), "read %s", b[:n])
			return fmt.Errorf("tenant ghost: %w", source.ErrNotFound)
		}}
	if code := Execute(env, cmd, nil); code != ExitNotFound {
		t.Errorf("exit %d, want %d", code, ExitNotFound)
	}
	if out.String() != "read piped" || errs.String() != "error: tenant ghost: not found\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errs.String())
	}
	errs.Reset()
	if code := Execute(env, cmd, []string{"extra"}); code != ExitUsage || !strings.HasPrefix(errs.String(), "error: unknown command") {
		t.Errorf("extra arg: exit %d, stderr %q", code, errs.String())
	}
}

func TestStoreFlagsOpen(t *testing.T) {
	if st, err := (&StoreFlags{Source: "dir", ConfigDir: t.TempDir(), StateDir: t.TempDir()}).Open(); err != nil {
		t.Errorf("dir: %v", err)
	} else if _, ok := st.(*source.Dir); !ok {
		t.Errorf("dir: got %T", st)
	}
	st, err := (&StoreFlags{Source: "consul", ConsulAddr: "127.0.0.1:1", KVPrefix: "nfhost", Timeout: 3 * time.Second}).Open()
	if err != nil {
		t.Fatalf("consul: %v", err)
	}
	if c, ok := st.(*source.Consul); !ok || c.Timeout != 3*time.Second {
		t.Errorf("consul: got %T %+v", st, st)
	}
	for _, f := range []StoreFlags{{Source: "zk"}, {Source: "consul", KVPrefix: "nfhost", Timeout: -time.Second}} {
		if _, err := f.Open(); ExitCode(err) != ExitUsage {
			t.Errorf("%+v: %v, want a usage error", f, err)
		}
	}
}

// The flags override the environment's token and address, and an address
// without a scheme keeps the https the environment asked for.
func TestConsulConfig(t *testing.T) {
	for _, k := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_CACERT"} {
		t.Setenv(k, "")
	}
	t.Setenv("CONSUL_HTTP_ADDR", "https://consul.example:8501")
	t.Setenv("CONSUL_HTTP_TOKEN", "env-token")
	t.Setenv("CONSUL_CACERT", "/etc/consul/ca.pem")
	for _, tc := range []struct {
		flags                 StoreFlags
		addr, scheme, tok, tf string
	}{
		{StoreFlags{}, "https://consul.example:8501", "http", "env-token", ""},
		{StoreFlags{ConsulAddr: "10.0.0.1:8501"}, "10.0.0.1:8501", "https", "env-token", ""},
		{StoreFlags{ConsulAddr: "http://10.0.0.1:8500"}, "http://10.0.0.1:8500", "http", "env-token", ""},
		{StoreFlags{Token: "flag-token"}, "https://consul.example:8501", "http", "flag-token", ""},
		{StoreFlags{TokenFile: "/run/token"}, "https://consul.example:8501", "http", "env-token", "/run/token"},
	} {
		cfg, err := tc.flags.ConsulConfig()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Address != tc.addr || cfg.Scheme != tc.scheme || cfg.Token != tc.tok || cfg.TokenFile != tc.tf || cfg.TLSConfig.CAFile != "/etc/consul/ca.pem" {
			t.Errorf("%+v: address %q scheme %q token %q file %q CA %q", tc.flags, cfg.Address, cfg.Scheme, cfg.Token, cfg.TokenFile, cfg.TLSConfig.CAFile)
		}
	}
	if _, err := (&StoreFlags{Token: "a", TokenFile: "b"}).ConsulConfig(); ExitCode(err) != ExitUsage {
		t.Errorf("--token with --token-file: %v", err)
	}
}

// nsctlTree is a command tree built the way nsctl builds its own: the store
// flags persistent on a root without RunE, subcommands with their own
// flags and Args, errors and usage silenced.
func nsctlTree(ran *string) *cobra.Command {
	var store StoreFlags
	root := &cobra.Command{Use: "nsctl", SilenceUsage: true, SilenceErrors: true}
	pf := root.PersistentFlags()
	pf.StringVar(&store.Source, "source", "consul", "configuration store")
	store.AddConsulFlags(pf)
	pf.DurationVar(&store.Timeout, "timeout", 10*time.Second, "Consul request timeout")
	var host string
	status := &cobra.Command{Use: "status", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { *ran = "status " + host; return nil }}
	status.Flags().StringVar(&host, "host", "", "only this host")
	tenant := &cobra.Command{Use: "tenant", Args: cobra.NoArgs, // nsctl's missingSubcommand
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Help()
			return Usagef("nsctl tenant: missing subcommand")
		}}
	var file string
	show := &cobra.Command{Use: "show TENANT", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, a []string) error { *ran = "show " + a[0]; return nil }}
	apply := &cobra.Command{Use: "apply -f FILE", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { *ran = "apply " + file; return nil }}
	apply.Flags().StringVarP(&file, "file", "f", "", "tenant file")
	apply.MarkFlagRequired("file")
	tenant.AddCommand(show, apply)
	root.AddCommand(status, tenant)
	return root
}

// nsdTree is a command built the way nsd builds its own: one command,
// no arguments, flags of several types.
func nsdTree(ran *string) *cobra.Command {
	var resync time.Duration
	var once bool
	var frac float64
	cmd := &cobra.Command{Use: "nsd", SilenceUsage: true, SilenceErrors: true, Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			*ran = fmt.Sprintf("nsd %v %v %v", resync, once, frac)
			return nil
		}}
	fl := cmd.Flags()
	fl.DurationVar(&resync, "resync-interval", 30*time.Second, "full re-read")
	fl.BoolVar(&once, "once", false, "reconcile once")
	fl.Float64Var(&frac, "max-delete-fraction", 0.2, "mass-delete guard")
	fl.StringVar(new(string), "host-id", "h", "host ID")
	return cmd
}

// Every flag-parsing and argument error cobra makes exits with ExitUsage,
// whatever its text, in both kinds of command tree; what runs exits 0.
func TestExecuteUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		tree func(*string) *cobra.Command
		args []string
		code int
		want string // stderr, or what ran
	}{
		{nsctlTree, []string{"--timeout", "abc", "status"}, ExitUsage, `error: invalid argument "abc" for "--timeout" flag`},
		{nsctlTree, []string{"status", "--host"}, ExitUsage, "error: flag needs an argument: --host"},
		{nsctlTree, []string{"-x", "status"}, ExitUsage, "error: unknown shorthand flag: 'x' in -x"},
		{nsctlTree, []string{"---x", "status"}, ExitUsage, "error: bad flag syntax: ---x"},
		{nsctlTree, []string{"status", "--bogus"}, ExitUsage, "error: unknown flag: --bogus"},
		{nsctlTree, []string{"tenant", "apply", "-f"}, ExitUsage, "error: flag needs an argument: 'f' in -f"},
		{nsctlTree, []string{"frob"}, ExitUsage, `error: unknown command "frob" for "nsctl"`},
		{nsctlTree, []string{"tenant", "frob"}, ExitUsage, `error: unknown command "frob" for "nsctl tenant"`},
		{nsctlTree, []string{"status", "extra"}, ExitUsage, `error: unknown command "extra" for "nsctl status"`},
		{nsctlTree, []string{"tenant"}, ExitUsage, "error: nsctl tenant: missing subcommand"},
		{nsctlTree, []string{"tenant", "show"}, ExitUsage, "error: accepts 1 arg(s), received 0"},
		{nsctlTree, []string{"tenant", "apply"}, ExitUsage, `error: required flag(s) "file" not set`},
		{nsctlTree, []string{"--timeout", "3s", "status", "--host", "edge1"}, ExitOK, "status edge1"},
		{nsctlTree, []string{"tenant", "show", "acme"}, ExitOK, "show acme"},
		{nsctlTree, []string{"tenant", "apply", "-f", "-"}, ExitOK, "apply -"},
		{nsdTree, []string{"--resync-interval", "abc"}, ExitUsage, `error: invalid argument "abc" for "--resync-interval" flag`},
		{nsdTree, []string{"-z"}, ExitUsage, "error: unknown shorthand flag: 'z' in -z"},
		{nsdTree, []string{"--once=maybe"}, ExitUsage, `error: invalid argument "maybe" for "--once" flag`},
		{nsdTree, []string{"--max-delete-fraction", "lots"}, ExitUsage, `error: invalid argument "lots" for "--max-delete-fraction" flag`},
		{nsdTree, []string{"--host-id"}, ExitUsage, "error: flag needs an argument: --host-id"},
		{nsdTree, []string{"---x"}, ExitUsage, "error: bad flag syntax: ---x"},
		{nsdTree, []string{"extra"}, ExitUsage, `error: unknown command "extra" for "nsd"`},
		{nsdTree, []string{"--resync-interval", "1m", "--once", "--max-delete-fraction=0.5"}, ExitOK, "nsd 1m0s true 0.5"},
	} {
		var out, errs bytes.Buffer
		var ran string
		env := Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errs}
		code := Execute(env, tc.tree(&ran), tc.args)
		got := errs.String()
		if tc.code == ExitOK {
			got = ran
		}
		if code != tc.code || !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v: exit %d, want %d; got %q, want %q", tc.args, code, tc.code, got, tc.want)
		}
	}
	// Help is no error, and the usage errors keep what they wrap.
	var out bytes.Buffer
	var ran string
	env := Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out}
	if code := Execute(env, nsctlTree(&ran), []string{"status", "--help"}); code != ExitOK || !strings.Contains(out.String(), "--host") {
		t.Errorf("status --help: exit %d\n%s", code, out.String())
	}
	cmd := nsdTree(&ran)
	Execute(env, cmd, nil)
	Execute(env, cmd, nil) // Execute twice on one tree must not wrap twice
	err := cmd.FlagErrorFunc()(cmd, source.ErrTimeout)
	if ExitCode(err) != ExitUsage || !errors.Is(err, source.ErrTimeout) || err.Error() != source.ErrTimeout.Error() {
		t.Errorf("flag error %v (%T): exit %d", err, err, ExitCode(err))
	}
	if errors.As(err, new(usageError)) && errors.As(errors.Unwrap(err), new(usageError)) {
		t.Errorf("flag error wrapped twice: %#v", err)
	}
}

// A command's own FlagErrorFunc still runs, and its error is a usage error.
func TestExecuteOwnFlagErrorFunc(t *testing.T) {
	var ran string
	root := nsctlTree(&ran)
	status, _, _ := root.Find([]string{"status"})
	status.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return fmt.Errorf("%s: %w", c.Name(), err) })
	var errs bytes.Buffer
	env := Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &errs}
	if code := Execute(env, root, []string{"status", "--host"}); code != ExitUsage || errs.String() != "error: status: flag needs an argument: --host\n" {
		t.Errorf("exit %d, stderr %q", code, errs.String())
	}
}
