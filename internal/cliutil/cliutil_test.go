package cliutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
		{errors.New(`unknown flag: --bogus`), ExitUsage},
		{errors.New(`unknown command "frob" for "nsctl"`), ExitUsage},
		{errors.New("accepts 1 arg(s), received 0"), ExitUsage},
		{errors.New(`required flag(s) "file" not set`), ExitUsage},
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
