package detect

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
)

var victim = netip.MustParseAddr("203.0.113.1")

func ntpAttack(r *rand.Rand) Packet {
	return Packet{Tenant: "acme", Dst: victim, Proto: 17, SPort: uint16(1024 + r.IntN(60000)), DPort: 123, Len: 76, TTL: 61,
		ICMPType: -1, Payload: []byte{0x17, 0, 3, 0x2a}}
}

func legit(r *rand.Rand) Packet {
	return Packet{Tenant: "acme", Dst: victim, Proto: 6, SPort: uint16(1024 + r.IntN(60000)), DPort: 443, Len: uint16(60 + r.IntN(1400)),
		TTL: uint8(50 + r.IntN(10)), TCPFlags: 0x18, ICMPType: -1, Payload: []byte{byte(r.IntN(256)), 3, 3, 0}}
}

func TestDetectsAndScopesToTheAttack(t *testing.T) {
	d := New(Config{Policy: func(tenant string) (Policy, bool) {
		return Policy{PPS: 10000, SampleRate: 64, Duration: time.Minute}, tenant == "acme"
	}})
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1000, 0)
	d.Tick(now)
	// 200 ms of an 18k pps flood plus 1k pps of legitimate traffic,
	// sampled 1 in 64: about 56 attack samples and 3 legitimate ones.
	for i := 0; i < 56; i++ {
		d.Add(ntpAttack(r))
	}
	for i := 0; i < 3; i++ {
		d.Add(legit(r))
	}
	if !d.Tick(now.Add(200 * time.Millisecond)) {
		t.Fatal("no mitigation for an 18k pps flood over a 10k pps threshold")
	}
	ms := d.Active()
	if len(ms) != 1 {
		t.Fatalf("mitigations %+v", ms)
	}
	m := ms[0]
	want := "ip.dst == 203.0.113.1/32 and udp.dstport == 123 and ip.len == 76 and ip.ttl == 61 and payload[0:4] == 0x1700032a"
	if m.Expression != want || m.Tenant != "acme" || m.Action != "drop" || m.PPS < 15000 || m.PPS > 21000 {
		t.Fatalf("mitigation %+v\nwant expression %s", m, want)
	}
	// The expression is in the XDP subset, and the legitimate packets
	// do not match it.
	e, err := lang.Parse(m.Expression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dosspec.CompileMatch(e); err != nil {
		t.Fatalf("not compilable for XDP: %v", err)
	}
	if strings.Contains(m.Expression, "srcport") {
		t.Error("random source ports made it into the signature")
	}
	// The attack goes on (its packets now dropped): the mitigation stays
	// and is refreshed; once quiet it expires after Duration.
	for i := 0; i < 56; i++ {
		p := ntpAttack(r)
		p.Dropped = true
		d.Add(p)
	}
	if d.Tick(now.Add(400*time.Millisecond)) || len(d.Active()) != 1 {
		t.Fatalf("refresh changed the set: %+v", d.Active())
	}
	if d.Tick(now.Add(30 * time.Second)) {
		t.Fatal("expired early")
	}
	// Still attacking 40 s later: the expiry moves on (a change).
	d.Tick(now.Add(40 * time.Second))
	for i := 0; i < 56; i++ {
		d.Add(ntpAttack(r))
	}
	if !d.Tick(now.Add(40*time.Second+200*time.Millisecond)) || !d.Active()[0].Expires.Equal(now.Add(40*time.Second+200*time.Millisecond+time.Minute)) {
		t.Fatalf("expiry not moved on: %+v", d.Active())
	}
	if d.Tick(now.Add(90 * time.Second)) {
		t.Fatal("expired early")
	}
	if !d.Tick(now.Add(40*time.Second+200*time.Millisecond+time.Minute)) || len(d.Active()) != 0 {
		t.Fatalf("did not expire: %+v", d.Active())
	}
}

func TestNoMitigation(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	pol := func(string) (Policy, bool) { return Policy{PPS: 10000, SampleRate: 64, Duration: time.Minute}, true }
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name string
		pkts func() []Packet
	}{
		{"below the threshold", func() []Packet {
			var ps []Packet
			for i := 0; i < 20; i++ { // 20 * 64 / 0.2 s = 6,400 pps
				ps = append(ps, ntpAttack(r))
			}
			return ps
		}},
		{"nothing shared but the protocol: cannot be told from legitimate traffic", func() []Packet {
			var ps []Packet
			for i := 0; i < 60; i++ {
				ps = append(ps, legit(r))
			}
			return ps
		}},
	} {
		d := New(Config{Policy: pol})
		d.Tick(now)
		for _, p := range tc.pkts() {
			d.Add(p)
		}
		if d.Tick(now.Add(200*time.Millisecond)) || len(d.Active()) != 0 {
			t.Errorf("%s: mitigated %+v", tc.name, d.Active())
		}
	}
	// A tenant without a policy is not watched.
	d := New(Config{Policy: func(string) (Policy, bool) { return Policy{}, false }})
	d.Tick(now)
	for i := 0; i < 100; i++ {
		d.Add(ntpAttack(r))
	}
	if d.Tick(now.Add(200 * time.Millisecond)) {
		t.Error("unwatched tenant mitigated")
	}
}

func TestParse(t *testing.T) {
	// Ethernet + VLAN + IPv4 + UDP + payload.
	f := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0, 0, 5, 0x08, 0,
		0x45, 0, 0, 32, 0, 0, 0, 0, 61, 17, 0, 0, 192, 0, 2, 66, 203, 0, 113, 1,
		0x04, 0x00, 0, 123, 0, 12, 0, 0, 0x17, 0, 3, 0x2a}
	p, ok := Parse(f)
	if !ok || p.Dst != victim || p.Src != netip.MustParseAddr("192.0.2.66") || p.Proto != 17 || p.SPort != 1024 || p.DPort != 123 || p.Len != 32 || p.TTL != 61 ||
		string(p.Payload) != string([]byte{0x17, 0, 3, 0x2a}) {
		t.Fatalf("%+v %v", p, ok)
	}
	if _, ok := Parse(f[:20]); ok {
		t.Error("truncated frame parsed")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0, 0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, b []byte) { Parse(b) })
}

// A SYN flood shares nothing but flags and the service port with real
// connection attempts: it is rate-limited at the threshold, not dropped.
func TestSYNFloodIsRateLimited(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	d := New(Config{Policy: func(string) (Policy, bool) { return Policy{PPS: 10000, SampleRate: 64, Duration: time.Minute}, true }})
	now := time.Unix(1000, 0)
	d.Tick(now)
	for i := 0; i < 60; i++ {
		d.Add(Packet{Tenant: "acme", Dst: victim, Proto: 6, SPort: uint16(r.IntN(65536)), DPort: 80, Len: uint16(40 + 4*r.IntN(6)),
			TTL: uint8(40 + r.IntN(100)), TCPFlags: 0x02, ICMPType: -1})
	}
	d.Tick(now.Add(200 * time.Millisecond))
	ms := d.Active()
	if len(ms) != 1 || ms[0].Action != "ratelimit" || ms[0].LimitPPS != 10000 ||
		ms[0].Expression != "ip.dst == 203.0.113.1/32 and tcp.dstport == 80 and tcp.flags == 2" {
		t.Fatalf("%+v", ms)
	}
}
