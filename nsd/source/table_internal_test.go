package source

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// A table kept through random changes, fed as the follower feeds it (the
// tenants it read) or as a whole listing, sends what a table built from
// the same listing at once holds; a tenant its Changed does not name keeps
// the map of the snapshot before, and no snapshot changes after it is
// sent.
func TestTenantTableSnapshots(t *testing.T) {
	const kp = "nfhost/tenants/"
	r := rand.New(rand.NewPCG(7, 8))
	state := map[string]api.KVPairs{} // the store, by tenant (as the follower holds it)
	var extra api.KVPairs
	index := uint64(0)
	ids := []string{"a", "b", "c", "Bad_ID", "d", "e"}
	tbl := newTenantTable(kp)
	type sent struct {
		tenants map[string]map[string]Entry
		copy    map[string]map[string]Entry
	}
	var prev *sent
	for round := 0; round < 2000; round++ {
		dirty := map[string]bool{}
		for k := r.IntN(3); k >= 0; k-- {
			id := ids[r.IntN(len(ids))]
			dirty[id] = true
			switch op := r.IntN(6); op {
			case 0:
				delete(state, id)
			case 1: // a folder key and a key with no name: neither is a tenant key
				index++
				state[id] = append(slices.Clone(state[id]), &api.KVPair{Key: kp + id + "/", ModifyIndex: index, Value: []byte("x")[:r.IntN(2)]})
			default:
				index++
				key := []string{"network", "firewall", "dos"}[r.IntN(3)]
				ps := slices.DeleteFunc(slices.Clone(state[id]), func(p *api.KVPair) bool { return p.Key == kp+id+"/"+key })
				ps = append(ps, &api.KVPair{Key: kp + id + "/" + key, ModifyIndex: index, Value: fmt.Appendf(nil, "v%d", index)})
				slices.SortFunc(ps, func(a, b *api.KVPair) int { return strings.Compare(a.Key, b.Key) })
				state[id] = ps
			}
		}
		if r.IntN(20) == 0 {
			index++
			extra = api.KVPairs{{Key: kp + "stray", ModifyIndex: index}}
		}
		var listing api.KVPairs
		for _, id := range slices.Sorted(maps.Keys(state)) {
			listing = append(listing, state[id]...)
		}
		listing = append(listing, extra...)
		slices.SortFunc(listing, func(a, b *api.KVPair) int { return strings.Compare(a.Key, b.Key) })
		if r.IntN(4) == 0 {
			tbl.replaceListing(listing, false)
		} else {
			for id := range dirty {
				tbl.set(id, state[id], false)
			}
			tbl.setExtra(extra)
		}
		if r.IntN(3) == 0 {
			continue // no snapshot this round: the next one's Changed covers both
		}
		tenants, problems, changed := tbl.snapshot()
		fresh := newTenantTable(kp)
		fresh.replaceListing(listing, false)
		wantTenants, wantProblems, _ := fresh.snapshot()
		if !reflect.DeepEqual(tenants, wantTenants) || !slices.Equal(problems, wantProblems) {
			t.Fatalf("round %d: table holds\n%v %v\nbuilt at once\n%v %v", round, tenants, problems, wantTenants, wantProblems)
		}
		if prev != nil {
			if !reflect.DeepEqual(prev.tenants, prev.copy) {
				t.Fatalf("round %d: the snapshot before changed after it was sent", round)
			}
			if changed == nil {
				t.Fatalf("round %d: no Changed set", round)
			}
			for id, keys := range tenants {
				if old, ok := prev.tenants[id]; ok && !changed[id] && reflect.ValueOf(old).Pointer() != reflect.ValueOf(keys).Pointer() {
					t.Fatalf("round %d: %s has a new map and is not in Changed %v", round, id, changed)
				} else if !ok && !changed[id] {
					t.Fatalf("round %d: %s is new and not in Changed %v", round, id, changed)
				}
			}
			for id := range prev.tenants {
				if _, ok := tenants[id]; !ok && !changed[id] {
					t.Fatalf("round %d: %s is gone and not in Changed %v", round, id, changed)
				}
			}
		}
		prev = &sent{tenants: tenants, copy: deepCopy(tenants)}
	}
}

func deepCopy(m map[string]map[string]Entry) map[string]map[string]Entry {
	out := make(map[string]map[string]Entry, len(m))
	for id, keys := range m {
		out[id] = maps.Clone(keys)
	}
	return out
}

// BenchmarkTenantTableChange: one tenant's change and the snapshot after
// it, with 100 to 10,000 tenants: the copy of the map of maps is what
// grows (a new snapshot shares no map with the one a pass may still read).
func BenchmarkTenantTableChange(b *testing.B) {
	const kp = "nfhost/tenants/"
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			tbl := newTenantTable(kp)
			for i := 0; i < n; i++ {
				id := fmt.Sprintf("t%d", i)
				tbl.set(id, api.KVPairs{{Key: kp + id + "/network", ModifyIndex: uint64(i + 1), Value: []byte("{}")}}, false)
			}
			tbl.snapshot()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("t%d", i%n)
				tbl.set(id, api.KVPairs{{Key: kp + id + "/network", ModifyIndex: uint64(n + i + 1), Value: []byte("{}")}}, false)
				tbl.snapshot()
			}
		})
	}
}
