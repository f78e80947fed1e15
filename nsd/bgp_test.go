package nsd

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/bgp"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
)

// fakeSpeaker records what the daemon asks it to announce.
type fakeSpeaker struct {
	mu   sync.Mutex
	last bgpspec.Desired
	sets int
}

func (f *fakeSpeaker) Set(d bgpspec.Desired) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last, f.sets = d, f.sets+1
}

func (f *fakeSpeaker) Status() bgp.Status { return bgp.Status{LocalASN: 65001} }

func (f *fakeSpeaker) announced() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.last.Routes {
		out = append(out, r.Prefix.String())
	}
	for _, r := range f.last.FlowSpec {
		out = append(out, "flow "+r.ID)
	}
	return strings.Join(out, " ")
}

// A tenant is announced once applied, not while it fails on this host, and
// withdrawn on delete, advertise false and drain; a refused document (the
// last good state in force everywhere) does not withdraw it.
func TestAnnounceFollowsTenants(t *testing.T) {
	sp := &fakeSpeaker{}
	h := newHarness(t, Options{BGP: sp})
	step := func(name, want string) {
		t.Helper()
		h.pass(t, false)
		if got := sp.announced(); got != want {
			t.Errorf("%s: announced %q, want %q", name, got, want)
		}
	}
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("beta", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	step("applied", "198.51.100.0/24 203.0.113.0/24")

	h.put("acme", "dos", `{"signatures": [{"id": "ntp", "expression": "udp.dstport == 123", "action": "drop", "export": "flowspec"}]}`)
	step("dos without a DoS layer: not in force, not exported", "198.51.100.0/24 203.0.113.0/24")

	h.put("acme", "network", `{"prefixes": ["203.0.113.0/33"]}`)
	step("refused network document: last good in force, still announced", "198.51.100.0/24 203.0.113.0/24")

	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"], "advertise": false}`)
	step("advertise false", "198.51.100.0/24")
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"], "advertise": true}`)
	step("advertise true", "198.51.100.0/24 203.0.113.0/24")

	h.k.failFor = "beta"
	h.put("beta", "network", `{"prefixes": ["198.51.100.0/25"]}`)
	step("kernel failure on this host", "203.0.113.0/24")
	h.k.failFor = ""
	h.pass(t, true)
	step("recovered", "198.51.100.0/25 203.0.113.0/24")

	h.snap.Control[source.DrainKey("edge1")] = source.Entry{Value: []byte("true"), ModifyIndex: 99}
	step("drained", "")
	if hs, _ := h.store.status[source.HostStatusName].(source.HostStatus); !hs.Drained || hs.BGP == nil || hs.BGP.LocalASN != 65001 {
		t.Errorf("host status: %+v", h.store.status[source.HostStatusName])
	}
	h.snap.Control[source.DrainKey("edge1")] = source.Entry{Value: []byte("false"), ModifyIndex: 100}
	step("undrained", "198.51.100.0/25 203.0.113.0/24")

	delete(h.snap.Tenants, "beta")
	step("deleted", "203.0.113.0/24")

	// A tenant that never applied is not announced.
	h.k.failFor = "gamma"
	h.put("gamma", "network", `{"prefixes": ["198.18.0.0/24"]}`)
	step("never applied", "203.0.113.0/24")
}

// Signatures marked for export, and the automatic mitigations of a tenant
// that opted in, become FlowSpec rules; a signature FlowSpec cannot
// express is reported, and an automatic mitigation of a tenant that did
// not opt in stays on the host.
func TestAnnounceFlowSpec(t *testing.T) {
	sp := &fakeSpeaker{}
	h := newHarness(t, Options{BGP: sp, DoS: &fakeDoS{}})
	h.put("acme", "network", `{"prefixes": ["203.0.113.0/24"]}`)
	h.put("acme", "dos", `{"sample_rate": 64, "auto_mitigation": {"pps": 1000, "export": "flowspec"}, "signatures": [
	  {"id": "ntp", "expression": "udp.dstport == 123", "action": "drop", "export": "flowspec"},
	  {"id": "monlist", "expression": "udp.dstport == 123 and payload[0:1] == 0x17", "action": "drop", "export": "flowspec"}]}`)
	h.put("beta", "network", `{"prefixes": ["198.51.100.0/24"]}`)
	h.put("beta", "dos", `{"sample_rate": 64, "auto_mitigation": {"pps": 1000}}`)
	h.pass(t, false)
	if got := sp.announced(); got != "198.51.100.0/24 203.0.113.0/24 flow acme/ntp@203.0.113.0/24" {
		t.Errorf("announced %q", got)
	}
	if ne := strings.Join(sp.last.NotExported, "\n"); !strings.Contains(ne, "acme/monlist: payload bytes") {
		t.Errorf("not exported: %q", ne)
	}
	until := time.Now().Add(time.Minute)
	h.d.setAuto([]detect.Mitigation{
		{ID: "auto-1", Tenant: "acme", Expression: "ip.dst == 203.0.113.5 and udp.srcport == 19", Action: "drop", Expires: until},
		{ID: "auto-2", Tenant: "beta", Expression: "ip.dst == 198.51.100.5 and udp.srcport == 19", Action: "drop", Expires: until}})
	h.pass(t, true)
	if got := sp.announced(); got != "198.51.100.0/24 203.0.113.0/24 flow acme/auto-1 flow acme/ntp@203.0.113.0/24" {
		t.Errorf("with automatic mitigations: announced %q", got)
	}
	h.d.setAuto(nil)
	h.pass(t, true)
	if got := sp.announced(); got != "198.51.100.0/24 203.0.113.0/24 flow acme/ntp@203.0.113.0/24" {
		t.Errorf("mitigation ended: announced %q", got)
	}
}
