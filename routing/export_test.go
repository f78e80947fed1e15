package routing

// ViewsTaken is how many prefetched views Applies have taken (for tests).
func (r *Reconciler) ViewsTaken() int { return r.viewsTaken }

// AwaitViews waits until the running prefetch has read the first n
// tenants of its order, or as many as its window holds (for tests).
func (r *Reconciler) AwaitViews(n int) {
	p := r.prefetch
	if p == nil {
		return
	}
	n = min(n, prefetchWindow, len(p.order))
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		ready := 0
		for _, id := range p.order[:n] {
			if p.state[id] == viewReady {
				ready++
			}
		}
		if ready == n {
			return
		}
		p.cond.Wait()
	}
}
