package source

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// The indexer's watch of tenants/ with many tenants (more than
// ShardTenants): a listing of the whole prefix on every change costs
// Consul the JSON of every tenant's keys (30 MB at 10,000 tenants of 2 KB)
// and the indexer as much to decode. Instead the indexer covers every
// possible tenant ID with sub-prefixes of tenants/ (shards) of at most
// about ShardTenants tenants each, and
//
//   - blocks on a keys-only query of the prefix "tenants" with separator
//     "/": its body is one key, its index the highest ModifyIndex of every
//     key and tombstone under tenants/ (M);
//   - when M moves, reads (consistently, so at a state at or after M) each
//     non-empty shard's keys only, one entry per tenant: a shard whose
//     index did not move had no write and no delete since its listing was
//     read, and the empty shards in read-only transactions of one get-tree
//     each (an empty prefix's index is the whole store's, so only its
//     content tells);
//   - lists with values only the shards that changed.
//
// After such a round every shard's listing the indexer holds reflects
// every write up to M, so M is the journal's through, exactly as the
// whole listing's index was. Keys under tenant IDs that are not valid
// (doc.ValidateTenantID) are in no shard: they are seen at the next full
// listing (a new term, or a restart of the indexer).

// shard is one sub-prefix of tenants/: the IDs starting with id, or with
// exact the one tenant whose ID is id.
type shard struct {
	id      string
	exact   bool
	held    bool     // a listing of it is held (else: list it)
	keys    bool     // the listing held has keys (else: read by transaction)
	idx     uint64   // the index of the listing held, if it has keys
	tenants []string // the tenants of the listing held
}

func (s *shard) prefix(c *Consul) string {
	p := c.key("tenants") + "/" + s.id
	if s.exact {
		p += "/"
	}
	return p
}

// The characters of a tenant ID (doc.ValidateTenantID): the first, and
// the others; at most maxIDLen of them.
const (
	idFirst  = "0123456789abcdefghijklmnopqrstuvwxyz"
	idRest   = idFirst + "-"
	maxIDLen = 31
)

// planShards covers every possible tenant ID with shards of at most size
// of ids (sorted) where the ID space allows: a prefix holding more is
// split into the tenant of that exact ID and one prefix per next
// character. Many shards are empty.
func planShards(ids []string, size int) []*shard {
	var out []*shard
	var split func(s string, ids []string)
	split = func(s string, ids []string) {
		if s != "" && (len(ids) <= size || len(s) >= maxIDLen) {
			out = append(out, &shard{id: s, tenants: ids, held: true, keys: len(ids) > 0})
			return
		}
		chars := idRest
		if s == "" {
			chars = idFirst
		} else {
			var own []string
			if len(ids) > 0 && ids[0] == s {
				own = ids[:1]
				ids = ids[1:]
			}
			out = append(out, &shard{id: s, exact: true, tenants: own, held: true, keys: len(own) > 0})
		}
		for _, ch := range chars {
			p := s + string(ch)
			lo := sort.SearchStrings(ids, p)
			hi := lo
			for hi < len(ids) && strings.HasPrefix(ids[hi], p) {
				hi++
			}
			split(p, ids[lo:hi])
		}
	}
	split("", ids)
	return out
}

// shardedMarks keeps cur (the marks of every tenant) up to date through
// shards; see the comment at the top of this file.
type shardedMarks struct {
	c      *Consul
	size   int // ShardTenants
	shards []*shard
}

// newShardedMarks plans the shards of the tenants of cur, from a listing
// of the whole prefix: each shard's index is the highest of its keys'
// (a shard with a newer tombstone is listed once more at the next round).
func newShardedMarks(c *Consul, cur map[string]mark, size int) *shardedMarks {
	ids := slices.Sorted(maps.Keys(cur))
	s := &shardedMarks{c: c, size: size, shards: planShards(ids, size)}
	for _, sh := range s.shards {
		for _, id := range sh.tenants {
			sh.idx = max(sh.idx, cur[id].Index)
		}
	}
	return s
}

// wait blocks until the highest index under tenants/ moves from idx (0:
// at once) and returns it.
func (s *shardedMarks) wait(ctx context.Context, idx uint64) (uint64, error) {
	c := s.c
	k := c.key("tenants")
	limit := c.blockLimit(idx, c.WaitTime)
	rctx, cancel := bounded(ctx, limit)
	defer cancel()
	sent := time.Now()
	_, meta, err := c.kv.Keys(k, "/", (&api.QueryOptions{WaitIndex: idx, WaitTime: c.WaitTime, Token: c.currentToken()}).WithContext(rctx))
	if err != nil {
		return 0, fmt.Errorf("watch %s/: %w", k, c.watchError(rctx, err, k+"/", limit))
	}
	c.noteAnswered(sent)
	return meta.LastIndex, nil
}

// round brings cur to a state at or after the index the caller waited
// for: it returns the marks of every tenant (a new map; cur is not
// changed). Its reads require a leader
// that knows it leads (RequireConsistent), so that they see every write
// up to that index. A failed round changes nothing: the caller may run it
// again.
func (s *shardedMarks) round(ctx context.Context, cur map[string]mark) (map[string]mark, error) {
	c := s.c
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	qo := func(ctx context.Context) *api.QueryOptions {
		q := c.qo(ctx)
		q.RequireConsistent = true
		return q
	}
	var check, empty, relist []*shard
	for _, sh := range s.shards {
		switch {
		case !sh.held:
			relist = append(relist, sh) // a part of a split shard
		case sh.keys:
			check = append(check, sh)
		default:
			empty = append(empty, sh)
		}
	}
	changed := make([]bool, len(check))
	// The non-empty shards' keys, a few at a time.
	errs := make([]error, len(check))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, sh := range check {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := sh.prefix(c)
			errs[i] = c.call(ctx, "list "+p, func(ctx context.Context) error {
				_, meta, err := c.kv.Keys(p, "/", qo(ctx))
				if err == nil {
					changed[i] = meta.LastIndex != sh.idx
				}
				return err
			})
			if errs[i] != nil {
				cancel() // the round fails: the others need not finish
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	for i, sh := range check {
		if changed[i] {
			relist = append(relist, sh)
		}
	}
	// The empty shards: a get-tree each, TxnOps to a transaction.
	for len(empty) > 0 {
		n := min(len(empty), TxnOps)
		ops := make(api.KVTxnOps, 0, n)
		for _, sh := range empty[:n] {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVGetTree, Key: sh.prefix(c)})
		}
		var results api.KVPairs
		err := c.call(ctx, "read "+c.key("tenants")+"/ ("+fmt.Sprint(n)+" empty shards)", func(ctx context.Context) error {
			ok, resp, _, err := c.kv.Txn(ops, qo(ctx))
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("%s", txnErrors(resp))
			}
			results = resp.Results
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, sh := range empty[:n] {
			p := sh.prefix(c)
			for _, r := range results {
				if strings.HasPrefix(r.Key, p) {
					relist = append(relist, sh)
					break
				}
			}
		}
		empty = empty[n:]
	}
	// The changed shards' values; what they say is kept only once every
	// one is read.
	type listed struct {
		sh    *shard
		pairs api.KVPairs
		idx   uint64
	}
	var got []listed
	for _, sh := range relist {
		pairs, idx, err := c.listWhole(ctx, sh.prefix(c), true)
		if err != nil {
			return nil, err
		}
		got = append(got, listed{sh, pairs, idx})
	}
	next := maps.Clone(cur)
	var grown []*shard
	for _, l := range got {
		sh := l.sh
		for _, id := range sh.tenants {
			delete(next, id)
		}
		marks := c.marksOf(l.pairs)
		maps.Copy(next, marks)
		sh.tenants = slices.Sorted(maps.Keys(marks))
		sh.held, sh.keys, sh.idx = true, len(l.pairs) > 0, l.idx
		if !sh.keys {
			// Empty: read by transaction from now on (an empty
			// prefix's index is the whole store's, not its own).
			sh.idx, sh.tenants = 0, nil
		}
		if !sh.exact && len(sh.id) < maxIDLen && len(sh.tenants) > 2*s.size {
			grown = append(grown, sh)
		}
	}
	// A shard that grew past twice the most is split; its parts are
	// listed at the next round.
	for _, g := range grown {
		i := slices.Index(s.shards, g)
		parts := planShards(g.tenants, s.size)
		var mine []*shard
		for _, p := range parts {
			if strings.HasPrefix(p.id, g.id) {
				p.held, p.keys, p.idx = false, false, 0
				mine = append(mine, p)
			}
		}
		s.shards = slices.Replace(s.shards, i, i+1, mine...)
	}
	return next, nil
}
