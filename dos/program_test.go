package dos

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// Stage tests: every table runs hand-built packets through the loaded
// program with BPF_PROG_TEST_RUN after the maps were written the way nsd
// writes them (Parse, Reconciler.Apply).

func mustSpec(t testing.TB, scope, doc string) *dosspec.Spec {
	t.Helper()
	s, err := dosspec.Parse(scope, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

type verdictCase struct {
	name   string
	p      pkt
	want   uint32
	reason string // counted global reason
}

func runCases(t *testing.T, objs *dosBPFObjects, cases []verdictCase) map[string]uint64 {
	t.Helper()
	reasons := map[string]uint64{}
	for _, tc := range cases {
		ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: tc.p.bytes(t)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if ret != tc.want {
			t.Errorf("%s: verdict %d, want %d", tc.name, ret, tc.want)
		}
		reasons[tc.reason]++
	}
	return reasons
}

func checkReasons(t *testing.T, r *Reconciler, want map[string]uint64) {
	t.Helper()
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for name, n := range want {
		if got := c.Reasons[name].Packets; got != n {
			t.Errorf("counter %s = %d, want %d", name, got, n)
		}
	}
}

func TestSignatureVerdicts(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	global := mustSpec(t, "dos/global", `{"allow": ["192.0.2.200"], "signatures": [
	  {"id": "dns-amp", "expression": "udp.srcport == 53 and ip.len > 512", "action": "drop"},
	  {"id": "syn-web", "expression": "tcp.flags.syn and not tcp.flags.ack and tcp.dstport == 80 and ip.dst == 203.0.113.0/24", "action": "monitor"},
	  {"id": "bad-v6", "expression": "ip.src == 2001:db8:bad::/48", "action": "drop"},
	  {"id": "old", "expression": "ip.ttl < 10", "action": "drop", "expires": "2020-01-01T00:00:00Z"},
	  {"id": "syn-any", "expression": "tcp.flags.syn and not tcp.flags.ack", "action": "drop"},
	  {"id": "mirai", "expression": "udp.dstport == 7547 and payload[4:4] & 0xffff00ff == 0x4d490042", "action": "drop"},
	  {"id": "not-dns", "expression": "udp.dstport == 5353 and not payload[0:1] == 0x00", "action": "drop"},
	  {"id": "big-ping", "expression": "icmp.type == 8 and ip.len > 1000", "action": "drop"}]}`)
	// "old" is expired: Apply leaves it out, so the indexes below shift.
	if _, err := r.Apply(*global, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	mirai := []byte{0, 0, 0, 0, 'M', 'I', 0x77, 'B', 9, 9}
	reasons := runCases(t, objs, []verdictCase{
		{"big DNS response", pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 53, dport: 4000, payload: 600}, xdpDrop, "signature_drop"},
		{"small DNS response", pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 53, dport: 4000}, xdpPass, "pass"},
		{"allow list beats signatures", pkt{src: "192.0.2.200", dst: "203.0.113.1", sport: 53, dport: 4000, payload: 600}, xdpPass, "allow"},
		{"SYN to web: monitor wins by priority over syn-any", pkt{src: "192.0.2.1", dst: "203.0.113.9", l4: "tcp", sport: 999, dport: 80, syn: true}, xdpPass, "pass"},
		{"SYN elsewhere: syn-any drops", pkt{src: "192.0.2.1", dst: "198.51.100.9", l4: "tcp", sport: 999, dport: 80, syn: true}, xdpDrop, "signature_drop"},
		{"SYN-ACK passes", pkt{src: "192.0.2.1", dst: "198.51.100.9", l4: "tcp", sport: 999, dport: 80, syn: true, ack: true}, xdpPass, "pass"},
		{"bad IPv6 source", pkt{src: "2001:db8:bad::9", dst: "2001:db8::1"}, xdpDrop, "signature_drop"},
		{"IPv6 elsewhere", pkt{src: "2001:db8:900::9", dst: "2001:db8::1"}, xdpPass, "pass"},
		{"expired signature does not match", pkt{src: "192.0.2.1", dst: "203.0.113.1", ttl: 3}, xdpPass, "pass"},
		{"payload under mask matches", pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 7547, data: mirai}, xdpDrop, "signature_drop"},
		{"payload differs", pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 7547, data: []byte("GET / HTTP/1.1")}, xdpPass, "pass"},
		{"payload too short: no match", pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 7547, data: []byte{0, 0, 0, 0, 'M', 'I'}}, xdpPass, "pass"},
		{"IPv6 payload matches", pkt{src: "2001:db8:1::1", dst: "2001:db8::1", dport: 7547, data: mirai}, xdpDrop, "signature_drop"},
		{"negated payload: first byte not zero drops", pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 5353, data: []byte{1, 2}}, xdpDrop, "signature_drop"},
		{"negated payload: first byte zero passes", pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 5353, data: []byte{0, 2}}, xdpPass, "pass"},
		{"last signature: big ping", pkt{src: "192.0.2.1", dst: "203.0.113.1", l4: "icmp", payload: 1200}, xdpDrop, "signature_drop"},
		{"small ping passes", pkt{src: "192.0.2.1", dst: "203.0.113.1", l4: "icmp"}, xdpPass, "pass"},
	})
	checkReasons(t, r, reasons)
	c, _ := r.Counters()
	for id, want := range map[string]uint64{"global/dns-amp": 1, "global/syn-web": 1, "global/bad-v6": 1, "global/syn-any": 1,
		"global/mirai": 2, "global/not-dns": 1, "global/big-ping": 1} {
		if got := c.Signatures[id]; got.Packets != want || id != "global/syn-web" && got.Dropped != want {
			t.Errorf("signature %s: %+v, want %d packets", id, got, want)
		}
	}
	if _, ok := c.Signatures["global/old"]; ok {
		t.Error("the expired signature was written")
	}

	// Removing a signature in the middle moves the later ones' counters
	// with them; an unchanged document writes nothing.
	if _, err := r.Apply(*global, nil, time.Now()); err != nil || r.Writes() != 0 {
		t.Fatalf("re-apply wrote %d entries (err %v)", r.Writes(), err)
	}
	global.Signatures = append(global.Signatures[:1], global.Signatures[2:]...)
	if _, err := r.Apply(*global, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	c2, _ := r.Counters()
	if c2.Signatures["global/big-ping"] != c.Signatures["global/big-ping"] || c2.Signatures["global/mirai"] != c.Signatures["global/mirai"] {
		t.Errorf("counters did not follow their signatures: %+v", c2.Signatures)
	}

	// Monitor mode: everything counts, nothing drops.
	global.Monitor = true
	global.Signatures[2] = mustSpec(t, "x", `{"signatures": [{"id": "bad-v6", "expression": "ip.src == 2001:db8:bad::/48", "action": "drop"}]}`).Signatures[0]
	if _, err := r.Apply(*global, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	runCases(t, objs, []verdictCase{{"monitor mode", pkt{src: "2001:db8:bad::9", dst: "2001:db8::1"}, xdpPass, "pass"}})
}

func TestTenantScoping(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	pf := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	global := mustSpec(t, "dos/global", `{"deny": ["192.0.2.0/25"]}`)
	tenants := []Tenant{
		{ID: "acme", Prefixes: pf("203.0.113.0/24", "2001:db8:a::/48"), Spec: mustSpec(t, "acme", `{"allow": ["192.0.2.5"], "deny": ["198.18.0.0/15", "2001:db8:bad::/48"],
		  "signatures": [{"id": "game", "expression": "udp.dstport == 9999", "action": "drop"}]}`)},
		{ID: "beta", Prefixes: pf("198.51.100.0/24")},
		{ID: "gamma", Prefixes: pf("2001:db8:c::/48"), Spec: mustSpec(t, "gamma", `{"mode": "monitor", "deny": ["2001:db8:bad::/48"],
		  "signatures": [{"id": "game", "expression": "udp.dstport == 9999", "action": "drop"}]}`)},
	}
	errs, err := r.Apply(*global, tenants, time.Now())
	if err != nil || len(errs) != 0 {
		t.Fatal(err, errs)
	}
	reasons := runCases(t, objs, []verdictCase{
		{"tenant deny to its tenant", pkt{src: "198.18.1.1", dst: "203.0.113.7"}, xdpDrop, "tenant_deny"},
		{"tenant deny does not reach another tenant", pkt{src: "198.18.1.1", dst: "198.51.100.7"}, xdpPass, "pass"},
		{"tenant deny does not reach unowned space", pkt{src: "198.18.1.1", dst: "192.0.2.200"}, xdpPass, "pass"},
		{"IPv6 tenant deny", pkt{src: "2001:db8:bad::1", dst: "2001:db8:a::7"}, xdpDrop, "tenant_deny"},
		{"global deny everywhere", pkt{src: "192.0.2.9", dst: "198.51.100.7"}, xdpDrop, "deny"},
		{"tenant allow overrides the global deny for its tenant", pkt{src: "192.0.2.5", dst: "203.0.113.7"}, xdpPass, "tenant_allow"},
		{"...but not for others", pkt{src: "192.0.2.5", dst: "198.51.100.7"}, xdpDrop, "deny"},
		{"tenant signature to its tenant", pkt{src: "192.0.2.200", dst: "203.0.113.7", dport: 9999}, xdpDrop, "signature_drop"},
		{"tenant signature does not reach another tenant", pkt{src: "192.0.2.200", dst: "198.51.100.7", dport: 9999}, xdpPass, "pass"},
		{"monitor tenant: deny counted, passed", pkt{src: "2001:db8:bad::1", dst: "2001:db8:c::7"}, xdpPass, "pass"},
		{"monitor tenant: signature counted, passed", pkt{src: "2001:db8:1::1", dst: "2001:db8:c::7", dport: 9999}, xdpPass, "pass"},
	})
	reasons["monitor"] = 2
	checkReasons(t, r, reasons)
	c, _ := r.Counters()
	for id, want := range map[string]Stats{"acme": {Packets: 4, Dropped: 3}, "beta": {Packets: 4, Dropped: 2}, "gamma": {Packets: 2}} {
		got := c.Tenants[id]
		if got.Packets != want.Packets || got.Dropped != want.Dropped {
			t.Errorf("tenant %s: %+v, want %d packets, %d dropped", id, got, want.Packets, want.Dropped)
		}
	}
	if s := c.Signatures["gamma/game"]; s.Packets != 1 || s.Dropped != 0 {
		t.Errorf("gamma/game: %+v", s)
	}

	// A restarted nsd recovers the tenant indexes from the pinned names and
	// keeps the counters.
	r2, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"acme", "beta", "gamma"} {
		if r2.TenantIndex(id) != r.TenantIndex(id) {
			t.Errorf("%s: index %d after restart, was %d", id, r2.TenantIndex(id), r.TenantIndex(id))
		}
	}
	if _, err := r2.Apply(*global, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	c2, _ := r2.Counters()
	if c2.Tenants["acme"] != c.Tenants["acme"] || c2.Signatures["acme/game"] != c.Signatures["acme/game"] {
		t.Errorf("counters lost across a restart: %+v", c2)
	}

	// A tenant's rate limit outside its prefixes is refused for that
	// tenant only; the others keep their rules.
	tenants[1].Spec = mustSpec(t, "beta", `{"rate_limits": [{"prefix": "203.0.113.0/24", "pps": 10, "per": "ip"}]}`)
	errs, err = r2.Apply(*global, tenants, time.Now())
	if err != nil || errs["beta"] == nil || len(errs) != 1 {
		t.Fatalf("errs %v, err %v", errs, err)
	}
	runCases(t, objs, []verdictCase{{"acme still protected", pkt{src: "198.18.1.1", dst: "203.0.113.7"}, xdpDrop, "tenant_deny"}})
}

func TestRateLimits(t *testing.T) {
	objs := loadForTest(t)
	r, _ := newReconciler(objs, nil)
	tenants := []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Spec: mustSpec(t, "acme", `{
	  "rate_limits": [{"prefix": "203.0.113.0/25", "pps": 10, "per": "ip"}, {"prefix": "203.0.113.128/25", "pps": 10, "per": "prefix"},
	                  {"prefix": "203.0.113.64/26", "bps": 80000, "per": "ip"}],
	  "signatures": [{"id": "dns", "expression": "udp.srcport == 53", "action": "ratelimit", "pps": 10, "per": "rule"}]}`)}}
	if _, err := r.Apply(dosspec.Spec{}, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	// GCRA at 10 pps with a 100 ms burst: a back-to-back burst passes
	// 1 + (100 ms + 100 ms) / 100 ms = 3 packets (4 if the test is slow
	// enough for a tenth of a second to pass).
	burst := func(dst string, sport uint16, size int) (passed int) {
		for i := 0; i < 40; i++ {
			ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: pkt{src: "192.0.2.1", dst: dst, sport: sport, dport: 4000, payload: size}.bytes(t)})
			if err != nil {
				t.Fatal(err)
			}
			if ret == xdpPass {
				passed++
			}
		}
		return passed
	}
	check := func(name string, got, lo, hi int) {
		if got < lo || got > hi {
			t.Errorf("%s: %d of 40 passed, want %d..%d", name, got, lo, hi)
		}
	}
	check("per ip, first address", burst("203.0.113.1", 4000, 0), 3, 4)
	check("per ip, second address has its own bucket", burst("203.0.113.2", 4000, 0), 3, 4)
	check("per prefix, first address", burst("203.0.113.130", 4000, 0), 3, 4)
	check("per prefix, second address shares the bucket", burst("203.0.113.131", 4000, 0), 0, 1)
	// 80 kbit/s = 10,000 B/s; 1000-byte packets cost 100 ms each.
	check("bits per second, most specific rule", burst("203.0.113.70", 4000, 958), 3, 4)
	check("signature rate limit", burst("203.0.113.200", 53, 0), 0, 1) // the /25 per-prefix bucket is spent too
	c, _ := r.Counters()
	if s := c.RateLimits["acme/rate:203.0.113.0/25"]; s.Packets != 80 || s.Dropped < 72 {
		t.Errorf("per-ip rule counters: %+v", s)
	}
	if s := c.Signatures["acme/dns"]; s.Packets != 40 || s.Dropped < 36 {
		t.Errorf("signature counters: %+v", s)
	}
	if c.Reasons["rate_drop"].Packets+c.Reasons["signature_drop"].Packets != c.Tenants["acme"].Dropped {
		t.Errorf("drops: %+v vs tenant %+v", c.Reasons, c.Tenants["acme"])
	}
}

func TestSampling(t *testing.T) {
	objs := loadForTest(t)
	r, _ := newReconciler(objs, nil)
	tenants := []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Spec: mustSpec(t, "acme", `{"sample_rate": 1, "deny": ["198.18.0.0/15"]}`)}}
	if _, err := r.Apply(dosspec.Spec{SampleRate: 1 << 24}, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	rd, err := openSamples(objs.NfhSamples)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	sent := [][]byte{
		pkt{src: "192.0.2.1", dst: "203.0.113.1"}.bytes(t),
		pkt{src: "198.18.0.1", dst: "203.0.113.1", payload: 500}.bytes(t),
	}
	for _, p := range sent {
		if _, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: p}); err != nil {
			t.Fatal(err)
		}
	}
	// Not a tenant with its own rate: the global 1 in 2^24 (no sample).
	objs.NfhostDos.Run(&ebpf.RunOptions{Data: pkt{src: "192.0.2.1", dst: "198.51.100.1"}.bytes(t)})
	rd.SetDeadline(time.Now().Add(2 * time.Second))
	for i, p := range sent {
		s, err := rd.Read()
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if s.Tenant != r.TenantIndex("acme") || int(s.Len) != len(p) || !bytes.Equal(s.Data, p[:min(len(p), SampleBytes)]) {
			t.Errorf("sample %d: %+v", i, s)
		}
		if want := i == 1; s.Dropped != want || (want && s.Reason != "tenant_deny") || (!want && s.Reason != "pass") {
			t.Errorf("sample %d: dropped %v reason %s", i, s.Dropped, s.Reason)
		}
	}
	rd.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if s, err := rd.Read(); err == nil {
		t.Errorf("unexpected sample %+v", s)
	}
	c, _ := r.Counters()
	if c.Reasons["sampled"].Packets != 2 {
		t.Errorf("sampled counter %d", c.Reasons["sampled"].Packets)
	}
}

// TestRestartWritesNothing: a new reconciler (nsd restarted) on the maps a
// previous one wrote reads them back exactly and writes nothing for the
// same config: no signature is switched off and on, no entry rewritten.
func TestRestartWritesNothing(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	global := mustSpec(t, "dos/global", `{"deny": ["192.0.2.0/25", "2001:db8:bad::/48"], "sample_rate": 100, "signatures": [
	  {"id": "dns-amp", "expression": "udp.srcport == 53 and ip.len > 512", "action": "drop", "expires": "`+later+`"},
	  {"id": "src", "expression": "ip.src == 198.18.0.0/15 and tcp.flags.syn", "action": "monitor"}]}`)
	tenants := []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Spec: mustSpec(t, "acme", `{
	  "allow": ["192.0.2.5"], "deny": ["198.51.100.0/24"], "sample_rate": 10,
	  "rate_limits": [{"prefix": "203.0.113.0/25", "pps": 10, "per": "ip"}],
	  "signatures": [{"id": "ntp", "expression": "udp.dstport == 123 and payload[0:1] & 0x07 == 0x07", "action": "drop"},
	                 {"id": "dns", "expression": "udp.srcport == 53", "action": "ratelimit", "pps": 10, "per": "rule"}]}`)}}
	if _, err := r.Apply(*global, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r.Writes() == 0 {
		t.Fatal("the first apply wrote nothing")
	}
	r2, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Apply(*global, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r2.Writes() != 0 {
		t.Errorf("a restarted reconciler wrote %d entries for an unchanged config", r2.Writes())
	}
	// A changed match on the same ID after a restart is still noticed.
	tenants[0].Spec = mustSpec(t, "acme", `{"allow": ["192.0.2.5"], "deny": ["198.51.100.0/24"], "sample_rate": 10,
	  "rate_limits": [{"prefix": "203.0.113.0/25", "pps": 10, "per": "ip"}],
	  "signatures": [{"id": "ntp", "expression": "udp.dstport == 124 and payload[0:1] & 0x07 == 0x07", "action": "drop"},
	                 {"id": "dns", "expression": "udp.srcport == 53", "action": "ratelimit", "pps": 10, "per": "rule"}]}`)
	r3, _ := newReconciler(objs, nil)
	if _, err := r3.Apply(*global, tenants, time.Now()); err != nil {
		t.Fatal(err)
	}
	if r3.Writes() == 0 {
		t.Fatal("a changed signature after a restart wrote nothing")
	}
	ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: pkt{src: "192.0.2.1", dst: "203.0.113.1", dport: 124, data: []byte{0x17}}.bytes(t)})
	if err != nil || ret != xdpDrop {
		t.Errorf("changed signature: verdict %d (%v), want drop", ret, err)
	}
}

// FuzzPacket: whatever bytes arrive, the program answers PASS or DROP
// (never ABORTED or another action) and counts the packet exactly once
// under one reason.
func FuzzPacket(f *testing.F) {
	f.Add(pkt{src: "192.0.2.1", dst: "203.0.113.1", sport: 53, dport: 4000, payload: 600}.bytes(f))
	f.Add(pkt{src: "2001:db8:bad::9", dst: "2001:db8::1", l4: "tcp", syn: true}.bytes(f))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 0x81, 0, 0, 1, 0x08, 0x00, 0x45})
	objs := loadForTest(f)
	r, err := newReconciler(objs, nil)
	if err != nil {
		f.Fatal(err)
	}
	global := mustSpec(f, "dos/global", `{"deny": ["192.0.2.128/25"], "signatures": [
	  {"id": "dns-amp", "expression": "udp.srcport == 53 and ip.len > 512", "action": "drop"},
	  {"id": "p", "expression": "udp.dstport == 7547 and payload[4:4] & 0xffff00ff == 0x4d490042", "action": "drop"}],
	  "rate_limits": [{"prefix": "203.0.113.0/24", "pps": 1000, "per": "ip"}], "sample_rate": 7}`)
	if _, err := r.Apply(*global, nil, time.Now()); err != nil {
		f.Fatal(err)
	}
	total := func() uint64 {
		c, err := r.Counters()
		if err != nil {
			f.Fatal(err)
		}
		var n uint64
		for name, s := range c.Reasons {
			if name != "sampled" && name != "sample_lost" && name != "tenant_allow" && name != "tenant_deny" {
				n += s.Packets
			}
		}
		return n
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 14 || len(data) > 1500 {
			return // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
		}
		before := total()
		ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: data})
		if err != nil {
			t.Fatal(err)
		}
		if ret != xdpPass && ret != xdpDrop {
			t.Fatalf("verdict %d for %x", ret, data)
		}
		if d := total() - before; d != 1 {
			t.Fatalf("%d reasons counted for one packet %x", d, data)
		}
	})
}

// TestSrc24Table: the /24 table and the trie agree on every shape of
// IPv4 list entry: shorter than /24, exactly /24, longer (deferred to the
// trie), allow inside deny, and a table that defers everything (what an
// upgrade from a version without the table starts with).
func TestSrc24Table(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	global := mustSpec(t, "dos/global", `{"deny": ["198.18.0.0/15", "192.0.2.0/24", "203.0.113.64/26", "198.51.100.7"],
	  "allow": ["198.18.5.0/24", "198.19.0.128/25"]}`)
	if _, err := r.Apply(*global, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	cases := []verdictCase{
		{"inside a /15", pkt{src: "198.19.200.1", dst: "10.0.0.1"}, xdpDrop, "deny"},
		{"allowed /24 inside the /15", pkt{src: "198.18.5.9", dst: "10.0.0.1"}, xdpPass, "allow"},
		{"allowed /25 inside the /15 (trie)", pkt{src: "198.19.0.200", dst: "10.0.0.1"}, xdpPass, "allow"},
		{"denied half of that /24 (trie)", pkt{src: "198.19.0.5", dst: "10.0.0.1"}, xdpDrop, "deny"},
		{"a /24", pkt{src: "192.0.2.77", dst: "10.0.0.1"}, xdpDrop, "deny"},
		{"a /26 (trie)", pkt{src: "203.0.113.70", dst: "10.0.0.1"}, xdpDrop, "deny"},
		{"beside the /26 (trie)", pkt{src: "203.0.113.1", dst: "10.0.0.1"}, xdpPass, "pass"},
		{"a /32 (trie)", pkt{src: "198.51.100.7", dst: "10.0.0.1"}, xdpDrop, "deny"},
		{"beside the /32", pkt{src: "198.51.100.8", dst: "10.0.0.1"}, xdpPass, "pass"},
		{"unlisted", pkt{src: "100.64.0.1", dst: "10.0.0.1"}, xdpPass, "pass"},
	}
	runCases(t, objs, cases)
	tab := src24Table(r.w.Last().Lists)
	nib := func(a string) uint64 {
		b := netip.MustParseAddr(a).As4()
		block := uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2])
		return tab[block>>4] >> ((block & 15) * 4) & 15
	}
	for a, want := range map[string]uint64{"198.19.200.1": 2, "198.18.5.9": 1, "198.19.0.1": src24Trie, "192.0.2.1": 2, "203.0.113.1": src24Trie, "100.64.0.1": 0} {
		if got := nib(a); got != want {
			t.Errorf("/24 table at %s = %d, want %d", a, got, want)
		}
	}
	// A table deferring everything to the trie gives the same verdicts.
	if err := fillSrc24(objs.NfhSrc24); err != nil {
		t.Fatal(err)
	}
	runCases(t, objs, cases)
}
