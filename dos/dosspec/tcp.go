package dosspec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/nfhost/nfhost/internal/doc"
)

// TCPProtectionConfig is the tcp_protection object of a DoS document:
// SYN-flood protection with SYN cookies answered in XDP, and out-of-state
// TCP filtering, for the tenant's prefixes (or those listed) and ports.
// In dos/global it is the default: its fields fill in what a tenant's
// object leaves out, and with all_tenants every tenant without its own
// object is protected by it.
type TCPProtectionConfig struct {
	Mode     string   `json:"mode,omitempty"`     // mitigate (default) | monitor
	Prefixes []string `json:"prefixes,omitempty"` // default: all the tenant's prefixes
	Ports    []string `json:"ports,omitempty"`    // "80", "8000-8100"; default: every port
	// SYNCookies (default true): answer SYNs with cookies while engaged.
	SYNCookies *bool `json:"syn_cookies,omitempty"`
	// EngagePPS: SYNs per second towards one address above which cookies
	// engage (0: always engaged); ReleasePPS (default half of it): while
	// at least this rate arrives, they stay engaged; Hold (default 10s):
	// how long they stay engaged after the rate fell below ReleasePPS.
	EngagePPS  *uint64 `json:"engage_pps,omitempty"`
	ReleasePPS *uint64 `json:"release_pps,omitempty"`
	Hold       string  `json:"hold,omitempty"`
	// MSS and WScale our SYN-ACK announces (defaults 1436, fits a GRE
	// tunnel, and 7): WScale must be the server's, since the tenant's
	// synproxy does not rescale windows.
	MSS    uint16 `json:"mss,omitempty"`
	WScale *uint8 `json:"wscale,omitempty"`
	// OutOfState drops TCP packets of no connection the edge saw start.
	OutOfState *bool `json:"out_of_state,omitempty"`
	// AllTenants (dos/global only): protect every tenant without its own
	// tcp_protection.
	AllTenants bool `json:"all_tenants,omitempty"`
}

// PortRange is an inclusive port range.
type PortRange struct{ Lo, Hi uint16 }

// TCPProtection is a validated tcp_protection, defaults filled in.
type TCPProtection struct {
	Monitor    bool
	Prefixes   []netip.Prefix // empty: the tenant's
	Ports      []PortRange    // empty: every port
	SYNCookies bool
	EngagePPS  uint64 // 0: always engaged
	ReleasePPS uint64
	Hold       time.Duration
	MSS        uint16
	WScale     uint8
	OutOfState bool
	AllTenants bool
}

// Limits and defaults of tcp_protection.
const (
	MaxTCPPorts       = 8
	MaxTCPPrefixes    = 64
	DefaultTCPEngage  = 1000
	DefaultTCPHold    = 10 * time.Second
	DefaultTCPMSS     = 1436
	DefaultTCPWScale  = 7
	MaxTCPEngagePPS   = 100_000_000
	defaultTCPHoldStr = "10s"
)

// Resolve fills the fields c leaves out from def (the global default;
// nil: none) and validates the result.
func (c TCPProtectionConfig) Resolve(def *TCPProtectionConfig, tenant, key string) (*TCPProtection, error) {
	var errs doc.Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &doc.FieldError{Tenant: tenant, Key: key, Path: "tcp_protection." + path, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	if def != nil {
		c = c.merge(*def)
	}
	p := validTCP(c, key == GlobalKey, add)
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// merge returns c with what it leaves out taken from d (prefixes and
// all_tenants are never inherited).
func (c TCPProtectionConfig) merge(d TCPProtectionConfig) TCPProtectionConfig {
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.Ports == nil {
		c.Ports = d.Ports
	}
	if c.SYNCookies == nil {
		c.SYNCookies = d.SYNCookies
	}
	if c.ReleasePPS == nil && c.EngagePPS == nil {
		// A tenant's own engage_pps brings its own default release
		// (half of it), not the global release_pps.
		c.ReleasePPS = d.ReleasePPS
	}
	if c.EngagePPS == nil {
		c.EngagePPS = d.EngagePPS
	}
	if c.Hold == "" {
		c.Hold = d.Hold
	}
	if c.MSS == 0 {
		c.MSS = d.MSS
	}
	if c.WScale == nil {
		c.WScale = d.WScale
	}
	if c.OutOfState == nil {
		c.OutOfState = d.OutOfState
	}
	return c
}

func validTCP(c TCPProtectionConfig, global bool, add func(path, value, format string, args ...any)) *TCPProtection {
	p := &TCPProtection{SYNCookies: true, EngagePPS: DefaultTCPEngage, Hold: DefaultTCPHold, MSS: DefaultTCPMSS, WScale: DefaultTCPWScale}
	switch c.Mode {
	case "", "mitigate":
	case "monitor":
		p.Monitor = true
	default:
		add("mode", c.Mode, "must be mitigate or monitor")
	}
	if c.AllTenants && !global {
		add("all_tenants", "true", "only in dos/global")
	}
	p.AllTenants = c.AllTenants
	if len(c.Prefixes) > MaxTCPPrefixes {
		add("prefixes", "", "%d prefixes, at most %d", len(c.Prefixes), MaxTCPPrefixes)
	} else {
		for i, s := range c.Prefixes {
			pf, err := doc.ParseAddrOrPrefix(s)
			if err != nil {
				add(fmt.Sprintf("prefixes[%d]", i), s, "%v", err)
				continue
			}
			p.Prefixes = append(p.Prefixes, pf)
		}
		if global && len(c.Prefixes) > 0 {
			add("prefixes", "", "not in dos/global: each tenant's own prefixes are protected")
		}
	}
	if len(c.Ports) > MaxTCPPorts {
		add("ports", "", "%d port ranges, at most %d", len(c.Ports), MaxTCPPorts)
	} else {
		for i, s := range c.Ports {
			r, err := parsePortRange(s)
			if err != nil {
				add(fmt.Sprintf("ports[%d]", i), s, "%v", err)
				continue
			}
			p.Ports = append(p.Ports, r)
		}
	}
	if c.SYNCookies != nil {
		p.SYNCookies = *c.SYNCookies
	}
	if c.EngagePPS != nil {
		p.EngagePPS = *c.EngagePPS
		if p.EngagePPS > MaxTCPEngagePPS {
			add("engage_pps", fmt.Sprint(p.EngagePPS), "at most %d SYNs/s (0: always engaged)", MaxTCPEngagePPS)
		}
	}
	p.ReleasePPS = p.EngagePPS / 2
	if c.ReleasePPS != nil {
		p.ReleasePPS = *c.ReleasePPS
		if p.ReleasePPS > p.EngagePPS {
			add("release_pps", fmt.Sprint(p.ReleasePPS), "at most engage_pps (%d): the rate that keeps cookies engaged is below the one that engages them", p.EngagePPS)
		}
	}
	if c.Hold != "" {
		d, err := time.ParseDuration(c.Hold)
		if err != nil || d < time.Second || d > time.Hour {
			add("hold", c.Hold, "a duration from 1s to 1h, e.g. %q", defaultTCPHoldStr)
		}
		p.Hold = d
	}
	if c.MSS != 0 {
		if c.MSS < 536 || c.MSS > 9000 {
			add("mss", fmt.Sprint(c.MSS), "must be 536..9000")
		}
		p.MSS = c.MSS
	}
	if c.WScale != nil {
		if *c.WScale > 14 {
			add("wscale", fmt.Sprint(*c.WScale), "must be 0..14")
		}
		p.WScale = *c.WScale
	}
	if c.OutOfState != nil {
		p.OutOfState = *c.OutOfState
	}
	if !p.SYNCookies && !p.OutOfState {
		add("", "", "turns nothing on: set syn_cookies or out_of_state")
	}
	return p
}

func parsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil || a == 0 {
		return PortRange{}, fmt.Errorf("want a port 1..65535 or a range like 8000-8100")
	}
	b := a
	if isRange {
		b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err != nil || b < a {
			return PortRange{}, fmt.Errorf("want a port 1..65535 or a range like 8000-8100")
		}
	}
	return PortRange{uint16(a), uint16(b)}, nil
}
