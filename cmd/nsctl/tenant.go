package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/nsd/plan"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/tunnels/tunspec"
)

// tenantFile is the document `nsctl tenant apply -f` and `nsctl validate -f`
// read: a tenant ID and the keys to write.
type tenantFile struct {
	ID       string          `json:"id"`
	Network  json.RawMessage `json:"network"`
	Firewall json.RawMessage `json:"firewall,omitempty"`
	DoS      json.RawMessage `json:"dos,omitempty"`
}

func (f tenantFile) keys() map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for k, v := range map[string]json.RawMessage{doc.KeyNetwork: f.Network, doc.KeyFirewall: f.Firewall, doc.KeyDoS: f.DoS} {
		if len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// readTenantFile parses and validates a tenant file ("-" is stdin): the
// network, and the firewall and DoS documents as nsd would (the DoS
// document's rate limits and TCP protection inside the network's
// prefixes), so that a file validate calls valid is one apply writes and
// nsd takes.
func (c *ctl) readTenantFile(path string) (tenantFile, config.ValidNetwork, error) {
	var f tenantFile
	b, err := c.readInput(path)
	if err != nil {
		return f, config.ValidNetwork{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return f, config.ValidNetwork{}, &doc.FieldError{Msg: fmt.Sprintf("%s: invalid tenant file: %v", path, err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return f, config.ValidNetwork{}, &doc.FieldError{Msg: fmt.Sprintf("%s: invalid tenant file: trailing data after the document (one tenant per file)", path)}
	}
	if err := doc.ValidateTenantID(f.ID); err != nil {
		return f, config.ValidNetwork{}, err
	}
	if len(f.Network) == 0 {
		return f, config.ValidNetwork{}, &doc.FieldError{Tenant: f.ID, Key: doc.KeyNetwork, Msg: "missing: every tenant needs a network key"}
	}
	vn, err := config.ParseNetwork(f.ID, f.Network)
	if err != nil {
		return f, vn, err
	}
	if len(f.Firewall) > 0 {
		// Checked as nsd would with a site, a region and geo databases
		// (as fw validate does).
		if _, err := fwspec.ParseEnv(f.ID, f.Firewall, fwspec.OfflineEnv()); err != nil {
			return f, vn, err
		}
	}
	if len(f.DoS) > 0 {
		s, err := dosspec.Parse(f.ID, f.DoS)
		if err != nil {
			return f, vn, err
		}
		if err := s.CheckPrefixes(f.ID, vn.Prefixes); err != nil {
			return f, vn, err
		}
	}
	return f, vn, nil
}

func tenantCommand(c *ctl) *cobra.Command {
	cmd := &cobra.Command{Use: "tenant", Short: "create, list, show and delete tenants", Args: cobra.NoArgs,
		RunE: missingSubcommand("tenant")}
	cmd.AddCommand(tenantApplyCommand(c), tenantListCommand(c), tenantShowCommand(c), tenantDeleteCommand(c), tenantTokenCommand(c))
	return cmd
}

func tenantApplyCommand(c *ctl) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "validate a tenant file and write its keys with check-and-set",
		Long: `apply reads a tenant file {"id": ..., "network": {...}, "firewall": ..., "dos": ...},
validates every part of it as nsd would (including prefix overlaps with other
tenants, and the DoS document against the network's prefixes), then writes its keys
in one transaction, each with check-and-set against the version it read: a concurrent
edit of any makes it fail with exit code 4 and write none. A file too large for one
Consul transaction (limits.txn_max_req_len) is written key by key, largest first,
with a warning.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, vn, err := c.readTenantFile(file)
			if err != nil {
				return err
			}
			st, snap, err := c.read()
			if err != nil {
				return err
			}
			if err := checkOthers(f.ID, vn, snap); err != nil {
				return err
			}
			cur := snap.Tenants[f.ID]
			keys := f.keys()
			var writes []source.KeyWrite
			for _, k := range slices.Sorted(maps.Keys(keys)) {
				v := compact(keys[k])
				if e, ok := cur[k]; ok && bytes.Equal(compact(e.Value), v) {
					fmt.Fprintf(c.Stdout, "tenants/%s/%s unchanged\n", f.ID, k)
					continue
				}
				writes = append(writes, source.KeyWrite{Key: k, Value: v, CAS: cur[k].ModifyIndex})
			}
			if len(writes) == 0 {
				return nil
			}
			err = st.PutTenant(c.Ctx, f.ID, writes)
			if errors.Is(err, source.ErrTxnTooLarge) && len(writes) > 1 {
				// Too large for one transaction, though each key may
				// fit: key by key, the largest first (the one a size
				// limit refuses), so that a refusal writes nothing.
				fmt.Fprintf(c.Stderr, "warning: %v: writing key by key, largest first; a failure part way leaves the keys before it in place\n", err)
				slices.SortStableFunc(writes, func(a, b source.KeyWrite) int { return len(b.Value) - len(a.Value) })
				for _, w := range writes {
					if err := st.Put(c.Ctx, f.ID, w.Key, w.Value, w.CAS); err != nil {
						return err
					}
					fmt.Fprintf(c.Stdout, "tenants/%s/%s written\n", f.ID, w.Key)
				}
				return nil
			}
			if err != nil {
				return err
			}
			for _, w := range writes {
				fmt.Fprintf(c.Stdout, "tenants/%s/%s written\n", f.ID, w.Key)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "tenant file (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

// checkOthers checks tenant's network against the other tenants' in snap:
// no prefix may overlap, no tunnel may share endpoints. Other tenants'
// invalid networks are nsd's to report and hold nothing here.
func checkOthers(tenant string, vn config.ValidNetwork, snap source.Snapshot) error {
	holdings := map[string][]netip.Prefix{}
	pairs := map[string][]tunspec.ValidTunnel{}
	for id, keys := range snap.Tenants {
		if n, ok := keys[doc.KeyNetwork]; ok && id != tenant {
			if v, err := config.ParseNetwork(id, n.Value); err == nil {
				holdings[id], pairs[id] = v.Prefixes, v.Tunnels
			}
		}
	}
	if err := plan.CheckOverlap(tenant, vn.Prefixes, holdings); err != nil {
		return err
	}
	return plan.CheckTunnelPairs(tenant, vn.Tunnels, pairs)
}

func tenantListCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "list tenants and their prefixes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, snap, err := c.read()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tKEYS\tPREFIXES")
			for _, id := range slices.Sorted(maps.Keys(snap.Tenants)) {
				var keys []string
				for k := range snap.Tenants[id] {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				fmt.Fprintf(tw, "%s\t%s\t%s\n", id, strings.Join(keys, ","), prefixesOf(id, snap.Tenants[id]))
			}
			for _, p := range snap.Problems {
				fmt.Fprintf(c.Stderr, "warning: %s\n", p)
			}
			return tw.Flush()
		},
	}
}

// prefixesOf is the PREFIXES column of tenant list: "-" without a network
// key, INVALID for one that does not parse.
func prefixesOf(id string, keys map[string]source.Entry) string {
	n, ok := keys[doc.KeyNetwork]
	if !ok {
		return "-"
	}
	v, err := config.ParseNetwork(id, n.Value)
	if err != nil {
		return "INVALID"
	}
	var ps []string
	for _, p := range v.Prefixes {
		ps = append(ps, p.String())
	}
	return strings.Join(ps, ",")
}

func tenantShowCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "show ID", Short: "print a tenant's keys as a tenant file", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, snap, err := c.read()
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
			fmt.Fprintln(c.Stdout, string(b))
			return nil
		},
	}
}

func tenantDeleteCommand(c *ctl) *cobra.Command {
	return &cobra.Command{
		Use: "delete ID", Short: "delete every key of a tenant (also of an invalid tenant ID that nsd reports as a problem)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Invalid IDs are accepted on purpose: the keys nsd reports
			// as problems must be removable with nsctl too.
			if args[0] == "" || args[0] == "." || args[0] == ".." || strings.Contains(args[0], "/") {
				return cliutil.Usagef("tenant delete: want a tenant ID without '/', got %q", args[0])
			}
			st, err := c.open()
			if err != nil {
				return err
			}
			if err := st.DeleteTenant(c.Ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "tenant %s deleted\n", args[0])
			return nil
		},
	}
}

func validateCommand(c *ctl) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use: "validate -f FILE", Short: "validate a tenant file without writing it (exit 3 if invalid)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, _, err := c.readTenantFile(file)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.Stdout, "tenant %s: valid\n", f.ID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "tenant file (- for stdin)")
	cmd.MarkFlagRequired("file")
	return cmd
}

// compact is b without insignificant whitespace, or b itself when it is
// not JSON: apply compares documents by it.
func compact(b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}
