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

// Health-check states and their thresholds (Magic Transit semantics).
const (
	StateHealthy  = "healthy"
	StateDegraded = "degraded" // >= 0.1% loss over the window: +500,000
	StateDown     = "down"     // every probe of the last few failed: +1,000,000

	// Window is how many probes the loss ratio covers.
	Window = 20
	// DownAfter consecutive lost probes make a tunnel down.
	DownAfter = 3
	// RecoverAfter consecutive answered probes are needed before a
	// tunnel's state may improve (sustained healthy period).
	RecoverAfter = 10
	// ProbeTimeout is how long a probe may take before it counts as lost.
	ProbeTimeout = time.Second
	degradedLoss = 0.001
)

// Health is one tunnel's health as reported in status and metrics.
type Health struct {
	Tenant, Tunnel string
	State          string
	Loss           float64       // over the window
	RTT            time.Duration // last answered probe
	Sent, Received uint64
}

type probe struct {
	seq      uint16
	sent     time.Time
	answered bool
	rtt      time.Duration
}

type tunnelHealth struct {
	key      string // tenant/tunnel
	tenant   string
	t        Tunnel
	id       uint16
	next     time.Time
	seq      uint16
	window   []probe // oldest first, at most Window
	state    string
	rtt      time.Duration
	sent     uint64
	received uint64
	// reported: the first verdict (from the first probe answered or timed
	// out) went to onChange, so the status shows it at once.
	reported bool
}

// Prober sends the health checks of every tunnel with health checks
// enabled, from the host namespace, and moves routes off tunnels that
// fail (through Reconciler.Reroute). One raw socket sends the
// encapsulated probes; one ICMP socket receives the echo replies that come
// back to the probe address.
type Prober struct {
	rec       *Reconciler
	probeAddr netip.Addr
	log       *slog.Logger
	nonce     [8]byte
	sendFD    int
	recvFD    int
	onChange  func(Health)

	mu      sync.Mutex
	tunnels map[string]*tunnelHealth
	byID    map[uint16]*tunnelHealth
}

// NewProber opens the sockets in hostNS (probeAddr: this server's unicast
// address, where answers arrive) and installs the penalty function in rec.
// onChange, if set, is called on every state change.
func NewProber(hostNS netns.NsHandle, probeAddr netip.Addr, rec *Reconciler, log *slog.Logger, onChange func(Health)) (*Prober, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if !probeAddr.Is4() {
		return nil, fmt.Errorf("probe address %s: want IPv4", probeAddr)
	}
	p := &Prober{rec: rec, probeAddr: probeAddr, log: log, onChange: onChange, sendFD: -1, recvFD: -1,
		tunnels: map[string]*tunnelHealth{}, byID: map[uint16]*tunnelHealth{}}
	rand.Read(p.nonce[:])
	open := func() error {
		var err error
		if p.sendFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return fmt.Errorf("open raw socket: %w", err)
		}
		if p.recvFD, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP); err != nil {
			return fmt.Errorf("open ICMP socket: %w", err)
		}
		tv := unix.Timeval{Usec: 200_000}
		return unix.SetsockoptTimeval(p.recvFD, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err := namedns.Do(hostNS, open); err != nil {
		p.Close()
		return nil, err
	}
	rec.SetPenalty(p.Penalty)
	return p, nil
}

// Close closes the sockets.
func (p *Prober) Close() {
	if p.sendFD >= 0 {
		unix.Close(p.sendFD)
	}
	if p.recvFD >= 0 {
		unix.Close(p.recvFD)
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
	switch h.state {
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
	known, lost := 0, 0
	for _, pr := range h.window {
		if pr.answered || time.Since(pr.sent) > ProbeTimeout {
			known++
			if !pr.answered {
				lost++
			}
		}
	}
	var loss float64
	if known > 0 {
		loss = float64(lost) / float64(known)
	}
	return Health{Tenant: h.tenant, Tunnel: h.t.Name, State: h.state, Loss: loss, RTT: h.rtt, Sent: h.sent, Received: h.received}
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) {
	go p.receive(ctx)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			p.sync(now)
			p.sendDue(now)
			p.evaluate(now)
		}
	}
}

// sync follows the reconciler's tunnels: new ones start healthy, removed
// ones are forgotten.
func (p *Prober) sync(now time.Time) {
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
	for _, s := range specs {
		for _, t := range s.Tunnels {
			if !t.Health.Enabled {
				continue
			}
			key := s.Tenant + "/" + t.Name
			seen[key] = true
			h := p.tunnels[key]
			id, ok := ids[key]
			if !ok {
				continue
			}
			if h == nil || h.id != uint16(id) {
				h = &tunnelHealth{key: key, tenant: s.Tenant, state: StateHealthy, next: now, id: uint16(id)}
				p.tunnels[key] = h
				p.byID[h.id] = h
			}
			h.t = t
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
}

func (p *Prober) sendDue(now time.Time) {
	p.mu.Lock()
	var due []*tunnelHealth
	for _, h := range p.tunnels {
		if !now.Before(h.next) {
			h.next = now.Add(h.t.Health.Interval)
			h.seq++
			h.sent++
			h.window = append(h.window, probe{seq: h.seq, sent: now})
			if len(h.window) > Window {
				h.window = h.window[len(h.window)-Window:]
			}
			due = append(due, h)
		}
	}
	pkts := make([][]byte, len(due))
	dsts := make([]netip.Addr, len(due))
	for i, h := range due {
		pkts[i], dsts[i] = p.packet(h, now), h.t.Remote
	}
	p.mu.Unlock()
	for i, b := range pkts {
		sa := &unix.SockaddrInet4{Addr: dsts[i].As4()}
		if err := unix.Sendto(p.sendFD, b, 0, sa); err != nil {
			p.log.Debug("send health probe", "tunnel", due[i].key, "err", err)
		}
	}
}

// packet builds outer IPv4 + GRE + inner IPv4 + ICMP echo. Type reply: an
// echo reply from the target to our probe address, which the customer's
// router decapsulates and routes back to us. Type request: an echo request
// from our probe address to the far side of the tunnel, answered to us.
func (p *Prober) packet(h *tunnelHealth, now time.Time) []byte {
	icmp := make([]byte, 8+8+8)
	src, dst := h.t.Health.Target, p.probeAddr
	icmp[0] = 0 // echo reply
	if h.t.Health.Type == "request" {
		icmp[0] = 8
		src, dst = p.probeAddr, h.t.Peer
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

func (p *Prober) receive(ctx context.Context) {
	buf := make([]byte, 1500)
	for ctx.Err() == nil {
		n, _, err := unix.Recvfrom(p.recvFD, buf, 0)
		if err != nil || n < 20 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		m := buf[ihl:n]
		if len(m) < 24 || m[0] != 0 || string(m[8:16]) != string(p.nonce[:]) {
			continue // not an echo reply to one of our probes
		}
		id, seq := binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:])
		now := time.Now()
		p.mu.Lock()
		if h := p.byID[id]; h != nil {
			for i := range h.window {
				if pr := &h.window[i]; pr.seq == seq && !pr.answered {
					pr.answered, pr.rtt = true, now.Sub(pr.sent)
					h.rtt = pr.rtt
					h.received++
				}
			}
		}
		p.mu.Unlock()
	}
}

// evaluate moves tunnels between states: worse at once, better only
// after RecoverAfter answered probes in a row.
func (p *Prober) evaluate(now time.Time) {
	p.mu.Lock()
	var changed []*tunnelHealth
	for _, h := range p.tunnels {
		var known []probe
		for _, pr := range h.window {
			if pr.answered || now.Sub(pr.sent) > ProbeTimeout {
				known = append(known, pr)
			}
		}
		lost, streakLost, streakOK := 0, 0, 0
		for _, pr := range known {
			if pr.answered {
				streakOK++
				streakLost = 0
			} else {
				lost++
				streakLost++
				streakOK = 0
			}
		}
		want := StateHealthy
		switch {
		case streakLost >= DownAfter:
			want = StateDown
		case len(known) > 0 && float64(lost)/float64(len(known)) >= degradedLoss:
			want = StateDegraded
		}
		// Worse at once; better only after a sustained answered streak
		// (down -> degraded while the window still holds losses, then
		// healthy once it holds none).
		if want != h.state && (rank(want) > rank(h.state) || streakOK >= RecoverAfter) {
			p.log.Info("tunnel health changed", "tunnel", h.key, "from", h.state, "to", want, "lost", lost, "of", len(known))
			h.state = want
			h.reported = true
			changed = append(changed, h)
		} else if !h.reported && len(known) > 0 {
			h.reported = true // the first verdict: the tunnel leaves "starting"
			changed = append(changed, h)
		}
	}
	var reports []Health
	tenants := map[string]bool{}
	for _, h := range changed {
		reports = append(reports, h.report())
		tenants[h.tenant] = true
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

func rank(s string) int {
	switch s {
	case StateDegraded:
		return 1
	case StateDown:
		return 2
	}
	return 0
}
