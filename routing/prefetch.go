package routing

import (
	"context"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/nfhost/nfhost/internal/namedns"
	"github.com/nfhost/nfhost/internal/nlh"
	"github.com/nfhost/nfhost/internal/owned"
)

// A full pass verifies every tenant, one after the other: its namespace's
// handles, links, addresses, default routes, netconf and neighbour entry
// are about two thirds of a converged tenant's Apply, and all of it is
// reading. Prefetch reads those ahead, on every core, for the tenants the
// pass will apply in its order; Apply takes what was read for its tenant
// instead of asking the kernel again. Writes stay in Apply, one tenant
// after the other.
//
// A view is used only while its Apply has changed nothing: once Apply
// repaired something (a veth made again, lo set up), what the view read
// may no longer hold, and the rest is read afresh as without a view.

// prefetchWindow bounds the views read ahead and not yet taken (each holds
// a namespace and two sockets open).
const prefetchWindow = 16

// nsView is what a tenant's Apply reads inside its namespace, read ahead.
type nsView struct {
	ns     netns.NsHandle
	tn     *netlink.Handle
	nc     *nlh.Netconf
	links  []netlink.Link
	peer   int // the index of the veth's end inside (0: not found)
	addrs  []netlink.Addr
	routes []netlink.Route // the main table, both families
	v4     map[int32]nlh.Conf
	v6     nlh.Conf
	neigh  nlh.Neigh
	found  bool // the neighbour entry exists
	ok     bool // every read above succeeded
}

func (v *nsView) close() {
	v.tn.Close()
	v.nc.Close()
	v.ns.Close()
}

// valid: the view's reads inside still describe the namespace: Apply
// changed nothing yet and the veth's end is the one the view read.
func (v *nsView) valid(ch changes, nsLink netlink.Link) bool {
	return v != nil && v.ok && len(ch) == 0 && v.peer != 0 && nsLink.Attrs().Index == v.peer
}

type viewState int

const (
	viewQueued viewState = iota
	viewReading
	viewReady
	viewGone // taken, claimed by Apply, or dropped
)

type prefetch struct {
	mu     sync.Mutex
	cond   *sync.Cond
	order  []string
	pos    map[string]int
	state  map[string]viewState
	views  map[string]*nsView
	next   int
	tokens chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Prefetch starts reading ahead, for tenants ids in the order the pass
// applies them, what their Apply reads inside their namespaces. stop ends
// it and closes what was not taken; call it when the pass is over. An
// Apply of a tenant not in ids, or out of order, works as without.
func (r *Reconciler) Prefetch(ctx context.Context, ids []string) (stop func()) {
	r.stopPrefetch()
	ctx, cancel := context.WithCancel(ctx)
	p := &prefetch{order: ids, pos: make(map[string]int, len(ids)), state: make(map[string]viewState, len(ids)),
		views: map[string]*nsView{}, tokens: make(chan struct{}, prefetchWindow), cancel: cancel}
	p.cond = sync.NewCond(&p.mu)
	for i, id := range ids {
		p.pos[id] = i
	}
	dir, prefix := r.cfg.NetnsDir, r.cfg.NSPrefix
	for w := 0; w < max(1, runtime.GOMAXPROCS(0)); w++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for {
				select {
				case p.tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
				p.mu.Lock()
				for p.next < len(p.order) && p.state[p.order[p.next]] != viewQueued {
					p.next++
				}
				if p.next == len(p.order) || ctx.Err() != nil {
					p.mu.Unlock()
					<-p.tokens
					return
				}
				id := p.order[p.next]
				p.state[id] = viewReading
				p.mu.Unlock()
				v := readView(dir, prefix+id)
				p.mu.Lock()
				if v != nil {
					p.views[id] = v
				} else {
					<-p.tokens
				}
				p.state[id] = viewReady
				p.cond.Broadcast()
				p.mu.Unlock()
			}
		}()
	}
	r.prefetch = p
	return r.stopPrefetch
}

// stopPrefetch ends the running prefetch, if any, and closes its views.
func (r *Reconciler) stopPrefetch() {
	p := r.prefetch
	if p == nil {
		return
	}
	r.prefetch = nil
	p.cancel()
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
	for id, v := range p.views {
		v.close()
		delete(p.views, id)
	}
}

// take returns tenant id's view, waiting if it is being read; nil if
// there is none (not prefetched, not read yet: Apply reads itself). The
// views of tenants before id in the order are dropped: their pass went by.
func (r *Reconciler) take(id string) *nsView {
	p := r.prefetch
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.pos[id]
	if !ok {
		return nil
	}
	for p.state[id] == viewReading {
		p.cond.Wait()
	}
	for j, v := range p.views {
		if p.pos[j] < i {
			v.close()
			delete(p.views, j)
			p.state[j] = viewGone
			<-p.tokens
		}
	}
	v := p.views[id]
	if v != nil {
		delete(p.views, id)
		<-p.tokens
		r.viewsTaken++
	}
	p.state[id] = viewGone
	return v
}

// readView opens the existing namespace name and reads what Apply reads
// inside it; nil if it does not exist or cannot be opened (Apply then
// does everything itself). A failed read leaves the view !ok: Apply uses
// its handles and reads again.
func readView(dir, name string) *nsView {
	if !namedns.Exists(dir, name) {
		return nil
	}
	ns, err := namedns.Open(dir, name)
	if err != nil {
		return nil
	}
	tn, nc, err := nlh.NewPair(ns)
	if err != nil {
		ns.Close()
		return nil
	}
	v := &nsView{ns: ns, tn: tn, nc: nc}
	if v.links, err = nlh.RetryDump("links", tn.LinkList); err != nil {
		return v
	}
	var peer netlink.Link
	for _, l := range v.links {
		if l.Attrs().Name == owned.NSIfName {
			peer = l
		}
	}
	if peer == nil {
		return v
	}
	v.peer = peer.Attrs().Index
	if v.addrs, err = nlh.RetryDump("addresses", func() ([]netlink.Addr, error) { return tn.AddrList(peer, netlink.FAMILY_ALL) }); err != nil {
		return v
	}
	if v.routes, err = mainRoutes(tn); err != nil {
		return v
	}
	if v.v4, err = nc.Dump(unix.AF_INET); err != nil {
		return v
	}
	if v.v6, err = nc.Get(unix.AF_INET6, nlh.IfindexAll); err != nil {
		return v
	}
	if v.neigh, v.found, err = nc.Neigh(int32(v.peer), owned.HostAddr4.Addr()); err != nil {
		return v
	}
	v.ok = true
	return v
}
