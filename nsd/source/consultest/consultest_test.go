package consultest

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// An agent WithACL denies by default and accepts its bootstrap token.
func TestACLAgent(t *testing.T) {
	a := Start(t, WithACL())
	if a.Token == "" {
		t.Fatal("no bootstrap token")
	}
	a.Put(t, "nfhost/x", "1") // Client carries the bootstrap token
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = a.Addr, "", ""
	anon, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.KV().Put(&api.KVPair{Key: "nfhost/x", Value: []byte("2")}, nil)
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("anonymous write: want 403, got %v", err)
	}
}

// An agent WithTLS serves HTTPS only and wants a client certificate.
func TestTLSAgent(t *testing.T) {
	a := Start(t, WithTLS())
	if !strings.HasPrefix(a.URL, "https://") || a.TLS == nil {
		t.Fatalf("URL %q, TLS %v", a.URL, a.TLS)
	}
	a.Put(t, "nfhost/x", "1")
	// The port speaks TLS only: plain HTTP gets Go's 400 at best.
	if resp, err := http.Get("http://" + a.Addr + "/v1/status/leader"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP answered 200")
		}
	}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Scheme = a.Addr, "https"
	cfg.TLSConfig = api.TLSConfig{CAFile: a.TLS.CAFile}
	noCert, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := noCert.KV().Get("nfhost/x", nil); err == nil {
		t.Fatal("request without a client certificate succeeded")
	}
}
