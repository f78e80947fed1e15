// Package detect turns the XDP DoS layer's packet samples into
// mitigations, in the spirit of Cloudflare's Gatebot: per tenant and
// destination address it estimates the packet rate from 1-in-N samples
// over a short window; when a destination goes over its tenant's
// threshold it looks for the header values the attack packets share
// (protocol, ports, length, TTL, TCP flags, the first payload bytes) and
// writes a signature for exactly those, scoped to the victim address. The
// attack is dropped in XDP; traffic to the victim that does not look like
// the attack still passes, so the victim stays reachable (a blackhole
// would finish the attacker's job).
//
// The package is pure: Add feeds samples, Tick decides. nsd applies the
// mitigations as expiring signatures of the tenant's scope.
package detect

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Packet is what the detector uses of a sample.
type Packet struct {
	Tenant   string
	Src      netip.Addr // for views of the traffic (nsctl dos top); signatures never name it
	Dst      netip.Addr
	Proto    uint8
	SPort    uint16 // TCP/UDP, 0 otherwise
	DPort    uint16
	Len      uint16 // IP length
	TTL      uint8
	TCPFlags uint8
	ICMPType int    // -1 unless ICMP
	Payload  []byte // the first PayloadBytes of the L4 payload
	Dropped  bool   // already dropped by a rule (an attack being mitigated)
}

// PayloadBytes is how much payload the detector compares.
const PayloadBytes = 4

// Parse decodes a sampled frame (Ethernet, up to two VLAN tags, IPv4 or
// IPv6, TCP/UDP/ICMP). ok is false for anything else.
func Parse(frame []byte) (p Packet, ok bool) {
	p.ICMPType = -1
	if len(frame) < 14 {
		return p, false
	}
	off, et := 14, binary.BigEndian.Uint16(frame[12:])
	for i := 0; i < 2 && (et == 0x8100 || et == 0x88a8); i++ {
		if len(frame) < off+4 {
			return p, false
		}
		et = binary.BigEndian.Uint16(frame[off+2:])
		off += 4
	}
	b := frame[off:]
	var l4 []byte
	switch et {
	case 0x0800:
		if len(b) < 20 || b[0]>>4 != 4 {
			return p, false
		}
		ihl := int(b[0]&0x0f) * 4
		if ihl < 20 || len(b) < ihl {
			return p, false
		}
		p.Src, p.Dst = netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto, p.TTL, p.Len = b[9], b[8], binary.BigEndian.Uint16(b[2:])
		if binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
			return p, true // a later fragment: no L4 header
		}
		l4 = b[ihl:]
	case 0x86dd:
		if len(b) < 40 {
			return p, false
		}
		p.Src, p.Dst = netip.AddrFrom16([16]byte(b[8:24])), netip.AddrFrom16([16]byte(b[24:40]))
		p.Proto, p.TTL, p.Len = b[6], b[7], binary.BigEndian.Uint16(b[4:])+40
		l4 = b[40:]
	default:
		return p, false
	}
	hdr := 0
	switch p.Proto {
	case 6:
		if len(l4) < 20 {
			return p, true
		}
		p.SPort, p.DPort, p.TCPFlags = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:]), l4[13]
		hdr = int(l4[12]>>4) * 4
	case 17:
		if len(l4) < 8 {
			return p, true
		}
		p.SPort, p.DPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		hdr = 8
	case 1, 58:
		if len(l4) < 8 {
			return p, true
		}
		p.ICMPType = int(l4[0])
		hdr = 8
	default:
		return p, true
	}
	if hdr > 0 && len(l4) >= hdr+PayloadBytes {
		p.Payload = append([]byte(nil), l4[hdr:hdr+PayloadBytes]...)
	}
	return p, true
}

// Policy is a tenant's detection setting.
type Policy struct {
	// PPS is the rate towards one destination address above which the
	// traffic is examined.
	PPS uint64
	// SampleRate is 1 in N, to scale samples back to packets.
	SampleRate uint32
	// Duration is how long a mitigation stays after the attack was last
	// seen above the threshold.
	Duration time.Duration
}

// Config tunes the detector.
type Config struct {
	// Window is the rate-estimation window (default 200 ms).
	Window time.Duration
	// MinSamples below which a window says nothing (default 16).
	MinSamples int
	// Coverage: a header value joins the signature when at least this
	// share of the victim's samples carry it (default 0.9).
	Coverage float64
	// MaxMitigations bounds live mitigations (default 32): signature
	// slots are shared with the operators' and tenants' rules.
	MaxMitigations int
	// Policy returns a tenant's policy; ok false: not watched.
	Policy func(tenant string) (Policy, bool)
}

// Mitigation is a signature the detector wants in force.
type Mitigation struct {
	ID         string // auto-<hash of the expression>
	Tenant     string
	Victim     netip.Addr
	Expression string // in the rule language
	// Action is drop when the signature names content the attack
	// packets share (payload, length, TTL, source port), and ratelimit
	// (at the tenant's threshold, per destination) when it only names
	// what legitimate packets to the victim may share too (a SYN to
	// the service port): the victim stays reachable either way.
	Action   string
	LimitPPS uint64 // for ratelimit
	PPS      uint64 // estimated attack rate when last seen
	Since    time.Time
	Expires  time.Time
}

type key struct {
	tenant string
	dst    netip.Addr
}

// Detector aggregates samples per window. Not safe for concurrent use.
type Detector struct {
	cfg     Config
	start   time.Time
	windows map[key][]Packet
	active  map[string]*Mitigation // by ID
}

// New returns a detector.
func New(cfg Config) *Detector {
	if cfg.Window == 0 {
		cfg.Window = 200 * time.Millisecond
	}
	if cfg.MinSamples == 0 {
		cfg.MinSamples = 16
	}
	if cfg.Coverage == 0 {
		cfg.Coverage = 0.9
	}
	if cfg.MaxMitigations == 0 {
		cfg.MaxMitigations = 32
	}
	return &Detector{cfg: cfg, windows: map[key][]Packet{}, active: map[string]*Mitigation{}}
}

// Add records one sampled packet.
func (d *Detector) Add(p Packet) {
	if p.Tenant == "" || !p.Dst.IsValid() {
		return
	}
	k := key{p.Tenant, p.Dst}
	if len(d.windows[k]) < 4096 {
		d.windows[k] = append(d.windows[k], p)
	}
}

// Tick closes the window when it is over and returns whether the set of
// mitigations changed; Active lists them.
func (d *Detector) Tick(now time.Time) (changed bool) {
	if d.start.IsZero() {
		d.start = now
	}
	if now.Sub(d.start) < d.cfg.Window {
		return false
	}
	secs := now.Sub(d.start).Seconds()
	d.start = now
	windows := d.windows
	d.windows = map[key][]Packet{}
	for k, pkts := range windows {
		pol, ok := d.cfg.Policy(k.tenant)
		if !ok || pol.SampleRate == 0 || len(pkts) < d.cfg.MinSamples {
			continue
		}
		pps := uint64(float64(len(pkts)) * float64(pol.SampleRate) / secs)
		if pps < pol.PPS {
			continue
		}
		expr, strong, ok := Signature(k.dst, pkts, d.cfg.Coverage)
		if !ok {
			continue // nothing the attack packets share beyond the victim
		}
		id := "auto-" + shortHash(expr)
		if m := d.active[id]; m != nil {
			// Refreshed: the program's copy of the expiry is moved on
			// (reported as a change) once it is half a Duration behind,
			// so a long attack never outlives its signature.
			m.PPS = pps
			if exp := now.Add(pol.Duration); exp.Sub(m.Expires) > pol.Duration/2 {
				m.Expires = exp
				changed = true
			}
			continue
		}
		if len(d.active) >= d.cfg.MaxMitigations {
			continue
		}
		m := &Mitigation{ID: id, Tenant: k.tenant, Victim: k.dst, Expression: expr, Action: "drop", PPS: pps, Since: now, Expires: now.Add(pol.Duration)}
		if !strong {
			m.Action, m.LimitPPS = "ratelimit", pol.PPS
		}
		d.active[id] = m
		changed = true
	}
	for id, m := range d.active {
		if !now.Before(m.Expires) {
			delete(d.active, id)
			changed = true
		}
	}
	return changed
}

// Active returns the mitigations in force, by tenant then ID.
func (d *Detector) Active() []Mitigation {
	out := make([]Mitigation, 0, len(d.active))
	for _, m := range d.active {
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Tenant < out[j].Tenant || out[i].Tenant == out[j].Tenant && out[i].ID < out[j].ID
	})
	return out
}

// Signature finds the header values at least coverage (0–1) of the
// samples share and writes them as an expression scoped to the victim. Packets a
// rule already drops count too: a mitigated attack keeps its mitigation
// alive. Values legitimate traffic to the victim shares as well (its
// service port, ACK-bearing TCP flags) are weak; strong are content
// (payload bytes, one length, one TTL, one source port) and unusual
// flags (SYN without ACK, RST, ...) and ICMP types. Without a strong
// value the attack cannot be told from legitimate traffic: no signature.
// content reports whether a content value is in it (then drop is safe).
// The detector uses it on every window over a tenant's threshold; nsctl
// dos top shows what it derives from the traffic on view.
func Signature(victim netip.Addr, pkts []Packet, coverage float64) (expr string, content, ok bool) {
	n := float64(len(pkts))
	top := func(f func(Packet) (string, bool)) (string, bool) {
		count := map[string]int{}
		for _, p := range pkts {
			if v, ok := f(p); ok {
				count[v]++
			}
		}
		best, bn := "", 0
		for v, c := range count {
			if c > bn || c == bn && v < best {
				best, bn = v, c
			}
		}
		return best, bn > 0 && float64(bn) >= coverage*n
	}
	proto, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.Proto)), true })
	if !ok {
		return "", false, false
	}
	bits := 32
	if victim.Is6() {
		bits = 128
	}
	conds := []string{fmt.Sprintf("ip.dst == %s", netip.PrefixFrom(victim, bits))}
	var l4 string
	switch proto {
	case "6":
		l4 = "tcp"
	case "17":
		l4 = "udp"
	default:
		conds = append(conds, "ip.proto == "+proto)
	}
	strong := false
	if l4 != "" {
		if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.DPort)), true }); ok {
			conds = append(conds, fmt.Sprintf("%s.dstport == %s", l4, v))
		}
		if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.SPort)), true }); ok {
			conds = append(conds, fmt.Sprintf("%s.srcport == %s", l4, v))
			strong, content = true, true
		}
		if l4 == "tcp" {
			if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.TCPFlags)), true }); ok {
				conds = append(conds, "tcp.flags == "+v)
				var f int
				fmt.Sscan(v, &f)
				strong = strong || f&0x10 == 0 // no ACK: SYN, RST, FIN, null floods
			}
		}
	} else if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(p.ICMPType), p.ICMPType >= 0 }); ok {
		conds = append(conds, "icmp.type == "+v)
		strong = true
	}
	if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.Len)), true }); ok {
		conds = append(conds, "ip.len == "+v)
		strong, content = true, true
	}
	if v, ok := top(func(p Packet) (string, bool) { return strconv.Itoa(int(p.TTL)), true }); ok {
		conds = append(conds, "ip.ttl == "+v)
		strong, content = true, true
	}
	if v, ok := top(func(p Packet) (string, bool) { return hex.EncodeToString(p.Payload), len(p.Payload) == PayloadBytes }); ok {
		conds = append(conds, fmt.Sprintf("payload[0:%d] == 0x%s", PayloadBytes, v))
		strong, content = true, true
	}
	if !strong {
		return "", false, false
	}
	return strings.Join(conds, " and "), content, true
}

func shortHash(s string) string {
	// FNV-1a, 32 bits: IDs only need to be stable and short.
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return fmt.Sprintf("%08x", h)
}
