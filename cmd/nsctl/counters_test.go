package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/nsd/source"
)

// fw stats asks every host for fresh counters and waits for the answers:
// a host that answers (as nsd does: CountersAsked = the request's Asked)
// is shown without a note; one that does not is named after --wait. The
// tenant's own token may write its request, no other tenant's.
func TestFreshCountersOnRequest(t *testing.T) {
	l := newACLLab(t)
	l.must(l.a.Token, "acl", "init")
	tok := secret(t, l.must(l.a.Token, "tenant", "token", "create", "acme"))
	kv := l.a.Client.KV()
	put := func(host string, st source.Status) {
		t.Helper()
		b, _ := json.Marshal(st)
		if _, err := kv.Put(&api.KVPair{Key: "nfhost/tenant-status/acme/" + host, Value: b}, nil); err != nil {
			t.Fatal(err)
		}
	}
	old := map[string]source.RuleCounter{"ssh": {Packets: 1, Bytes: 60}}
	put("edge1", source.Status{Host: "edge1", Tenant: "acme", State: "applied", Firewall: old})
	put("edge2", source.Status{Host: "edge2", Tenant: "acme", State: "applied", Firewall: old})

	// edge1 answers the request; edge2 never does.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		var idx uint64
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, meta, err := kv.Get("nfhost/control/watch/acme", &api.QueryOptions{WaitIndex: idx, WaitTime: time.Second})
			if err != nil {
				return
			}
			idx = meta.LastIndex
			var req source.CounterRequest
			if p == nil || json.Unmarshal(p.Value, &req) != nil {
				continue
			}
			put("edge1", source.Status{Host: "edge1", Tenant: "acme", State: "applied", CountersAsked: req.Asked,
				Firewall: map[string]source.RuleCounter{"ssh": {Packets: 7, Bytes: 420}}})
		}
	}()
	out, code := l.ctl(tok, "fw", "stats", "acme", "--wait", "2s")
	if code != ExitOK {
		t.Fatalf("fw stats: exit %d\n%s", code, out)
	}
	for _, want := range []string{"edge1  ssh   7", "edge2  ssh   1", "no fresh counters from edge2 within 2s"} {
		if !strings.Contains(out, want) {
			t.Errorf("fw stats lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "from edge1") || strings.Contains(out, "could not ask") {
		t.Errorf("edge1 answered and the request was allowed:\n%s", out)
	}
	var req source.CounterRequest
	p, _, err := kv.Get("nfhost/control/watch/acme", nil)
	if err != nil || p == nil || json.Unmarshal(p.Value, &req) != nil || req.Until.Sub(req.Asked) != counterRequestTTL {
		t.Fatalf("the request: %v %v %+v", p, err, req)
	}

	// Another tenant's token may not ask for acme's counters: the last
	// published ones, and why.
	other := secret(t, l.must(l.a.Token, "tenant", "token", "create", "beta"))
	out, _ = l.ctl(other, "fw", "stats", "acme", "--wait", "1s")
	if !strings.Contains(out, "could not ask the hosts for fresh ones") || !strings.Contains(out, "nfhost-tenant-acme") {
		t.Errorf("beta asking for acme's counters:\n%s", out)
	}
}
