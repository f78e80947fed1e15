package bgp

import (
	"net/netip"
	"testing"

	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/routing/bgp/bgpspec"
)

// The FlowSpec encoding of each component, read back with GoBGP's own
// rendering of the NLRI (RFC 8955 operators); no root needed.
func TestFlowPathEncoding(t *testing.T) {
	r := func(lo, hi uint64) dosspec.Range { return dosspec.Range{Set: true, Lo: lo, Hi: hi} }
	for _, tc := range []struct {
		rule bgpspec.FlowRule
		want string
	}{
		{bgpspec.FlowRule{Dst: netip.MustParsePrefix("203.0.113.0/24"), Proto: r(17, 17), DstPort: r(123, 123), Len: r(400, 65535)},
			"[destination: 203.0.113.0/24][protocol: ==udp][destination-port: ==123][packet-length: >=400&<=65535]"},
		{bgpspec.FlowRule{Dst: netip.MustParsePrefix("203.0.113.5/32"), Src: netip.MustParsePrefix("198.51.100.0/24"), Proto: r(6, 6),
			SrcPort: r(1024, 65535), TCPFlagsMask: 0x12, TCPFlagsValue: 0x02},
			"[destination: 203.0.113.5/32][source: 198.51.100.0/24][protocol: ==tcp][source-port: >=1024&<=65535][tcp-flags: =S&!A]"},
		{bgpspec.FlowRule{Dst: netip.MustParsePrefix("203.0.113.0/24"), Proto: r(1, 1), ICMPType: r(8, 8), ICMPCode: r(0, 0)},
			"[destination: 203.0.113.0/24][protocol: ==icmp][icmp-type: ==8][icmp-code: ==0]"},
		{bgpspec.FlowRule{Dst: netip.MustParsePrefix("203.0.113.0/24"), TCPFlagsMask: 0x04},
			"[destination: 203.0.113.0/24][tcp-flags: !R]"},
	} {
		p, err := flowPath(tc.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Nlri.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
	p, _ := flowPath(bgpspec.FlowRule{Dst: netip.MustParsePrefix("203.0.113.0/24"), Rate: 125000})
	if s := p.Attrs[len(p.Attrs)-1].String(); s != "{Extcomms: [rate: 125000.000000]}" {
		t.Errorf("traffic-rate: %s", s)
	}
}
