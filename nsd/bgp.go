package nsd

import (
	"context"
	"net/netip"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/bgp"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
)

// Announcer is the BGP speaker as the daemon uses it (routing/bgp.Speaker).
// Set must not block: the reconcile loop never waits for BGP.
type Announcer interface {
	Set(bgpspec.Desired)
	Status() bgp.Status
}

// bgpState is what the daemon remembers of its announcements.
type bgpState struct {
	drained bool
	desired bgpspec.Desired
}

// announcing reports whether a tenant's prefixes may be announced from
// this host: it was applied here by every subsystem at least once (a.at
// is set on success only) and its last pass did not fail in the kernel. A
// tenant whose newer document was refused keeps its last good state in
// force on every host alike, and stays announced: a typo in a firewall
// document must not withdraw the tenant fleet-wide.
func (d *Daemon) announcing(id string, a *applied) bool {
	return !a.at.IsZero() && !d.hostFailed[id]
}

// announce tells the speaker what this host announces now (bgpspec.Announce
// over the tenants applied here, the drain key and the DoS documents in
// force).
func (d *Daemon) announce(s source.Snapshot) {
	e, ok := s.Control[source.DrainKey(d.o.HostID)]
	drained := source.Drained(e, ok)
	if drained != d.bgp.drained {
		if drained {
			d.log.Warn("host drained by the operator: withdrawing every BGP announcement", "key", "control/"+source.DrainKey(d.o.HostID))
		} else {
			d.log.Info("host undrained: announcing again")
		}
		d.bgp.drained = drained
	}
	if drained {
		d.m.Drained.Set(1)
	} else {
		d.m.Drained.Set(0)
	}
	if d.o.BGP == nil {
		return
	}
	in := bgpspec.Input{Drained: drained, Now: d.o.Now()}
	if d.dos.globalIndex != 0 {
		in.Global = d.dos.global
	}
	for id, a := range d.applied {
		if !d.announcing(id, a) {
			continue
		}
		t := bgpspec.Tenant{ID: id, Prefixes: a.prefixes, Advertise: a.advertise}
		if d.dos.errs[id] == "" || d.dos.kept[id] {
			t.DoS = d.withAuto(id, a.dos) // with the automatic mitigations in force
		}
		if d.o.Tunnels != nil {
			for _, tun := range a.tunnels {
				t.Endpoints = append(t.Endpoints, tun.Anycast)
			}
		}
		in.Tenants = append(in.Tenants, t)
	}
	d.bgp.desired = bgpspec.Announce(in)
	d.o.BGP.Set(d.bgp.desired)
}

// bgpStatus is the speaker's state for the host status.
func (d *Daemon) bgpStatus() *source.BGPStatus {
	if d.o.BGP == nil {
		return nil
	}
	st := d.o.BGP.Status()
	out := &source.BGPStatus{LocalASN: st.LocalASN, RouterID: st.RouterID.String(), Error: st.Error,
		Announced: prefixStrings(st.Announced[:min(len(st.Announced), source.MaxStatusPrefixes)]), AnnouncedCount: len(st.Announced),
		FlowSpec: st.FlowSpec, NotExported: d.bgp.desired.NotExported, Sessions: []source.BGPSession{}}
	for _, s := range st.Sessions {
		out.Sessions = append(out.Sessions, source.BGPSession{Peer: s.Peer.String(), ASN: s.ASN, State: s.State, Since: s.Since,
			FlowSpec: s.FlowSpec, LastError: s.LastError, UpdatesSent: s.UpdatesSent, Failures: s.Failures, RetryAt: s.RetryAt})
	}
	return out
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// refreshBGPStatus rewrites the host status when the sessions or the
// announcements changed since the last write (the speaker works
// asynchronously, so a pass does not see the outcome of its own Set).
func (d *Daemon) refreshBGPStatus(ctx context.Context, s *source.Snapshot) {
	if d.o.BGP == nil || s == nil {
		return
	}
	d.writeHostStatus(ctx, *s, false)
}
