package tunnels

import (
	"fmt"
	"time"
)

// Tunnel health states, with Magic Transit's meaning (README, "Tunnel
// health checks", cites the documents). StateStarting is a tunnel whose
// first verdict is not in yet.
const (
	StateStarting = "starting"
	StateHealthy  = "healthy"
	StateDegraded = "degraded" // routes +PenaltyDegraded
	StateDown     = "down"     // routes +PenaltyDown
)

// The thresholds of Cloudflare's "Tunnel health checks" reference
// (developers.cloudflare.com/magic-transit/reference/tunnel-health-checks/).
const (
	// DegradedWindow, DegradedRatio, DegradedMinFailures: degraded when at
	// least 0.1% of the probes of the previous five minutes failed, and at
	// least two did ("so that a single lost packet does not trigger a
	// penalty").
	DegradedWindow      = 5 * time.Minute
	DegradedRatio       = 0.001
	DegradedMinFailures = 2
	// DownWindow, DownMinSamples: down when every probe of at least three
	// in the last second failed, from healthy or degraded, at once.
	DownWindow     = time.Second
	DownMinSamples = 3
	// ExtraProbes: a failed probe of a healthy (or degraded) tunnel, and an
	// answered probe of a down one, is followed at once by up to two more.
	ExtraProbes = 2
	// RecoverUp: down -> degraded after three answered probes in a row
	// ("three consecutive successful probes no longer satisfy the
	// condition for a down state").
	RecoverUp = 3
	// HealthyWindow: degraded -> healthy when less than 0.1% of the
	// previous 30 probes failed, that is none of them.
	HealthyWindow = 30
)

// Outcome is one probe's result: answered (OK) or timed out, at the time
// it became known. Extra marks the probes sent because of an earlier
// outcome; they trigger no further extra probes.
type Outcome struct {
	At    time.Time
	OK    bool
	Extra bool
}

// HealthMachine is one tunnel's health state machine. It is pure: time
// comes only from the outcomes it is given, so tests drive it with a fake
// clock. The zero value is a new tunnel (StateStarting).
type HealthMachine struct {
	state       string
	reason      string
	since       time.Time
	hist        []Outcome // oldest first: the last DegradedWindow, and at least the last HealthyWindow
	okRun       int       // answered probes in a row
	pending     int       // extra probes asked for and not yet observed
	burstFailed bool      // a failure since the last verdict on degraded
	total, lost uint64
	answered    uint64
	lastFailure time.Time
}

// Window is what the machine's verdicts are based on: the probes of the
// last DegradedWindow (at least the last HealthyWindow ones).
type Window struct {
	Probes, Lost int
	LastFailure  time.Time // zero: none ever
	// Total, TotalLost and Answered count every outcome since the tunnel
	// was first probed.
	Total, TotalLost, Answered uint64
}

// State returns the state, why it holds, and since when.
func (m *HealthMachine) State() (state, reason string, since time.Time) {
	if m.state == "" {
		return StateStarting, "no probe outcome yet", m.since
	}
	return m.state, m.reason, m.since
}

// Window returns the probe window.
func (m *HealthMachine) Window() Window {
	w := Window{Probes: len(m.hist), LastFailure: m.lastFailure, Total: m.total, TotalLost: m.lost, Answered: m.answered}
	for _, o := range m.hist {
		if !o.OK {
			w.Lost++
		}
	}
	return w
}

// Observe feeds one outcome (in time order) and returns whether the state
// changed and how many extra probes to send now.
//
// A failure starts a burst: the extra probes it asks for. Down is decided
// at any outcome (every probe of the last second lost); degraded only when
// a burst with a failure is over, so a blocked tunnel goes straight from
// healthy to down, and the two failures the degraded rule needs are not
// re-counted by every later answered probe for five minutes.
func (m *HealthMachine) Observe(o Outcome) (changed bool, extra int) {
	m.record(o)
	prev := m.state
	if prev == "" {
		prev = StateStarting
	}
	next, why := prev, m.reason
	if prev == StateDown {
		if o.OK && m.okRun >= RecoverUp {
			next, why = StateDegraded, fmt.Sprintf("%d probes answered in a row after down; healthy once the last %d are answered", m.okRun, HealthyWindow)
		} else if o.OK && !o.Extra && m.pending == 0 {
			extra = ExtraProbes
		}
		if !o.OK {
			f, n := m.lastLostN(HealthyWindow)
			why = fmt.Sprintf("%d of the last %d probes lost", f, n)
		}
		return m.set(next, why, o.At, extra)
	}
	if !o.OK {
		m.burstFailed = true
		if n, ok := m.allLostIn(o.At); ok {
			m.burstFailed = false
			return m.set(StateDown, fmt.Sprintf("all %d probes of the last %v lost", n, DownWindow), o.At, 0)
		}
		if !o.Extra {
			extra = ExtraProbes
		}
	}
	burstOver := m.pending == 0 && extra == 0
	switch {
	case burstOver && m.burstFailed:
		m.burstFailed = false
		if prev == StateDegraded {
			break
		}
		if f, n, ok := m.lossy(); ok {
			next, why = StateDegraded, fmt.Sprintf("%d of %d probes lost in the last %v (%.1f%%; %d and %.1f%% make degraded)",
				f, n, DegradedWindow, 100*float64(f)/float64(n), DegradedMinFailures, 100*DegradedRatio)
		} else if prev == StateStarting {
			next, why = StateHealthy, "probes answered (one lost, its extra probes answered)"
		}
	case prev == StateStarting && o.OK && burstOver:
		next, why = StateHealthy, "probes answered"
	case prev == StateDegraded && o.OK:
		if f, n := m.lastLostN(HealthyWindow); n >= HealthyWindow && float64(f) < DegradedRatio*float64(n) {
			next, why = StateHealthy, fmt.Sprintf("the last %d probes answered", n)
		}
	}
	return m.set(next, why, o.At, extra)
}

// set moves to state next (reason why) and returns whether the state
// changed; the extra probes it asks for are counted as pending.
func (m *HealthMachine) set(next, why string, at time.Time, extra int) (bool, int) {
	m.pending += extra
	m.reason = why
	if next == m.state || m.state == "" && next == StateStarting {
		return false, extra
	}
	m.state, m.since = next, at
	return true, extra
}

func (m *HealthMachine) record(o Outcome) {
	if o.Extra && m.pending > 0 {
		m.pending--
	}
	m.total++
	if o.OK {
		m.answered++
		m.okRun++
	} else {
		m.lost++
		m.okRun = 0
		m.lastFailure = o.At
	}
	m.hist = append(m.hist, o)
	cut := o.At.Add(-DegradedWindow)
	drop := 0
	for drop < len(m.hist)-HealthyWindow && !m.hist[drop].At.After(cut) {
		drop++
	}
	// Reslice instead of copying the window down: append moves the live
	// part to a new array when the capacity runs out (amortized O(1);
	// copying here cost a copy of the whole window per probe).
	m.hist = m.hist[drop:]
}

// allLostIn: at least DownMinSamples outcomes in (at-DownWindow, at], all
// lost.
func (m *HealthMachine) allLostIn(at time.Time) (int, bool) {
	n := 0
	for i := len(m.hist) - 1; i >= 0 && m.hist[i].At.After(at.Add(-DownWindow)); i-- {
		if m.hist[i].OK {
			return 0, false
		}
		n++
	}
	return n, n >= DownMinSamples
}

// lossy: the degraded condition over the last DegradedWindow.
func (m *HealthMachine) lossy() (failed, n int, ok bool) {
	last := m.hist[len(m.hist)-1].At
	for _, o := range m.hist {
		if !o.At.After(last.Add(-DegradedWindow)) {
			continue
		}
		n++
		if !o.OK {
			failed++
		}
	}
	return failed, n, failed >= DegradedMinFailures && float64(failed) >= DegradedRatio*float64(n)
}

// lastLostN counts the lost ones of the last k outcomes.
func (m *HealthMachine) lastLostN(k int) (failed, n int) {
	for i := len(m.hist) - 1; i >= 0 && n < k; i-- {
		n++
		if !m.hist[i].OK {
			failed++
		}
	}
	return failed, n
}
