// Package fleet is the fleet-wide half of automatic DoS mitigation: an
// edge whose detector derives a signature publishes it as a record under
// <prefix>/dos/mitigations/<tenant>/<id>, and every edge applies the
// records it reads, with the record's expiry. It is pure: records, their
// validation, and the decisions (what is in force, what to publish, what
// to delete); nsd does the reading and writing.
//
// The ID is auto-<hash of the expression>, the same on every edge for the
// same attack, so two edges deriving one signature write one key: the
// first creates it (check-and-set on absence), the other finds it there.
// The edge whose own detector still sees the attack moves the expiry on
// when its local expiry passes the record's, so every edge drops the
// attack until the same moment. An expired record is deleted by whichever
// edge notices first (check-and-set on its index). Cancelling (nsctl dos
// mitigations cancel) marks the record cancelled until its expiry, and at
// least CancelHold: every edge removes the signature, and no detector
// publishes it again before then.
package fleet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/dosspec"
	"github.com/nfhost/nfhost/firewall/lang"
	"github.com/nfhost/nfhost/internal/doc"
)

// Prefix is where records live under the KV prefix: dos/mitigations/.
const Prefix = "dos/mitigations/"

// Record is one fleet-wide mitigation.
type Record struct {
	Tenant     string    `json:"tenant"`
	ID         string    `json:"id"`
	Expression string    `json:"expression"`
	Action     string    `json:"action"` // drop | ratelimit
	LimitPPS   uint64    `json:"limit_pps,omitempty"`
	Victim     string    `json:"victim,omitempty"`
	Since      time.Time `json:"since"`
	Expires    time.Time `json:"expires"`
	// Origin is the edge that published the record first; Updated the
	// last to move its expiry.
	Origin  string `json:"origin"`
	Updated string `json:"updated,omitempty"`
	// Cancelled: an operator ended it; it stays as a tombstone until
	// Expires so that no detector publishes it again before.
	Cancelled   bool   `json:"cancelled,omitempty"`
	CancelledBy string `json:"cancelled_by,omitempty"`
}

// Entry is a record as stored, with its index for check-and-set.
type Entry struct {
	Record Record
	Index  uint64
}

var idRe = regexp.MustCompile(`^auto-[0-9a-f]{1,32}$`)

// Name is a record's key under Prefix.
func Name(tenant, id string) string { return tenant + "/" + id }

// Parse decodes and checks the record stored as Prefix+name.
func Parse(name string, data []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("%s%s: %w", Prefix, name, err)
	}
	bad := func(field, msg string) (Record, error) {
		return r, fmt.Errorf("%s%s: %s: %s", Prefix, name, field, msg)
	}
	if err := doc.ValidateTenantID(r.Tenant); err != nil {
		return bad("tenant", err.Error())
	}
	if !idRe.MatchString(r.ID) {
		return bad("id", fmt.Sprintf("%q: want auto-<hex>", r.ID))
	}
	if Name(r.Tenant, r.ID) != name {
		return bad("id", fmt.Sprintf("the key names %s, the record %s", name, Name(r.Tenant, r.ID)))
	}
	switch r.Action {
	case "drop":
	case "ratelimit":
		if r.LimitPPS == 0 {
			return bad("limit_pps", "a ratelimit record needs it")
		}
	default:
		return bad("action", fmt.Sprintf("%q: want drop or ratelimit", r.Action))
	}
	if r.Expires.IsZero() {
		return bad("expires", "missing")
	}
	if _, err := Compile(r.Expression); err != nil {
		return bad("expression", err.Error())
	}
	return r, nil
}

// Compile compiles a record's expression to the XDP classifier's form.
func Compile(expr string) (dosspec.Match, error) {
	e, err := lang.Parse(expr)
	if err != nil {
		return dosspec.Match{}, err
	}
	return dosspec.CompileMatch(e)
}

// FromMitigation is the record an edge publishes for its detector's m.
func FromMitigation(m detect.Mitigation, host string) Record {
	r := Record{Tenant: m.Tenant, ID: m.ID, Expression: m.Expression, Action: m.Action, LimitPPS: m.LimitPPS,
		Since: m.Since.UTC().Truncate(time.Second), Expires: ceilSecond(m.Expires), Origin: host}
	if m.Victim.IsValid() {
		r.Victim = m.Victim.String()
	}
	return r
}

// ceilSecond is t in UTC rounded up to a whole second: a record's expiry
// is never before the local expiry it stands for. Rounded down, a record
// written in the last second of a local mitigation would be born expired:
// deleted by the next pass, and written again, in a loop until the local
// expiry (TestNoRepublishLoopAtExpiry).
func ceilSecond(t time.Time) time.Time {
	s := t.UTC().Truncate(time.Second)
	if s.Before(t) {
		s = s.Add(time.Second)
	}
	return s
}

// Mitigation is the record as the daemon applies it.
func (r Record) Mitigation() detect.Mitigation {
	v, _ := netip.ParseAddr(r.Victim)
	return detect.Mitigation{ID: r.ID, Tenant: r.Tenant, Victim: v, Expression: r.Expression, Action: r.Action,
		LimitPPS: r.LimitPPS, Since: r.Since, Expires: r.Expires}
}

// InForce is what the edge applies at now: its own mitigations and the
// fleet's, one per tenant and ID with the latest expiry, without the
// expired ones and without any a live cancelled record names.
func InForce(local []detect.Mitigation, records map[string]Entry, now time.Time) []detect.Mitigation {
	by := map[string]detect.Mitigation{}
	cancelled := map[string]bool{}
	for name, e := range records {
		if !now.Before(e.Record.Expires) {
			continue
		}
		if e.Record.Cancelled {
			cancelled[name] = true
			continue
		}
		by[name] = e.Record.Mitigation()
	}
	for _, m := range local {
		name := Name(m.Tenant, m.ID)
		if cur, ok := by[name]; !ok || m.Expires.After(cur.Expires) {
			by[name] = m
		}
	}
	var out []detect.Mitigation
	for name, m := range by {
		if !cancelled[name] && now.Before(m.Expires) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return Name(out[i].Tenant, out[i].ID) < Name(out[j].Tenant, out[j].ID) })
	return out
}

// Write is a record to put with check-and-set on CAS (0: must not exist).
type Write struct {
	Name   string
	Record Record
	CAS    uint64
}

// Slack is how much later a local expiry must be than the record's before
// the edge writes it. The detector moves expiries on in half-duration
// steps, each worth one write; the slack only absorbs the records'
// whole-second expiries.
const Slack = time.Second

// ToPublish is what the edge host writes for its detector's mitigations:
// new ones, and those whose record expires more than Slack before the
// local expiry. Cancelled records are left alone.
func ToPublish(local []detect.Mitigation, records map[string]Entry, host string, now time.Time) []Write {
	var out []Write
	for _, m := range local {
		if !now.Before(m.Expires) {
			continue
		}
		name := Name(m.Tenant, m.ID)
		e, ok := records[name]
		switch {
		case !ok:
			out = append(out, Write{Name: name, Record: FromMitigation(m, host)})
		case e.Record.Cancelled:
		case m.Expires.Sub(e.Record.Expires) > Slack:
			r := e.Record
			r.Expires, r.Updated = ceilSecond(m.Expires), host
			out = append(out, Write{Name: name, Record: r, CAS: e.Index})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Expired names the records to delete at now, with their indexes.
func Expired(records map[string]Entry, now time.Time) map[string]uint64 {
	out := map[string]uint64{}
	for name, e := range records {
		if !now.Before(e.Record.Expires) {
			out[name] = e.Index
		}
	}
	return out
}

// CancelHold is how long a cancellation holds at least: a detector that
// still sees the attack does not bring the signature back before.
const CancelHold = 10 * time.Minute

// Cancel is r cancelled by who at now: a tombstone until its expiry or
// CancelHold from now, whichever is later.
func Cancel(r Record, who string, now time.Time) Record {
	r.Cancelled, r.CancelledBy = true, strings.TrimSpace(who)
	if until := now.Add(CancelHold).UTC().Truncate(time.Second); until.After(r.Expires) {
		r.Expires = until
	}
	return r
}
