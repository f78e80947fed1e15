package nsd

import (
	"fmt"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/synproxy"
)

// Synproxy is the tenant-namespace half of SYN-cookie protection as the
// daemon uses it (synproxy.NS).
type Synproxy interface {
	Apply(namespace string, s *synproxy.Spec) ([]string, error)
}

// applySynproxy keeps the tenant's synproxy table equal to what its TCP
// protection (its own, completed from dos/global's, or dos/global's with
// all_tenants) needs. A protection that does not resolve writes nothing:
// the DoS layer reports the error when it places the document.
func (s *dosSub) applySynproxy(id string, a *applied, full bool) ([]string, error) {
	if s.proxy == nil || a.spec.Namespace == "" {
		return nil, nil
	}
	p, err := dos.ResolveTCP(s.d.dos.global, a.dos, id)
	if err != nil {
		return nil, nil
	}
	want := synproxy.ForTenant(p, a.prefixes)
	key := fmt.Sprintf("%s %+v", a.spec.Namespace, want)
	if s.proxied == nil {
		s.proxied = map[string]string{}
	}
	last, seen := s.proxied[id]
	if seen && last == key && !full {
		return nil, nil
	}
	ch, err := s.proxy.Apply(a.spec.Namespace, want)
	if err != nil {
		delete(s.proxied, id)
		return ch, fmt.Errorf("apply synproxy: %w", err)
	}
	s.proxied[id] = key
	return ch, nil
}

// syncSynproxies follows dos/global: a new global default changes the
// protection of tenants no pass applied, and their synproxy tables must
// follow within the pass, not at the next resync. Unchanged tenants cost a
// map lookup.
func (s *dosSub) syncSynproxies() {
	if s.proxy == nil {
		return
	}
	for id, a := range s.d.applied {
		ch, err := s.applySynproxy(id, a, false)
		if err != nil {
			s.d.log.Error("apply synproxy", "tenant", id, "err", err)
		}
		s.d.recordChanges(s.d.log.With("tenant", id), s.Name(), ch)
	}
}
