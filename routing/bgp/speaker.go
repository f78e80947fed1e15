// Package bgp is nsd's BGP speaker: GoBGP (github.com/osrg/gobgp/v4) used
// as a library, fed with what bgpspec.Announce decides. The daemon calls
// Set with the desired announcements after each reconcile pass; Set never
// blocks. A worker goroutine diffs desired against announced paths and adds
// or withdraws only the difference, and polls the sessions for status,
// metrics and backoff.
//
// Restarts without a flap (RFC 4724): every peer is configured with
// graceful restart and the restart-state and forwarding-state bits set
// (nsd's datapath outlives it), and the peers are only added after the
// first Set, so a restarted nsd opens its sessions with the full set of
// routes already in its RIB and its End-of-RIB follows them. nsd never
// sends a NOTIFICATION on exit: the router keeps the routes as stale for
// the restart time, and the restarted nsd refreshes them.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
)

// Backoff of a peer whose session keeps failing: after FailuresBeforeBackoff
// failed attempts in a row the peer is disabled for BackoffMin, doubling up
// to BackoffMax; a session that stays established for StableAfter resets it.
var (
	FailuresBeforeBackoff = 3
	BackoffMin            = 5 * time.Second
	BackoffMax            = 5 * time.Minute
	StableAfter           = time.Minute
	// ConnectRetry is GoBGP's interval between connection attempts.
	ConnectRetry = 5 * time.Second
	// PollInterval is how often sessions are read for status and metrics.
	PollInterval = time.Second
	// opTimeout bounds each call into GoBGP made while starting.
	opTimeout = 10 * time.Second
)

// ErrDialFromOtherNetns: nsd cannot dial a peer from a namespace it does
// not run in (--host-netns); such peers must be passive.
var ErrDialFromOtherNetns = errors.New("nsd cannot dial out of another network namespace: make the peer passive (the router connects to nsd)")

// Config configures a Speaker.
type Config struct {
	Spec bgpspec.Valid
	// RouterID is used when Spec has none (the probe address).
	RouterID netip.Addr
	// HostNS is where the sessions live (netns.None(): nsd's own). With
	// another namespace every peer must be passive: the listener is
	// created there.
	HostNS   netns.NsHandle
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Session is one peer's state as nsctl bgp shows it.
type Session struct {
	Peer  netip.Addr `json:"peer"`
	ASN   uint32     `json:"asn"`
	State string     `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Since time.Time  `json:"since,omitzero"`
	// FlowSpec: the peer negotiated IPv4 FlowSpec.
	FlowSpec    bool      `json:"flowspec,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	UpdatesSent uint64    `json:"updates_sent"`
	Failures    int       `json:"failures,omitempty"`
	RetryAt     time.Time `json:"retry_at,omitzero"` // backing off until then
}

// Status is the speaker's state.
type Status struct {
	LocalASN  uint32         `json:"local_asn"`
	RouterID  netip.Addr     `json:"router_id"`
	Sessions  []Session      `json:"sessions"`
	Announced []netip.Prefix `json:"announced"`
	FlowSpec  []string       `json:"flowspec,omitempty"`
	// Started: the peers were added (after the first Set).
	Started bool   `json:"started"`
	Error   string `json:"error,omitempty"` // the last error adding or withdrawing paths
}

type peerTrack struct {
	cfg       bgpspec.ValidPeer
	state     bgp.FSMState
	since     time.Time
	failures  int
	backoff   time.Duration
	retryAt   time.Time
	disabled  bool
	lastSent  uint64
	lastError string
	flowspec  bool
}

// Speaker announces what it is given.
type Speaker struct {
	cfg      Config
	log      *slog.Logger
	srv      *server.BgpServer
	routerID netip.Addr
	m        *metrics

	mu      sync.Mutex
	pending *bgpspec.Desired
	wake    chan struct{}
	status  Status

	// worker state
	routes map[netip.Prefix]*apiutil.Path
	flows  map[string]*apiutil.Path // FlowRule.String() → path
	peers  map[netip.Addr]*peerTrack
	events chan peerEvent
	done   chan struct{}
}

// peerEvent is one session state change, from GoBGP's watcher.
type peerEvent struct {
	peer   netip.Addr
	state  bgp.FSMState
	reason string
	at     time.Time
}

// Start starts GoBGP (its listener in cfg.HostNS if any peer is passive)
// and the worker; the peers are added on the first Set. The speaker runs
// until ctx ends; it sends no NOTIFICATION then (graceful restart).
func Start(ctx context.Context, cfg Config) (*Speaker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rid := cfg.Spec.RouterID
	if !rid.IsValid() {
		rid = cfg.RouterID
	}
	if !rid.Is4() {
		return nil, fmt.Errorf("start bgp: no router ID: set router_id in the BGP config (no IPv4 probe address to default to)")
	}
	if cfg.HostNS.IsOpen() {
		for i, p := range cfg.Spec.Peers {
			if !p.Passive {
				return nil, fmt.Errorf("start bgp: peers[%d] %s: %w", i, p.Address, ErrDialFromOtherNetns)
			}
		}
	}
	log := cfg.Logger
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelWarn)
	s := &Speaker{cfg: cfg, log: log, routerID: rid, wake: make(chan struct{}, 1),
		routes: map[netip.Prefix]*apiutil.Path{}, flows: map[string]*apiutil.Path{}, peers: map[netip.Addr]*peerTrack{},
		done: make(chan struct{}), m: newMetrics(cfg.Registry), events: make(chan peerEvent, 256)}
	s.srv = server.NewBgpServer(server.LoggerOption(log.With("lib", "gobgp"), lv))
	if err := namedns.Go(cfg.HostNS, s.srv.Serve); err != nil {
		return nil, fmt.Errorf("start bgp: %w", err)
	}
	port := int32(-1) // no listener
	if cfg.Spec.ListenPort != 0 {
		port = int32(cfg.Spec.ListenPort)
	}
	g := &api.Global{Asn: cfg.Spec.ASN, RouterId: rid.String(), ListenPort: port}
	if err := bounded(func() error { return s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}) }); err != nil {
		s.srv.Stop()
		return nil, fmt.Errorf("start bgp (AS %d, router ID %s, listen port %d): %w", cfg.Spec.ASN, rid, cfg.Spec.ListenPort, err)
	}
	for _, p := range cfg.Spec.Peers {
		s.peers[p.Address] = &peerTrack{cfg: p}
	}
	// Every state change, however short (a refused OPEN lasts
	// milliseconds): the backoff counts them. The callback never blocks
	// GoBGP; a full queue drops events (the poll still sees the state).
	err := bounded(func() error {
		return s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: func(e *apiutil.WatchEventMessage_PeerEvent, at time.Time) {
			if e.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			ev := peerEvent{peer: e.Peer.State.NeighborAddress, state: e.Peer.State.SessionState, reason: e.Peer.State.DisconnectMessage, at: at}
			select {
			case s.events <- ev:
			default:
			}
		}}, server.WatchPeer())
	})
	if err != nil {
		s.srv.Stop()
		return nil, fmt.Errorf("start bgp: watch sessions: %w", err)
	}
	s.status = Status{LocalASN: cfg.Spec.ASN, RouterID: rid}
	s.status.Sessions = s.sessions(time.Now())
	go s.run(ctx)
	return s, nil
}

// bounded runs a GoBGP management call with a timeout (they do not all
// honour a context).
func bounded(f func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(opTimeout):
		return fmt.Errorf("gobgp did not answer within %s", opTimeout)
	}
}

// Set replaces what the speaker should announce. It never blocks: the
// worker picks up the latest value.
func (s *Speaker) Set(d bgpspec.Desired) {
	s.mu.Lock()
	s.pending = &d
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Status returns a copy of the speaker's state (as of the last poll).
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Sessions = append([]Session(nil), st.Sessions...)
	st.Announced = append([]netip.Prefix(nil), st.Announced...)
	st.FlowSpec = append([]string(nil), st.FlowSpec...)
	return st
}

// Done is closed when the worker has stopped.
func (s *Speaker) Done() <-chan struct{} { return s.done }

// Stop ends the sessions with a NOTIFICATION (Cease) and stops GoBGP: for
// tests and tools; nsd itself just exits so that graceful restart applies.
func (s *Speaker) Stop() { s.srv.Stop() }

func (s *Speaker) run(ctx context.Context) {
	defer close(s.done)
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	started := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			s.mu.Lock()
			d := s.pending
			s.pending = nil
			s.mu.Unlock()
			if d == nil {
				continue
			}
			err := s.apply(*d)
			if !started {
				// The first desired set is in the RIB: now open the
				// sessions, so that End-of-RIB follows the full set.
				if perr := s.addPeers(ctx); perr != nil {
					err = errors.Join(err, perr)
				} else {
					started = true
				}
			}
			s.publish(err, started)
		case ev := <-s.events:
			if t := s.peers[ev.peer]; t != nil && ev.state != t.state {
				if ev.reason != "" && ev.state != bgp.BGP_FSM_ESTABLISHED {
					t.lastError = ev.reason
				}
				s.transition(t, ev.state, ev.at)
			}
		case <-tick.C:
			s.poll(ctx)
		}
	}
}

func (s *Speaker) publish(err error, started bool) {
	prefixes := make([]netip.Prefix, 0, len(s.routes))
	for p := range s.routes {
		prefixes = append(prefixes, p)
	}
	sort.Slice(prefixes, func(i, j int) bool { return prefixes[i].String() < prefixes[j].String() })
	flows := make([]string, 0, len(s.flows))
	for k := range s.flows {
		flows = append(flows, k)
	}
	sort.Strings(flows)
	s.m.setAnnounced(prefixes, len(flows))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Announced, s.status.FlowSpec, s.status.Started = prefixes, flows, started
	s.status.Error = ""
	if err != nil {
		s.status.Error = err.Error()
	}
}

// apply adds what is desired and not announced, then withdraws what is
// announced and no longer desired (a changed FlowSpec rule is a new rule
// and the withdrawal of the old one, in that order).
func (s *Speaker) apply(d bgpspec.Desired) error {
	var errs []error
	wantRoutes := map[netip.Prefix]bool{}
	var add []*apiutil.Path
	var addKeys []any
	for _, r := range d.Routes {
		wantRoutes[r.Prefix] = true
		if _, ok := s.routes[r.Prefix]; ok {
			continue
		}
		p, err := s.routePath(r.Prefix)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add, addKeys = append(add, p), append(addKeys, r.Prefix)
	}
	wantFlows := map[string]bool{}
	for _, f := range d.FlowSpec {
		k := f.String()
		wantFlows[k] = true
		if _, ok := s.flows[k]; ok {
			continue
		}
		p, err := flowPath(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("flowspec %s: %w", f.ID, err))
			continue
		}
		add, addKeys = append(add, p), append(addKeys, k)
	}
	if len(add) > 0 {
		resps, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		for i, key := range addKeys {
			if err != nil && (i >= len(resps) || resps[i].Error != nil) {
				continue
			}
			switch k := key.(type) {
			case netip.Prefix:
				s.routes[k] = add[i]
			case string:
				s.flows[k] = add[i]
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("announce: %w", err))
		}
	}
	var del []*apiutil.Path
	for p, path := range s.routes {
		if !wantRoutes[p] {
			del = append(del, path)
			delete(s.routes, p)
		}
	}
	for k, path := range s.flows {
		if !wantFlows[k] {
			del = append(del, path)
			delete(s.flows, k)
		}
	}
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw: %w", err))
		}
	}
	if len(add) > 0 || len(del) > 0 {
		s.log.Info("bgp announcements changed", "announced", len(add), "withdrawn", len(del),
			"prefixes", len(s.routes), "flowspec", len(s.flows))
	}
	return errors.Join(errs...)
}

func (s *Speaker) routePath(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", p, err)
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := bgp.RF_IPv4_UC
	if p.Addr().Is4() {
		nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		fam = bgp.RF_IPv6_UC
		mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("announce %s: %w", p, err)
		}
		attrs = append(attrs, mp)
	}
	if len(s.cfg.Spec.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(s.cfg.Spec.Communities))
	}
	if s.cfg.Spec.MED != nil {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(*s.cfg.Spec.MED))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

// flowPath encodes a FlowSpec rule (RFC 8955) with its traffic-rate action.
func flowPath(f bgpspec.FlowRule) (*apiutil.Path, error) {
	dst, err := bgp.NewIPAddrPrefix(f.Dst)
	if err != nil {
		return nil, err
	}
	comps := []bgp.FlowSpecComponentInterface{bgp.NewFlowSpecDestinationPrefix(dst)}
	if f.Src.IsValid() {
		src, err := bgp.NewIPAddrPrefix(f.Src)
		if err != nil {
			return nil, err
		}
		comps = append(comps, bgp.NewFlowSpecSourcePrefix(src))
	}
	for _, c := range []struct {
		typ bgp.BGPFlowSpecType
		r   rangeT
	}{
		{bgp.FLOW_SPEC_TYPE_IP_PROTO, rangeT(f.Proto)},
		{bgp.FLOW_SPEC_TYPE_DST_PORT, rangeT(f.DstPort)},
		{bgp.FLOW_SPEC_TYPE_SRC_PORT, rangeT(f.SrcPort)},
		{bgp.FLOW_SPEC_TYPE_ICMP_TYPE, rangeT(f.ICMPType)},
		{bgp.FLOW_SPEC_TYPE_ICMP_CODE, rangeT(f.ICMPCode)},
		{bgp.FLOW_SPEC_TYPE_PKT_LEN, rangeT(f.Len)},
	} {
		if items := c.r.items(); items != nil {
			comps = append(comps, bgp.NewFlowSpecComponent(c.typ, items))
		}
	}
	if f.TCPFlagsMask != 0 {
		var items []*bgp.FlowSpecComponentItem
		if f.TCPFlagsValue != 0 {
			items = append(items, bgp.NewFlowSpecComponentItem(bgp.BITMASK_FLAG_OP_MATCH, uint64(f.TCPFlagsValue)))
		}
		if clear := f.TCPFlagsMask &^ f.TCPFlagsValue; clear != 0 {
			op := uint8(bgp.BITMASK_FLAG_OP_NOT)
			if len(items) > 0 {
				op |= bgp.BITMASK_FLAG_OP_AND
			}
			items = append(items, bgp.NewFlowSpecComponentItem(op, uint64(clear)))
		}
		comps = append(comps, bgp.NewFlowSpecComponent(bgp.FLOW_SPEC_TYPE_TCP_FLAG, items))
	}
	nlri, err := bgp.NewFlowSpecUnicast(bgp.RF_FS_IPv4_UC, comps)
	if err != nil {
		return nil, err
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_FS_IPv4_UC, []bgp.PathNLRI{{NLRI: nlri}})
	if err != nil {
		return nil, err
	}
	attrs := []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), mp,
		bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{bgp.NewTrafficRateExtended(0, f.Rate)}),
	}
	return &apiutil.Path{Family: bgp.RF_FS_IPv4_UC, Nlri: nlri, Attrs: attrs}, nil
}

type rangeT struct {
	Set    bool
	Lo, Hi uint64
}

func (r rangeT) items() []*bgp.FlowSpecComponentItem {
	switch {
	case !r.Set:
		return nil
	case r.Lo == r.Hi:
		return []*bgp.FlowSpecComponentItem{bgp.NewFlowSpecComponentItem(bgp.DEC_NUM_OP_EQ, r.Lo)}
	default:
		return []*bgp.FlowSpecComponentItem{
			bgp.NewFlowSpecComponentItem(bgp.DEC_NUM_OP_GT_EQ, r.Lo),
			bgp.NewFlowSpecComponentItem(bgp.DEC_NUM_OP_AND|bgp.DEC_NUM_OP_LT_EQ, r.Hi),
		}
	}
}

func family(afi api.Family_Afi, safi api.Family_Safi) *api.Family {
	return &api.Family{Afi: afi, Safi: safi}
}

func (s *Speaker) peerConfig(p bgpspec.ValidPeer) *api.Peer {
	var afs []*api.AfiSafi
	add := func(f *api.Family) {
		afs = append(afs, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}})
	}
	if p.Address.Is4() {
		add(family(api.Family_AFI_IP, api.Family_SAFI_UNICAST))
		if p.FlowSpec {
			add(family(api.Family_AFI_IP, api.Family_SAFI_FLOW_SPEC_UNICAST))
		}
	} else {
		add(family(api.Family_AFI_IP6, api.Family_SAFI_UNICAST))
	}
	hold := uint64(p.HoldTime / time.Second)
	tr := &api.Transport{PassiveMode: p.Passive, RemotePort: uint32(p.Port)}
	if p.LocalAddress.IsValid() {
		tr.LocalAddress = p.LocalAddress.String()
	}
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password,
			Description: "nfhost"},
		Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
			ConnectRetry: uint64(ConnectRetry / time.Second)}},
		Transport: tr,
		// Restart state and forwarding state set: nsd's datapath kept
		// forwarding while it restarted. A restarting GoBGP defers its
		// updates until every peer sent End-of-RIB (RFC 4724 4.1, for
		// speakers that select routes from their peers'); nsd selects
		// nothing, so the deferral is the shortest GoBGP allows: a peer
		// that is down does not hold back the others' routes.
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: uint32(s.cfg.Spec.RestartTime / time.Second),
			LocalRestarting: true, DeferralTime: 1},
		AfiSafis: afs,
	}
}

func (s *Speaker) addPeers(ctx context.Context) error {
	var errs []error
	for _, p := range s.cfg.Spec.Peers {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peerConfig(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s: %w", p.Address, err))
		}
	}
	return errors.Join(errs...)
}

// poll reads the sessions: status, metrics, and the backoff of peers whose
// sessions keep failing.
func (s *Speaker) poll(ctx context.Context) {
	now := time.Now()
	seen := map[netip.Addr]bool{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		t := s.peers[a]
		if t == nil {
			return
		}
		seen[a] = true
		st := p.GetState()
		state := bgp.FSMState(int(st.GetSessionState()) - 1) // api enum starts at UNKNOWN
		if state != t.state {
			s.transition(t, state, now) // an event the queue dropped
		}
		t.flowspec = false
		for _, c := range st.GetRemoteCap() {
			if f := c.GetMultiProtocol().GetFamily(); f != nil && f.Afi == api.Family_AFI_IP && f.Safi == api.Family_SAFI_FLOW_SPEC_UNICAST {
				t.flowspec = state == bgp.BGP_FSM_ESTABLISHED && t.cfg.FlowSpec
			}
		}
		sent := st.GetMessages().GetSent().GetUpdate()
		if sent >= t.lastSent {
			s.m.updates.WithLabelValues(a.String()).Add(float64(sent - t.lastSent))
		} else {
			s.m.updates.WithLabelValues(a.String()).Add(float64(sent))
		}
		t.lastSent = sent
	})
	if err != nil {
		s.log.Warn("read bgp sessions", "err", err)
	}
	for a, t := range s.peers {
		if t.disabled && !now.Before(t.retryAt) {
			if err := s.srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: a.String()}); err == nil {
				t.disabled = false
				s.log.Info("bgp peer: backoff over, retrying", "peer", a)
			}
		}
		s.m.state.WithLabelValues(a.String()).Set(float64(t.state + 1))
		up := 0.0
		if t.state == bgp.BGP_FSM_ESTABLISHED {
			up = 1
		}
		s.m.up.WithLabelValues(a.String()).Set(up)
	}
	sessions := s.sessions(now)
	s.mu.Lock()
	s.status.Sessions = sessions
	s.mu.Unlock()
}

// transition records a session state change: a session that went down
// after failing to establish, or after too short a time up, counts as a
// failure; enough failures in a row back the peer off.
func (s *Speaker) transition(t *peerTrack, state bgp.FSMState, now time.Time) {
	prev, up := t.state, now.Sub(t.since)
	t.state, t.since = state, now
	a := t.cfg.Address
	switch {
	case state == bgp.BGP_FSM_ESTABLISHED:
		s.log.Info("bgp session established", "peer", a, "asn", t.cfg.ASN)
		t.lastError = ""
	case prev == bgp.BGP_FSM_ESTABLISHED:
		s.log.Warn("bgp session down", "peer", a, "after", up.Round(time.Second).String())
		s.m.flaps.WithLabelValues(a.String()).Inc()
		if up >= StableAfter {
			t.failures, t.backoff = 0, 0
		}
		t.failures++
	case state == bgp.BGP_FSM_IDLE && prev >= bgp.BGP_FSM_OPENSENT:
		t.failures++ // refused in OPEN: wrong ASN, bad capability, password
	default:
		return
	}
	if state != bgp.BGP_FSM_ESTABLISHED && t.failures >= FailuresBeforeBackoff && !t.disabled {
		t.backoff = min(max(t.backoff*2, BackoffMin), BackoffMax)
		t.retryAt = now.Add(t.backoff)
		if err := s.srv.DisablePeer(context.Background(), &api.DisablePeerRequest{Address: a.String(),
			Communication: "nfhost: backing off"}); err == nil {
			t.disabled = true
			s.log.Warn("bgp peer keeps failing: backing off", "peer", a, "failures", t.failures,
				"retry_in", t.backoff.String(), "last_error", t.lastError)
		}
	}
}

func (s *Speaker) sessions(now time.Time) []Session {
	out := make([]Session, 0, len(s.peers))
	for a, t := range s.peers {
		ss := Session{Peer: a, ASN: t.cfg.ASN, State: stateName(t.state), Since: t.since, FlowSpec: t.flowspec,
			LastError: t.lastError, UpdatesSent: t.lastSent, Failures: t.failures}
		if t.disabled {
			ss.State, ss.RetryAt = "backoff", t.retryAt
		}
		out = append(out, ss)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Peer.Less(out[j].Peer) })
	return out
}

func stateName(s bgp.FSMState) string {
	switch s {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}
