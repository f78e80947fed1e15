package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestTenantNotifier: every tenant whose tunnel health changed reaches
// nsd's loop, each once per batch, however slowly the loop reads (the
// prober's first verdicts are never dropped), and notify never blocks.
func TestTenantNotifier(t *testing.T) {
	out := make(chan string)
	n := newTenantNotifier(out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.run(ctx)
	want := map[string]bool{}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 100; i++ {
			name := fmt.Sprintf("t%d", i%40)
			want[name] = true
			n.notify(name)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("notify blocked while nobody read")
	}
	got := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case name := <-out:
			got[name] = true
			time.Sleep(time.Millisecond) // a slow loop
		case <-timeout:
			t.Fatalf("got %d of %d tenants", len(got), len(want))
		}
	}
}
