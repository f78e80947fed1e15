package tunnels

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
)

// Probe timing. The documents give no timeout; half a second lets the
// two extra probes that follow a loss time out within the one second the
// down rule looks at (loss known at t, extras sent at t and t+100 ms,
// known lost at t+0.5 s and t+0.6 s).
const (
	ProbeTimeout = 500 * time.Millisecond
	ExtraSpacing = 100 * time.Millisecond
	tick         = 20 * time.Millisecond
	syncEvery    = 200 * time.Millisecond
)

// Probe directions (health_check.direction).
const (
	// Unidirectional: answers return over the internet to the probe
	// address (Magic Transit's default).
	Unidirectional = "unidirectional"
	// Bidirectional: answers return through the tunnel to nfhost's
	// tunnel interface address, and the tenant namespace answers the
	// router's own probes of that address through the tunnel.
	Bidirectional = "bidirectional"
)

// Health is one tunnel's health as reported in status and metrics.
type Health struct {
	Tenant, Tunnel string
	State          string
	// Reason says why the state holds (and, when no probe was ever
	// answered while the tunnel carries traffic from the router, what to
	// look at).
	Reason string
	Since  time.Time
	// Loss is Lost/Probes over the window (the last five minutes, at least
	// the last 30 probes).
	Loss          float64
	Probes, Lost  int
	LastFailure   time.Time
	RTT           time.Duration // last answered probe
	Sent          uint64        // probes sent, extra ones included
	Received      uint64        // answered
	LostTotal     uint64        // timed out, since probing began
	Type          string        // reply | request
	Direction     string
	Target, Reply netip.Addr // the probe's inner target, and where its answer returns to
}

type inflight struct {
	sent  time.Time
	extra bool
	ok    bool
	at    time.Time // when answered
}

type tunnelHealth struct {
	key      string // tenant/tunnel
	tenant   string
	ns       string // the tenant's namespace (bidirectional answers arrive there)
	t        Tunnel
	id       uint16
	m        HealthMachine
	next     time.Time   // next regular probe
	extras   []time.Time // extra probes due
	seq      uint16
	inflight map[uint16]*inflight
	rtt      time.Duration
	sent     uint64
	received uint64
	// rx0 is the tunnel's decapsulated packet count when probing began;
	// rx the latest (from Prober's traffic function).
	rx0, rx    uint64
	haveRx     bool
	target     netip.Addr
	returnAddr netip.Addr
}

// nsSocket receives the answers of bidirectional probes in one tenant
// namespace.
type nsSocket struct {
	fd   int
	ino  uint64
	stop chan struct{}
}

// Prober sends the health checks of every tunnel with health checks
// enabled, from the host namespace, and moves routes off tunnels that
// fail (through Reconciler.Reroute). One raw socket sends the
// encapsulated probes; one ICMP socket receives the echo replies that come
// back to the probe address (unidirectional), and one per tenant namespace
// with bidirectional tunnels those that come back through a tunnel.
// Each tunnel's verdicts come from a HealthMachine.
type Prober struct {
	rec       *Reconciler
	probeAddr netip.Addr
	log       *slog.Logger
	nonce     [8]byte
	sendFD    int
	recvFD    int
	onChange  func(Health)
	traffic   func(id uint32) (rx uint64, ok bool)
	nsDir     string

	mu      sync.Mutex
	tunnels map[string]*tunnelHealth
	byID    map[uint16]*tunnelHealth
	nsSocks map[string]*nsSocket
}

// NewProber opens the sockets in hostNS (probeAddr: this server's unicast
// address, where answers arrive) and installs the penalty function in rec.
// onChange, if set, is called on every state change, the first verdict
// of a tunnel included.
func NewProber(hostNS netns.NsHandle, probeAddr netip.Addr, rec *Reconciler, log *slog.Logger, onChange func(Health)) (*Prober, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !probeAddr.Is4() {
		return nil, fmt.Errorf("probe address %s: want IPv4", probeAddr)
	}
	p := &Prober{rec: rec, probeAddr: probeAddr, log: log, onChange: onChange, sendFD: -1, recvFD: -1, nsDir: namedns.DefaultDir,
		tunnels: map[string]*tunnelHealth{}, byID: map[uint16]*tunnelHealth{}, nsSocks: map[string]*nsSocket{}}
	rand.Read(p.nonce[:])
	open := func() error {
		var err error
		if p.sendFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("open raw socket: %w", err)
		}
		p.recvFD, err = openICMP()
		return err
	}
	if err := namedns.Do(hostNS, open); err != nil {
		p.Close()
		return nil, err
	}
	rec.SetPenalty(p.Penalty)
	return p, nil
}

func openICMP() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	if err != nil {
		return -1, fmt.Errorf("open ICMP socket: %w", err)
	}
	tv := unix.Timeval{Usec: 200_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set ICMP socket timeout: %w", err)
	}
	return fd, nil
}

// SetTraffic gives the prober a tunnel's decapsulated packet counter
// (Datapath.Stats), so a tunnel that carries traffic from the router
// while none of its probes is answered says so in its reason. It must not
// call into the Reconciler (the prober holds its lock while calling).
func (p *Prober) SetTraffic(rx func(id uint32) (uint64, bool)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.traffic = rx
}

// Close closes the sockets.
func (p *Prober) Close() {
	if p.sendFD >= 0 {
		unix.Close(p.sendFD)
	}
	if p.recvFD >= 0 {
		unix.Close(p.recvFD)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for ns, s := range p.nsSocks {
		close(s.stop)
		delete(p.nsSocks, ns)
	}
}

// Penalty is the priority penalty of a tunnel's routes.
func (p *Prober) Penalty(tenant, tunnel string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.tunnels[tenant+"/"+tunnel]
	if h == nil {
		return 0
	}
	switch st, _, _ := h.m.State(); st {
	case StateDegraded:
		return PenaltyDegraded
	case StateDown:
		return PenaltyDown
	}
	return 0
}

// Health returns every probed tunnel's health, sorted.
func (p *Prober) Health() []Health {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Health, 0, len(p.tunnels))
	for _, h := range p.tunnels {
		out = append(out, h.report())
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Tenant < out[j].Tenant || out[i].Tenant == out[j].Tenant && out[i].Tunnel < out[j].Tunnel
	})
	return out
}

// HealthOf returns one tunnel's health (false: not probed).
func (p *Prober) HealthOf(tenant, tunnel string) (Health, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := p.tunnels[tenant+"/"+tunnel]
	if h == nil {
		return Health{}, false
	}
	return h.report(), true
}

func (h *tunnelHealth) report() Health {
	st, reason, since := h.m.State()
	w := h.m.Window()
	var loss float64
	if w.Probes > 0 {
		loss = float64(w.Lost) / float64(w.Probes)
	}
	if hint := h.hint(w); hint != "" {
		reason += "; " + hint
	}
	return Health{Tenant: h.tenant, Tunnel: h.t.Name, State: st, Reason: reason, Since: since, Loss: loss,
		Probes: w.Probes, Lost: w.Lost, LastFailure: w.LastFailure, RTT: h.rtt, Sent: h.sent, Received: h.received, LostTotal: w.TotalLost,
		Type: h.t.Health.Type, Direction: h.t.Health.Direction, Target: h.target, Reply: h.returnAddr}
}

// hint explains a tunnel none of whose probes was ever answered while it
// carries traffic from the router: the tunnel works, the probes do not.
func (h *tunnelHealth) hint(w Window) string {
	if w.Answered > 0 || w.Total < DownMinSamples || !h.haveRx || h.rx <= h.rx0 {
		return ""
	}
	msg := fmt.Sprintf("no probe answered while the tunnel received %d packets from the router", h.rx-h.rx0)
	if h.t.Health.Type == "request" {
		return msg + fmt.Sprintf(": the router does not answer echo requests to %s, or its answers to %s are dropped", h.target, h.returnAddr)
	}
	return msg + fmt.Sprintf(": the router drops the decapsulated reply from %s to %s (a Linux router drops it if %s is its own address unless net.ipv4.conf.<tunnel>.accept_local=1; leave health_check.target unset)", h.target, h.returnAddr, h.target)
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	go p.receive(ctx, p.recvFD, nil)
	t := time.NewTicker(tick)
	defer t.Stop()
	var synced time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			// Following the reconciler's tunnels (and the namespaces of
			// bidirectional ones) costs a copy of every spec: every
			// syncEvery, not every tick.
			if now.Sub(synced) >= syncEvery {
				p.sync(ctx, now)
				synced = now
			}
			p.sendDue(now)
			p.evaluate(now)
		}
	}
}

// sync follows the reconciler's tunnels: new ones start, removed ones are
// forgotten; it opens and closes the per-namespace sockets of
// bidirectional tunnels.
func (p *Prober) sync(ctx context.Context, now time.Time) {
	// The reconciler's state is read before p.mu is taken: the reconciler
	// calls Penalty (p.mu) while it holds its own lock in Apply, so holding
	// p.mu while calling into it would deadlock the two.
	specs := p.rec.Specs()
	ids := map[string]uint32{}
	for _, s := range specs {
		for _, t := range s.Tunnels {
			if id, ok := p.rec.ID(s.Tenant, t.Name); ok && t.Health.Enabled {
				ids[s.Tenant+"/"+t.Name] = id
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[string]bool{}
	wantNS := map[string]bool{}
	for _, s := range specs {
		for _, t := range s.Tunnels {
			if !t.Health.Enabled {
				continue
			}
			key := s.Tenant + "/" + t.Name
			id, ok := ids[key]
			if !ok {
				continue
			}
			seen[key] = true
			h := p.tunnels[key]
			if h == nil || h.id != uint16(id) || h.t.Health != t.Health || h.t.Addr != t.Addr || h.t.Remote != t.Remote || h.t.Local != t.Local {
				// New, or its probes changed: start over (a new machine).
				h = &tunnelHealth{key: key, tenant: s.Tenant, next: now, id: uint16(id), inflight: map[uint16]*inflight{}}
				p.tunnels[key] = h
				p.byID[h.id] = h
				if p.traffic != nil {
					h.rx0, h.haveRx = p.traffic(id)
					h.rx = h.rx0
				}
			}
			h.t, h.ns = t, s.Namespace
			h.target, h.returnAddr = p.addresses(t)
			if p.traffic != nil {
				if rx, ok := p.traffic(id); ok {
					h.rx = rx
				}
			}
			if t.Health.Direction == Bidirectional {
				wantNS[s.Namespace] = true
			}
		}
	}
	for key, h := range p.tunnels {
		if !seen[key] {
			delete(p.tunnels, key)
			if p.byID[h.id] == h {
				delete(p.byID, h.id)
			}
		}
	}
	p.syncNSSockets(ctx, wantNS)
}

// addresses resolves a tunnel's probe addresses: the inner target and the
// address its answer returns to. Defaults (Target invalid):
//   - reply: the echo reply's source is nfhost's own tunnel interface
//     address (not the router's: a Linux router drops a decapsulated
//     packet from one of its own addresses as a martian unless
//     accept_local is set, and the router's route to it is the tunnel, so
//     strict rp_filter passes); bidirectional: the probe address, since
//     the answer returns to the tunnel interface address itself.
//   - request: the far side of the tunnel interface (the router's own
//     address, whatever box holds the customer endpoint).
func (p *Prober) addresses(t Tunnel) (target, reply netip.Addr) {
	reply = p.probeAddr
	if t.Health.Direction == Bidirectional {
		reply = t.Addr.Addr()
	}
	target = t.Health.Target
	if !target.IsValid() {
		switch {
		case t.Health.Type == "request":
			target = t.Peer
		case t.Health.Direction == Bidirectional:
			target = p.probeAddr
		default:
			target = t.Addr.Addr()
		}
	}
	return target, reply
}

// syncNSSockets opens an ICMP socket in each namespace of want (again if
// the namespace was replaced) and closes the others. Called with p.mu.
func (p *Prober) syncNSSockets(ctx context.Context, want map[string]bool) {
	for ns, s := range p.nsSocks {
		ino, ok := namedns.Inode(p.nsDir, ns)
		if !want[ns] || !ok || ino != s.ino {
			close(s.stop)
			delete(p.nsSocks, ns)
		}
	}
	for ns := range want {
		if p.nsSocks[ns] != nil {
			continue
		}
		ino, ok := namedns.Inode(p.nsDir, ns)
		if !ok {
			continue
		}
		h, err := namedns.Open(p.nsDir, ns)
		if err != nil {
			p.log.Warn("open tenant namespace for bidirectional health checks", "netns", ns, "err", err)
			continue
		}
		fd := -1
		err = namedns.Do(h, func() error {
			var err error
			fd, err = openICMP()
			return err
		})
		h.Close()
		if err != nil {
			p.log.Warn("open ICMP socket in tenant namespace", "netns", ns, "err", err)
			continue
		}
		s := &nsSocket{fd: fd, ino: ino, stop: make(chan struct{})}
		p.nsSocks[ns] = s
		go p.receive(ctx, fd, s.stop)
	}
}

func (p *Prober) sendDue(now time.Time) {
	p.mu.Lock()
	type out struct {
		key string
		b   []byte
		dst netip.Addr
	}
	var due []out
	for _, h := range p.tunnels {
		var extra []bool
		if !now.Before(h.next) {
			h.next = now.Add(h.t.Health.Interval)
			extra = append(extra, false)
		}
		for len(h.extras) > 0 && !now.Before(h.extras[0]) {
			h.extras = h.extras[1:]
			extra = append(extra, true)
		}
		for _, x := range extra {
			h.seq++
			h.sent++
			h.inflight[h.seq] = &inflight{sent: now, extra: x}
			due = append(due, out{h.key, p.packet(h, now), h.t.Remote})
		}
	}
	p.mu.Unlock()
	for _, o := range due {
		sa := &unix.SockaddrInet4{Addr: o.dst.As4()}
		if err := unix.Sendto(p.sendFD, o.b, 0, sa); err != nil {
			p.log.Debug("send health probe", "tunnel", o.key, "err", err)
		}
	}
}

// packet builds outer IPv4 + GRE + inner IPv4 + ICMP echo. Type reply: an
// echo reply from the target to the return address, which the customer's
// router decapsulates and routes back to us. Type request: an echo request
// from the return address to the target, answered to us.
func (p *Prober) packet(h *tunnelHealth, now time.Time) []byte {
	icmp := make([]byte, 8+8+8)
	src, dst := h.target, h.returnAddr
	icmp[0] = 0 // echo reply
	if h.t.Health.Type == "request" {
		icmp[0] = 8
		src, dst = h.returnAddr, h.target
	}
	binary.BigEndian.PutUint16(icmp[4:], h.id)
	binary.BigEndian.PutUint16(icmp[6:], h.seq)
	copy(icmp[8:], p.nonce[:])
	binary.BigEndian.PutUint64(icmp[16:], uint64(now.UnixNano()))
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	inner := ipv4(src, dst, unix.IPPROTO_ICMP, 64, icmp)
	gre := append([]byte{0, 0, 0x08, 0x00}, inner...)
	return ipv4(h.t.Local, h.t.Remote, unix.IPPROTO_GRE, h.t.TTL, gre)
}

func ipv4(src, dst netip.Addr, proto byte, ttl uint8, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	copy(b[20:], payload)
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// receive reads echo replies from fd until ctx ends or stop closes (then
// it closes fd).
func (p *Prober) receive(ctx context.Context, fd int, stop chan struct{}) {
	if stop != nil {
		defer unix.Close(fd)
	}
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		if stop != nil {
			select {
			case <-stop:
				return
			default:
			}
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < 20 {
			if err == unix.EBADF {
				return
			}
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+24 {
			continue
		}
		m := buf[ihl:n]
		if m[0] != 0 || string(m[8:16]) != string(p.nonce[:]) {
			continue // not an echo reply to one of our probes
		}
		id, seq := binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:])
		now := time.Now()
		p.mu.Lock()
		if h := p.byID[id]; h != nil {
			if pr := h.inflight[seq]; pr != nil && !pr.ok && now.Sub(pr.sent) <= ProbeTimeout {
				pr.ok, pr.at = true, now
				h.rtt = now.Sub(pr.sent)
				h.received++
			}
		}
		p.mu.Unlock()
	}
}

// evaluate feeds the outcomes known by now (answers, and probes past their
// timeout) to each tunnel's machine in time order, schedules the extra
// probes it asks for, and re-routes tenants whose tunnels changed state.
func (p *Prober) evaluate(now time.Time) {
	p.mu.Lock()
	var reports []Health
	tenants := map[string]bool{}
	for _, h := range p.tunnels {
		var outs []Outcome
		for seq, pr := range h.inflight {
			switch {
			case pr.ok:
				outs = append(outs, Outcome{At: pr.at, OK: true, Extra: pr.extra})
			case now.Sub(pr.sent) > ProbeTimeout:
				outs = append(outs, Outcome{At: pr.sent.Add(ProbeTimeout), Extra: pr.extra})
			default:
				continue
			}
			delete(h.inflight, seq)
		}
		sort.Slice(outs, func(i, j int) bool { return outs[i].At.Before(outs[j].At) })
		for _, o := range outs {
			from, _, _ := h.m.State()
			changed, extra := h.m.Observe(o)
			for i := 0; i < extra; i++ {
				h.extras = append(h.extras, now.Add(time.Duration(i)*ExtraSpacing))
			}
			if changed {
				r := h.report()
				p.log.Info("tunnel health changed", "tunnel", h.key, "from", from, "to", r.State, "reason", r.Reason,
					"lost", r.Lost, "of", r.Probes)
				reports = append(reports, r)
				tenants[h.tenant] = true
			}
		}
	}
	p.mu.Unlock()
	for t := range tenants {
		if ch, err := p.rec.Reroute(t); err != nil {
			p.log.Error("re-route after a health change", "tenant", t, "err", err)
		} else if len(ch) > 0 {
			p.log.Info("routes moved by health checks", "tenant", t, "changes", ch)
		}
	}
	if p.onChange != nil {
		for _, r := range reports {
			p.onChange(r)
		}
	}
}
