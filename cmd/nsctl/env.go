package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/cliutil"
	"github.com/nfhost/nfhost/nsd/source"
)

// ctl is what every nsctl command runs with: the process environment and
// the store the global flags select.
type ctl struct {
	cliutil.Env
	store cliutil.StoreFlags
}

// addStoreFlags registers the global flags that select the store.
func (c *ctl) addStoreFlags(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&c.store.Source, "source", "consul", "configuration store: consul or dir")
	c.store.AddConsulFlags(pf)
	pf.StringVar(&c.store.KVPrefix, "kv-prefix", "nfhost", "Consul KV prefix")
	pf.StringVar(&c.store.ConfigDir, "config-dir", "/etc/nfhost/tenants", "directory store: tenant configs")
	pf.StringVar(&c.store.StateDir, "state-dir", "/var/lib/nfhost", "directory store: nsd status")
	pf.DurationVar(&c.store.Timeout, "timeout", source.DefaultConsulTimeout, "give up on a Consul request that has not been answered after this long")
}

func (c *ctl) open() (source.Store, error) { return c.store.Open() }

// read opens the store and reads one snapshot.
func (c *ctl) read() (source.Store, source.Snapshot, error) {
	st, err := c.open()
	if err != nil {
		return nil, source.Snapshot{}, err
	}
	snap, err := st.Read(c.Ctx)
	return st, snap, err
}

// status opens the store and lists status documents (of one host or all).
func (c *ctl) status(host string) (map[string]map[string]json.RawMessage, error) {
	st, err := c.open()
	if err != nil {
		return nil, err
	}
	return st.ListStatus(c.Ctx, host)
}

// readInput reads a document given with -f; "-" is stdin.
func (c *ctl) readInput(file string) ([]byte, error) {
	var b []byte
	var err error
	if file == "-" {
		b, err = io.ReadAll(c.Stdin)
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return b, nil
}

// missingSubcommand is the RunE of a command that only groups others:
// alone it prints its help and fails with a usage error.
func missingSubcommand(name string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		cmd.Help()
		return cliutil.Usagef("nsctl %s: missing subcommand", name)
	}
}
