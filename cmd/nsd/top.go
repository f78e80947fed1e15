package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/nsd/source"
)

// topPublisher answers nsctl dos top --via-store: for every unexpired
// watch request in control/top/ that names this host (or none), it
// publishes a frame to top/<watch>/<host> every second, and deletes it
// when the request expires or goes. Nothing runs while there is no
// request beyond the daemon's watch of control/, which it keeps anyway.
type topPublisher struct {
	srv   *top.Server
	store source.TopStore
	host  string
	log   *slog.Logger

	mu        sync.Mutex
	reqs      map[string]top.WatchRequest // by watch ID
	published map[string]bool
	bad       map[string]string // watch → its last refused request, logged once
	kick      chan struct{}
}

func newTopPublisher(srv *top.Server, store source.TopStore, host string, log *slog.Logger) *topPublisher {
	return &topPublisher{srv: srv, store: store, host: host, log: log, reqs: map[string]top.WatchRequest{},
		published: map[string]bool{}, bad: map[string]string{}, kick: make(chan struct{}, 1)}
}

// Control takes the control keys of a snapshot (nsd.Options.OnControl).
func (p *topPublisher) Control(control map[string]source.Entry) {
	reqs := map[string]top.WatchRequest{}
	for name, e := range control {
		id, ok := strings.CutPrefix(name, source.TopWatchPrefix)
		if !ok || source.ValidWatchID(id) != nil {
			continue
		}
		var r top.WatchRequest
		if err := json.Unmarshal(e.Value, &r); err != nil {
			p.refuse(id, string(e.Value), "not a watch request: "+err.Error())
			continue
		}
		reqs[id] = r
	}
	p.mu.Lock()
	p.reqs = reqs
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *topPublisher) refuse(id, v, why string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bad[id] != v {
		p.bad[id] = v
		p.log.Warn("ignored nsctl dos top watch request", "key", "control/"+source.TopWatchKey(id), "err", why)
	}
}

// run publishes until ctx ends.
func (p *topPublisher) run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.kick:
		}
		p.publish(ctx)
	}
}

func (p *topPublisher) publish(ctx context.Context) {
	now := time.Now()
	p.mu.Lock()
	reqs := make(map[string]top.WatchRequest, len(p.reqs))
	for id, r := range p.reqs {
		reqs[id] = r
	}
	p.mu.Unlock()
	for id, r := range reqs {
		if now.After(r.Until) || !r.For(p.host) {
			continue
		}
		v, err := url.ParseQuery(r.Query)
		var q top.Query
		if err == nil {
			q, err = top.ParseQuery(v)
		}
		if err != nil {
			p.refuse(id, r.Query, err.Error())
			continue
		}
		var sum top.Summary
		if p.srv.Rec == nil {
			sum = top.Summary{Hosts: []string{p.host}, At: now.UTC(), Notes: []string{p.host + ": runs without the XDP DoS layer (--uplink): no packet samples"}}
		} else {
			sum, _ = p.srv.Frame(q)
		}
		b, _ := json.Marshal(sum)
		if err := p.store.PutTop(ctx, id, p.host, b); err != nil {
			p.log.Warn("publish nsctl dos top summary", "watch", id, "err", err)
			continue
		}
		p.published[id] = true
	}
	for id := range p.published {
		if r, ok := reqs[id]; ok && !now.After(r.Until) && r.For(p.host) {
			continue
		}
		if err := p.store.DeleteTop(ctx, id, p.host); err != nil {
			p.log.Warn("delete nsctl dos top summary", "watch", id, "err", err)
			continue
		}
		delete(p.published, id)
	}
}
