package nsd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nfhost/nfhost/dos"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/internal/doc"
	"github.com/nfhost/nfhost/nsd/source"
)

// DoS is the shared XDP DoS layer as the daemon uses it (dos.Reconciler).
type DoS interface {
	Apply(global dosspec.Spec, tenants []dos.Tenant, now time.Time) (map[string]error, error)
	Counters() (dos.Counters, error)
}

// dosState is the host-wide DoS input last applied.
type dosState struct {
	global      *dosspec.Spec // last good nfhost/dos/global; nil: none
	parsedIndex uint64        // its ModifyIndex
	parseErr    string        // why a newer dos/global was rejected
	placeErr    string        // why the DoS layer did not place global
	// globalIndex is the ModifyIndex of the dos/global version the maps
	// hold (0: none) and globalErr parseErr and placeErr: the host status.
	globalIndex uint64
	globalErr   string
	// applied is the global and automatic part of the last Apply's
	// input; inputs is each applied tenant's part (dosInput), kept as
	// the tenants a pass touched change, and moved is set when inputs
	// changed since the last Apply that succeeded.
	applied string
	inputs  map[string]string
	moved   bool
	gen     int               // Applies that succeeded (the BGP input's part for every tenant)
	errs    map[string]string // tenant → placement error of the last Apply
	kept    map[string]bool   // tenant → with errs: its earlier rules stay in force
	docs    map[string]uint64 // tenant → ModifyIndex of its dos key at the last Apply
}

// Subsystems["dos"] of a tenant whose document the DoS layer did not
// place.
var (
	dosNotPlacedKept = source.ErrorKeeping("not placed; the rules placed before stay in force")
	dosNotPlaced     = source.ErrorKeeping("not placed; no rules in force")
)

// dosInput is what of a tenant the placement depends on.
func dosInput(a *applied) string { return fmt.Sprintf("%d:%v", a.dosIndex, a.prefixes) }

// trackInputs keeps *inputs, each applied tenant's part of a host-wide
// input (of makes it), as the last pass left it: all of them again when
// every is set (or there are none yet), else those of the tenants the pass
// touched (applied or deleted). It reports whether any changed.
func (d *Daemon) trackInputs(inputs *map[string]string, every bool, touched []Result, of func(id string, a *applied) string) bool {
	if every || *inputs == nil {
		next := make(map[string]string, len(d.applied))
		for id, a := range d.applied {
			next[id] = of(id, a)
		}
		moved := !maps.Equal(next, *inputs)
		*inputs = next
		return moved
	}
	moved := false
	for _, r := range touched {
		old, had := (*inputs)[r.Tenant]
		a, ok := d.applied[r.Tenant]
		if !ok {
			if had {
				delete(*inputs, r.Tenant)
				moved = true
			}
			continue
		}
		if in := of(r.Tenant, a); !had || in != old {
			(*inputs)[r.Tenant] = in
			moved = true
		}
	}
	return moved
}

// dosPlacement puts the last Apply's placement result for st's tenant
// into st: a document the DoS layer did not place makes an applied
// tenant's state error, with the document and field in Error. prevMsg is
// the tenant's placement error before that Apply: a status in error for it
// returns to applied once the document is placed.
func (d *Daemon) dosPlacement(st *source.Status, prevMsg string) {
	msg := d.dos.errs[st.Tenant]
	ours := prevMsg != "" && st.State == "error" && st.Error == prevMsg
	switch {
	case msg != "":
		st.Subsystems["dos"] = dosNotPlaced
		if d.dos.kept[st.Tenant] {
			st.Subsystems["dos"] = dosNotPlacedKept
		}
		if st.State == "applied" || ours {
			st.State, st.Error = "error", msg
		}
	case ours:
		st.State, st.Error = "applied", ""
		st.Subsystems["dos"] = source.SubsystemOK
	case st.Subsystems["dos"] == dosNotPlaced || st.Subsystems["dos"] == dosNotPlacedKept:
		st.Subsystems["dos"] = source.SubsystemOK // placed now; the state is another subsystem's error
	}
}

// tenantDoSPlacement is for reconcileTenant: an applied tenant keeps the
// placement error of the last Apply if that Apply saw its current dos
// document (otherwise reconcileDoS decides later in the pass), so that its
// status does not flip to applied and back when another key changes.
func (d *Daemon) tenantDoSPlacement(st *source.Status) {
	if a := d.applied[st.Tenant]; a != nil && a.dos != nil && d.dos.docs[st.Tenant] == a.dosIndex {
		d.dosPlacement(st, "")
	}
}

// dosResults marks the results of tenants whose DoS document the last
// Apply did not place (nsd --once fails for them), and clears what
// tenantDoSPlacement reported when that Apply placed it after all.
func (d *Daemon) dosResults(rs []Result) {
	if d.o.DoS == nil {
		return
	}
	for i, r := range rs {
		msg := d.dos.errs[r.Tenant]
		switch {
		case msg != "" && (r.State == "applied" || r.State == "error" && r.Err == nil):
			rs[i].State, rs[i].Err = "error", errors.New(msg)
		case msg == "" && r.State == "error" && r.Err == nil:
			rs[i].State = "applied"
		}
	}
}

func (d *Daemon) setGlobalErr() {
	var msgs []string
	for _, m := range []string{d.dos.parseErr, d.dos.placeErr} {
		if m != "" {
			msgs = append(msgs, m)
		}
	}
	d.dos.globalErr = strings.Join(msgs, "; ")
}

// dosSub adapts the shared XDP DoS layer to Subsystem. Per tenant it only
// takes the tenant's dos document into what is in force (a refused one
// keeps the last good); the maps, shared by all tenants, are written once
// per pass (FinishPass), and what they could not place shows in the
// tenant's status (FinishStatus).
type dosSub struct {
	d     *Daemon
	dos   DoS      // nil: no --uplink
	proxy Synproxy // nil: no synproxy tables
	// proxied is the synproxy spec last applied per tenant (fmt), so a
	// tenant without protection costs no nftables dump between full passes.
	proxied map[string]string
}

func (s *dosSub) Name() string { return "dos" }

func (s *dosSub) Observe(context.Context) error { return nil }

func (s *dosSub) Apply(_ context.Context, t *TenantRun) ([]string, error) {
	d, part, st := s.d, t.Plan.DoS, t.Status
	if s.dos == nil {
		if part.Present {
			st.Warnings = append(st.Warnings, fmt.Sprintf("tenants/%s/dos: not applied: this nsd runs without the XDP DoS layer (--uplink)", t.ID))
		}
		return nil, nil
	}
	a := d.applied[t.ID]
	switch {
	case !part.Present:
		a.dos, a.dosIndex = nil, 0
	case part.Err != nil:
		d.configError(t.ID, doc.KeyDoS, part.Index)
		if a.dos != nil {
			st.Subsystems["dos"] = source.ErrorKeeping("last good document in force")
		}
		return nil, part.Err
	default:
		a.dos, a.dosIndex = part.Spec, part.Index
		st.Subsystems["dos"] = source.SubsystemOK
	}
	return s.applySynproxy(t.ID, a, t.Full)
}

func (s *dosSub) FinishStatus(st *source.Status) { s.d.tenantDoSPlacement(st) }

func (s *dosSub) FinishPass(ctx context.Context, snap source.Snapshot, full bool, results []Result) {
	s.d.reconcileDoS(ctx, snap, full, results)
	s.d.dosResults(results)
	s.syncSynproxies()
}

// Delete: a gone tenant leaves the maps at the next FinishPass.
func (s *dosSub) Delete(_ context.Context, id string) ([]string, error) {
	delete(s.proxied, id) // the table goes with the namespace
	return nil, nil
}

func (s *dosSub) GC(context.Context, map[string]bool) ([]string, error) { return nil, nil }

// reconcileDoS applies the global and every applied tenant's DoS document
// to the XDP maps when any input changed (or on a full pass), and reports
// tenants whose documents could not be placed. touched are the tenants the
// pass applied or deleted: with a snapshot that says what changed, only
// their inputs are compared, so a pass that changes nothing of the DoS
// layer's costs nothing here however many tenants there are.
func (d *Daemon) reconcileDoS(ctx context.Context, s source.Snapshot, full bool, touched []Result) {
	if d.o.DoS == nil {
		if s.DoSGlobal != nil && d.dos.globalErr == "" {
			d.dos.globalErr = "dos/global: not applied: this nsd runs without the XDP DoS layer (--uplink)"
			d.log.Warn(d.dos.globalErr)
		}
		return
	}
	d.parseGlobalDoS(s)
	d.syncFleet(ctx, s)
	if d.trackInputs(&d.dos.inputs, full || s.Changed == nil, touched, func(_ string, a *applied) string { return dosInput(a) }) {
		d.dos.moved = true
	}
	key := fmt.Sprintf("g=%d;auto=%s", d.dos.parsedIndex, d.autoFingerprint())
	if d.dos.moved || full {
		d.updateAutoPolicies()
	}
	if !full && !d.dos.moved && key == d.dos.applied {
		return
	}
	ids := slices.Sorted(maps.Keys(d.applied))
	tenants := make([]dos.Tenant, 0, len(ids))
	for _, id := range ids {
		a := d.applied[id]
		tenants = append(tenants, dos.Tenant{ID: id, Prefixes: a.prefixes, Spec: d.withAuto(id, a.dos)})
	}
	if full {
		defer d.reportDoSCounters(ctx, ids)
	}
	var global dosspec.Spec
	if d.dos.global != nil {
		global = *d.dos.global
	}
	t0 := time.Now()
	errs, err := d.o.DoS.Apply(global, tenants, d.o.Now())
	d.m.DoSApplySeconds.Observe(time.Since(t0).Seconds())
	if err != nil {
		d.m.Reconciles.WithLabelValues("dos", "error").Inc()
		d.log.Error("apply DoS maps", "err", err)
		d.dos.applied = "" // retry on the next pass
		return
	}
	d.m.Reconciles.WithLabelValues("dos", "ok").Inc()
	d.dos.applied, d.dos.moved = key, false
	d.dos.gen++ // placement results may have changed for any tenant

	// The global document: the host status shows the version in force and
	// why a newer one is not.
	placeErr := ""
	if e := errs[dosspec.GlobalKey]; e != nil {
		placeErr = e.Error()
		var pe *dos.PlacementError
		if errors.As(e, &pe) {
			if !pe.Kept {
				d.dos.globalIndex = 0
			}
		} else {
			d.dos.globalIndex = d.dos.parsedIndex
		}
		if placeErr != d.dos.placeErr {
			d.log.Error("dos/global not placed in the XDP maps", "err", placeErr, "in_force_index", d.dos.globalIndex)
		}
	} else {
		d.dos.globalIndex = d.dos.parsedIndex
	}
	d.dos.placeErr = placeErr
	d.setGlobalErr()

	prevErrs := d.dos.errs
	d.dos.errs, d.dos.kept, d.dos.docs = map[string]string{}, map[string]bool{}, map[string]uint64{}
	for id, e := range errs {
		if id == dosspec.GlobalKey {
			continue
		}
		d.dos.errs[id] = e.Error()
		var pe *dos.PlacementError
		d.dos.kept[id] = errors.As(e, &pe) && pe.Kept
	}
	for _, id := range ids {
		d.dos.docs[id] = d.applied[id].dosIndex
	}
	// Tenants whose placement result changed get their status rewritten.
	for _, id := range ids {
		st, ok := d.statuses[id]
		if !ok {
			continue
		}
		if msg := d.dos.errs[id]; msg != "" && msg != prevErrs[id] {
			d.log.Error("tenant DoS document not placed in the XDP maps", "tenant", id, "err", msg, "kept", d.dos.kept[id])
		}
		next := st
		next.Subsystems = maps.Clone(st.Subsystems)
		if next.Subsystems == nil {
			next.Subsystems = map[string]source.SubsystemState{}
		}
		d.dosPlacement(&next, prevErrs[id])
		if next.State != st.State || next.Error != st.Error || next.Subsystems["dos"] != st.Subsystems["dos"] {
			d.putStatus(ctx, next)
		}
	}
}

// reportDoSCounters puts each tenant's DoS counters into its status when
// they changed (on full passes, so at most once per resync interval); with
// counters on demand, only for tenants someone asked for (counters.go),
// the others' are kept for their next write.
func (d *Daemon) reportDoSCounters(ctx context.Context, ids []string) {
	ctr, err := d.o.DoS.Counters()
	if err != nil {
		d.log.Warn("read DoS counters", "err", err)
		return
	}
	byTenant := dosRulesByTenant(ctr)
	for _, id := range ids {
		st, ok := d.statuses[id]
		if !ok {
			continue
		}
		c := dosCountersOf(ctr, byTenant, id)
		if fmt.Sprint(c) == fmt.Sprint(st.DoS) {
			continue
		}
		st.DoS = c
		if d.quietCounters(id) {
			d.setStatus(st)
			continue
		}
		d.putStatus(ctx, st)
	}
}

// dosRule is one signature or rate-limit counter of a tenant.
type dosRule struct {
	name string // "signature:<id>" or the rate rule's id
	s    dos.Stats
}

// dosRulesByTenant indexes the signature and rate-limit counters
// ("<tenant>/<id>") by tenant: once per read, not once per tenant.
func dosRulesByTenant(ctr dos.Counters) map[string][]dosRule {
	out := map[string][]dosRule{}
	for kind, m := range map[string]map[string]dos.Stats{"signature": ctr.Signatures, "rate": ctr.RateLimits} {
		for rid, s := range m {
			id, rest, ok := strings.Cut(rid, "/")
			if !ok {
				continue
			}
			if kind == "signature" {
				rest = "signature:" + rest
			}
			out[id] = append(out[id], dosRule{rest, s})
		}
	}
	return out
}

// dosCountersOf is a tenant's DoS counters as its status reports them (nil:
// nothing counted).
func dosCountersOf(ctr dos.Counters, byTenant map[string][]dosRule, id string) *source.DoSCounters {
	t := ctr.Tenants[id]
	c := &source.DoSCounters{Packets: t.Packets, Dropped: t.Dropped}
	for _, r := range byTenant[id] {
		if c.Rules == nil {
			c.Rules = map[string]source.DoSRuleCount{}
		}
		c.Rules[r.name] = source.DoSRuleCount{Packets: r.s.Packets, Dropped: r.s.Dropped}
	}
	if tc, ok := ctr.TCP[id]; ok {
		// TCP protection: "tcp:<event>"; its drops (none in
		// monitor mode) under tcp:dropped.
		if c.Rules == nil {
			c.Rules = map[string]source.DoSRuleCount{}
		}
		c.Rules["tcp:syn"] = source.DoSRuleCount{Packets: tc.SYN}
		c.Rules["tcp:cookie_sent"] = source.DoSRuleCount{Packets: tc.CookiesSent}
		c.Rules["tcp:cookie_valid"] = source.DoSRuleCount{Packets: tc.CookiesValid}
		c.Rules["tcp:cookie_invalid"] = source.DoSRuleCount{Packets: tc.CookiesInvalid}
		c.Rules["tcp:out_of_state"] = source.DoSRuleCount{Packets: tc.OutOfState}
		c.Rules["tcp:dropped"] = source.DoSRuleCount{Packets: tc.Dropped, Dropped: tc.Dropped}
	}
	if c.Packets == 0 && c.Rules == nil {
		return nil
	}
	return c
}

func (d *Daemon) parseGlobalDoS(s source.Snapshot) {
	defer d.setGlobalErr()
	if s.DoSGlobal == nil {
		d.dos.global, d.dos.parsedIndex, d.dos.parseErr = nil, 0, ""
		return
	}
	if s.DoSGlobal.ModifyIndex == d.dos.parsedIndex && d.dos.global != nil {
		return
	}
	g, err := dosspec.ParseGlobal(s.DoSGlobal.Value)
	if err != nil {
		d.configError("", "dos/global", s.DoSGlobal.ModifyIndex)
		if msg := err.Error(); msg != d.dos.parseErr {
			d.log.Error("rejected dos/global; keeping the last good document", "err", err)
			d.dos.parseErr = msg
		}
		return
	}
	d.dos.global, d.dos.parsedIndex, d.dos.parseErr = &g, s.DoSGlobal.ModifyIndex, ""
}

// dosCollector exports the XDP counters at scrape time.
type dosCollector struct {
	dos                                                 DoS
	perRule                                             bool
	log                                                 *slog.Logger
	reason, reasonBytes                                 *prometheus.Desc
	rule, ruleBytes, ruleDropped, tenant, tenantDropped *prometheus.Desc
	tcp                                                 *prometheus.Desc
}

// NewDoSCollector returns a Prometheus collector for the DoS counters.
// Signatures (at most 256 slots) always have their series; rate-limit
// rules (up to 16,384 slots, three series each) only with perRule.
func NewDoSCollector(d DoS, log *slog.Logger, perRule bool) prometheus.Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &dosCollector{dos: d, log: log, perRule: perRule,
		reason:        prometheus.NewDesc("nfhost_dos_packets_total", "Packets seen by the XDP DoS layer, by outcome.", []string{"reason"}, nil),
		reasonBytes:   prometheus.NewDesc("nfhost_dos_bytes_total", "Bytes seen by the XDP DoS layer, by outcome.", []string{"reason"}, nil),
		rule:          prometheus.NewDesc("nfhost_dos_rule_packets_total", "Packets matched by a DoS signature or rate limit.", []string{"kind", "rule"}, nil),
		ruleBytes:     prometheus.NewDesc("nfhost_dos_rule_bytes_total", "Bytes matched by a DoS signature or rate limit.", []string{"kind", "rule"}, nil),
		ruleDropped:   prometheus.NewDesc("nfhost_dos_rule_dropped_packets_total", "Packets a DoS signature or rate limit dropped.", []string{"kind", "rule"}, nil),
		tenant:        prometheus.NewDesc("nfhost_dos_tenant_packets_total", "Packets towards a tenant's prefixes seen by the XDP DoS layer.", []string{"tenant"}, nil),
		tenantDropped: prometheus.NewDesc("nfhost_dos_tenant_dropped_packets_total", "Packets towards a tenant's prefixes the XDP DoS layer dropped.", []string{"tenant"}, nil),
		tcp: prometheus.NewDesc("nfhost_dos_tcp_protection_packets_total", "TCP protection (SYN cookies, out-of-state TCP) by tenant and event: "+
			"syn, cookie_sent, cookie_valid, cookie_invalid, out_of_state, flow_started, dropped, syn_unanswerable.", []string{"tenant", "event"}, nil),
	}
}

func (c *dosCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.reason, c.reasonBytes, c.rule, c.ruleBytes, c.ruleDropped, c.tenant, c.tenantDropped, c.tcp} {
		ch <- d
	}
}

func (c *dosCollector) Collect(ch chan<- prometheus.Metric) {
	ctr, err := c.dos.Counters()
	if err != nil {
		c.log.Warn("read DoS counters", "err", err)
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for r, s := range ctr.Reasons {
		counter(c.reason, s.Packets, r)
		counter(c.reasonBytes, s.Bytes, r)
	}
	for kind, m := range map[string]map[string]dos.Stats{"signature": ctr.Signatures, "rate_limit": ctr.RateLimits} {
		if kind == "rate_limit" && !c.perRule {
			continue
		}
		for id, s := range m {
			counter(c.rule, s.Packets, kind, id)
			counter(c.ruleBytes, s.Bytes, kind, id)
			counter(c.ruleDropped, s.Dropped, kind, id)
		}
	}
	for id, s := range ctr.Tenants {
		counter(c.tenant, s.Packets, id)
		counter(c.tenantDropped, s.Dropped, id)
	}
	for id, s := range ctr.TCP {
		for ev, v := range map[string]uint64{"syn": s.SYN, "cookie_sent": s.CookiesSent, "cookie_valid": s.CookiesValid,
			"cookie_invalid": s.CookiesInvalid, "out_of_state": s.OutOfState, "flow_started": s.Flows, "dropped": s.Dropped,
			"syn_unanswerable": s.SYNUnanswerable} {
			counter(c.tcp, v, id, ev)
		}
	}
}
