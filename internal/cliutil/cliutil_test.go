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
