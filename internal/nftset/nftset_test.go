package nftset

import (
	"net/netip"
	"testing"

	"github.com/google/nftables"
)

func TestElementsIntervalsRoundTrip(t *testing.T) {
	var elems []nftables.SetElement
	ps := []string{"203.0.113.0/25", "203.0.113.128/25", "198.51.100.7/32", "255.255.255.0/24", "2001:db8::/32", "ffff::/16"}
	for _, s := range ps {
		elems = append(elems, Elements(netip.MustParsePrefix(s), []byte{1, 2, 3, 4})...)
	}
	// Separate families, as in the kernel.
	var v4, v6 []nftables.SetElement
	for _, e := range elems {
		if len(e.Key) == 4 {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	got := map[string]bool{}
	for _, fam := range [][]nftables.SetElement{v4, v6} {
		// Reverse the order: the kernel dumps intervals in any order.
		for i, j := 0, len(fam)-1; i < j; i, j = i+1, j-1 {
			fam[i], fam[j] = fam[j], fam[i]
		}
		ivs, err := Intervals(fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, iv := range ivs {
			p, ok := iv.Prefix()
			if !ok {
				t.Fatalf("interval %v is not a prefix", iv)
			}
			got[p.String()] = true
		}
	}
	for _, s := range ps {
		if !got[s] {
			t.Errorf("lost %s (got %v)", s, got)
		}
	}
}

func TestIntervalsRejectsUnpaired(t *testing.T) {
	_, err := Intervals([]nftables.SetElement{{Key: []byte{10, 0, 0, 0}}, {Key: []byte{10, 0, 0, 5}}})
	if err == nil {
		t.Fatal("accepted two starts")
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{"203.0.113.0/24": "203.0.113.255", "10.0.0.0/13": "10.7.255.255",
		"2001:db8::/33": "2001:db8:7fff:ffff:ffff:ffff:ffff:ffff", "192.0.2.1/32": "192.0.2.1"} {
		if got := LastAddr(netip.MustParsePrefix(p)).String(); got != want {
			t.Errorf("LastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}
