// Package bgpspec is pure: the host's BGP configuration (the --bgp-config
// file: local ASN, router ID, peers, communities, MED, graceful restart),
// validated, and Announce, the function that decides what this host
// announces from the tenants applied here, their advertise switch, the
// drain control and the DoS signatures marked for FlowSpec export. It
// touches no kernel and links no BGP implementation, so nsctl and the
// daemon share it; routing/bgp turns its output into BGP paths.
package bgpspec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/nfhost/nfhost/internal/doc"
)

// Limits and defaults (README, BGP section).
const (
	MaxPeers           = 16
	MaxCommunities     = 32
	DefaultHoldTime    = 90 * time.Second
	MinHoldTime        = 3 * time.Second
	MaxHoldTime        = 65535 * time.Second
	DefaultRestartTime = 120 * time.Second
	MaxRestartTime     = 4095 * time.Second // 12 bits in the capability
	DefaultListenPort  = 179
	// MaxPasswordLen is the kernel's TCP-MD5 key limit (TCP_MD5SIG_MAXKEYLEN).
	MaxPasswordLen = 80
)

// Config is the --bgp-config file.
type Config struct {
	ASN      uint32 `json:"asn"`
	RouterID string `json:"router_id,omitempty"` // default: the probe address
	// ListenPort is where passive peers connect (default 179 when any
	// peer is passive; nsd does not listen otherwise).
	ListenPort      int              `json:"listen_port,omitempty"`
	Peers           []Peer           `json:"peers"`
	Communities     []string         `json:"communities,omitempty"` // "65000:100"
	MED             *uint32          `json:"med,omitempty"`
	GracefulRestart *GracefulRestart `json:"graceful_restart,omitempty"`
}

// Peer is one BGP neighbour (the site's router).
type Peer struct {
	Address  string `json:"address"`
	ASN      uint32 `json:"asn"`
	Password string `json:"password,omitempty"`  // TCP-MD5 (RFC 2385)
	HoldTime string `json:"hold_time,omitempty"` // Go duration, default 90s
	// Passive: nsd waits for the peer to connect instead of dialing it.
	Passive bool `json:"passive,omitempty"`
	// Port is the peer's BGP port when nsd dials (default 179).
	Port int `json:"port,omitempty"`
	// LocalAddress is the source address nsd dials from (default: the
	// kernel's choice).
	LocalAddress string `json:"local_address,omitempty"`
	// FlowSpec offers the IPv4 FlowSpec family (RFC 8955) to this peer;
	// rules are sent only if the peer negotiates it.
	FlowSpec *bool `json:"flowspec,omitempty"`
}

// GracefulRestart configures RFC 4724 (always on).
type GracefulRestart struct {
	RestartTime string `json:"restart_time,omitempty"` // default 120s
}

// Valid is a validated Config.
type Valid struct {
	ASN         uint32
	RouterID    netip.Addr // invalid: the caller's default (the probe address)
	ListenPort  int        // 0: no listener
	Peers       []ValidPeer
	Communities []uint32 // ASN<<16 | value
	MED         *uint32
	RestartTime time.Duration
}

// ValidPeer is a validated Peer.
type ValidPeer struct {
	Address      netip.Addr
	ASN          uint32
	Password     string
	HoldTime     time.Duration
	Passive      bool
	Port         int
	LocalAddress netip.Addr
	FlowSpec     bool
}

// Parse decodes and validates a config file; name (the file's path) starts
// every error message.
func Parse(name string, data []byte) (Valid, error) {
	var c Config
	if err := doc.DecodeStrict("", name, data, &c); err != nil {
		return Valid{}, err
	}
	return c.Validate(name)
}

// Validate checks every field and returns all errors found, each with its
// path.
func (c Config) Validate(name string) (Valid, error) {
	var errs doc.Errors
	add := func(path, value, format string, args ...any) {
		errs = append(errs, &doc.FieldError{Key: name, Path: path, Value: value, Msg: fmt.Sprintf(format, args...)})
	}
	v := Valid{ASN: c.ASN, MED: c.MED}
	if c.ASN == 0 || c.ASN == 23456 {
		add("asn", fmt.Sprint(c.ASN), "required: the local AS number (1..4294967295, not 23456)")
	}
	if c.RouterID != "" {
		a, err := netip.ParseAddr(c.RouterID)
		if err != nil || !a.Is4() || a.IsUnspecified() {
			add("router_id", c.RouterID, "must be an IPv4 address")
		}
		v.RouterID = a
	}
	if len(c.Peers) == 0 {
		add("peers", "", "required: at least one peer")
	}
	if len(c.Peers) > MaxPeers {
		add("peers", "", "%d peers, at most %d", len(c.Peers), MaxPeers)
	}
	seen := map[netip.Addr]int{}
	passive := false
	for i, p := range c.Peers {
		vp := validPeer(fmt.Sprintf("peers[%d]", i), p, add)
		if j, dup := seen[vp.Address]; dup && vp.Address.IsValid() {
			add(fmt.Sprintf("peers[%d].address", i), p.Address, "duplicate of peers[%d]", j)
		}
		seen[vp.Address] = i
		passive = passive || vp.Passive
		v.Peers = append(v.Peers, vp)
	}
	switch {
	case c.ListenPort < 0 || c.ListenPort > 65535:
		add("listen_port", fmt.Sprint(c.ListenPort), "must be 1..65535")
	case c.ListenPort != 0:
		v.ListenPort = c.ListenPort
	case passive:
		v.ListenPort = DefaultListenPort
	}
	if len(c.Communities) > MaxCommunities {
		add("communities", "", "%d communities, at most %d", len(c.Communities), MaxCommunities)
	}
	for i, s := range c.Communities {
		cm, err := ParseCommunity(s)
		if err != nil {
			add(fmt.Sprintf("communities[%d]", i), s, "%v", err)
		}
		v.Communities = append(v.Communities, cm)
	}
	v.RestartTime = DefaultRestartTime
	if gr := c.GracefulRestart; gr != nil && gr.RestartTime != "" {
		d, err := time.ParseDuration(gr.RestartTime)
		if err != nil || d < time.Second || d > MaxRestartTime || d%time.Second != 0 {
			add("graceful_restart.restart_time", gr.RestartTime, "whole seconds from 1s to %s, e.g. \"120s\"", MaxRestartTime)
		}
		v.RestartTime = d
	}
	if len(errs) > 0 {
		return Valid{}, errs
	}
	return v, nil
}

func validPeer(path string, p Peer, add func(path, value, format string, args ...any)) ValidPeer {
	vp := ValidPeer{ASN: p.ASN, Password: p.Password, Passive: p.Passive, Port: p.Port, FlowSpec: p.FlowSpec == nil || *p.FlowSpec}
	a, err := netip.ParseAddr(p.Address)
	switch {
	case p.Address == "":
		add(path+".address", "", "required: the peer's IP address")
	case err != nil || a.Zone() != "":
		add(path+".address", p.Address, "not an IP address")
	case a.IsUnspecified() || a.IsMulticast():
		add(path+".address", p.Address, "must be a unicast address")
	default:
		vp.Address = a.Unmap()
	}
	if p.ASN == 0 || p.ASN == 23456 {
		add(path+".asn", fmt.Sprint(p.ASN), "required: the peer's AS number (1..4294967295, not 23456)")
	}
	if len(p.Password) > MaxPasswordLen {
		add(path+".password", "", "%d bytes, at most %d (TCP-MD5)", len(p.Password), MaxPasswordLen)
	}
	vp.HoldTime = DefaultHoldTime
	if p.HoldTime != "" {
		d, err := time.ParseDuration(p.HoldTime)
		if err != nil || d < MinHoldTime || d > MaxHoldTime || d%time.Second != 0 {
			add(path+".hold_time", p.HoldTime, "whole seconds from 3s to 65535s, e.g. \"9s\"")
		}
		vp.HoldTime = d
	}
	if p.Port < 0 || p.Port > 65535 {
		add(path+".port", fmt.Sprint(p.Port), "must be 1..65535")
	}
	if p.Passive && p.Port != 0 {
		add(path+".port", fmt.Sprint(p.Port), "only for peers nsd dials (not passive)")
	}
	if p.LocalAddress != "" {
		la, err := netip.ParseAddr(p.LocalAddress)
		if err != nil || la.Is4() != vp.Address.Is4() {
			add(path+".local_address", p.LocalAddress, "must be an IP address of the peer's family")
		}
		vp.LocalAddress = la
	}
	return vp
}

// ParseCommunity parses a standard community "ASN:value" (RFC 1997).
func ParseCommunity(s string) (uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("not a community: want ASN:value, both 0..65535")
	}
	hi, err1 := strconv.ParseUint(a, 10, 16)
	lo, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("not a community: want ASN:value, both 0..65535")
	}
	return uint32(hi)<<16 | uint32(lo), nil
}

// FormatCommunity is the inverse of ParseCommunity.
func FormatCommunity(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xffff) }
