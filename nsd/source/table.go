package source

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/nfhost/nfhost/internal/doc"
)

// tenantTable is the tenants part of Watch's state, kept by tenant so
// that a change of a few tenants costs the watcher and the snapshot it
// sends work for those tenants only: the snapshot's Tenants map is shared
// with the table until the table changes (then copied once: a copy of the
// map of maps, not of the tenants' keys), each tenant's keys map is built
// only when its pairs change, and the snapshot says which tenants changed
// since the one before it (Snapshot.Changed), so that nsd's pass looks at
// those only. Rebuilding every tenant's map, and nsd's pass over every
// tenant, were most of what a change cost a server with 10,000 tenants.
type tenantTable struct {
	keyPrefix     string                      // "<prefix>/tenants/"
	pairs         map[string]api.KVPairs      // by the tenant ID of their keys, as read
	extra         api.KVPairs                 // keys under tenants/ of no tenant
	tenants       map[string]map[string]Entry // built from pairs: tenants with a valid ID and a key
	problems      map[string][]problem        // by tenant ID
	extraProblems []problem
	// shared: tenants went into a snapshot and is copied before the
	// next change. changed holds the tenants whose keys changed since the
	// last snapshot; all is set when any may have (nothing sent yet, a
	// store that went back).
	shared, all   bool
	changed       map[string]bool
	problemsMoved bool // the keys that could not be attributed changed
}

type problem struct{ key, msg string }

func newTenantTable(keyPrefix string) *tenantTable {
	return &tenantTable{keyPrefix: keyPrefix, pairs: map[string]api.KVPairs{}, tenants: map[string]map[string]Entry{},
		problems: map[string][]problem{}, all: true, changed: map[string]bool{}}
}

// samePairs: a and b are the same keys at the same indexes (Consul raises
// a key's ModifyIndex with every write, so equal indexes mean equal
// values, within one store: a store that went back is force).
func samePairs(a, b api.KVPairs) bool {
	return slices.EqualFunc(a, b, func(p, q *api.KVPair) bool {
		return p == q || p.Key == q.Key && p.ModifyIndex == q.ModifyIndex && p.Flags == q.Flags
	})
}

// set records tenant id's pairs (none: it has no keys), rebuilding its
// keys only if they differ from what the table holds (or force).
func (t *tenantTable) set(id string, ps api.KVPairs, force bool) {
	old, had := t.pairs[id]
	if had && !force && samePairs(old, ps) || !had && len(ps) == 0 {
		return
	}
	if len(ps) == 0 {
		delete(t.pairs, id)
	} else {
		t.pairs[id] = ps
	}
	if _, had := t.problems[id]; had {
		delete(t.problems, id)
		t.problemsMoved = true
	}
	var keys map[string]Entry
	for _, p := range ps {
		_, key, _ := strings.Cut(strings.TrimPrefix(p.Key, t.keyPrefix), "/")
		switch {
		case strings.HasSuffix(p.Key, "/") && p.Value == nil:
			continue // a "folder" key made by the UI
		case key == "":
			t.problems[id] = append(t.problems[id], problem{p.Key, fmt.Sprintf("%s: not a tenant key (want %s<tenant>/<key>)", p.Key, t.keyPrefix)})
			t.problemsMoved = true
			continue
		case doc.ValidateTenantID(id) != nil:
			t.problems[id] = append(t.problems[id], problem{p.Key, fmt.Sprintf("%s: %v", p.Key, doc.ValidateTenantID(id))})
			t.problemsMoved = true
			continue
		}
		if keys == nil {
			keys = make(map[string]Entry, len(ps))
		}
		keys[key] = Entry{Value: p.Value, ModifyIndex: p.ModifyIndex}
	}
	_, listed := t.tenants[id]
	if keys == nil && !listed {
		return
	}
	if t.shared {
		t.tenants, t.shared = maps.Clone(t.tenants), false
	}
	if keys == nil {
		delete(t.tenants, id)
	} else {
		t.tenants[id] = keys
	}
	t.changed[id] = true
}

// setExtra records the keys under tenants/ that belong to no tenant.
func (t *tenantTable) setExtra(extra api.KVPairs) {
	if samePairs(t.extra, extra) {
		return
	}
	t.extra, t.problemsMoved, t.extraProblems = extra, true, nil
	for _, p := range extra {
		if strings.HasSuffix(p.Key, "/") && p.Value == nil {
			continue
		}
		t.extraProblems = append(t.extraProblems, problem{p.Key, fmt.Sprintf("%s: not a tenant key (want %s<tenant>/<key>)", p.Key, t.keyPrefix)})
	}
}

// replace makes the table hold exactly byTenant and extra (a full
// listing); force rebuilds every tenant (a store that went back: its
// indexes say nothing).
func (t *tenantTable) replace(byTenant map[string]api.KVPairs, extra api.KVPairs, force bool) {
	for id := range t.pairs {
		if _, ok := byTenant[id]; !ok {
			t.set(id, nil, force)
		}
	}
	for id, ps := range byTenant {
		t.set(id, ps, force)
	}
	t.setExtra(extra)
	if force {
		t.all = true
	}
}

// replaceListing is replace with a listing of tenants/, sorted by key.
func (t *tenantTable) replaceListing(pairs api.KVPairs, force bool) {
	byTenant, extra := groupTenants(t.keyPrefix, pairs)
	t.replace(byTenant, extra, force)
}

// groupTenants splits a listing of tenants/ (keyPrefix) by tenant, and
// the keys of no tenant.
func groupTenants(keyPrefix string, pairs api.KVPairs) (map[string]api.KVPairs, api.KVPairs) {
	byTenant := map[string]api.KVPairs{}
	var extra api.KVPairs
	for _, p := range pairs {
		if id, _, ok := strings.Cut(strings.TrimPrefix(p.Key, keyPrefix), "/"); ok {
			byTenant[id] = append(byTenant[id], p)
		} else {
			extra = append(extra, p)
		}
	}
	return byTenant, extra
}

// moved reports whether a snapshot would differ from the last one.
func (t *tenantTable) moved() bool { return t.all || len(t.changed) > 0 || t.problemsMoved }

// snapshot returns the tenants, the keys that could not be attributed (in
// key order) and the tenants changed since the last snapshot (nil: any
// may have), and starts the next change set.
func (t *tenantTable) snapshot() (map[string]map[string]Entry, []string, map[string]bool) {
	t.shared = true
	changed := t.changed
	if t.all {
		changed = nil
	}
	t.changed, t.all, t.problemsMoved = map[string]bool{}, false, false
	ps := slices.Clone(t.extraProblems)
	for _, p := range t.problems {
		ps = append(ps, p...)
	}
	slices.SortStableFunc(ps, func(a, b problem) int { return strings.Compare(a.key, b.key) })
	var problems []string
	for _, p := range ps {
		problems = append(problems, p.msg)
	}
	return t.tenants, problems, changed
}
