package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/config"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// Doc is one stored document of a tenant and the index of its last change.
type Doc struct {
	Value []byte
	Index uint64
}

// Part is one subsystem's share of a tenant's plan: the spec its document
// became, or the reason the document was refused. Present is false when the
// tenant has no such document; Spec is then the zero value (nil: nothing to
// enforce). A refused document has Err set and a zero Spec: the daemon keeps
// the last good spec in force and reports Err.
type Part[S any] struct {
	Spec    S
	Index   uint64
	Present bool
	Err     error
}

// TenantPlan is one tenant's desired state for every subsystem. nsd builds
// one per tenant and pass (ForTenant) and its subsystems apply the parts.
type TenantPlan struct {
	ID string
	// Network is the validated network document; NetworkErr says why it
	// was refused (invalid, or a prefix another tenant keeps).
	Network      config.ValidNetwork
	NetworkIndex uint64
	NetworkErr   error
	// Routing is derived from Network, the slot and the options; valid
	// only when NetworkErr is nil.
	Routing  rtspec.TenantSpec
	Firewall Part[*fwspec.Spec]
	DoS      Part[*dosspec.Spec]
}

// Network validates a tenant's network document (missing is an error: every
// tenant needs one).
func Network(id string, d Doc, ok bool) (config.ValidNetwork, error) {
	if !ok {
		return config.ValidNetwork{}, &doc.FieldError{Tenant: id, Key: doc.KeyNetwork, Msg: "missing: every tenant needs a network key"}
	}
	return config.ParseNetwork(id, d.Value)
}

// ForTenant plans one tenant from its documents. network and netErr are the
// pass's verdict on the network document (Network, then the prefix
// assignment of the whole pass); slot is the tenant's routing slot.
func ForTenant(opts Options, id string, docs map[string]Doc, network config.ValidNetwork, netErr error, slot uint16) TenantPlan {
	p := TenantPlan{ID: id, Network: network, NetworkIndex: docs[doc.KeyNetwork].Index, NetworkErr: netErr}
	if netErr == nil {
		p.Routing = rtspec.NewTenantSpec(id, slot, opts.NSPrefix, network.Prefixes)
	}
	var fwPrev *Part[*fwspec.Spec]
	var dosPrev *Part[*dosspec.Spec]
	if r := opts.Reuse; r != nil && r.ID == id {
		fwPrev, dosPrev = &r.Firewall, &r.DoS
	}
	p.Firewall = part(docs, doc.KeyFirewall, fwPrev, func(b []byte) (*fwspec.Spec, error) {
		s, err := fwspec.ParseEnv(id, b, opts.Firewall)
		return &s, err
	})
	p.DoS = part(docs, doc.KeyDoS, dosPrev, func(b []byte) (*dosspec.Spec, error) {
		s, err := dosspec.Parse(id, b)
		return &s, err
	})
	return p
}

// part parses the document key of docs, or takes prev (the same part of
// an earlier plan) if the document kept its index.
func part[S any](docs map[string]Doc, key string, prev *Part[*S], parse func([]byte) (*S, error)) Part[*S] {
	d, ok := docs[key]
	if !ok {
		return Part[*S]{}
	}
	if prev != nil && prev.Present && d.Index != 0 && prev.Index == d.Index {
		return *prev
	}
	s, err := parse(d.Value)
	if err != nil {
		return Part[*S]{Index: d.Index, Present: true, Err: err}
	}
	return Part[*S]{Spec: s, Index: d.Index, Present: true}
}

// Render writes a tenant plan as stable text, for golden files.
func (p TenantPlan) Render() string {
	var b strings.Builder
	if p.NetworkErr != nil {
		fmt.Fprintf(&b, "tenant %s: network refused: %v\n", p.ID, p.NetworkErr)
	} else {
		b.WriteString(Desired{Tenants: map[string]rtspec.TenantSpec{p.ID: p.Routing}}.Render())
		for _, t := range p.Network.Tunnels {
			fmt.Fprintf(&b, "  tunnel %s %s -> %s addr %s mtu %d health %v/%s\n", t.Name, t.Anycast, t.Customer, t.Addr, t.MTU, t.Health, t.Type)
		}
		for _, r := range p.Network.Routes {
			fmt.Fprintf(&b, "  route %s via %s (%s) priority %d weight %d\n", r.Prefix, r.Nexthop, r.Tunnel, r.Priority, r.Weight)
		}
	}
	switch f := p.Firewall; {
	case f.Err != nil:
		fmt.Fprintf(&b, "  firewall refused: %v\n", f.Err)
	case f.Spec != nil:
		fmt.Fprintf(&b, "  firewall default %s\n", f.Spec.Default)
		for _, r := range f.Spec.Rules {
			fmt.Fprintf(&b, "  firewall rule %s %s (%d alternatives): %s\n", r.ID, r.Action, len(r.Alts), r.Source)
		}
		lists := make([]string, 0, len(f.Spec.Lists))
		for n := range f.Spec.Lists {
			lists = append(lists, n)
		}
		sort.Strings(lists)
		for _, n := range lists {
			fmt.Fprintf(&b, "  firewall list %s: %d prefixes\n", n, len(f.Spec.Lists[n]))
		}
	}
	switch s := p.DoS; {
	case s.Err != nil:
		fmt.Fprintf(&b, "  dos refused: %v\n", s.Err)
	case s.Spec != nil:
		fmt.Fprintf(&b, "  dos allow %d deny %d signatures %d rate limits %d sample 1/%d auto %d pps\n", len(s.Spec.Allow), len(s.Spec.Deny),
			len(s.Spec.Signatures), len(s.Spec.RateLimits), s.Spec.SampleRate, s.Spec.AutoPPS)
	}
	return b.String()
}
