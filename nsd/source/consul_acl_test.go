package source_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/internal/consulacl"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/nsd/source/consultest"
)

// policyToken creates p in a and returns a new token linked to it.
func policyToken(t *testing.T, a *consultest.Agent, p consulacl.Policy) *api.ACLToken {
	t.Helper()
	if _, _, err := a.Client.ACL().PolicyCreate(&api.ACLPolicy{Name: p.Name, Description: p.Description, Rules: p.Rules}, nil); err != nil &&
		!strings.Contains(err.Error(), "already exists") {
		t.Fatalf("create policy %s: %v", p.Name, err)
	}
	tok, _, err := a.Client.ACL().TokenCreate(&api.ACLToken{Description: p.Description, Policies: []*api.ACLTokenPolicyLink{{Name: p.Name}}}, nil)
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	return tok
}

func storeWith(t *testing.T, a *consultest.Agent, token, tokenFile string) *source.Consul {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = a.Addr, token, tokenFile
	st, err := source.NewConsul(cfg, "nfhost")
	if err != nil {
		t.Fatal(err)
	}
	st.HealthInterval = 100 * time.Millisecond
	return st
}

// A tenant's token reads its own keys, writes its firewall, and every
// refusal is ErrForbidden naming the key and the policy that allows it.
func TestConsulTenantTokenRefusals(t *testing.T) {
	a := consultest.Start(t, consultest.WithACL())
	ctx := context.Background()
	for _, k := range []string{"tenants/acme/network", "tenants/beta/network", "tenant-status/acme/edge1", "tenant-status/beta/edge1"} {
		a.Put(t, "nfhost/"+k, `{"prefixes": []}`)
	}
	tok := policyToken(t, a, consulacl.Tenant("nfhost", "acme"))
	st := storeWith(t, a, tok.SecretID, "")

	snap, err := st.Read(ctx)
	if err != nil || !snap.Hidden || len(snap.Tenants) != 1 || snap.Tenants["acme"] == nil {
		t.Fatalf("read with acme's token: %+v %v", snap, err)
	}
	if err := st.Put(ctx, "acme", "firewall", []byte(`{"rules": []}`), 0); err != nil {
		t.Fatalf("acme writes its firewall: %v", err)
	}
	if s, err := st.ListTenantStatus(ctx, "acme"); err != nil || s["edge1"] == nil {
		t.Fatalf("acme reads its status: %v %v", s, err)
	}
	for _, c := range []struct {
		what string
		err  error
		want string
	}{
		{"beta's firewall", st.Put(ctx, "beta", "firewall", []byte(`{}`), 0), "write nfhost/tenants/beta/firewall: refused by Consul ACLs: the token lacks permission"},
		{"own network", st.Put(ctx, "acme", "network", []byte(`{}`), 0), "allowed by policy nfhost-operator (the operator's token)"},
		{"dos/global", st.PutDoSGlobal(ctx, []byte(`{}`), 0), "write nfhost/dos/global"},
		{"control", st.PutControl(ctx, "confirm-deletes/edge1", []byte(`x`)), "write nfhost/control/confirm-deletes/edge1"},
		{"beta's status", func() error { _, err := st.ListTenantStatus(ctx, "beta"); return err }(), "allowed by policy nfhost-tenant-beta (tenant beta's token), nfhost-nsd (nsd's token) or nfhost-operator"},
	} {
		if !errors.Is(c.err, source.ErrForbidden) || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: want ErrForbidden with %q, got %v", c.what, c.want, c.err)
		}
	}
	if err := st.Put(ctx, "beta", "firewall", []byte(`{}`), 0); !strings.Contains(err.Error(), "nfhost-tenant-beta (tenant beta's token) or nfhost-operator") {
		t.Errorf("beta's firewall: %v", err)
	}
}

// A store with a token file whose token is revoked reports the refusal to
// its health callback (and never sends a snapshot from it); a new token
// in the file is picked up without a restart.
func TestConsulTokenFileRevokedAndReplaced(t *testing.T) {
	a := consultest.Start(t, consultest.WithACL())
	a.Put(t, "nfhost/tenants/acme/network", `{"prefixes": []}`)
	tok := policyToken(t, a, consulacl.NSD("nfhost"))
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte(tok.SecretID+"\n"), 0o600)
	st := storeWith(t, a, "", file)
	st.WaitTime = 500 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := make(chan source.Snapshot, 10)
	health := make(chan error, 100)
	go st.Watch(ctx, snaps, func(err error) {
		select {
		case health <- err:
		default:
		}
	})
	select {
	case <-snaps:
	case <-time.After(10 * time.Second):
		t.Fatal("no first snapshot")
	}
	if _, err := a.Client.ACL().TokenDelete(tok.AccessorID, nil); err != nil {
		t.Fatal(err)
	}
	var refused error
	for deadline := time.After(10 * time.Second); refused == nil; {
		select {
		case err := <-health:
			if errors.Is(err, source.ErrForbidden) {
				refused = err
			}
		case <-deadline:
			t.Fatal("revoked token not reported")
		}
	}
	if !strings.Contains(refused.Error(), "the token was refused") {
		t.Errorf("refusal does not say the token was refused: %v", refused)
	}
	a.Put(t, "nfhost/tenants/beta/network", `{"prefixes": []}`) // written while nsd may not read
	tok2 := policyToken(t, a, consulacl.NSD("nfhost"))
	os.WriteFile(file, []byte(tok2.SecretID), 0o600)
	for deadline := time.After(15 * time.Second); ; {
		select {
		case s := <-snaps:
			if s.Tenants["beta"] != nil {
				return
			}
		case <-deadline:
			t.Fatal("no snapshot with beta after the new token was written")
		}
	}
}

// The indexer and a follower with nsd's token under default-deny ACLs,
// the indexer following tenants/ through sub-prefixes (its keys-only
// query of "tenants" without the slash, the keys checks and get-tree
// transactions are all allowed by nsd's policy).
func TestShardedIndexerWithNSDToken(t *testing.T) {
	a := consultest.Start(t, consultest.WithACL())
	for i := 0; i < 20; i++ {
		a.Put(t, fmt.Sprintf("nfhost/tenants/t%d/network", i), `{"prefixes": []}`)
	}
	tok := policyToken(t, a, consulacl.NSD("nfhost"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	idx := storeWith(t, a, tok.SecretID, "")
	idx.ShardTenants, idx.WaitTime = 4, time.Second
	errs := make(chan error, 64)
	go idx.RunIndexer(ctx, "acl", slog.New(slog.DiscardHandler), func(s source.IndexerState) {
		if s.Err != nil {
			select {
			case errs <- s.Err:
			default:
			}
		}
	})
	st := storeWith(t, a, tok.SecretID, "")
	st.WaitTime = time.Second
	snaps := make(chan source.Snapshot, 64)
	go st.Watch(ctx, snaps, func(error) {})
	deadline := time.After(30 * time.Second)
	for !st.Following() {
		select {
		case <-snaps:
		case <-time.After(100 * time.Millisecond):
		case err := <-errs:
			t.Fatalf("indexer: %v", err)
		case <-deadline:
			t.Fatal("the follower does not follow the journal")
		}
	}
	for v := 1; v <= 2; v++ {
		a.Put(t, "nfhost/tenants/t13/network", fmt.Sprintf(`{"prefixes": [], "v": %d}`, v))
		pair, _, _ := a.Client.KV().Get("nfhost/tenants/t13/network", nil)
		for done := false; !done; {
			select {
			case s := <-snaps:
				done = s.Tenants["t13"]["network"].ModifyIndex == pair.ModifyIndex
			case err := <-errs:
				t.Fatalf("indexer: %v", err)
			case <-deadline:
				t.Fatal("t13's change did not arrive")
			}
		}
	}
}
