package tunnels

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestPlanRoutes(t *testing.T) {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	routes := []Route{
		{Prefix: p("203.0.113.0/24"), Nexthop: a("169.254.20.1"), Tunnel: "t1", Priority: 100, Weight: 1},
		{Prefix: p("203.0.113.0/24"), Nexthop: a("169.254.21.1"), Tunnel: "t2", Priority: 100, Weight: 3},
		{Prefix: p("203.0.113.0/24"), Nexthop: a("169.254.22.1"), Tunnel: "t3", Priority: 200, Weight: 1},
		{Prefix: p("198.51.100.0/24"), Nexthop: a("169.254.22.1"), Tunnel: "t3", Priority: 5, Weight: 1},
	}
	healthy := func(string) int { return 0 }
	want := []RouteSet{
		{Prefix: p("203.0.113.0/24"), Priority: 100, Hops: []Hop{{"t1", a("169.254.20.1"), 1}, {"t2", a("169.254.21.1"), 3}}},
		{Prefix: p("198.51.100.0/24"), Priority: 5, Hops: []Hop{{"t3", a("169.254.22.1"), 1}}},
	}
	if got := PlanRoutes(routes, healthy); !reflect.DeepEqual(got, want) {
		t.Fatalf("healthy:\n got %+v\nwant %+v", got, want)
	}
	// t1 degraded: t2 alone carries the prefix; t1 and t2 down: t3.
	got := PlanRoutes(routes, func(n string) int { return map[string]int{"t1": PenaltyDegraded}[n] })
	if len(got[0].Hops) != 1 || got[0].Hops[0].Tunnel != "t2" || got[0].Priority != 100 {
		t.Errorf("t1 degraded: %+v", got[0])
	}
	got = PlanRoutes(routes, func(n string) int { return map[string]int{"t1": PenaltyDown, "t2": PenaltyDown}[n] })
	if len(got[0].Hops) != 1 || got[0].Hops[0].Tunnel != "t3" {
		t.Errorf("t1, t2 down: %+v", got[0])
	}
	// Every tunnel down: the least bad still routes (no blackhole).
	got = PlanRoutes(routes, func(string) int { return PenaltyDown })
	if len(got[0].Hops) != 2 || got[0].Priority != 100+PenaltyDown {
		t.Errorf("all down: %+v", got[0])
	}
}
