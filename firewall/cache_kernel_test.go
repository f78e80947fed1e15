package firewall

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nfhost/nfhost/firewall/fwspec"
	"github.com/nfhost/nfhost/internal/nstest"
)

func cacheSpec(t *testing.T, port int) *fwspec.Spec {
	t.Helper()
	var c fwspec.Config
	for i := 0; i < 8; i++ { // two keyed groups: merged into maps
		c.Rules = append(c.Rules, fwspec.Rule{ID: fmt.Sprintf("p%d", i), Expression: fmt.Sprintf("tcp.dstport == %d", port+i), Action: fwspec.Block})
		c.Rules = append(c.Rules, fwspec.Rule{ID: fmt.Sprintf("s%d", i), Expression: fmt.Sprintf("ip.src == 198.51.100.%d", i+1), Action: fwspec.Block})
	}
	raw, _ := json.Marshal(c)
	s, err := fwspec.Parse("acme", raw)
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

// The chain cache is trusted only while nobody else commits in the
// namespace: a hand edit of one of nfhost's chains, or of anything else
// there, makes the next apply read the chains again and repair them; a
// commit between an apply's reads and its batch makes the kernel refuse
// the batch, and Apply reads again and succeeds.
func TestChainCacheFollowsTheGeneration(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireTool(t, "nft")
	ns := nstest.New(t, "nfW"+nstest.Unique())
	r := &Reconciler{}
	spec := cacheSpec(t, 1000)
	mustApply := func(s *fwspec.Spec, wantChange bool) []string {
		t.Helper()
		ch, err := r.Apply(ns.Handle, s)
		if err != nil {
			t.Fatal(err)
		}
		if (len(ch) > 0) != wantChange {
			t.Fatalf("apply changed %v, want a change: %v", ch, wantChange)
		}
		return ch
	}
	mustApply(spec, true)
	golden := ns.MustExec(t, "nft", "list", "table", "inet", "nfhost")
	if !strings.Contains(golden, "vmap") {
		t.Fatalf("no verdict maps in the ruleset; the test needs merged chains:\n%s", golden)
	}
	mustApply(spec, false)

	// A hand edit of a merged chain: repaired by the next apply.
	var chain string
	for _, line := range strings.Split(golden, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "chain" && strings.HasPrefix(f[1], mergeChainPrefix) {
			chain = f[1]
			break
		}
	}
	if chain == "" {
		t.Fatalf("no %s chain:\n%s", mergeChainPrefix, golden)
	}
	ns.MustExec(t, "nft", "flush", "chain", "inet", "nfhost", chain)
	if ch := mustApply(spec, true); !strings.Contains(strings.Join(ch, "\n"), "rewrite 1 chains") {
		t.Errorf("repair of one flushed chain: %v", ch)
	}
	if got := ns.MustExec(t, "nft", "list", "table", "inet", "nfhost"); got != golden {
		t.Errorf("after the repair:\n%s\nwant:\n%s", got, golden)
	}

	// Someone else's table in the namespace: read again, nothing to do.
	ns.MustExec(t, "nft", "add", "table", "inet", "nfWother")
	mustApply(spec, false)

	// A commit between the reads and the batch: the batch is refused as a
	// whole (ERESTART), Apply reads again and applies the change.
	spec2 := cacheSpec(t, 2000)
	raced := 0
	testBeforeFlush = func() {
		if raced == 0 {
			ns.MustExec(t, "nft", "add", "table", "inet", "nfWrace")
		}
		raced++
	}
	defer func() { testBeforeFlush = nil }()
	mustApply(spec2, true)
	if raced != 2 {
		t.Errorf("batches sent: %d, want 2 (refused, then applied)", raced)
	}
	testBeforeFlush = nil
	mustApply(spec2, false)
	if got := ns.MustExec(t, "nft", "list", "table", "inet", "nfhost"); !strings.Contains(got, "2007") || strings.Contains(got, "1007") {
		t.Errorf("the change after the refused batch is not in force:\n%s", got)
	}
	// A fresh process agrees with what the cached one left.
	if ch, err := (&Reconciler{}).Apply(ns.Handle, spec2); err != nil || len(ch) != 0 {
		t.Errorf("a new reconciler finds changes: %v %v", ch, err)
	}
}
