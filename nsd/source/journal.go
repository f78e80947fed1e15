package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// The wire form of index/journal and index/history. Every server reads the
// journal on every change, so its size is most of what a change costs a
// server besides the changed tenant's own keys: in the first form each
// entry was an object, {"seq":123456,"tenant":"t42","i":2345013,"k":3}
// (about 50 bytes for a short tenant ID, 3.4 KB for the journal's 64).
// The second form ("v":2) writes an entry as ["t42",2345013,3] and leaves
// its sequence number out: entries are consecutive, the last one's is the
// journal's seq (the history's "seq" likewise). That is 1.5 KB for 64
// entries, and the history's 1,024 shrink the same way.
//
// The indexer writes the second form; both are read. An nsd older than
// the second form reads one as a journal whose entries are all gone: it
// catches up from the digest on every change (correct, but a digest read
// per change), so a fleet is upgraded within a short window.

const journalVersion = 2

// wireEntry is a journal entry in the second form: [tenant, index, keys].
type wireEntry struct {
	Tenant string
	mark
}

func (e wireEntry) MarshalJSON() ([]byte, error) {
	id, err := json.Marshal(e.Tenant) // IDs are read from keys: quote whatever they hold
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(id)+24)
	b = append(b, '[')
	b = append(b, id...)
	b = append(b, ',')
	b = strconv.AppendUint(b, e.Index, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(e.Keys), 10)
	return append(b, ']'), nil
}

func (e *wireEntry) UnmarshalJSON(b []byte) error {
	var a []json.RawMessage
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	if len(a) != 3 {
		return fmt.Errorf("entry %s: want [tenant, index, keys]", b)
	}
	if err := json.Unmarshal(a[0], &e.Tenant); err != nil {
		return fmt.Errorf("entry %s: tenant: %w", b, err)
	}
	if err := json.Unmarshal(a[1], &e.Index); err != nil {
		return fmt.Errorf("entry %s: index: %w", b, err)
	}
	if err := json.Unmarshal(a[2], &e.Keys); err != nil || e.Keys < 0 {
		return fmt.Errorf("entry %s: keys: not a count", b)
	}
	return nil
}

// journalWire is either form of the journal (and of the history, which
// has no through and no slots): V 0 with Entries, or V 2 with E.
type journalWire struct {
	V       int             `json:"v,omitempty"`
	Epoch   string          `json:"epoch"`
	Seq     uint64          `json:"seq,omitempty"`
	Through uint64          `json:"through,omitempty"`
	Slots   map[string]mark `json:"slots,omitempty"`
	Entries []journalEntry  `json:"entries,omitempty"` // the first form
	E       []wireEntry     `json:"e,omitempty"`       // the second form, oldest first
}

func toWire(epoch string, seq uint64, es []journalEntry) journalWire {
	w := journalWire{V: journalVersion, Epoch: epoch, Seq: seq, E: make([]wireEntry, len(es))}
	for i, e := range es {
		w.E[i] = wireEntry{e.Tenant, e.mark}
	}
	return w
}

// entries returns the entries of either form, with their sequence
// numbers; seq is the journal's (or the history's last entry's), which
// the second form's entries count back from.
func (w *journalWire) entries() ([]journalEntry, error) {
	switch w.V {
	case 0:
		if len(w.E) > 0 {
			return nil, errors.New(`"e" without "v"`)
		}
		return w.Entries, nil
	case journalVersion:
		if len(w.Entries) > 0 {
			return nil, errors.New(`"entries" in a version 2 journal`)
		}
		if uint64(len(w.E)) > w.Seq {
			return nil, fmt.Errorf("%d entries up to seq %d", len(w.E), w.Seq)
		}
		out := make([]journalEntry, len(w.E))
		first := w.Seq - uint64(len(w.E)) + 1
		for i, e := range w.E {
			out[i] = journalEntry{Seq: first + uint64(i), Tenant: e.Tenant, mark: e.mark}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("version %d: this nsd reads versions 0 and %d", w.V, journalVersion)
	}
}

// The journal's seq is its last entry's (the indexer numbers each entry
// with the next one), so the second form needs no seq of its own.
func (j journal) MarshalJSON() ([]byte, error) {
	if err := consecutive(j.Entries); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if n := len(j.Entries); n > 0 && j.Entries[n-1].Seq != j.Seq {
		return nil, fmt.Errorf("journal: last entry %d is not seq %d", j.Entries[n-1].Seq, j.Seq)
	}
	w := toWire(j.Epoch, j.Seq, j.Entries)
	w.Through, w.Slots = j.Through, j.Slots
	return json.Marshal(w)
}

func (j *journal) UnmarshalJSON(b []byte) error {
	var w journalWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	es, err := w.entries()
	if err != nil {
		return err
	}
	*j = journal{Epoch: w.Epoch, Seq: w.Seq, Through: w.Through, Slots: w.Slots, Entries: es}
	return nil
}

func (h history) MarshalJSON() ([]byte, error) {
	var seq uint64
	if n := len(h.Entries); n > 0 {
		seq = h.Entries[n-1].Seq
	}
	if err := consecutive(h.Entries); err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return json.Marshal(toWire(h.Epoch, seq, h.Entries))
}

// consecutive checks that each entry's sequence number follows the one
// before, from 1 up (the indexer numbers entries from 1): the second
// form keeps only the last.
func consecutive(es []journalEntry) error {
	if len(es) > 0 && es[0].Seq == 0 {
		return errors.New("an entry with seq 0")
	}
	for i := 1; i < len(es); i++ {
		if es[i].Seq != es[i-1].Seq+1 {
			return fmt.Errorf("entry %d follows %d", es[i].Seq, es[i-1].Seq)
		}
	}
	return nil
}

func (h *history) UnmarshalJSON(b []byte) error {
	var w journalWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	es, err := w.entries()
	if err != nil {
		return err
	}
	*h = history{Epoch: w.Epoch, Entries: es}
	return nil
}
