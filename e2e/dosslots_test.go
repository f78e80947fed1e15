package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// signatureSeries lists the signatures the XDP maps hold, from the
// per-rule metric nsd exports for each (kind signature, rule scope/id).
func signatureSeries(t testing.TB, addr string) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	const pre = `nfhost_dos_rule_packets_total{kind="signature",rule="`
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), pre); ok {
			out[rest[:strings.IndexByte(rest, '"')]] = true
		}
	}
	return out
}

func countScope(sigs map[string]bool, scope string) int {
	n := 0
	for id := range sigs {
		if strings.HasPrefix(id, scope+"/") {
			n++
		}
	}
	return n
}

// TestDoSSlotsThroughConsul is the reliability issue's item 9 end to end:
// a tenant with 256 signatures in force, then a one-signature dos/global
// written with nsctl. The tenant keeps its signatures and stays applied,
// nsctl status shows the global document refused, and that survives an
// nsd restart. When the tenant frees slots the global document is placed;
// when the tenant's own document then does not fit, its status is error
// with the field and its 200 signatures in force stay.
func TestDoSSlotsThroughConsul(t *testing.T) {
	l := newLabPrefix(t, "nfD")
	p := l.startNSD("--metrics-addr", "127.0.0.1:0")
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(l.nsd.Log())
		}
	})
	maddr := p.metricsAddr(t)
	l.applyTenant("acme", `{"prefixes": ["203.0.113.0/24"]}`)
	eventually(t, "tenant applied", func() bool { return strings.Contains(l.status("acme"), "applied") })

	put := func(target string, n int, base int) {
		t.Helper()
		var sigs []string
		for i := 0; i < n; i++ {
			sigs = append(sigs, fmt.Sprintf(`{"id": "s%d", "expression": "udp.dstport == %d", "action": "drop"}`, i, base+i))
		}
		f := filepath.Join(t.TempDir(), "dos.json")
		os.WriteFile(f, []byte(`{"signatures": [`+strings.Join(sigs, ",")+`]}`), 0o644)
		if out, code := l.nsctl("dos", "put", target, "-f", f); code != 0 {
			t.Fatalf("nsctl dos put %s: exit %d\n%s", target, code, out)
		}
	}
	status := func() string { out, _ := l.nsctl("status", "--host", l.hostID); return out }
	inForce := func(acme, global int) func() bool {
		return func() bool {
			s := signatureSeries(t, maddr)
			return countScope(s, "acme") == acme && countScope(s, "global") == global
		}
	}

	put("acme", 256, 10000)
	eventually(t, "256 acme signatures in force", inForce(256, 0))

	// The reported failure: a one-signature global document.
	put("--global", 1, 19)
	const globalMsg = "dos/global: signatures[0]: no free signature slot (256 in use: 0 global, 256 tenant)"
	eventually(t, "dos/global refused in nsctl status", func() bool { return strings.Contains(status(), globalMsg) })
	if !inForce(256, 0)() {
		t.Fatalf("in force after dos/global: %v", signatureSeries(t, maddr))
	}
	if st := l.status("acme"); !strings.Contains(st, "applied") {
		t.Fatalf("acme: %s", st)
	}

	// A restart keeps it so, and writes nothing to the maps.
	p.stop(t)
	p = l.startNSD("--metrics-addr", "127.0.0.1:0")
	maddr = p.metricsAddr(t)
	eventually(t, "signatures named after the restart", func() bool { return countScope(signatureSeries(t, maddr), "acme") > 0 })
	if !inForce(256, 0)() || !strings.Contains(status(), globalMsg) || !strings.Contains(l.status("acme"), "applied") {
		t.Fatalf("after a restart: %v\n%s", signatureSeries(t, maddr), status())
	}
	if strings.Contains(p.Log(), "DoS maps updated") {
		t.Errorf("the restarted nsd rewrote the DoS maps:\n%s", grep(p.Log(), "DoS maps"))
	}

	// The tenant frees slots: the global document is placed.
	put("acme", 200, 10000)
	eventually(t, "global placed", inForce(200, 1))
	eventually(t, "dos/global error cleared", func() bool { return !strings.Contains(status(), "dos/global:") })

	// The tenant's document grows back: it is the one refused, whole.
	put("acme", 256, 10000)
	const acmeMsg = "tenants/acme/dos: signatures[255]: no free signature slot (256 in use: 1 global, 255 tenant)"
	eventually(t, "acme in error", func() bool {
		st := l.status("acme")
		return strings.Contains(st, " error ") && strings.Contains(st, acmeMsg)
	})
	if !inForce(200, 1)() {
		t.Fatalf("in force after acme's refused document: %v", signatureSeries(t, maddr))
	}
	if !strings.Contains(p.Log(), "tenant DoS document not placed") {
		t.Error("the refusal was not logged")
	}
}
