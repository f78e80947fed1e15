package source_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// PutTenant writes every key or none: a lost check-and-set on one key
// leaves the others as they were, in Consul and in a directory.
func TestPutTenantAllOrNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	stores := map[string]source.Store{"dir": source.NewDir(dir, t.TempDir())}
	if !testing.Short() {
		stores["consul"] = plainStore(t, consultest.Start(t))
	}
	for name, st := range stores {
		if err := st.Put(ctx, "acme", "network", []byte(`{"prefixes":[]}`), 0); err != nil {
			t.Fatal(err)
		}
		snap, err := st.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		idx := snap.Tenants["acme"]["network"].ModifyIndex
		// The firewall must not exist (CAS 0), and does not: but the
		// network's index is stale.
		err = st.PutTenant(ctx, "acme", []source.KeyWrite{{Key: "firewall", Value: []byte(`{"rules":[]}`)}, {Key: "network", Value: []byte(`{"prefixes":["203.0.113.0/24"]}`), CAS: idx + 1}})
		if !errors.Is(err, source.ErrConflict) {
			t.Fatalf("%s: a stale check-and-set: %v, want a conflict", name, err)
		}
		snap, _ = st.Read(ctx)
		if _, ok := snap.Tenants["acme"]["firewall"]; ok || string(snap.Tenants["acme"]["network"].Value) != `{"prefixes":[]}` {
			t.Fatalf("%s: a refused PutTenant wrote: %v", name, snap.Tenants["acme"])
		}
		err = st.PutTenant(ctx, "acme", []source.KeyWrite{{Key: "firewall", Value: []byte(`{"rules":[]}`)}, {Key: "network", Value: []byte(`{"prefixes":["203.0.113.0/24"]}`), CAS: idx}})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		snap, _ = st.Read(ctx)
		if len(snap.Tenants["acme"]) != 2 || string(snap.Tenants["acme"]["network"].Value) != `{"prefixes":["203.0.113.0/24"]}` {
			t.Fatalf("%s: after PutTenant: %v", name, snap.Tenants["acme"])
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "acme", "firewall.json")); err != nil {
		t.Fatal(err)
	}
}
