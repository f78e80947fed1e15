package dosspec

import (
	"strings"
	"testing"
	"time"
)

func TestTCPProtectionValidation(t *testing.T) {
	s, err := Parse("acme", []byte(`{"tcp_protection": {"ports": ["80", "8000-8100"], "engage_pps": 2000, "hold": "30s", "out_of_state": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.TCP.Resolve(nil, "acme", "dos")
	if err != nil {
		t.Fatal(err)
	}
	if !p.SYNCookies || p.EngagePPS != 2000 || p.ReleasePPS != 1000 || p.Hold != 30*time.Second || !p.OutOfState ||
		len(p.Ports) != 2 || p.Ports[1] != (PortRange{8000, 8100}) || p.MSS != DefaultTCPMSS || p.WScale != DefaultTCPWScale {
		t.Errorf("%+v", p)
	}
	// The global default fills in what the tenant leaves out.
	g, err := ParseGlobal([]byte(`{"tcp_protection": {"all_tenants": true, "mss": 1400, "engage_pps": 500, "ports": ["443"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err = s.TCP.Resolve(g.TCP, "acme", "dos")
	if err != nil || p.MSS != 1400 || p.EngagePPS != 2000 || len(p.Ports) != 2 {
		t.Errorf("merged: %+v %v", p, err)
	}
	for doc, want := range map[string]string{
		`{"tcp_protection": {"mode": "block"}}`:                                `tcp_protection.mode: "block": must be mitigate or monitor`,
		`{"tcp_protection": {"ports": ["0"]}}`:                                 `tcp_protection.ports[0]: "0": want a port`,
		`{"tcp_protection": {"ports": ["90-80"]}}`:                             `tcp_protection.ports[0]: "90-80"`,
		`{"tcp_protection": {"engage_pps": 100, "release_pps": 200}}`:          `tcp_protection.release_pps: "200": at most engage_pps (100)`,
		`{"tcp_protection": {"hold": "1ms"}}`:                                  `tcp_protection.hold: "1ms"`,
		`{"tcp_protection": {"mss": 100}}`:                                     `tcp_protection.mss: "100": must be 536..9000`,
		`{"tcp_protection": {"wscale": 15}}`:                                   `tcp_protection.wscale: "15": must be 0..14`,
		`{"tcp_protection": {"syn_cookies": false}}`:                           `turns nothing on`,
		`{"tcp_protection": {"all_tenants": true}}`:                            `tcp_protection.all_tenants: "true": only in dos/global`,
		`{"tcp_protection": {"prefixes": ["203.0.113.0/33"]}}`:                 `tcp_protection.prefixes[0]`,
		`{"tcp_protection": {"ports": ["1","2","3","4","5","6","7","8","9"]}}`: `9 port ranges, at most 8`,
	} {
		if _, err := Parse("acme", []byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
	if _, err := ParseGlobal([]byte(`{"tcp_protection": {"prefixes": ["203.0.113.0/24"]}}`)); err == nil || !strings.Contains(err.Error(), "not in dos/global") {
		t.Errorf("global prefixes: %v", err)
	}
}

// FuzzTCPProtection: any tcp_protection object is refused with a field
// error or resolves to bounds the XDP program accepts.
func FuzzTCPProtection(f *testing.F) {
	f.Add(`{"ports": ["80", "8000-8100"], "engage_pps": 2000, "hold": "30s", "out_of_state": true}`)
	f.Add(`{"mode": "monitor", "engage_pps": 0, "mss": 536, "wscale": 14}`)
	f.Fuzz(func(t *testing.T, obj string) {
		s, err := Parse("acme", []byte(`{"tcp_protection": `+obj+`}`))
		if err != nil || s.TCP == nil {
			return
		}
		p, err := s.TCP.Resolve(nil, "acme", "dos")
		if err != nil {
			t.Fatalf("validated but does not resolve: %v", err)
		}
		if len(p.Ports) > MaxTCPPorts || p.WScale > 14 || p.MSS < 536 || p.ReleasePPS > p.EngagePPS || p.Hold < time.Second {
			t.Fatalf("out of bounds: %+v", p)
		}
		for _, r := range p.Ports {
			if r.Lo == 0 || r.Hi < r.Lo {
				t.Fatalf("bad port range %+v", r)
			}
		}
	})
}
