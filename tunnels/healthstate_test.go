package tunnels

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// step is one outcome fed to the machine at t0+at, and what must follow.
type step struct {
	at    time.Duration
	ok    bool
	extra bool // the outcome of an extra probe
	// want: the state after the step; wantExtra: the extra probes asked
	// for; changed: whether the step changed the state.
	want      string
	wantExtra int
	changed   bool
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func ms(n int) time.Duration  { return time.Duration(n) * time.Millisecond }
func sec(n int) time.Duration { return time.Duration(n) * time.Second }

// answered returns n answered regular probes every interval from start,
// all leaving the machine in state.
func answered(start, interval time.Duration, n int, state string) []step {
	var out []step
	for i := 0; i < n; i++ {
		// A fresh machine's first answer is its first verdict.
		out = append(out, step{at: start + time.Duration(i)*interval, ok: true, want: state, changed: start == 0 && i == 0})
	}
	return out
}

func concat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestHealthMachineTransitions: every transition of the documented state
// machine, with the documented thresholds, driven by a fake clock (the
// outcome times).
func TestHealthMachineTransitions(t *testing.T) {
	// The down rule needs the last state change: the last step with changed.
	cases := []struct {
		name  string
		steps []step
	}{
		{"starting -> healthy at the first answer", []step{
			{at: 0, ok: true, want: StateHealthy, changed: true},
		}},
		{"starting: a first loss waits for its two extra probes, answered -> healthy", []step{
			{at: 0, want: StateStarting, wantExtra: 2},
			{at: ms(10), ok: true, extra: true, want: StateStarting},
			{at: ms(110), ok: true, extra: true, want: StateHealthy, changed: true},
		}},
		{"starting -> down: all three probes of the last second lost", []step{
			{at: 0, want: StateStarting, wantExtra: 2},
			{at: ms(500), extra: true, want: StateStarting},
			{at: ms(600), extra: true, want: StateDown, changed: true},
		}},
		{"healthy: one loss whose extra probes are answered stays healthy (two failures needed)", concat(
			answered(0, sec(1), 5, StateHealthy)[:1],
			answered(sec(1), sec(1), 4, StateHealthy),
			[]step{
				{at: sec(5), want: StateHealthy, wantExtra: 2},
				{at: sec(5) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(5) + ms(110), ok: true, extra: true, want: StateHealthy},
			},
			answered(sec(6), sec(1), 3, StateHealthy),
		)},
		{"healthy -> degraded: two losses within five minutes, at the end of the second burst", concat(
			answered(0, sec(1), 3, StateHealthy),
			[]step{
				{at: sec(3), want: StateHealthy, wantExtra: 2},
				{at: sec(3) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(3) + ms(110), ok: true, extra: true, want: StateHealthy},
			},
			answered(sec(4), sec(1), 250, StateHealthy),
			[]step{
				{at: sec(254), want: StateHealthy, wantExtra: 2},
				{at: sec(254) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(254) + ms(110), ok: true, extra: true, want: StateDegraded, changed: true},
			},
		)},
		{"healthy -> degraded: a loss and one lost extra probe (the answered one keeps it from down)", concat(
			answered(0, sec(1), 3, StateHealthy),
			[]step{
				{at: sec(3), want: StateHealthy, wantExtra: 2},
				{at: sec(3) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(3) + ms(600), extra: true, want: StateDegraded, changed: true},
			},
		)},
		{"healthy: two losses more than five minutes apart stay healthy", concat(
			answered(0, sec(1), 3, StateHealthy),
			[]step{
				{at: sec(3), want: StateHealthy, wantExtra: 2},
				{at: sec(3) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(3) + ms(110), ok: true, extra: true, want: StateHealthy},
			},
			answered(sec(4), sec(10), 30, StateHealthy),
			[]step{
				{at: sec(304), want: StateHealthy, wantExtra: 2},
				{at: sec(304) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(304) + ms(110), ok: true, extra: true, want: StateHealthy},
			},
		)},
		{"healthy -> down directly: a loss and both extra probes lost within one second", concat(
			answered(0, sec(1), 3, StateHealthy),
			[]step{
				{at: sec(2) + ms(500), want: StateHealthy, wantExtra: 2},
				{at: sec(3), extra: true, want: StateHealthy},
				{at: sec(3) + ms(100), extra: true, want: StateDown, changed: true},
			},
		)},
		{"down needs three samples: two losses in a second are not enough", concat(
			answered(0, sec(1), 3, StateHealthy),
			[]step{
				{at: sec(3), want: StateHealthy, wantExtra: 2},
				{at: sec(3) + ms(500), extra: true, want: StateHealthy},
				{at: sec(4) + ms(600), extra: true, want: StateDegraded, changed: true},
			},
		)},
		{"degraded -> down: all probes of the last second lost", concat(
			answered(0, sec(1), 2, StateHealthy),
			[]step{
				{at: sec(2), want: StateHealthy, wantExtra: 2},
				{at: sec(2) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(2) + ms(600), extra: true, want: StateDegraded, changed: true},
				{at: sec(3), ok: true, want: StateDegraded},
				{at: sec(4), want: StateDegraded, wantExtra: 2},
				{at: sec(4) + ms(500), extra: true, want: StateDegraded},
				{at: sec(4) + ms(600), extra: true, want: StateDown, changed: true},
			},
		)},
		{"down: a loss after an answer stays down and needs three new answers in a row", concat(
			answered(0, sec(1), 2, StateHealthy),
			[]step{
				{at: sec(2), want: StateHealthy, wantExtra: 2},
				{at: sec(2) + ms(500), extra: true, want: StateHealthy},
				{at: sec(2) + ms(600), extra: true, want: StateDown, changed: true},
				{at: sec(4), ok: true, want: StateDown, wantExtra: 2},
				{at: sec(4) + ms(500), extra: true, want: StateDown},
				{at: sec(4) + ms(600), ok: true, extra: true, want: StateDown},
				{at: sec(5), ok: true, want: StateDown, wantExtra: 2},
				{at: sec(5) + ms(10), ok: true, extra: true, want: StateDegraded, changed: true},
				{at: sec(5) + ms(110), ok: true, extra: true, want: StateDegraded},
			},
		)},
		{"down -> degraded after three answers in a row -> healthy after the last 30 answered", concat(
			answered(0, sec(1), 2, StateHealthy),
			[]step{
				{at: sec(2), want: StateHealthy, wantExtra: 2},
				{at: sec(2) + ms(500), extra: true, want: StateHealthy},
				{at: sec(2) + ms(600), extra: true, want: StateDown, changed: true},
				{at: sec(10), ok: true, want: StateDown, wantExtra: 2},
				{at: sec(10) + ms(10), ok: true, extra: true, want: StateDown},
				{at: sec(10) + ms(110), ok: true, extra: true, want: StateDegraded, changed: true},
			},
			// 3 answered so far; 26 more leave it degraded, the 27th makes 30.
			answered(sec(11), sec(1), 26, StateDegraded),
			[]step{{at: sec(37), ok: true, want: StateHealthy, changed: true}},
		)},
		{"degraded stays while a loss is among the last 30", concat(
			answered(0, sec(1), 2, StateHealthy),
			[]step{
				{at: sec(2), want: StateHealthy, wantExtra: 2},
				{at: sec(2) + ms(10), ok: true, extra: true, want: StateHealthy},
				{at: sec(2) + ms(600), extra: true, want: StateDegraded, changed: true},
			},
			answered(sec(3), sec(1), 20, StateDegraded),
			[]step{
				{at: sec(23), want: StateDegraded, wantExtra: 2},
				{at: sec(23) + ms(10), ok: true, extra: true, want: StateDegraded},
				{at: sec(23) + ms(110), ok: true, extra: true, want: StateDegraded},
			},
			// The loss at 23 s leaves the last 30 with the 30th answer after it.
			answered(sec(24), sec(1), 27, StateDegraded),
			[]step{{at: sec(51), ok: true, want: StateHealthy, changed: true}},
		)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m HealthMachine
			for i, s := range c.steps {
				changed, extra := m.Observe(Outcome{At: t0.Add(s.at), OK: s.ok, Extra: s.extra})
				st, reason, since := m.State()
				if st != s.want || extra != s.wantExtra || changed != s.changed {
					t.Fatalf("step %d (at %v ok=%v extra=%v): state %s (%s) extra %d changed %v; want %s extra %d changed %v",
						i, s.at, s.ok, s.extra, st, reason, extra, changed, s.want, s.wantExtra, s.changed)
				}
				if changed && !since.Equal(t0.Add(s.at)) {
					t.Fatalf("step %d: since %v, want %v", i, since, t0.Add(s.at))
				}
			}
		})
	}
}

// TestHealthMachineLossRatio: the 0.1% of the degraded rule counts when
// more than 2,000 probes fall in five minutes (above about 6.7 a second):
// 2 lost of 3,000 is less than 0.1%, 3 of 3,000 is not.
func TestHealthMachineLossRatio(t *testing.T) {
	for _, c := range []struct {
		lost int
		want string
	}{{2, StateHealthy}, {3, StateDegraded}} {
		var m HealthMachine
		at := t0
		for i := 0; i < 3000-c.lost*3; i++ {
			m.Observe(Outcome{At: at, OK: true})
			at = at.Add(100 * time.Millisecond)
		}
		for j := 0; j < c.lost; j++ {
			m.Observe(Outcome{At: at, OK: false})
			m.Observe(Outcome{At: at.Add(10 * time.Millisecond), OK: true, Extra: true})
			m.Observe(Outcome{At: at.Add(20 * time.Millisecond), OK: true, Extra: true})
			at = at.Add(100 * time.Millisecond)
		}
		w := m.Window()
		if st, reason, _ := m.State(); st != c.want {
			t.Errorf("%d lost of %d in the window: %s (%s), want %s", w.Lost, w.Probes, st, reason, c.want)
		}
	}
}

// probeSim runs the prober's timing (ProbeTimeout, ExtraSpacing, the
// interval) against a path that loses every probe sent while blocked(t),
// with a fixed round trip, and records the state changes.
type probeSim struct {
	interval, rtt time.Duration
	blocked       func(d time.Duration) bool
	m             HealthMachine
	changes       []string
}

func (s *probeSim) run(until time.Duration) {
	type probe struct {
		sent  time.Duration
		extra bool
	}
	var pending []probe // outcomes to come, by outcome time
	outcomeAt := func(p probe) (time.Duration, bool) {
		if s.blocked(p.sent) {
			return p.sent + ProbeTimeout, false
		}
		return p.sent + s.rtt, true
	}
	next := time.Duration(0)
	for now := time.Duration(0); now <= until; now += time.Millisecond {
		if now >= next {
			pending = append(pending, probe{sent: now})
			next = now + s.interval
		}
		for i := 0; i < len(pending); {
			at, ok := outcomeAt(pending[i])
			if at > now {
				i++
				continue
			}
			p := pending[i]
			pending = append(pending[:i], pending[i+1:]...)
			changed, extra := s.m.Observe(Outcome{At: t0.Add(at), OK: ok, Extra: p.extra})
			for j := 0; j < extra; j++ {
				pending = append(pending, probe{sent: now + time.Duration(j)*ExtraSpacing, extra: true})
			}
			if changed {
				st, _, _ := s.m.State()
				s.changes = append(s.changes, fmt.Sprintf("%v %s", at, st))
			}
		}
	}
}

// TestHealthTiming: a tunnel blocked at 10 s and unblocked at 20 s, at
// each rate, goes down about a timeout plus an extra probe's spacing and
// timeout after the first lost probe, degraded at the first answered
// probe's two extra answers, and healthy 30 answered probes later. These
// are the figures the README documents.
func TestHealthTiming(t *testing.T) {
	rtt := 5 * time.Millisecond
	blocked := func(d time.Duration) bool { return d >= 10*time.Second && d < 20*time.Second }
	for _, c := range []struct {
		rate     string
		interval time.Duration
		want     []string
	}{
		// mid: the probe sent at 10 s times out at 10.5 s; extras sent at
		// 10.5 and 10.6 s time out at 11.0 and 11.1 s: down. The probe at
		// 20 s is answered at 20.005 s; its extras at 20.005 and 20.105 s
		// answered by 20.11 s: degraded. 27 more probes (21..47 s): healthy.
		{"mid", time.Second, []string{"5ms healthy", "11.1s down", "20.11s degraded", "47.005s healthy"}},
		// high (250 ms): down once three probes of a second are lost (the
		// ones sent at 10, 10.25 and 10.5 s, lost at 10.5, 10.75 and 11 s);
		// the probe sent at 19.75 s is lost at 20.25 s, after the first
		// answers, so the 30 answered in a row start after it.
		{"high", 250 * time.Millisecond, []string{"5ms healthy", "11s down", "20.11s degraded", "27.005s healthy"}},
		// low (5 s): the probe at 10 s and its extras are lost; recovery
		// waits for the probe at 20 s, and healthy 27 probes (135 s) later.
		{"low", 5 * time.Second, []string{"5ms healthy", "11.1s down", "20.11s degraded", "2m35.005s healthy"}},
	} {
		s := &probeSim{interval: c.interval, rtt: rtt, blocked: blocked}
		s.run(200 * time.Second)
		if strings.Join(s.changes, ", ") != strings.Join(c.want, ", ") {
			t.Errorf("%s: changes %v, want %v", c.rate, s.changes, c.want)
		}
	}
}

// BenchmarkHealthObserve: the cost of one probe outcome in the prober's
// state machine with a full window (five minutes at the high rate, 1,200
// outcomes), a loss every 100 probes, against the same at the low rate
// (a 60-outcome window) measured in the same run: the ratio shows the
// cost does not grow with the window. 200,000 outcomes per iteration, so
// make bench's -benchtime 1x gives stable figures.
func BenchmarkHealthObserve(b *testing.B) {
	const n = 200_000
	run := func(interval time.Duration) float64 {
		var m HealthMachine
		at := t0
		for i := 0; i < int(DegradedWindow/interval)+10; i++ {
			m.Observe(Outcome{At: at, OK: true})
			at = at.Add(interval)
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			m.Observe(Outcome{At: at, OK: i%100 != 0})
			at = at.Add(interval)
		}
		return float64(time.Since(start).Nanoseconds()) / n
	}
	var low, high float64
	for i := 0; i < b.N; i++ {
		low += run(5 * time.Second)
		high += run(250 * time.Millisecond)
	}
	b.ReportMetric(low/float64(b.N), "low-ns/probe")
	b.ReportMetric(high/float64(b.N), "high-ns/probe")
	b.ReportMetric(high/low, "high/low")
	b.ReportMetric(0, "ns/op")
}

// TestProbeAddresses: the inner addresses of each probe type and
// direction, defaults and an explicit target (the README's table).
func TestProbeAddresses(t *testing.T) {
	p := &Prober{probeAddr: netip.MustParseAddr("192.0.2.2")}
	base := Tunnel{Name: "g", Local: netip.MustParseAddr("192.0.2.10"), Remote: netip.MustParseAddr("198.51.100.130"),
		Addr: netip.MustParsePrefix("169.254.20.0/31"), Peer: netip.MustParseAddr("169.254.20.1"), TTL: 64}
	for _, c := range []struct {
		typ, dir, target string
		src, dst         string // of the inner packet
		icmpType         byte
	}{
		{"reply", Unidirectional, "", "169.254.20.0", "192.0.2.2", 0},
		{"request", Unidirectional, "", "192.0.2.2", "169.254.20.1", 8},
		{"reply", Bidirectional, "", "192.0.2.2", "169.254.20.0", 0},
		{"request", Bidirectional, "", "169.254.20.0", "169.254.20.1", 8},
		{"reply", Unidirectional, "198.51.100.130", "198.51.100.130", "192.0.2.2", 0},
		{"request", Unidirectional, "10.9.0.1", "192.0.2.2", "10.9.0.1", 8},
	} {
		tu := base
		tu.Health = HealthSpec{Enabled: true, Type: c.typ, Direction: c.dir, Interval: time.Second}
		if c.target != "" {
			tu.Health.Target = netip.MustParseAddr(c.target)
		}
		h := &tunnelHealth{t: tu, id: 7, seq: 3}
		h.target, h.returnAddr = p.addresses(tu)
		b := p.packet(h, t0)
		// outer IPv4 (20) + GRE (4) + inner IPv4 (20) + ICMP
		outerSrc, outerDst := netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
		in := b[24:]
		src, dst := netip.AddrFrom4([4]byte(in[12:16])), netip.AddrFrom4([4]byte(in[16:20]))
		name := c.typ + "/" + c.dir + " " + c.target
		if outerSrc != base.Local || outerDst != base.Remote || b[9] != 47 || b[22] != 0x08 || b[23] != 0x00 {
			t.Errorf("%s: outer %s -> %s proto %d", name, outerSrc, outerDst, b[9])
		}
		if src.String() != c.src || dst.String() != c.dst || in[20] != c.icmpType {
			t.Errorf("%s: inner %s -> %s type %d, want %s -> %s type %d", name, src, dst, in[20], c.src, c.dst, c.icmpType)
		}
		if checksum(in[20:]) != 0 || checksum(in[:20]) != 0 || checksum(b[:20]) != 0 {
			t.Errorf("%s: bad checksum", name)
		}
	}
}

// TestHint: a tunnel none of whose probes was answered while it received
// packets from the router says why, naming accept_local for reply probes;
// nothing is said once a probe was answered, before three outcomes, or
// without traffic.
func TestHint(t *testing.T) {
	mk := func(typ string, answered bool, rx uint64) *tunnelHealth {
		h := &tunnelHealth{t: Tunnel{Health: HealthSpec{Type: typ}}, haveRx: true, rx0: 10, rx: 10 + rx,
			target: netip.MustParseAddr("198.51.100.130"), returnAddr: netip.MustParseAddr("192.0.2.2")}
		for i := 0; i < 3; i++ {
			h.m.Observe(Outcome{At: t0.Add(time.Duration(i) * time.Second), OK: answered && i == 2})
		}
		return h
	}
	if r := mk("reply", false, 5).report().Reason; !strings.Contains(r, "received 5 packets") || !strings.Contains(r, "accept_local") {
		t.Errorf("reply hint: %s", r)
	}
	if r := mk("request", false, 5).report().Reason; !strings.Contains(r, "does not answer echo requests to 198.51.100.130") {
		t.Errorf("request hint: %s", r)
	}
	for name, h := range map[string]*tunnelHealth{"answered": mk("reply", true, 5), "no traffic": mk("reply", false, 0)} {
		if r := h.report().Reason; strings.Contains(r, "no probe answered") {
			t.Errorf("%s: %s", name, r)
		}
	}
}
