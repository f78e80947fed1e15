package nsd

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/nsd/source"
	"github.com/nfhost/nfhost/routing/rtspec"
)

// changedSet is what a store says changed between two snapshots' tenants:
// every tenant added, deleted, or with other keys or indexes.
func changedSet(prev, next map[string]map[string]source.Entry) map[string]bool {
	out := map[string]bool{}
	for id, keys := range next {
		if old, ok := prev[id]; !ok || fingerprint(old) != fingerprint(keys) {
			out[id] = true
		}
	}
	for id := range prev {
		if _, ok := next[id]; !ok {
			out[id] = true
		}
	}
	return out
}

// A daemon told which tenants changed (Snapshot.Changed) decides every
// pass as one that looks at every tenant does: the same results, kernel
// state, statuses, held deletions and gauges, over random passes with
// overlapping prefixes, refused documents, kernel failures, deletions the
// guard holds, pacing, snapshots a pass skipped (merged as latest merges
// them), passes over the same snapshot again and full passes, which the
// told daemon makes in resync slices half the time (then what is applied
// after the last slice must be the full pass's).
func TestChangedPassesMatchFullScan(t *testing.T) {
	for seed := uint64(1); seed <= 30; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { changedMatchesFullScan(t, seed) })
	}
}

func changedMatchesFullScan(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 99))
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	type side struct {
		d   *Daemon
		k   *fakeKernel
		s   *fakeStore
		dos *fakeDoS
		bgp *fakeSpeaker
	}
	mk := func() side {
		s := &fakeStore{status: map[string]any{}}
		k := &fakeKernel{specs: map[string]rtspec.TenantSpec{}}
		fd, sp := &fakeDoS{}, &fakeSpeaker{}
		return side{New(Options{HostID: "edge1", Store: s, Routing: k, DoS: fd, BGP: sp, NSPrefix: "nfC-", Now: clock, LaneWidth: -1,
			ApplyBurst: 1, MinApplyInterval: 500 * time.Millisecond}), k, s, fd, sp}
	}
	scan, told := mk(), mk()
	ctx := context.Background()
	tenants := map[string]map[string]source.Entry{}
	index := uint64(0)
	prefix := func() string {
		return fmt.Sprintf("198.18.%d.%d/%d", r.IntN(3), r.IntN(4)*64, 24+r.IntN(3))
	}
	network := func() string {
		switch r.IntN(8) {
		case 0:
			return `{"prefixes": ["198.18.0.0/33"]}` // refused
		case 1:
			return `not json`
		case 2:
			return fmt.Sprintf(`{"prefixes": [%q, %q]}`, prefix(), prefix())
		}
		return fmt.Sprintf(`{"prefixes": [%q]}`, prefix())
	}
	put := func(id, key, value string) {
		index++
		keys := maps.Clone(tenants[id]) // snapshots keep the old map
		if keys == nil {
			keys = map[string]source.Entry{}
		}
		keys[key] = source.Entry{Value: []byte(value), ModifyIndex: index}
		tenants[id] = keys
	}
	var last map[string]map[string]source.Entry
	var pendingChanged map[string]bool // of snapshots not delivered yet
	for round := 0; round < 400; round++ {
		now = now.Add(time.Duration(r.IntN(300)) * time.Millisecond)
		for k := r.IntN(4); k >= 0; k-- {
			id := fmt.Sprintf("t%d", r.IntN(30))
			switch op := r.IntN(10); {
			case op < 5:
				put(id, "network", network())
			case op < 6 && r.IntN(2) == 0:
				put(id, "zkey", "{}") // an unknown key: a warning
			case op < 6:
				put(id, "dos", []string{`{"deny": ["192.0.2.66"]}`, `{"deny": ["192.0.2.0/40"]}`, `{"rate_limits": []}`}[r.IntN(3)])
			case op < 8:
				delete(tenants, id)
			case op < 9 && round%37 == 0:
				for id := range tenants { // most tenants at once: the guard holds it
					if r.IntN(3) > 0 {
						delete(tenants, id)
					}
				}
			}
		}
		if r.IntN(10) == 0 {
			fail := fmt.Sprintf("t%d", r.IntN(30))
			scan.k.failFor, told.k.failFor = fail, fail
		}
		snap := maps.Clone(tenants)
		ch := changedSet(last, snap)
		if last == nil {
			ch = nil
		}
		last = snap
		if r.IntN(6) == 0 && round > 0 { // a snapshot the next pass's latest skips
			pendingChanged = bothChanged(pendingChanged, ch)
			if pendingChanged == nil {
				pendingChanged = ch
			}
			continue
		}
		if pendingChanged != nil {
			ch = bothChanged(pendingChanged, ch)
			pendingChanged = nil
		}
		full := round == 0 || r.IntN(15) == 0
		passes := 1 + r.IntN(2) // the same snapshot again, as after the pacer's wake-up
		for p := 0; p < passes; p++ {
			if p > 0 {
				now = now.Add(time.Duration(r.IntN(400)) * time.Millisecond)
			}
			a := scan.d.Reconcile(ctx, source.Snapshot{Tenants: snap, Control: map[string]source.Entry{}}, full)
			if full && round > 0 && r.IntN(2) == 0 {
				// The told daemon resyncs in slices: the state after
				// the last slice is the full pass's.
				ts := source.Snapshot{Tenants: snap, Control: map[string]source.Entry{}, Changed: ch}
				told.d.startResync(ts)
				for told.d.resyncing() {
					told.d.resync.size = 1 + r.IntN(8)
					told.d.resyncStep(ctx, ts)
				}
				// What slicing changes and a full pass does not have:
				// a tenant whose change a slice applied before its own
				// slice verified it reports that slice's (empty)
				// change count; the DoS layer applies once per slice
				// that changed its input and once at the end; slices
				// pace the changes of tenants outside them. What was
				// applied must be the same; later passes start from
				// the same counts and buckets.
				// And a failing tenant's error may name other
				// overlaps, a slice judging fewer claims at once than
				// the full pass: the states must agree.
				for id, st := range told.d.statuses {
					if ref, ok := scan.d.statuses[id]; ok && (st.State != ref.State || st.AppliedIndex != ref.AppliedIndex) {
						t.Fatalf("round %d: after the resync %s is %s at %d, after the full pass %s at %d", round, id, st.State, st.AppliedIndex, ref.State, ref.AppliedIndex)
					}
				}
				told.d.statuses = maps.Clone(scan.d.statuses)
				told.s.status = maps.Clone(scan.s.status)
				if told.dos.applies < scan.dos.applies {
					t.Fatalf("round %d: DoS layer applied %d times in the slices, %d in the full pass", round, told.dos.applies, scan.dos.applies)
				}
				told.dos.applies, told.d.dos.gen = scan.dos.applies, scan.d.dos.gen
				// Whether a failing tenant failed in the kernel (and is
				// not announced from here) is what its last pass found:
				// a full one re-applies its last good config, a later
				// slice's retry does not. The announcements follow.
				told.d.hostFailed = maps.Clone(scan.d.hostFailed)
				told.d.bgp = scan.d.bgp
				told.d.bgp.inputs = maps.Clone(scan.d.bgp.inputs)
				told.bgp.sets, told.bgp.last = scan.bgp.sets, scan.bgp.last
				compareDaemons(t, round, scan.d, told.d)
				if !reflect.DeepEqual(scan.k.specs, told.k.specs) || !reflect.DeepEqual(scan.dos.tenants, told.dos.tenants) {
					t.Fatalf("round %d: kernel or DoS state differs after the resync", round)
				}
				told.d.pace.tat = maps.Clone(scan.d.pace.tat)
				full = false
				continue
			}
			b := told.d.Reconcile(ctx, source.Snapshot{Tenants: snap, Control: map[string]source.Entry{}, Changed: ch}, full)
			if ra, rb := resultsText(a), resultsText(b); ra != rb {
				t.Fatalf("round %d pass %d (full %v, changed %v): results differ\nscanning: %s\ntold:     %s", round, p, full, ch, ra, rb)
			}
			compareDaemons(t, round, scan.d, told.d)
			if !reflect.DeepEqual(scan.k.specs, told.k.specs) {
				t.Fatalf("round %d: kernel state differs", round)
			}
			if scan.dos.applies != told.dos.applies || !reflect.DeepEqual(scan.dos.tenants, told.dos.tenants) {
				t.Fatalf("round %d: DoS layer applied %d and %d times, last with\n%v\n%v", round, scan.dos.applies, told.dos.applies,
					scan.dos.tenants, told.dos.tenants)
			}
			if scan.bgp.sets != told.bgp.sets || !reflect.DeepEqual(scan.bgp.last, told.bgp.last) {
				for id, in := range scan.d.bgp.inputs {
					if told.d.bgp.inputs[id] != in {
						t.Errorf("input of %s: %q / %q", id, in, told.d.bgp.inputs[id])
					}
				}
				t.Errorf("keys %q / %q, results %s", scan.d.bgp.key, told.d.bgp.key, resultsText(b))
				t.Fatalf("round %d: BGP speaker set %d and %d times, last\n%v\n%v", round, scan.bgp.sets, told.bgp.sets, scan.bgp.last, told.bgp.last)
			}
			for _, st := range []*fakeStore{scan.s, told.s} { // tokens are drawn at random
				if hs, ok := st.status[source.HostStatusName].(source.HostStatus); ok {
					hs.ConfirmToken = ""
					st.status[source.HostStatusName] = hs
				}
			}
			if !reflect.DeepEqual(scan.s.status, told.s.status) {
				for name := range scan.s.status {
					if !reflect.DeepEqual(scan.s.status[name], told.s.status[name]) {
						t.Errorf("%s: %+v\n%+v", name, scan.s.status[name], told.s.status[name])
					}
				}
				t.Fatalf("round %d: written statuses differ", round)
			}
			full = false
		}
	}
}

func resultsText(rs []Result) string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s:%s:%d:%v", r.Tenant, r.State, r.Changes, r.Err))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// compareDaemons checks that two daemons hold the same state, and that
// the told one's kept indexes agree with what they index.
func compareDaemons(t *testing.T, round int, a, b *Daemon) {
	t.Helper()
	if !reflect.DeepEqual(a.statuses, b.statuses) || !reflect.DeepEqual(a.seen, b.seen) || !reflect.DeepEqual(a.failed, b.failed) ||
		!slices.Equal(a.hold.ids, b.hold.ids) || !reflect.DeepEqual(a.applied, b.applied) || !reflect.DeepEqual(a.pace.deferred, b.pace.deferred) {
		for id := range a.statuses {
			if !reflect.DeepEqual(a.statuses[id], b.statuses[id]) {
				t.Errorf("status of %s:\n%+v\n%+v", id, a.statuses[id], b.statuses[id])
			}
		}
		for id := range a.applied {
			if !reflect.DeepEqual(a.applied[id], b.applied[id]) {
				t.Errorf("applied of %s:\n%+v\n%+v", id, a.applied[id], b.applied[id])
			}
		}
		t.Fatalf("round %d: daemon state differs (%d and %d statuses, seen equal %v, failed %v / %v, hold %v / %v, deferred %v / %v)", round,
			len(a.statuses), len(b.statuses), reflect.DeepEqual(a.seen, b.seen), a.failed, b.failed, a.hold.ids, b.hold.ids, a.pace.deferred, b.pace.deferred)
	}
	for _, d := range []*Daemon{a, b} {
		held := map[string]int{}
		for _, st := range d.statuses {
			held[st.State]++
		}
		for state, n := range d.stateCount {
			if n != held[state] {
				t.Fatalf("round %d: %d statuses %q counted, %d there", round, n, state, held[state])
			}
		}
		if !maps.Equal(d.slotTable.Map(), func() map[string]uint16 {
			m := d.slots()
			maps.DeleteFunc(m, func(_ string, s uint16) bool { return s == 0 })
			return m
		}()) {
			t.Fatalf("round %d: slot table %v, slots %v", round, d.slotTable.Map(), d.slots())
		}
		for id, a := range d.applied {
			if !slices.Equal(d.holdings.Of(id), a.prefixes) {
				t.Fatalf("round %d: holdings of %s %v, applied %v", round, id, d.holdings.Of(id), a.prefixes)
			}
		}
		if len(d.holdings.Map()) > len(d.applied) {
			t.Fatalf("round %d: holdings of %d tenants, %d applied", round, len(d.holdings.Map()), len(d.applied))
		}
	}
}
