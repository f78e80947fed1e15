package source

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/internal/doc"
)

// planShards covers every valid tenant ID exactly once, gives each shard
// the tenants under it, and keeps shards at most max tenants where IDs can
// still be told apart.
func TestPlanShardsCoversEveryID(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randomID := func() string {
		n := 1 + rng.IntN(6)
		if rng.IntN(10) == 0 {
			n = 31
		}
		b := []byte{idFirst[rng.IntN(len(idFirst))]}
		for len(b) < n {
			b = append(b, idRest[rng.IntN(len(idRest))])
		}
		return string(b)
	}
	for _, c := range []struct{ n, max int }{{0, 4}, {5, 4}, {300, 16}, {1000, 64}} {
		set := map[string]bool{}
		for i := 0; i < c.n; i++ {
			set[fmt.Sprintf("t%d", i)] = true // the simulator's IDs: one shared first character
			set[randomID()] = true
		}
		ids := slices.Sorted(func(yield func(string) bool) {
			for id := range set {
				if !yield(id) {
					return
				}
			}
		})
		shards := planShards(ids, c.max)
		owner := func(id string) []*shard {
			var out []*shard
			for _, sh := range shards {
				if sh.exact && id == sh.id || !sh.exact && strings.HasPrefix(id, sh.id) {
					out = append(out, sh)
				}
			}
			return out
		}
		for _, id := range ids {
			if o := owner(id); len(o) != 1 || !slices.Contains(o[0].tenants, id) {
				t.Fatalf("%d ids, max %d: %s is in %d shards (want 1, holding it)", c.n, c.max, id, len(o))
			}
		}
		for i := 0; i < 2000; i++ { // IDs nobody has yet
			if id := randomID(); doc.ValidateTenantID(id) == nil && len(owner(id)) != 1 {
				t.Fatalf("new ID %s is in %d shards", id, len(owner(id)))
			}
		}
		total := 0
		for _, sh := range shards {
			total += len(sh.tenants)
			if len(sh.tenants) > c.max && !sh.exact && len(sh.id) < maxIDLen {
				t.Errorf("shard %q holds %d tenants, max %d", sh.id, len(sh.tenants), c.max)
			}
		}
		if total != len(ids) {
			t.Fatalf("shards hold %d tenants of %d", total, len(ids))
		}
	}
}
