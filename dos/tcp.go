package dos

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// TCP protection (bpf/tcp_protect.h): one rule per tenant, at the
// tenant's index, so that a restarted nsd lays the rules out the same
// way and the counters stay with their tenant.

// Flags of a TCP rule (TCPP_* in tcp_protect.h) and the nfh_dst flag.
const (
	tcpMitigate  = 1
	tcpSYNCookie = 2
	tcpOOS       = 4
	tcpAlways    = 8
	dstTCP       = 2
	// tcpWindow is the program's counting window for SYN rates.
	tcpWindow = 100 * time.Millisecond
	// synackWindow is the window our SYN-ACK announces (unscaled).
	synackWindow = 65535
)

// TCPState is the TCP protection part of a State.
type TCPState struct {
	// Rules by rule index (= tenant index).
	Rules map[uint32]dosBPFTcpRule
	// Dst maps protected prefixes (trie form) to rule index + 1.
	Dst map[netip.Prefix]uint32
}

// ResolveTCP is the tcp_protection in force for a tenant: its own,
// completed from the global default, or the global one with all_tenants;
// nil: none. An error names the tenant's field.
func ResolveTCP(global, tenant *dosspec.Spec, id string) (*dosspec.TCPProtection, error) {
	var def *dosspec.TCPProtectionConfig
	if global != nil {
		def = global.TCP
	}
	if tenant != nil && tenant.TCP != nil {
		return tenant.TCP.Resolve(def, id, "dos")
	}
	if def != nil && def.AllTenants {
		c := *def
		c.AllTenants = false
		return c.Resolve(nil, id, "dos")
	}
	return nil, nil
}

// tcpRule compiles a resolved tcp_protection.
func tcpRule(p *dosspec.TCPProtection) dosBPFTcpRule {
	var r dosBPFTcpRule
	if !p.Monitor {
		r.Flags |= tcpMitigate
	}
	if p.SYNCookies {
		r.Flags |= tcpSYNCookie
		if p.EngagePPS == 0 {
			r.Flags |= tcpAlways
		}
	}
	if p.OutOfState {
		r.Flags |= tcpOOS
	}
	perWindow := func(pps uint64) uint32 {
		n := pps * uint64(tcpWindow) / uint64(time.Second)
		return uint32(min(n, 1<<31))
	}
	r.EngageSyns = perWindow(p.EngagePPS)
	r.ReleaseSyns = perWindow(p.ReleasePPS)
	r.HoldNs = uint64(p.Hold)
	r.Mss, r.Wscale, r.Window = p.MSS, p.WScale, synackWindow
	for i, pr := range p.Ports {
		r.PortLo[i], r.PortHi[i] = pr.Lo, pr.Hi
	}
	r.Nports = uint32(len(p.Ports))
	return r
}

// buildTCP lays out the tenants' TCP protection and flags their
// destination entries; errors go to errs by tenant ID.
func buildTCP(st *State, global *dosspec.Spec, tenants []TenantInput, placed map[string]*dosspec.Spec, errs map[string]error) {
	st.TCP = TCPState{Rules: map[uint32]dosBPFTcpRule{}, Dst: map[netip.Prefix]uint32{}}
	for _, t := range tenants {
		p, err := ResolveTCP(global, placed[t.ID], t.ID)
		if err != nil {
			if errs[t.ID] == nil {
				errs[t.ID] = err
			}
			continue
		}
		if p == nil {
			continue
		}
		prefixes := p.Prefixes
		if len(prefixes) == 0 {
			prefixes = t.Prefixes
		}
		var bad error
		for i, pf := range prefixes {
			if !insideAny(pf, t.Prefixes) {
				bad = fmt.Errorf("tenants/%s/dos: tcp_protection.prefixes[%d]: %q: not inside the tenant's prefixes", t.ID, i, pf)
				break
			}
		}
		if bad != nil {
			if errs[t.ID] == nil {
				errs[t.ID] = bad
			}
			continue
		}
		st.TCP.Rules[t.Index] = tcpRule(p)
		for _, pf := range prefixes {
			st.TCP.Dst[mapped(pf.Masked())] = t.Index + 1
		}
		for k, di := range st.Dst {
			if di.Tenant == t.Index {
				di.Flags |= dstTCP
				st.Dst[k] = di
			}
		}
	}
}

// writeTCP writes the rules first, then the protected prefixes (the
// final nfh_dst entries, written after it, switch the stage on), and
// deletes what is gone.
func (w *Writer) writeTCP(old, s *State) error {
	o := w.o
	for i, r := range s.TCP.Rules {
		if or, ok := old.TCP.Rules[i]; ok && or == r {
			continue
		}
		if err := o.NfhTcpRules.Put(i, r); err != nil {
			return fmt.Errorf("write TCP rule %d: %w", i, err)
		}
		w.Writes++
	}
	if err := syncMap(w, o.NfhTcpDst, s.TCP.Dst, old.TCP.Dst, key6, true); err != nil {
		return err
	}
	for i := range old.TCP.Rules {
		if _, ok := s.TCP.Rules[i]; !ok {
			if err := o.NfhTcpRules.Put(i, dosBPFTcpRule{}); err != nil {
				return fmt.Errorf("clear TCP rule %d: %w", i, err)
			}
			w.Writes++
		}
	}
	return nil
}

// observeTCP reads the TCP protection maps back.
func observeTCP(o *dosBPFObjects) (TCPState, error) {
	ts := TCPState{Rules: map[uint32]dosBPFTcpRule{}, Dst: map[netip.Prefix]uint32{}}
	var k dosBPFLpmKey
	var v uint32
	it := o.NfhTcpDst.Iterate()
	for it.Next(&k, &v) {
		ts.Dst[netip.PrefixFrom(netip.AddrFrom16(k.Addr), int(k.Prefixlen))] = v
		var r dosBPFTcpRule
		if err := o.NfhTcpRules.Lookup(v-1, &r); err != nil {
			return ts, fmt.Errorf("read TCP rule %d: %w", v-1, err)
		}
		ts.Rules[v-1] = r
	}
	if err := it.Err(); err != nil {
		return ts, fmt.Errorf("read %s: %w", o.NfhTcpDst, err)
	}
	return ts, nil
}

// TCPStats are one tenant's TCP protection counters.
type TCPStats struct {
	SYN, CookiesSent, CookiesValid, CookiesInvalid, OutOfState, Flows, Dropped, SYNUnanswerable uint64
}

// readTCPStats sums the per-CPU counters of rule i.
func readTCPStats(m *ebpf.Map, i uint32) (TCPStats, error) {
	var per []dosBPFTcpStats
	if err := m.Lookup(i, &per); err != nil {
		return TCPStats{}, err
	}
	var s TCPStats
	for _, c := range per {
		s.SYN += c.Syn
		s.CookiesSent += c.CookiesSent
		s.CookiesValid += c.CookiesValid
		s.CookiesInvalid += c.CookiesInvalid
		s.OutOfState += c.OutOfState
		s.Flows += c.Flows
		s.Dropped += c.Dropped
		s.SYNUnanswerable += c.SynUnanswerable
	}
	return s, nil
}
