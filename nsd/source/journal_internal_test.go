package source

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func testJournal(n int, id func(i int) string) journal {
	j := journal{Epoch: "5e0c1a2b3c4d5e6f", Seq: 123456, Through: 2345678,
		Slots: map[string]mark{"control": {2345001, 3}, "dos": {2345600, 1}, "lists": {1200000, 2}}}
	for i := range n {
		j.Entries = append(j.Entries, journalEntry{Seq: j.Seq - uint64(n-1-i), Tenant: id(i), mark: mark{2345000 + uint64(i)*13, i % 4}})
	}
	return j
}

// The journal is written in the second form and reads back as it was;
// the history too. A journal of 64 entries is under half the first form.
func TestJournalWireRoundTrip(t *testing.T) {
	short := func(i int) string { return fmt.Sprintf("t%d", 1000+i*37) }
	for _, n := range []int{0, 1, JournalLen} {
		j := testJournal(n, short)
		b, err := json.Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), `"v":2`) || strings.Contains(string(b), `"entries"`) {
			t.Fatalf("%d entries: not the second form: %s", n, b)
		}
		var got journal
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			j.Entries = []journalEntry{}
		}
		if !reflect.DeepEqual(got, j) {
			t.Fatalf("%d entries: read back %+v, want %+v", n, got, j)
		}
		h := history{Epoch: j.Epoch, Entries: j.Entries}
		hb, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		var gotH history
		if err := json.Unmarshal(hb, &gotH); err != nil || !reflect.DeepEqual(gotH, h) {
			t.Fatalf("history of %d: read back %+v (%v), want %+v", n, gotH, err, h)
		}
	}
	for _, c := range []struct {
		name string
		id   func(int) string
	}{{"short IDs", short}, {"31-character IDs", func(i int) string { return fmt.Sprintf("tenant-%024d", i) }}} {
		j := testJournal(JournalLen, c.id)
		v2, _ := json.Marshal(j)
		v1, _ := json.Marshal(journalWire{Epoch: j.Epoch, Seq: j.Seq, Through: j.Through, Slots: j.Slots, Entries: j.Entries})
		t.Logf("%s: %d entries: %d bytes, first form %d (%.2f)", c.name, JournalLen, len(v2), len(v1), float64(len(v2))/float64(len(v1)))
		if c.name == "short IDs" && len(v2)*2 > len(v1) {
			t.Errorf("%s: second form %d bytes, first %d: want under half", c.name, len(v2), len(v1))
		}
	}
}

// A journal and a history in the first form (an older indexer) still read.
func TestJournalReadsFirstForm(t *testing.T) {
	b := `{"epoch":"e1","seq":7,"through":90,"slots":{"dos":{"i":5,"k":1}},"entries":[{"seq":6,"tenant":"a","i":80,"k":2},{"seq":7,"tenant":"b","i":90,"k":0}]}`
	var j journal
	if err := json.Unmarshal([]byte(b), &j); err != nil {
		t.Fatal(err)
	}
	want := journal{Epoch: "e1", Seq: 7, Through: 90, Slots: map[string]mark{"dos": {5, 1}},
		Entries: []journalEntry{{6, "a", mark{80, 2}}, {7, "b", mark{90, 0}}}}
	if !reflect.DeepEqual(j, want) {
		t.Fatalf("read %+v, want %+v", j, want)
	}
	var h history
	if err := json.Unmarshal([]byte(`{"epoch":"e1","entries":[{"seq":6,"tenant":"a","i":80,"k":2}]}`), &h); err != nil ||
		!reflect.DeepEqual(h, history{Epoch: "e1", Entries: []journalEntry{{6, "a", mark{80, 2}}}}) {
		t.Fatalf("history: read %+v (%v)", h, err)
	}
}

// What is not a journal is refused with what is wrong, never read as one
// with fewer entries.
func TestJournalRefusesMalformed(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"v":2,"epoch":"e","seq":1,"e":[["a",1,1],["b",2,1]]}`, "2 entries up to seq 1"},
		{`{"v":3,"epoch":"e","seq":1}`, "version 3"},
		{`{"epoch":"e","seq":1,"e":[["a",1,1]]}`, `"e" without "v"`},
		{`{"v":2,"epoch":"e","seq":1,"entries":[{"seq":1,"tenant":"a"}]}`, `"entries" in a version 2`},
		{`{"v":2,"epoch":"e","seq":5,"e":[["a",1]]}`, "want [tenant, index, keys]"},
		{`{"v":2,"epoch":"e","seq":5,"e":[[1,1,1]]}`, "tenant"},
		{`{"v":2,"epoch":"e","seq":5,"e":[["a",-1,1]]}`, "index"},
		{`{"v":2,"epoch":"e","seq":5,"e":[["a",1,-1]]}`, "keys"},
		{`{"v":2,"epoch":"e","seq":5,"e":{"a":1}}`, "cannot unmarshal"},
	} {
		var j journal
		err := json.Unmarshal([]byte(c.in), &j)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.in, err, c.want)
		}
	}
	// Entries that are not consecutive, or end before seq, are not written.
	j := testJournal(3, func(i int) string { return "a" })
	j.Seq++
	if _, err := json.Marshal(j); err == nil {
		t.Error("a journal whose last entry is not its seq was written")
	}
	h := history{Epoch: "e", Entries: []journalEntry{{1, "a", mark{}}, {3, "b", mark{}}}}
	if _, err := json.Marshal(h); err == nil {
		t.Error("a history with a gap was written")
	}
}

// Whatever a journal key holds, reading it either fails or gives entries
// numbered consecutively up to the journal's seq, which a second write
// reproduces exactly.
func FuzzJournalWire(f *testing.F) {
	f.Add([]byte(`{"v":2,"epoch":"e","seq":9,"through":4,"e":[["a",1,1],["b\"",2,0]]}`))
	f.Add([]byte(`{"epoch":"e1","seq":7,"entries":[{"seq":6,"tenant":"a","i":80,"k":2},{"seq":7,"tenant":"b","i":90,"k":0}]}`))
	f.Add([]byte(`{"v":2,"epoch":"e","seq":18446744073709551615,"e":[["\u00e9",18446744073709551615,2147483647]]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j journal
		if json.Unmarshal(b, &j) != nil {
			return
		}
		if !strings.Contains(string(b), `"entries"`) { // the second form, or none
			for i, e := range j.Entries {
				if e.Seq != j.Seq-uint64(len(j.Entries)-1-i) {
					t.Fatalf("entry %d has seq %d in a journal at %d of %d entries", i, e.Seq, j.Seq, len(j.Entries))
				}
			}
		}
		n := len(j.Entries)
		if n > 0 && j.Entries[n-1].Seq != j.Seq {
			return // a first-form journal that breaks the rule: not written again
		}
		out, err := json.Marshal(j)
		if err != nil {
			return
		}
		var again journal
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("%s: written as %s, which does not read: %v", b, out, err)
		}
		if n == 0 {
			j.Entries = nil
			again.Entries = nil
		}
		if !reflect.DeepEqual(again, j) {
			t.Fatalf("%s: written as %s, read back %+v, want %+v", b, out, again, j)
		}
	})
}
