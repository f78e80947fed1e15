package fleet

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func mit(tenant, id string, expires time.Duration) detect.Mitigation {
	return detect.Mitigation{ID: id, Tenant: tenant, Victim: netip.MustParseAddr("203.0.113.5"),
		Expression: "ip.dst == 203.0.113.5 and udp.dstport == 123 and ip.len == 72", Action: "drop", Since: t0, Expires: t0.Add(expires)}
}

func entry(t *testing.T, r Record, idx uint64) Entry {
	t.Helper()
	b, _ := json.Marshal(r)
	p, err := Parse(Name(r.Tenant, r.ID), b)
	if err != nil {
		t.Fatal(err)
	}
	return Entry{Record: p, Index: idx}
}

func TestPublishOnceAndFollowExpiry(t *testing.T) {
	local := []detect.Mitigation{mit("acme", "auto-1a", time.Minute)}
	// Nothing in the fleet: edge1 creates the record (cas 0).
	w := ToPublish(local, nil, "edge1", t0)
	if len(w) != 1 || w[0].CAS != 0 || w[0].Name != "acme/auto-1a" || w[0].Record.Origin != "edge1" {
		t.Fatalf("first publish: %+v", w)
	}
	recs := map[string]Entry{w[0].Name: entry(t, w[0].Record, 10)}
	// edge2 derives the same signature: it finds the record, writes nothing.
	if w2 := ToPublish(local, recs, "edge2", t0); len(w2) != 0 {
		t.Fatalf("second edge wrote %+v", w2)
	}
	// A small expiry step is not worth a write; a large one is, with CAS.
	local[0].Expires = t0.Add(time.Minute + Slack/2)
	if w2 := ToPublish(local, recs, "edge1", t0); len(w2) != 0 {
		t.Fatalf("small step written: %+v", w2)
	}
	local[0].Expires = t0.Add(2 * time.Minute)
	w2 := ToPublish(local, recs, "edge1", t0)
	if len(w2) != 1 || w2[0].CAS != 10 || !w2[0].Record.Expires.Equal(t0.Add(2*time.Minute)) || w2[0].Record.Origin != "edge1" {
		t.Fatalf("expiry step: %+v", w2)
	}
	// An edge without a local detection applies the record with its expiry.
	in := InForce(nil, recs, t0)
	if len(in) != 1 || !in[0].Expires.Equal(t0.Add(time.Minute)) || in[0].Expression != local[0].Expression {
		t.Fatalf("in force: %+v", in)
	}
	// Expired: gone everywhere, and deleted.
	if in := InForce(nil, recs, t0.Add(time.Minute)); len(in) != 0 {
		t.Fatalf("expired still in force: %+v", in)
	}
	if del := Expired(recs, t0.Add(time.Minute)); del["acme/auto-1a"] != 10 || len(del) != 1 {
		t.Fatalf("expired: %v", del)
	}
}

func TestCancelSuppresses(t *testing.T) {
	local := []detect.Mitigation{mit("acme", "auto-1a", time.Minute)}
	r := FromMitigation(local[0], "edge1")
	recs := map[string]Entry{"acme/auto-1a": entry(t, Cancel(r, "nsctl@ops", t0), 12)}
	// The detector still sees it: not applied, not published again.
	if in := InForce(local, recs, t0); len(in) != 0 {
		t.Fatalf("cancelled in force: %+v", in)
	}
	if w := ToPublish(local, recs, "edge1", t0); len(w) != 0 {
		t.Fatalf("cancelled republished: %+v", w)
	}
	// The tombstone holds CancelHold; after it the detector may publish anew.
	if in := InForce(local, recs, t0.Add(CancelHold-time.Second)); len(in) != 0 {
		t.Fatalf("cancel did not hold: %+v", in)
	}
	local[0].Expires = t0.Add(CancelHold + time.Minute)
	if in := InForce(local, recs, t0.Add(CancelHold)); len(in) != 1 {
		t.Fatalf("after the tombstone: %+v", in)
	}
}

func TestInForceMergesLatestExpiry(t *testing.T) {
	a := mit("acme", "auto-1a", time.Minute)
	b := mit("acme", "auto-2b", 2*time.Minute)
	recs := map[string]Entry{"acme/auto-1a": entry(t, FromMitigation(mit("acme", "auto-1a", 3*time.Minute), "edge2"), 5)}
	in := InForce([]detect.Mitigation{a, b}, recs, t0)
	if len(in) != 2 || in[0].ID != "auto-1a" || !in[0].Expires.Equal(t0.Add(3*time.Minute)) || in[1].ID != "auto-2b" {
		t.Fatalf("%+v", in)
	}
}

func TestParseRefuses(t *testing.T) {
	good := FromMitigation(mit("acme", "auto-1a", time.Minute), "edge1")
	for name, c := range map[string]struct {
		key  string
		edit func(*Record)
		want string
	}{
		"key and record differ": {"acme/auto-2b", func(*Record) {}, "id: the key names acme/auto-2b"},
		"bad id":                {"acme/x", func(r *Record) { r.ID = "x" }, `id: "x": want auto-<hex>`},
		"bad tenant":            {"Acme/auto-1a", func(r *Record) { r.Tenant = "Acme" }, "tenant:"},
		"bad action":            {"acme/auto-1a", func(r *Record) { r.Action = "tarpit" }, `action: "tarpit"`},
		"ratelimit needs pps":   {"acme/auto-1a", func(r *Record) { r.Action = "ratelimit" }, "limit_pps"},
		"no expiry":             {"acme/auto-1a", func(r *Record) { r.Expires = time.Time{} }, "expires: missing"},
		"bad expression":        {"acme/auto-1a", func(r *Record) { r.Expression = "ip.dst ==" }, "expression:"},
	} {
		r := good
		c.edit(&r)
		b, _ := json.Marshal(r)
		if _, err := Parse(c.key, b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	if _, err := Parse("acme/auto-1a", []byte("{")); err == nil {
		t.Error("bad JSON accepted")
	}
}

// FuzzParse: any stored value either is refused with an error or parses
// to a record that encodes and parses again to itself.
func FuzzParse(f *testing.F) {
	b, _ := json.Marshal(FromMitigation(mit("acme", "auto-1a", time.Minute), "edge1"))
	f.Add("acme/auto-1a", b)
	f.Add("acme/auto-1a", []byte(`{"tenant":"acme","id":"auto-1a","action":"ratelimit","limit_pps":5,"expires":"2026-01-01T00:00:00Z","expression":"tcp.flags.syn"}`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		r, err := Parse(name, data)
		if err != nil {
			return
		}
		b, _ := json.Marshal(r)
		r2, err := Parse(name, b)
		if err != nil || r2.ID != r.ID || r2.Expression != r.Expression || !r2.Expires.Equal(r.Expires) {
			t.Fatalf("round trip: %v %+v %+v", err, r, r2)
		}
	})
}

// TestNoRepublishLoopAtExpiry reproduces CI's TestFleetMitigation failure
// (20 publications of one signature): the record's expiry is in whole
// seconds, the local one is not. When the record had expired but the
// local mitigation had not, the edge deleted the record and published it
// again with an expiry truncated to the second that had already passed,
// so the next pass deleted and published it again, every few
// milliseconds until the local expiry. Each pass here is what nsd's
// syncFleet does: publish, then delete what has expired.
func TestNoRepublishLoopAtExpiry(t *testing.T) {
	for _, frac := range []time.Duration{time.Millisecond, 280 * time.Millisecond, 999 * time.Millisecond} {
		local := []detect.Mitigation{mit("acme", "auto-1a", 5*time.Second+frac)}
		recs := map[string]Entry{}
		created, idx := 0, uint64(1)
		for step := time.Duration(0); step < 10*time.Second; step += 5 * time.Millisecond {
			now := t0.Add(step)
			for _, w := range ToPublish(local, recs, "edge1", now) {
				if w.CAS == 0 {
					created++
				}
				if !now.Before(w.Record.Expires) {
					t.Fatalf("frac %v at %v: published a record that has already expired (%v)", frac, step, w.Record.Expires)
				}
				idx++
				recs[w.Name] = entry(t, w.Record, idx)
			}
			for name := range Expired(recs, now) {
				delete(recs, name)
			}
			// The fleet never drops the attack for less time than the edge.
			if in := InForce(nil, recs, now); now.Before(local[0].Expires) && len(in) != 1 {
				t.Fatalf("frac %v at %v: the fleet's record is gone before the local mitigation", frac, step)
			}
		}
		if created != 1 {
			t.Errorf("frac %v: %d publications, want 1", frac, created)
		}
	}
}
