package source

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// The index: how a fleet of nsd learns which tenants changed without
// every server reading every tenant on every change (issue 16).
//
// Consul answers a blocking query on a prefix with the whole prefix, so
// with every server watching tenants/ one tenant's edit costs the fleet
// servers × tenants × document size. Instead, one nsd (any: they elect it
// with a Consul lock, index/lock) watches tenants/ and writes:
//
//   - index/journal: the last JournalLen changes, {v, epoch, seq, e:
//     [[tenant, index, keys]]}, where index is the highest ModifyIndex of
//     the tenant's keys and keys their number (0 and 0: gone), and the
//     entries' sequence numbers count back from seq (journal.go);
//   - index/history: the last HistoryLen changes, {epoch, entries}, for
//     servers that fell behind the journal by less than that; rewritten in
//     the journal's transaction only when the journal is about to drop an
//     entry the history does not hold (about once every JournalLen
//     changes), so the two together reach back HistoryLen changes (fewer
//     for a while after a new epoch, or after a term whose stored history
//     did not join the journal);
//   - index/digest/<shard>: the same mark of every tenant, in 256 shards
//     by a hash of the tenant ID, for servers that fell behind further.
//
// Every server (the indexer too) blocks on the journal (a few KB) and, for
// each entry newer than what it applied, reads that one tenant's keys
// (tenants/<id>/). A server whose last sequence number is older than the
// journal's first entry (cut off for a while, or slower than the stream
// of changes) reads the history, or when that does not reach back far
// enough the digest (about 30 bytes per tenant), and then only the
// tenants whose mark differs from its own. A new epoch (the journal was
// lost: new cluster, wiped store) or an index that went backwards makes it
// read everything once.
// Without a journal (no indexer yet, or --indexer=false everywhere) a
// server watches the whole prefix as before and switches when one
// appears.
//
// Any writer may change tenants: the indexer sees every write through its
// watch, whoever made it, so nothing depends on writers cooperating.
const (
	JournalLen   = 64
	HistoryLen   = 1024
	DigestShards = 256
	// legacyWait bounds the blocking queries of a server watching the
	// whole prefix, so that it notices a journal appearing.
	legacyWait = 30 * time.Second
)

type journal struct {
	Epoch string `json:"epoch"`
	Seq   uint64 `json:"seq"`
	// Through is the index of the indexer's listing of tenants/ this
	// journal was computed from: every tenant write up to it is in the
	// entries (or in the digest). Servers acknowledge it (Ack).
	Through uint64 `json:"through,omitempty"`
	// Slots are the marks of the small prefixes every server also needs
	// (control/, dos/, lists/), so that servers block on the journal alone:
	// a blocking query on an empty prefix wakes on every write in the
	// store, and with every host writing its ack that would be every
	// server's three watches woken per host per change. nil: an older
	// indexer; servers watch those prefixes themselves.
	Slots   map[string]mark `json:"slots,omitempty"`
	Entries []journalEntry  `json:"entries"` // oldest first
}

// SlotPause is how long the indexer waits after a wake-up of its watch of
// an empty small prefix that changed nothing, before it blocks again.
// Consul answers a blocking query on a prefix with no keys whenever any
// key in the store is written: with a thousand hosts acknowledging a
// change that is three thousand requests per change without the pause,
// three a second with it.
const SlotPause = time.Second

// anchorRetry is how often the indexer tries again to write the anchor key
// of dos/ (dos/mitigations/, a folder key nsd may write) while the prefix
// is empty: after a failure (a token without the right), or after an
// operator deleted the tree.
const anchorRetry = time.Minute

// slotNames are the prefixes whose marks the journal carries, by slot.
var slotNames = map[int]string{slotControl: "control", slotDoS: "dos", slotLists: "lists"}

type journalEntry struct {
	Seq    uint64 `json:"seq"`
	Tenant string `json:"tenant"`
	mark
}

// mark identifies the state of one tenant's keys: their highest
// ModifyIndex and their number (every write raises the first, every delete
// lowers the second).
type mark struct {
	Index uint64 `json:"i"`
	Keys  int    `json:"k"`
}

type digestShard struct {
	Epoch   string          `json:"epoch"`
	Tenants map[string]mark `json:"tenants"`
}

// history is index/history: the entries of the last HistoryLen changes.
type history struct {
	Epoch   string         `json:"epoch"`
	Entries []journalEntry `json:"entries"` // oldest first
}

// histState is what the indexer knows of the history: the last
// HistoryLen entries it published, and the newest sequence number the
// stored history holds.
type histState struct {
	entries []journalEntry
	stored  uint64
}

func (c *Consul) journalKey() string   { return c.key("index", "journal") }
func (c *Consul) historyKey() string   { return c.key("index", "history") }
func (c *Consul) digestPrefix() string { return c.key("index", "digest") + "/" }
func (c *Consul) indexLockKey() string { return c.key("index", "lock") }

func shardOf(tenant string) string {
	h := fnv.New32a()
	h.Write([]byte(tenant))
	return fmt.Sprintf("%02x", h.Sum32()%DigestShards)
}

// tenantOf returns the tenant a key under tenants/ belongs to ("" for a
// key that is not <tenant>/<...>: it is reported by full reads only).
func (c *Consul) tenantOf(key string) string {
	id, _, ok := strings.Cut(strings.TrimPrefix(key, c.key("tenants")+"/"), "/")
	if !ok {
		return ""
	}
	return id
}

// marksOf computes every tenant's mark from a listing of tenants/.
func (c *Consul) marksOf(pairs api.KVPairs) map[string]mark {
	out := map[string]mark{}
	for _, p := range pairs {
		id := c.tenantOf(p.Key)
		if id == "" {
			continue
		}
		m := out[id]
		m.Index, m.Keys = max(m.Index, p.ModifyIndex), m.Keys+1
		out[id] = m
	}
	return out
}

func markOf(pairs api.KVPairs) mark {
	var m mark
	for _, p := range pairs {
		m.Index, m.Keys = max(m.Index, p.ModifyIndex), m.Keys+1
	}
	return m
}

// getJournal reads the journal, blocking from idx (0: at once), and its
// ModifyIndex. stale lets the agent's server answer from its own copy
// (see follower.follow for how a follower checks what it gets).
func (c *Consul) getJournal(ctx context.Context, idx uint64, wait time.Duration, stale bool) (*journal, uint64, *api.QueryMeta, error) {
	limit := c.blockLimit(idx, wait)
	rctx, cancel := bounded(ctx, limit)
	defer cancel()
	k := c.journalKey()
	sent := time.Now()
	pair, meta, err := c.kv.Get(k, (&api.QueryOptions{WaitIndex: idx, WaitTime: wait, Token: c.currentToken(), AllowStale: stale}).WithContext(rctx))
	if err == nil {
		c.noteAnswered(sent) // authorised when sent, not when it returned
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("watch %s: %w", k, c.watchError(rctx, err, k, limit))
	}
	if pair == nil {
		return nil, 0, meta, nil
	}
	var j journal
	if err := json.Unmarshal(pair.Value, &j); err != nil || j.Epoch == "" {
		return nil, 0, meta, fmt.Errorf("read %s: not an nfhost journal: %v", k, err)
	}
	return &j, pair.ModifyIndex, meta, nil
}

// getHistory reads the history (nil: none). stale lets the agent's server
// answer from its own copy.
func (c *Consul) getHistory(ctx context.Context, stale bool) (*history, error) {
	k := c.historyKey()
	var pair *api.KVPair
	err := c.call(ctx, "read "+k, func(ctx context.Context) error {
		qo := c.qo(ctx)
		qo.AllowStale = stale
		var err error
		pair, _, err = c.kv.Get(k, qo)
		return err
	})
	if err != nil || pair == nil {
		return nil, err
	}
	var h history
	if err := json.Unmarshal(pair.Value, &h); err != nil || h.Epoch == "" {
		// Not one (written by hand, or by something else): as if
		// absent. Followers read the digest; the indexer writes a
		// history again when its journal next drops an entry.
		return nil, nil
	}
	return &h, nil
}

// readDigest reads every digest shard of epoch; ok is false if a shard of
// another epoch is there (a digest half rewritten by a new indexer).
func (c *Consul) readDigest(ctx context.Context, epoch string) (map[string]mark, bool, error) {
	pairs, err := c.list(ctx, c.digestPrefix())
	if err != nil {
		return nil, false, err
	}
	out := map[string]mark{}
	for _, p := range pairs {
		var s digestShard
		if err := json.Unmarshal(p.Value, &s); err != nil {
			return nil, false, fmt.Errorf("read %s: %w", p.Key, err)
		}
		if s.Epoch != epoch {
			return out, false, nil
		}
		maps.Copy(out, s.Tenants)
	}
	return out, true, nil
}

// IndexerState is reported by RunIndexer: whether this nsd is the indexer,
// and the last error of its work.
type IndexerState struct {
	Leading bool
	Err     error
}

// RunIndexer takes part in the election of the fleet's indexer (a Consul
// lock with a session of lockTTL named after host) and, while elected,
// keeps the journal and digest (see the comment on JournalLen) until ctx
// ends; it releases the lock before it returns. A session of host's that
// holds the lock at start is a previous nsd's on this host, dead since
// (killed, crashed): it is destroyed at once instead of waiting for its
// TTL, so that a restart on the indexer's host does not leave the fleet
// without an indexer. onState (nil: none) hears every change of
// leadership and every failure.
func (c *Consul) RunIndexer(ctx context.Context, host string, log *slog.Logger, onState func(IndexerState)) {
	if onState == nil {
		onState = func(IndexerState) {}
	}
	name := "nfhost indexer " + host
	// reclaim: a session of this host's may hold the lock (a previous
	// process, or this one's when it lost its agent while leading: its
	// session outlives it until twice its TTL), so it is destroyed
	// before campaigning, once the agent answers.
	reclaim := true
	var bo backoff
	for ctx.Err() == nil {
		if reclaim && !c.reclaimLock(ctx, name, log) {
			sleepCtx(ctx, bo.next())
			continue
		}
		reclaim = false
		lock, err := c.client.LockOpts(&api.LockOptions{Key: c.indexLockKey(), SessionName: name,
			SessionOpts:  &api.SessionEntry{Name: name, TTL: lockTTL, LockDelay: lockDelay, Behavior: api.SessionBehaviorRelease},
			LockWaitTime: 15 * time.Second, MonitorRetries: 3, MonitorRetryTime: time.Second})
		var lost <-chan struct{}
		if err == nil {
			lost, err = lock.Lock(ctx.Done())
		}
		if err != nil || lost == nil {
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				reclaim = true // an acquire the agent applied but did not answer holds the lock
				onState(IndexerState{Err: fmt.Errorf("take the indexer lock %s: %w", c.indexLockKey(), err)})
				log.Warn("indexer election", "err", err)
			}
			sleepCtx(ctx, bo.next())
			continue
		}
		bo.reset()
		log.Info("elected the fleet's indexer", "lock", c.indexLockKey())
		onState(IndexerState{Leading: true})
		err = c.lead(ctx, lost, onState)
		lock.Unlock()
		reclaim = true // the release fails without an agent: the session may still hold the lock
		onState(IndexerState{Err: err})
		if ctx.Err() != nil {
			return
		}
		log.Warn("no longer the fleet's indexer", "err", err)
		sleepCtx(ctx, bo.next())
	}
}

// The indexer's session: Consul's shortest TTL (a session is invalidated
// after twice its TTL without renewal: an indexer whose host dies is
// replaced within about 20 s, and changes wait that long, none lost; one
// that lost its agent destroys its session once the agent answers), and
// a lock delay of a second instead of Consul's 15.
const (
	lockTTL   = "10s"
	lockDelay = time.Second
)

// reclaimLock destroys the session that holds the indexer lock if it is
// named name: this host's (a previous process, or this one's from before
// it lost its agent). It reports whether the lock is free of such a
// session (false: a request failed).
func (c *Consul) reclaimLock(ctx context.Context, name string, log *slog.Logger) bool {
	var pair *api.KVPair
	if err := c.call(ctx, "read "+c.indexLockKey(), func(ctx context.Context) error {
		var err error
		pair, _, err = c.kv.Get(c.indexLockKey(), c.qo(ctx))
		return err
	}); err != nil {
		return false
	}
	if pair == nil || pair.Session == "" {
		return true
	}
	var info *api.SessionEntry
	if err := c.call(ctx, "read session "+pair.Session, func(ctx context.Context) error {
		var err error
		info, _, err = c.client.Session().Info(pair.Session, c.qo(ctx))
		return err
	}); err != nil {
		return false
	}
	if info == nil || info.Name != name {
		return true
	}
	if err := c.call(ctx, "destroy session "+pair.Session, func(ctx context.Context) error {
		_, err := c.client.Session().Destroy(pair.Session, c.wo(ctx))
		return err
	}); err != nil {
		return false
	}
	log.Info("released the indexer lock a session of this host's held", "session", pair.Session)
	return true
}

// lead keeps the journal and digest while the lock is held.
func (c *Consul) lead(ctx context.Context, lost <-chan struct{}, onState func(IndexerState)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-lost:
			cancel()
		case <-ctx.Done():
		}
	}()
	j, jIdx, _, err := c.getJournal(ctx, 0, 0, false)
	if err != nil {
		return err
	}
	if j == nil {
		j = &journal{Epoch: newEpoch()}
	}
	digest, ok, err := c.readDigest(ctx, j.Epoch)
	if err != nil {
		return err
	}
	if !ok {
		digest = map[string]mark{} // every tenant is published again
	}
	// The history goes on from the stored one if it is of this epoch and
	// joins the journal; else it starts again from the journal's entries.
	hist := &histState{entries: slices.Clone(j.Entries)}
	if h, err := c.getHistory(ctx, false); err != nil {
		return err
	} else if h != nil && h.Epoch == j.Epoch && len(h.Entries) > 0 && (len(j.Entries) == 0 || h.Entries[len(h.Entries)-1].Seq+1 >= j.Entries[0].Seq) {
		hist.stored = h.Entries[len(h.Entries)-1].Seq
		hist.entries = h.Entries
		for _, e := range j.Entries {
			if e.Seq > hist.stored {
				hist.entries = append(hist.entries, e)
			}
		}
		hist.entries = lastEntries(hist.entries, HistoryLen)
	}
	// newHistory starts a new epoch, for a store that went back (a new
	// cluster, a restore from an older snapshot); under mu.
	newHistory := func() {
		j, jIdx, digest, hist = &journal{Epoch: newEpoch()}, 0, map[string]mark{}, &histState{}
	}
	var idx uint64
	var bo backoff
	prefix := c.key("tenants") + "/"
	// The small prefixes are watched beside the tenants; a change of one
	// rewrites the journal with its new mark. mu serialises the writers of
	// the journal (j, jIdx, digest, slots).
	var mu sync.Mutex
	slots := map[string]mark{}
	var cur map[string]mark
	errs := make(chan error, len(slotNames))
	for _, name := range slotNames {
		go func() {
			var sIdx uint64
			var anchored time.Time // the last try to anchor dos/
			for ctx.Err() == nil {
				pairs, meta, err := c.watchList(ctx, c.key(name)+"/", sIdx, c.WaitTime)
				if err != nil {
					if ctx.Err() == nil {
						onState(IndexerState{Leading: true, Err: err})
						sIdx = 0
						sleepCtx(ctx, time.Second)
					}
					continue
				}
				sIdx = meta.LastIndex
				m := markOf(pairs)
				mu.Lock()
				var err2 error
				old, ok := slots[name]
				changed := !ok || old != m
				if changed {
					slots[name] = m
					if cur != nil { // after the first tenants listing
						err2 = c.publish(ctx, j, &jIdx, hist, digest, cur, j.Through, slots)
					}
				}
				mu.Unlock()
				if err2 != nil {
					errs <- err2
					return
				}
				if len(pairs) == 0 && name == "dos" && time.Since(anchored) > anchorRetry {
					// An anchor key keeps dos/ from being empty: its
					// watch then wakes only on writes under it, and a
					// fleet mitigation an edge publishes reaches the
					// journal at once instead of up to SlotPause late.
					anchored = time.Now()
					if err := c.cas(ctx, c.key("dos", "mitigations")+"/", nil, 0); err == nil || errors.Is(err, ErrConflict) {
						continue // the next query reads it
					}
				}
				if !changed && len(pairs) == 0 {
					// An empty prefix wakes on every write in the store
					// (every host's ack): pause before blocking again. A
					// write under it meanwhile is read at the next query,
					// at most SlotPause late.
					sleepCtx(ctx, SlotPause)
				}
			}
		}()
	}
	// With more than ShardTenants tenants the prefix is followed through
	// shards (shards.go) instead of listed whole on every change.
	var sharded *shardedMarks
	for ctx.Err() == nil {
		select {
		case err := <-errs:
			return err
		default:
		}
		var next map[string]mark
		var through uint64
		if sharded == nil {
			pairs, meta, err := c.watchList(ctx, prefix, idx, c.WaitTime)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				onState(IndexerState{Leading: true, Err: err})
				idx = 0
				sleepCtx(ctx, bo.next())
				continue
			}
			next, through = c.marksOf(pairs), meta.LastIndex
		} else {
			m, err := sharded.wait(ctx, idx)
			if err == nil && m == idx {
				continue // the wait ended with nothing new
			}
			back := false
			if err == nil && m < idx {
				mu.Lock()
				back, err = c.wentBack(ctx, j, jIdx)
				mu.Unlock()
			}
			if err == nil && !back {
				next, err = sharded.round(ctx, cur)
			}
			if err != nil {
				// A failed round changed nothing: the next wait
				// returns at once (the index moved) and runs it again.
				if ctx.Err() != nil {
					return ctx.Err()
				}
				onState(IndexerState{Leading: true, Err: err})
				sleepCtx(ctx, bo.next())
				continue
			}
			if back {
				// The store went back: a new history from a whole
				// listing. (Its journal is still there when it went
				// back to another epoch or index: the check-and-set of
				// the first write fails and ends the term, and the
				// next term starts from what it finds.)
				mu.Lock()
				newHistory()
				mu.Unlock()
				sharded, idx = nil, 0
				continue
			}
			through = m
		}
		bo.reset()
		mu.Lock()
		if through < idx {
			if back, err := c.wentBack(ctx, j, jIdx); err != nil {
				mu.Unlock()
				onState(IndexerState{Leading: true, Err: err})
				idx = 0
				sleepCtx(ctx, bo.next())
				continue
			} else if back {
				newHistory()
			}
		}
		idx = through
		cur = next
		err = c.publish(ctx, j, &jIdx, hist, digest, cur, through, slots)
		if err == nil {
			digest = cur
		}
		mu.Unlock()
		if err != nil {
			return err
		}
		if sharded == nil && c.ShardTenants > 0 && len(cur) > c.ShardTenants {
			sharded = newShardedMarks(c, cur, c.ShardTenants)
		}
	}
	return ctx.Err()
}

// wentBack reports whether the store went back (a new cluster, a restore
// from an older snapshot) when the index of tenants/ went down. Consul
// also lowers a prefix's index when it reaps the tombstone that held its
// highest index, which is no reason for a new history (every server would
// read everything). The journal this indexer last wrote (j at jIdx) tells
// them apart: after a store went back it is gone, of another epoch, or at
// another index. Before this term's first write nothing tells: a new
// history, to be safe.
func (c *Consul) wentBack(ctx context.Context, j *journal, jIdx uint64) (bool, error) {
	if jIdx == 0 {
		return true, nil
	}
	now, idx, _, err := c.getJournal(ctx, 0, 0, false)
	if err != nil {
		return false, err
	}
	return now == nil || now.Epoch != j.Epoch || idx != jIdx, nil
}

// publish writes the shards whose tenants changed from old to cur, then
// the journal with one entry per changed tenant and through (the index of
// the listing cur comes from), with check-and-set on the journal: a second
// writer ends this indexer's term. The history is rewritten in the
// journal's transaction when the journal drops an entry it does not hold.
func (c *Consul) publish(ctx context.Context, j *journal, jIdx *uint64, hist *histState, old, cur map[string]mark, through uint64, slots map[string]mark) error {
	var changed []string
	for id, m := range cur {
		if old[id] != m {
			changed = append(changed, id)
		}
	}
	for id := range old {
		if _, ok := cur[id]; !ok {
			changed = append(changed, id)
		}
	}
	if len(changed) == 0 && *jIdx != 0 && maps.Equal(slots, j.Slots) {
		return nil
	}
	slices.Sort(changed)
	shards := map[string]map[string]mark{}
	for _, id := range changed {
		shards[shardOf(id)] = map[string]mark{}
	}
	for id, m := range cur {
		if s, ok := shards[shardOf(id)]; ok {
			s[id] = m
		}
	}
	var ops api.KVTxnOps
	for _, name := range slices.Sorted(maps.Keys(shards)) {
		v, _ := json.Marshal(digestShard{Epoch: j.Epoch, Tenants: shards[name]})
		ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: c.digestPrefix() + name, Value: v})
	}
	next := *j
	next.Through = through
	next.Slots = maps.Clone(slots)
	histEntries := slices.Clip(hist.entries)
	for _, id := range changed {
		next.Seq++
		e := journalEntry{Seq: next.Seq, Tenant: id, mark: cur[id]}
		next.Entries = append(next.Entries, e)
		histEntries = append(histEntries, e)
	}
	next.Entries = lastEntries(next.Entries, JournalLen)
	histEntries = lastEntries(histEntries, HistoryLen)
	v, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("encode %s: %w", c.journalKey(), err)
	}
	var histOp *api.KVTxnOp
	if len(next.Entries) > 0 && next.Entries[0].Seq > hist.stored+1 {
		hv, err := json.Marshal(history{Epoch: next.Epoch, Entries: histEntries})
		if err != nil {
			return fmt.Errorf("encode %s: %w", c.historyKey(), err)
		}
		histOp = &api.KVTxnOp{Verb: api.KVSet, Key: c.historyKey(), Value: hv}
	}
	// Shards first (a transaction holds at most 64 operations), the
	// journal last: a server that sees an entry finds the digest updated.
	for len(ops) > 63 {
		if err := c.txn(ctx, ops[:63]); err != nil {
			return err
		}
		ops = ops[63:]
	}
	if histOp != nil {
		if len(ops) == 63 { // room for the history and the journal
			if err := c.txn(ctx, ops); err != nil {
				return err
			}
			ops = nil
		}
		ops = append(ops, histOp)
	}
	ops = append(ops, &api.KVTxnOp{Verb: api.KVCAS, Key: c.journalKey(), Value: v, Index: *jIdx})
	resp, err := c.txnResp(ctx, ops)
	if err != nil {
		return err
	}
	hist.entries = histEntries
	if histOp != nil {
		hist.stored = next.Seq
	}
	for _, r := range resp.Results {
		if r.Key == c.journalKey() {
			*jIdx = r.ModifyIndex
		}
	}
	*j = next
	return nil
}

// lastEntries is the last n of es, in an array of its own when cut.
func lastEntries(es []journalEntry, n int) []journalEntry {
	if len(es) <= n {
		return es
	}
	return slices.Clone(es[len(es)-n:])
}

func (c *Consul) txn(ctx context.Context, ops api.KVTxnOps) error {
	_, err := c.txnResp(ctx, ops)
	return err
}

func (c *Consul) txnResp(ctx context.Context, ops api.KVTxnOps) (*api.KVTxnResponse, error) {
	var resp *api.KVTxnResponse
	err := c.call(ctx, "write "+c.key("index")+"/", func(ctx context.Context) error {
		ok, r, _, err := c.kv.Txn(ops, c.qo(ctx))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", errJournalMoved, txnErrors(r))
		}
		resp = r
		return nil
	})
	return resp, err
}

// txnErrors joins what Consul says of a transaction it rolled back.
func txnErrors(r *api.KVTxnResponse) string {
	var why []string
	for _, e := range r.Errors {
		why = append(why, e.What)
	}
	return strings.Join(why, "; ")
}

var errJournalMoved = errors.New("the journal changed under the indexer (another indexer?)")

func newEpoch() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
