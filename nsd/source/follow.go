package source

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// followTenants keeps the tenants slot of Watch through the index (see
// JournalLen): it blocks on the journal and reads only the tenants it
// names, the digest when it fell behind, everything when the history is
// new. Without a journal it watches the whole prefix (watchAll) and checks
// for one after every wake-up.
func (w *watcher) followTenants(ctx context.Context) {
	c := w.c
	f := &follower{w: w, state: map[string]api.KVPairs{}, dirty: map[string]bool{}, dirtyAll: true, ahead: map[string]bool{}, ctx: ctx}
	defer f.direct(false)
	var bo backoff
	for ctx.Err() == nil {
		// The small prefixes: watched directly unless the journal
		// carries their marks (see journal.Slots).
		f.direct(!f.slotsFollowed)
		var err error
		if f.epoch == "" {
			err = f.watchAll(ctx)
		} else {
			err = f.follow(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.report(slotTenants, err)
			f.jIdx, f.allIdx = 0, 0
			c.reloadToken()
			sleepCtx(ctx, bo.next())
			continue
		}
		bo.reset()
		w.report(slotTenants, nil)
	}
}

type follower struct {
	w     *watcher
	epoch string // "" until a journal is followed
	seq   uint64 // the journal's sequence number the state reflects
	jIdx  uint64 // blocking index of the journal
	// allIdx is the blocking index of the whole-prefix watch; allSeen and
	// jSeen the highest index read from it and from the journal, kept
	// across errors to tell a store that went back. (A listing's index and
	// a key's are not comparable: a listing's may be the table's.)
	allIdx, allSeen, jSeen uint64
	state                  map[string]api.KVPairs // the keys of each tenant
	// dirty: the tenants read since the last publish (dirtyAll: the
	// state was replaced), which are all that publish compares.
	dirty    map[string]bool
	dirtyAll bool
	// ahead: tenants whose keys a consistent re-read found newer than
	// the mark the journal named. Their next read is consistent too: a
	// stale answer equal to an older mark a later entry names would take
	// the tenant back. A read that finds the mark the journal names
	// clears it.
	ahead map[string]bool
	// fullAt is the index of the last full read, and through the
	// journal's of this round: until the journal's through reaches the
	// full read's index, every read is consistent (what the full read
	// holds may be newer than an entry from an older listing, a deleted
	// tenant included, and a stale answer from a server behind would
	// take it back). Once the journal's through is past it, the newest
	// entry of every tenant comes from a listing no older than the full
	// read: a tenant that changed between its older entry and the full
	// read has a newer entry.
	fullAt, through uint64
	extra           api.KVPairs // keys under tenants/ of no tenant, from the last full read
	lastFull        time.Time   // when the last full read was (jittered)
	Reads           int         // requests made (tests)

	ctx context.Context // Watch's
	// slotsFollowed: the journal carries the small prefixes' marks and
	// the follower reads them when they move (slotMarks: of what it
	// holds); else they are watched directly (stopDirect ends that).
	slotsFollowed bool
	slotMarks     map[string]mark
	stopDirect    context.CancelFunc
}

// direct starts (on) or stops the direct watches of control/, dos/ and
// lists/.
func (f *follower) direct(on bool) {
	switch {
	case on && f.stopDirect == nil:
		ctx, cancel := context.WithCancel(f.ctx)
		var wg sync.WaitGroup
		f.stopDirect = func() { cancel(); wg.Wait() } // none updates its slot after
		for slot, name := range slotNames {
			wg.Add(1)
			go func() { defer wg.Done(); f.w.watchPrefix(ctx, slot, f.w.c.key(name)+"/") }()
		}
	case !on && f.stopDirect != nil:
		f.stopDirect()
		f.stopDirect = nil
		f.slotMarks = nil // read them all at the next journal round
	}
}

// syncSlots reads the small prefixes whose marks in the journal differ
// from what the follower holds; a journal without marks (an older
// indexer) hands them back to direct watches.
func (f *follower) syncSlots(ctx context.Context, j *journal) error {
	if j.Slots == nil {
		f.slotsFollowed = false
		return nil
	}
	if !f.slotsFollowed {
		f.direct(false)
		f.slotsFollowed = true
	}
	if f.slotMarks == nil {
		f.slotMarks = map[string]mark{}
	}
	for slot, name := range slotNames {
		m, ok := j.Slots[name]
		if have, read := f.slotMarks[name]; read && ok && have == m {
			continue
		}
		pairs, _, err := f.list(ctx, f.w.c.key(name)+"/")
		if err != nil {
			return err
		}
		f.w.report(slot, nil) // the slot is kept here now
		f.w.update(slot, pairs, false)
		f.slotMarks[name] = markOf(pairs)
		if !ok {
			delete(f.slotMarks, name) // unknown to the indexer yet: read again next round
		}
	}
	return nil
}

// watchAll is one round of the whole-prefix watch, then a check for a
// journal: if there is one, the follower switches (its next round reads
// everything once, then follows).
func (f *follower) watchAll(ctx context.Context) error {
	c := f.w.c
	prefix := c.key("tenants") + "/"
	pairs, meta, err := c.watchList(ctx, prefix, f.allIdx, min(c.WaitTime, legacyWait))
	if err != nil {
		return err
	}
	backwards := meta.LastIndex < f.allSeen
	f.allSeen = meta.LastIndex
	if meta.LastIndex < f.allIdx {
		f.allIdx = 0
	} else {
		f.allIdx = meta.LastIndex
	}
	f.w.updateTenants(pairs, backwards, meta.LastIndex)
	j, _, _, err := c.getJournal(ctx, 0, 0, false)
	if err != nil {
		return err
	}
	if j != nil && c.indexerElected(ctx) {
		f.epoch, f.seq, f.jIdx = "-", 0, 0 // a history to start: read everything
		f.w.c.following.Store(true)
	}
	return nil
}

// follow is one round of the journal watch.
//
// The watch and the tenant reads it leads to are stale reads: the server
// the agent talks to answers from its own copy, so that a fleet's reads
// spread over the Consul servers instead of all going to the leader (a
// consistent read on a follower is forwarded to it). A stale answer is
// checked before it counts: a journal that looks older than one already
// seen (its index or sequence number back, or gone) is read again
// consistently before the follower concludes that the store went back;
// a tenant read whose mark is not the one the journal names is read again
// consistently (fetch). The digest and full reads stay consistent.
func (f *follower) follow(ctx context.Context) error {
	c := f.w.c
	j, _, meta, err := c.getJournal(ctx, f.jIdx, min(c.WaitTime, followWait), true)
	if err == nil && (meta.LastIndex < f.jSeen || meta.LastIndex < f.jIdx || j == nil || j.Epoch != f.epoch || j.Seq < f.seq) {
		// A server behind the one that answered before (the agent
		// moved to another), or a real change of history: ask the leader.
		j, _, meta, err = c.getJournal(ctx, 0, 0, false)
	}
	if err != nil {
		return err
	}
	backwards := meta.LastIndex < f.jSeen || meta.LastIndex < f.jIdx
	f.jSeen = meta.LastIndex
	f.jIdx = meta.LastIndex
	if backwards {
		f.jIdx = 0
	}
	if j == nil {
		// The journal is gone (a wiped store, or the fleet went back to
		// whole-prefix watches): watch the prefix again.
		f.epoch, f.allIdx, f.slotsFollowed = "", 0, false
		f.w.c.following.Store(false)
		return nil
	}
	if err := f.syncSlots(ctx, j); err != nil {
		return err
	}
	f.through = j.Through
	switch {
	case backwards || j.Epoch != f.epoch || j.Seq < f.seq || time.Since(f.lastFull) > c.FullReadInterval:
		if err := f.readAll(ctx); err != nil {
			return err
		}
	case j.Seq == f.seq:
		// A wake-up that changed nothing here. A journal nobody keeps
		// (no nsd stands as indexer any more) would hide every change:
		// without an indexer, watch the prefix again.
		if !c.indexerElected(ctx) {
			f.epoch, f.allIdx, f.slotsFollowed = "", 0, false
			c.following.Store(false)
		}
		return nil
	case len(j.Entries) == 0 || j.Entries[0].Seq > f.seq+1:
		if err := f.catchUp(ctx, j); err != nil {
			return err
		}
	default:
		if err := f.fetchEntries(ctx, j, j.Entries); err != nil {
			return err
		}
	}
	f.epoch, f.seq = j.Epoch, j.Seq
	f.publish(backwards, j.Through)
	return nil
}

// readAll replaces the state with a full listing. The journal was read
// before it, so the listing reflects at least the journal's sequence.
func (f *follower) readAll(ctx context.Context) error {
	c := f.w.c
	pairs, at, err := f.list(ctx, c.key("tenants")+"/")
	if err != nil {
		return err
	}
	f.fullAt = at
	f.state, f.dirtyAll = map[string]api.KVPairs{}, true
	f.ahead = map[string]bool{}
	f.extra = nil
	// The next full read comes after FullReadInterval, give or take a
	// tenth, so that a fleet does not read everything at once.
	f.lastFull = time.Now().Add(time.Duration(rand.Int64N(int64(c.FullReadInterval/5)+1)) - c.FullReadInterval/10)
	for _, p := range pairs {
		if id := c.tenantOf(p.Key); id != "" {
			f.state[id] = append(f.state[id], p)
		} else {
			f.extra = append(f.extra, p) // stray keys: reported by the snapshot
		}
	}
	return nil
}

// catchUp brings the state to journal j from further back than j's
// entries: through the history when it reaches back to the state's
// sequence number and joins j (read stale, then consistently if it does
// not), reading the tenants it names whose mark differs; else it compares
// the digest with the state and reads the tenants that differ. A digest
// of another epoch means a new history: read everything.
func (f *follower) catchUp(ctx context.Context, j *journal) error {
	if len(j.Entries) > 0 {
		for _, stale := range []bool{true, false} {
			h, err := f.w.c.getHistory(ctx, stale)
			f.Reads++
			if err != nil {
				return err
			}
			if h == nil || h.Epoch != j.Epoch || len(h.Entries) == 0 || h.Entries[0].Seq > f.seq+1 ||
				h.Entries[len(h.Entries)-1].Seq+1 < j.Entries[0].Seq {
				continue
			}
			return f.fetchEntries(ctx, j, h.Entries, j.Entries)
		}
	}
	epoch := j.Epoch
	digest, ok, err := f.w.c.readDigest(ctx, epoch)
	f.Reads++
	if err != nil {
		return err
	}
	if !ok {
		return f.readAll(ctx)
	}
	ids := slices.Collect(maps.Keys(digest))
	for id := range f.state {
		if _, ok := digest[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return f.fetch(ctx, f.differing(ids, digest), digest)
}

// fetchEntries reads the tenants that the entries (in order: a later one
// wins) newer than the follower's sequence number and up to journal j's
// name at a mark other than the one the follower holds.
func (f *follower) fetchEntries(ctx context.Context, j *journal, entries ...[]journalEntry) error {
	want := map[string]mark{}
	for _, es := range entries {
		for _, e := range es {
			if e.Seq > f.seq && e.Seq <= j.Seq {
				want[e.Tenant] = e.mark
			}
		}
	}
	return f.fetch(ctx, f.differing(slices.Sorted(maps.Keys(want)), want), want)
}

// differing returns those of ids whose keys the follower holds are not at
// the mark want names; a tenant that is at it is no longer ahead.
func (f *follower) differing(ids []string, want map[string]mark) []string {
	var out []string
	for _, id := range ids {
		if markOf(f.state[id]) != want[id] {
			out = append(out, id)
		} else {
			delete(f.ahead, id)
		}
	}
	return out
}

// fetch reads the keys of the tenants ids (sorted), which want says are
// at a given mark: one read-only transaction of a get-tree per tenant for
// up to TxnOps tenants, so that a journal round that names ten tenants
// costs one request, not ten. The read is stale (answered by the agent's
// server from its copy), except for tenants ahead of the journal (see
// follower.ahead); a tenant whose keys do not have the mark want names (a
// server behind the indexer, or the tenant changed again since) is read
// again consistently, and that read is taken as it is. A consistent read
// never goes back; a stale one is taken only when it has the mark of the
// journal's newest entry for the tenant, which is not older than what the
// follower holds (not ahead: at an earlier entry's mark).
func (f *follower) fetch(ctx context.Context, ids []string, want map[string]mark) error {
	var stale, fresh []string
	for _, id := range ids {
		if f.ahead[id] || f.through < f.fullAt {
			fresh = append(fresh, id)
		} else {
			stale = append(stale, id)
		}
	}
	got := map[string]api.KVPairs{}
	err := f.readBatches(ctx, stale, true, func(id string, ps api.KVPairs) {
		if markOf(ps) == want[id] {
			got[id] = ps
		} else {
			fresh = append(fresh, id)
		}
	})
	if err == nil {
		err = f.readBatches(ctx, fresh, false, func(id string, ps api.KVPairs) {
			got[id] = ps
			if markOf(ps) != want[id] {
				f.ahead[id] = true
			}
		})
	}
	if err != nil {
		return err
	}
	for _, id := range ids {
		if markOf(got[id]) == want[id] {
			delete(f.ahead, id)
		}
		if ps := got[id]; len(ps) > 0 {
			f.state[id] = ps
		} else {
			delete(f.state, id)
		}
		f.dirty[id] = true
	}
	return nil
}

// readBatches reads the keys of tenants ids, TxnOps to a request (stale:
// from the agent's server's copy), and hands each tenant's to got.
func (f *follower) readBatches(ctx context.Context, ids []string, stale bool, got func(id string, ps api.KVPairs)) error {
	for len(ids) > 0 {
		n := min(len(ids), TxnOps)
		r, err := f.w.c.readTenants(ctx, ids[:n], stale)
		f.Reads++
		if err != nil {
			return err
		}
		for _, id := range ids[:n] {
			got(id, r[id])
		}
		ids = ids[n:]
	}
	return nil
}

// TxnOps is the most operations Consul takes in one transaction.
const TxnOps = 64

// readTenants reads the keys of tenants ids (at most TxnOps) in one
// read-only transaction, by tenant; a tenant with no keys is absent.
// stale lets the agent's server answer from its own copy.
func (c *Consul) readTenants(ctx context.Context, ids []string, stale bool) (map[string]api.KVPairs, error) {
	ops := make(api.KVTxnOps, 0, len(ids))
	for _, id := range ids {
		ops = append(ops, &api.KVTxnOp{Verb: api.KVGetTree, Key: c.key("tenants", id) + "/"})
	}
	out := make(map[string]api.KVPairs, len(ids))
	err := c.call(ctx, "read "+c.key("tenants")+"/ ("+strconv.Itoa(len(ids))+" tenants)", func(ctx context.Context) error {
		qo := c.qo(ctx)
		qo.AllowStale = stale
		ok, resp, _, err := c.kv.Txn(ops, qo)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New(txnErrors(resp))
		}
		clear(out)
		for _, p := range resp.Results {
			if id := c.tenantOf(p.Key); id != "" {
				out[id] = append(out[id], p)
			}
		}
		return nil
	})
	return out, err
}

// list reads prefix whole (listWhole), and the listing's index.
func (f *follower) list(ctx context.Context, prefix string) (api.KVPairs, uint64, error) {
	f.Reads++
	return f.w.c.listWhole(ctx, prefix, false)
}

// publish hands the state to Watch as the tenants slot's listing, which
// reflects every tenant write up to through.
func (f *follower) publish(backwards bool, through uint64) {
	dirty := f.dirty
	if f.dirtyAll {
		dirty = nil
	}
	f.w.setTenants(f.state, f.extra, dirty, backwards, through)
	f.dirty, f.dirtyAll = map[string]bool{}, false
}

// followWait bounds a follower's blocking wait on the journal, so that it
// notices within a minute that no indexer keeps it.
const followWait = time.Minute

// indexerElected reports whether some nsd holds the indexer lock (a
// failed read counts as held: the next round asks again).
func (c *Consul) indexerElected(ctx context.Context) bool {
	var pair *api.KVPair
	err := c.call(ctx, "read "+c.indexLockKey(), func(ctx context.Context) error {
		var err error
		pair, _, err = c.kv.Get(c.indexLockKey(), c.qo(ctx))
		return err
	})
	return err != nil || pair != nil && pair.Session != ""
}
