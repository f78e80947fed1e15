package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/nsd/plan"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// TenantFile is the document `nsctl tenant apply -f` and `nsctl validate -f`
// read: a tenant ID and the keys to write.
type TenantFile struct {
	ID       string          `json:"id"`
	Network  json.RawMessage `json:"network"`
	Firewall json.RawMessage `json:"firewall,omitempty"`
	DoS      json.RawMessage `json:"dos,omitempty"`
}

func (f TenantFile) keys() map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range map[string]json.RawMessage{doc.KeyNetwork: f.Network, doc.KeyFirewall: f.Firewall, doc.KeyDoS: f.DoS} {
		if len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// readTenantFile parses and validates a tenant file ("-" is stdin).
func readTenantFile(path string) (TenantFile, config.ValidNetwork, error) {
	var f TenantFile
	var b []byte
	var err error
	if path == "-" {
		b, err = readAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return f, config.ValidNetwork{}, fmt.Errorf("read %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, config.ValidNetwork{}, &doc.FieldError{Msg: fmt.Sprintf("%s: invalid tenant file: %v", path, err)}
	}
	if err := doc.ValidateTenantID(f.ID); err != nil {
		return f, config.ValidNetwork{}, err
	}
	if len(f.Network) == 0 {
		return f, config.ValidNetwork{}, &doc.FieldError{Tenant: f.ID, Key: doc.KeyNetwork, Msg: "missing: every tenant needs a network key"}
	}
	vn, err := config.ParseNetwork(f.ID, f.Network)
	return f, vn, err
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}

// Nsctl runs the admin and tenant CLI and returns the exit code.
func Nsctl(env Env, args []string) int {
	var sf storeFlags
	root := &cobra.Command{
		Use:   "nsctl",
		Short: "nfhost admin and tenant CLI",
		Long: `nsctl edits tenant configs in Consul KV (or the directory source) and shows what
each edge server has applied.

Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid config, 4 check-and-set conflict
(read again and retry), 5 not found.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&sf.source, "source", "consul", "configuration store: consul or dir")
	pf.StringVar(&sf.consulAddr, "consul-addr", "", "Consul HTTP address (default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500)")
	pf.StringVar(&sf.kvPrefix, "kv-prefix", "nfhost", "Consul KV prefix")
	pf.StringVar(&sf.configDir, "config-dir", "/etc/nfhost/tenants", "directory store: tenant configs")
	pf.StringVar(&sf.stateDir, "state-dir", "/var/lib/nfhost", "directory store: nsd status")
	pf.DurationVar(&sf.timeout, "timeout", source.DefaultConsulTimeout, "give up on a Consul request that has not been answered after this long")

	out := env.Stdout
	tenant := &cobra.Command{Use: "tenant", Short: "create, list, show and delete tenants", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.Help()
			return usageError("nsctl tenant: missing subcommand")
		}}

	var file string
	apply := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "validate a tenant file and write its keys with check-and-set",
		Long: `apply reads a tenant file {"id": ..., "network": {...}, "firewall": ..., "dos": ...},
validates it (including prefix overlaps with other tenants), then writes each key
with check-and-set against the version it read: a concurrent edit makes it fail
with exit code 4 instead of being overwritten.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, vn, err := readTenantFile(file)
			if err != nil {
				return err
			}
			st, snap, err := sf.read(env)
			if err != nil {
				return err
			}
			holdings := map[string][]netip.Prefix{}
			pairs := map[string][]tunspec.ValidTunnel{}
			for id, keys := range snap.Tenants {
				if n, ok := keys[doc.KeyNetwork]; ok && id != f.ID {
					if v, err := config.ParseNetwork(id, n.Value); err == nil {
						holdings[id], pairs[id] = v.Prefixes, v.Tunnels
					}
				}
			}
			if err := plan.CheckOverlap(f.ID, vn.Prefixes, holdings); err != nil {
				return err
			}
			if err := plan.CheckTunnelPairs(f.ID, vn.Tunnels, pairs); err != nil {
				return err
			}
			cur := snap.Tenants[f.ID]
			keys := f.keys()
			names := slices.Sorted(maps.Keys(keys))
			for _, k := range names {
				v := compact(keys[k])
				if e, ok := cur[k]; ok && bytes.Equal(compact(e.Value), v) {
					fmt.Fprintf(out, "tenants/%s/%s unchanged\n", f.ID, k)
					continue
				}
				if err := st.Put(env.Ctx, f.ID, k, v, cur[k].ModifyIndex); err != nil {
					return err
				}
				fmt.Fprintf(out, "tenants/%s/%s written\n", f.ID, k)
			}
			return nil
		},
	}
	apply.Flags().StringVarP(&file, "file", "f", "", "tenant file (- for stdin)")
	apply.MarkFlagRequired("file")

	list := &cobra.Command{
		Use: "list", Short: "list tenants and their prefixes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, snap, err := sf.read(env)
			if err != nil {
				return err
			}
			ids := slices.Sorted(maps.Keys(snap.Tenants))
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tKEYS\tPREFIXES")
			for _, id := range ids {
				var keys []string
				for k := range snap.Tenants[id] {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				prefixes := "-"
				if n, ok := snap.Tenants[id][doc.KeyNetwork]; ok {
					if v, err := config.ParseNetwork(id, n.Value); err == nil {
						var ps []string
						for _, p := range v.Prefixes {
							ps = append(ps, p.String())
						}
						prefixes = strings.Join(ps, ",")
					} else {
						prefixes = "INVALID"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", id, strings.Join(keys, ","), prefixes)
			}
			for _, p := range snap.Problems {
				fmt.Fprintf(env.Stderr, "warning: %s\n", p)
			}
			return tw.Flush()
		},
	}

	show := &cobra.Command{
		Use: "show ID", Short: "print a tenant's keys as a tenant file", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, snap, err := sf.read(env)
			if err != nil {
				return err
			}
			keys, ok := snap.Tenants[args[0]]
			if !ok {
				return fmt.Errorf("tenant %s: %w", args[0], source.ErrNotFound)
			}
			doc := map[string]any{"id": args[0]}
			for k, e := range keys {
				switch {
				case json.Valid(e.Value):
					doc[k] = json.RawMessage(e.Value)
				case utf8.Valid(e.Value):
					doc[k] = string(e.Value)
				default: // not text: shown exactly, never mangled
					doc[k] = map[string]string{"base64": base64.StdEncoding.EncodeToString(e.Value)}
				}
			}
			b, _ := json.MarshalIndent(doc, "", "  ")
			fmt.Fprintln(out, string(b))
			return nil
		},
	}

	del := &cobra.Command{
		Use: "delete ID", Short: "delete every key of a tenant (also of an invalid tenant ID that nsd reports as a problem)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Invalid IDs are accepted on purpose: the keys nsd reports
			// as problems must be removable with nsctl too.
			if args[0] == "" || args[0] == "." || args[0] == ".." || strings.Contains(args[0], "/") {
				return usageError("tenant delete: want a tenant ID without '/', got %q", args[0])
			}
			st, err := sf.open(env)
			if err != nil {
				return err
			}
			if err := st.DeleteTenant(env.Ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(out, "tenant %s deleted\n", args[0])
			return nil
		},
	}
	tenant.AddCommand(apply, list, show, del)

	var vfile string
	validate := &cobra.Command{
		Use: "validate -f FILE", Short: "validate a tenant file without writing it (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, _, err := readTenantFile(vfile)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "tenant %s: valid\n", f.ID)
			return nil
		},
	}
	validate.Flags().StringVarP(&vfile, "file", "f", "", "tenant file (- for stdin)")
	validate.MarkFlagRequired("file")

	var host string
	status := &cobra.Command{
		Use: "status [--host H]", Short: "table of host × tenant: applied index, state, error", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			all, err := sf.status(env, host)
			if err != nil {
				return err
			}
			return printStatus(out, all)
		},
	}
	status.Flags().StringVar(&host, "host", "", "only this host")

	var chost, token string
	confirm := &cobra.Command{
		Use:   "confirm-deletes --host H --token T",
		Short: "let a host's held mass deletion through (token from `nsctl status` or nsd's log)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sf.open(env)
			if err != nil {
				return err
			}
			if err := st.PutControl(env.Ctx, source.ConfirmKey(chost), []byte(token)); err != nil {
				return err
			}
			fmt.Fprintf(out, "confirmed deletes on %s (token %s)\n", chost, token)
			return nil
		},
	}
	confirm.Flags().StringVar(&chost, "host", "", "host ID")
	confirm.Flags().StringVar(&token, "token", "", "confirm token the host reported")
	confirm.MarkFlagRequired("host")
	confirm.MarkFlagRequired("token")

	root.AddCommand(tenant, validate, status, confirm, fwCommand(env, &sf), dosCommand(env, &sf), tunnelsCommand(env, &sf))
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	return exitCode(env, root.ExecuteContext(env.Ctx))
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

func printStatus(out interface{ Write([]byte) (int, error) }, all map[string]map[string]json.RawMessage) error {
	hosts := slices.Sorted(maps.Keys(all))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTENANT\tSTATE\tINDEX\tAPPLIED\tERROR")
	var notes []string
	for _, h := range hosts {
		names := slices.Sorted(maps.Keys(all[h]))
		for _, n := range names {
			if n == source.HostStatusName {
				var hs source.HostStatus
				if json.Unmarshal(all[h][n], &hs) != nil {
					continue
				}
				if len(hs.HeldDeletes) > 0 {
					notes = append(notes, fmt.Sprintf("%s: HOLDING deletion of %d tenants (%s); confirm with: nsctl confirm-deletes --host %s --token %s",
						h, len(hs.HeldDeletes), strings.Join(hs.HeldDeletes, ","), h, hs.ConfirmToken))
				}
				if hs.DoSGlobalError != "" {
					notes = append(notes, fmt.Sprintf("%s: %s (in force: dos/global index %d)", h, hs.DoSGlobalError, hs.DoSGlobalIndex))
				}
				continue
			}
			var s source.Status
			if err := json.Unmarshal(all[h][n], &s); err != nil {
				continue
			}
			at := "-" // never applied
			if !s.AppliedAt.IsZero() {
				at = s.AppliedAt.Format("2006-01-02T15:04:05Z")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", h, n, s.State, s.AppliedIndex, at, s.Error)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	return nil
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
