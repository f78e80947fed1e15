package e2e

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	capi "github.com/hashicorp/consul/api"
	"github.com/vishvananda/netlink"

	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/nsd/source"
)

// routerRoutes reads the router's main table: prefix → next hops.
func (l *bgpLab) routerRoutes(h *netlink.Handle) map[netip.Prefix][]string {
	out := map[netip.Prefix][]string{}
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return out
	}
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		a, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		p := netip.PrefixFrom(a, ones)
		var hops []string
		if r.Gw != nil {
			hops = append(hops, r.Gw.String())
		}
		for _, m := range r.MultiPath {
			hops = append(hops, m.Gw.String())
		}
		sort.Strings(hops)
		out[p] = hops
	}
	return out
}

func (l *bgpLab) routeHops(h *netlink.Handle, p netip.Prefix) []string { return l.routerRoutes(h)[p] }

func (l *bgpLab) applied(id, host string, index uint64) bool {
	kv, _, err := l.consul.Client.KV().Get("nfhost/tenant-status/"+id+"/"+host, nil)
	if err != nil || kv == nil {
		return false
	}
	var st source.Status
	return json.Unmarshal(kv.Value, &st) == nil && st.State == "applied" && st.AppliedIndex >= index
}

func (l *bgpLab) put(key, value string) uint64 {
	l.t.Helper()
	wm, err := l.consul.Client.KV().Put(&capi.KVPair{Key: "nfhost/" + key, Value: []byte(value)}, nil)
	if err != nil {
		l.t.Fatal(err)
	}
	kv, _, err := l.consul.Client.KV().Get("nfhost/"+key, nil)
	if err != nil || kv == nil {
		l.t.Fatalf("read back %s: %v (write took %s)", key, err, wm.RequestTime)
	}
	return kv.ModifyIndex
}

// announcedCount is what host's status says its speaker announces.
func (l *bgpLab) announcedCount(host string) int {
	kv, _, err := l.consul.Client.KV().Get("nfhost/host-status/"+host, nil)
	if err != nil || kv == nil {
		return -1
	}
	var hs source.HostStatus
	if json.Unmarshal(kv.Value, &hs) != nil || hs.BGP == nil {
		return -1
	}
	return hs.BGP.AnnouncedCount
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(int(float64(len(s))*p), len(s)-1)]
}

// BenchmarkBGPTenantToRouter: 100 tenants written one after the other;
// for each, the time from the write until nsd on edge1 reports it applied
// (the baseline: what nsd did before BGP) and until the router's kernel
// has its prefix via both edges. Then drain edge1: the time until the
// router has none of edge1's paths, and undrain: until it has both again.
func BenchmarkBGPTenantToRouter(b *testing.B) {
	for range b.N {
		l := newBGPLab(b)
		l.logLevel = "info"
		h, err := nlh.New(l.router.Handle, true)
		if err != nil {
			b.Fatal(err)
		}
		defer h.Close()
		l.startNSD(0)
		l.startNSD(1)
		eventuallyFor(b, 30*time.Second, "both sessions", func() bool { return l.bird.Established("edge1") && l.bird.Established("edge2") })
		const n = 100
		var applied, routed []time.Duration
		for i := range n {
			p := netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i))
			id := fmt.Sprintf("b%d", i)
			t0 := time.Now()
			idx := l.put("tenants/"+id+"/network", fmt.Sprintf(`{"prefixes": [%q]}`, p))
			var ta, tr time.Duration
			for ta == 0 || tr == 0 {
				if ta == 0 && l.applied(id, l.hosts[0], idx) {
					ta = time.Since(t0)
				}
				if tr == 0 && len(l.routeHops(h, p)) == 2 {
					tr = time.Since(t0)
				}
				if time.Since(t0) > 30*time.Second {
					b.Fatalf("tenant %s: applied after %s, routed after %s", id, ta, tr)
				}
				time.Sleep(2 * time.Millisecond)
			}
			applied, routed = append(applied, ta), append(routed, tr)
		}
		viaEdge1 := func() int {
			c := 0
			for p, hops := range l.routerRoutes(h) {
				if strings.HasPrefix(p.String(), "198.19.") && strings.Contains(strings.Join(hops, ","), both1) {
					c++
				}
			}
			return c
		}
		t0 := time.Now()
		l.put("control/drain/"+l.hosts[0], "true")
		drain := eventuallyFor(b, 30*time.Second, "drained", func() bool { return viaEdge1() == 0 })
		_ = t0
		l.put("control/drain/"+l.hosts[0], "false")
		undrain := eventuallyFor(b, 30*time.Second, "undrained", func() bool { return viaEdge1() == n })
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		b.ReportMetric(ms(pct(applied, 0.5)), "applied-p50-ms")
		b.ReportMetric(ms(pct(applied, 0.99)), "applied-p99-ms")
		b.ReportMetric(ms(pct(routed, 0.5)), "router-p50-ms")
		b.ReportMetric(ms(pct(routed, 0.99)), "router-p99-ms")
		b.ReportMetric(float64(pct(routed, 0.5))/float64(pct(applied, 0.5)), "router/applied-p50")
		b.ReportMetric(float64(pct(routed, 0.99))/float64(pct(applied, 0.99)), "router/applied-p99")
		b.ReportMetric(ms(drain), "drain-converged-ms")
		b.ReportMetric(ms(undrain), "undrain-converged-ms")
		b.ReportMetric(float64(drain)/float64(pct(applied, 0.5)), "drain/applied-p50")
		b.ReportMetric(n, "tenants")
	}
}

// procStats reads a process's RSS (MiB) and CPU time (s).
func procStats(b testing.TB, pid int) (rss, cpu float64) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(st); m != nil {
		kb, _ := strconv.ParseFloat(string(m[1]), 64)
		rss = kb / 1024
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64) // utime, field 14
	stt, _ := strconv.ParseFloat(f[12], 64)
	return rss, (ut + stt) / 100 // USER_HZ
}

var birdNetworks = regexp.MustCompile(`(\d+) of (\d+) routes for (\d+) networks in table master4`)

// BenchmarkBGPAnnounce10k: 10 tenants with 1,000 prefixes each. First
// with advertise false (the baseline: the same tenants applied, nothing
// announced): time until both edges applied them, edge1's nsd RSS and the
// CPU it spent. Then advertise true: time until the router holds all
// 10,000 prefixes via both edges (20,000 paths), and nsd's RSS and CPU for
// it.
func BenchmarkBGPAnnounce10k(b *testing.B) {
	for range b.N {
		l := newBGPLab(b)
		l.logLevel = "info"
		l.startNSD(0)
		l.startNSD(1)
		eventuallyFor(b, 30*time.Second, "both sessions", func() bool { return l.bird.Established("edge1") && l.bird.Established("edge2") })
		time.Sleep(2 * time.Second)
		pid := l.nsd[0].cmd.Process.Pid
		rss0, cpu0 := procStats(b, pid)
		doc := func(k int, advertise bool) string {
			var ps []string
			for i := range 1000 {
				j := k*1000 + i
				ps = append(ps, fmt.Sprintf("%q", netip.AddrFrom4([4]byte{198, 19, byte(j * 4 >> 8), byte(j * 4)}).String()+"/30"))
			}
			return fmt.Sprintf(`{"prefixes": [%s], "advertise": %v}`, strings.Join(ps, ","), advertise)
		}
		idx := map[string]uint64{}
		t0 := time.Now()
		for k := range 10 {
			idx[fmt.Sprintf("k%d", k)] = l.put(fmt.Sprintf("tenants/k%d/network", k), doc(k, false))
		}
		applyT := eventuallyFor(b, 120*time.Second, "10 tenants applied on both edges", func() bool {
			for id, i := range idx {
				if !l.applied(id, l.hosts[0], i) || !l.applied(id, l.hosts[1], i) {
					return false
				}
			}
			return true
		})
		_ = t0
		_, cpuA := procStats(b, pid)
		time.Sleep(3 * time.Second)
		rss1, cpu1 := procStats(b, pid) // steady state: resync passes, nothing announced
		for k := range 10 {
			l.put(fmt.Sprintf("tenants/k%d/network", k), doc(k, true))
		}
		announceT := eventuallyFor(b, 300*time.Second, "10,000 prefixes via both edges at the router", func() bool {
			out, _ := l.bird.Ctl("show route count")
			m := birdNetworks.FindStringSubmatch(out)
			return m != nil && m[2] == "20000" && m[3] == "10000"
		})
		rss2, cpu2 := procStats(b, pid)
		time.Sleep(3 * time.Second)
		rss3, cpu3 := procStats(b, pid) // steady state: resync passes with 10,000 announced
		b.ReportMetric(applyT.Seconds(), "apply-noadvertise-s")
		b.ReportMetric(announceT.Seconds(), "announce-10k-s")
		b.ReportMetric(announceT.Seconds()/applyT.Seconds(), "announce/apply")
		b.ReportMetric(rss0, "rss-idle-MiB")
		b.ReportMetric(rss1, "rss-applied-MiB")
		b.ReportMetric(rss2, "rss-announced-MiB")
		b.ReportMetric(rss2/rss1, "rss-announced/applied")
		b.ReportMetric(cpuA-cpu0, "cpu-apply-s")
		b.ReportMetric(cpu2-cpu1, "cpu-announce-s")
		b.ReportMetric((cpu2-cpu1)/(cpuA-cpu0), "cpu-announce/apply")
		b.ReportMetric((cpu1-cpuA)/3*100, "cpu-steady-noadvertise-%")
		b.ReportMetric((cpu3-cpu2)/3*100, "cpu-steady-%")
		b.ReportMetric((cpu3-cpu2)/(cpu1-cpuA), "cpu-steady/noadvertise")
		b.ReportMetric(rss3, "rss-steady-MiB")
		// nsd survives SIGKILL by design; with 10,000 prefixes and a 1 s
		// resync a pass in progress can outlast proc.stop's 10 s on a
		// loaded machine.
		for _, p := range l.nsd {
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}
