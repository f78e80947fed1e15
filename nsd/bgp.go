package nsd

import (
	"context"
	"fmt"
	"net/netip"
	"time"

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
	// The last Announce's input: each applied tenant's part (bgpInput),
	// kept for the tenants passes touch, and the rest (key); at is when it
	// ran. A pass whose input is the same skips Announce, which goes over
	// every applied tenant (12.8 ms with 10,000): a firewall edit does not
	// change what a host announces.
	inputs map[string]string
	key    string
	at     time.Time
}

// bgpRefresh is how long an unchanged input is announced without Announce
// running again: its signatures' expiry depends on the time.
const bgpRefresh = 5 * time.Second

// bgpInput is what of applied tenant id its announcements depend on.
func (d *Daemon) bgpInput(id string, a *applied) string {
	var eps []netip.Addr
	if d.o.Tunnels != nil {
		for _, tun := range a.tunnels {
			eps = append(eps, tun.Anycast)
		}
	}
	return fmt.Sprintf("%t|%v|%t|%d|%t|%v", d.announcing(id, a), a.prefixes, a.advertise, a.dosIndex,
		d.dos.errs[id] == "" || d.dos.kept[id], eps)
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
//
// every compares every applied tenant's input with the last Announce's;
// otherwise only touched's (the tenants the pass applied or deleted).
func (d *Daemon) announce(s source.Snapshot, every bool, touched []Result) {
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
	now := d.o.Now()
	moved := d.trackInputs(&d.bgp.inputs, every, touched, d.bgpInput)
	key := fmt.Sprintf("%t|%d|%d|%s", drained, d.dos.globalIndex, d.dos.gen, d.autoFingerprint())
	if !moved && key == d.bgp.key && now.Sub(d.bgp.at) < bgpRefresh {
		return
	}
	d.bgp.key, d.bgp.at = key, now
	in := bgpspec.Input{Drained: drained, Now: now}
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

// refreshBGPStatus (every second) announces again if the last Announce is
// bgpRefresh old, and rewrites the host status when the sessions or the
// announcements changed since the last write (the speaker works
// asynchronously, so a pass does not see the outcome of its own Set).
func (d *Daemon) refreshBGPStatus(ctx context.Context, s *source.Snapshot) {
	if d.o.BGP == nil || s == nil {
		return
	}
	d.announce(*s, false, nil) // runs Announce again once bgpRefresh has passed (expiry)
	d.writeHostStatus(ctx, *s, false)
}
