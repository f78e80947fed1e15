// Package source reads tenant configuration from Consul KV or from a
// directory, watches it for changes, and stores nsd's status reports.
//
// KV layout under a prefix (default "nfhost"):
//
//	<prefix>/tenants/<tenant>/network    operator-owned network config
//	<prefix>/tenants/<tenant>/firewall   tenant-writable firewall rules
//	<prefix>/tenants/<tenant>/dos        DoS settings
//	<prefix>/dos/global                  fleet-wide DoS settings (operator)
//	<prefix>/lists/<name>[/<part>]       shared address lists any tenant's rules may use (operator)
//	<prefix>/control/<name>              operator controls, e.g. confirm-deletes/<host>
//	<prefix>/tenant-status/<tenant>/<host>  written by nsd: one prefix per tenant
//	<prefix>/host-status/<host>             host-level status (delete guard)
//
// The directory source mirrors it: DIR/<tenant>/network.json (firewall.json,
// dos.json), DIR/_global/dos.json, DIR/_lists/<name>.json, DIR/_control/<name>; status goes to
// STATE/status/<host>/<name>.json.
package source

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nfhost/nfhost/internal/consulacl"
)

// Entry is one stored document and the index of its last change.
type Entry struct {
	Value       []byte
	ModifyIndex uint64
}

// Snapshot is the whole configuration at one moment.
type Snapshot struct {
	// Tenants maps tenant ID to its keys ("network", "firewall", ...).
	Tenants map[string]map[string]Entry
	// Control holds <prefix>/control/<name> entries by name.
	Control map[string]Entry
	// DoSGlobal is <prefix>/dos/global; nil when absent.
	DoSGlobal *Entry
	// Lists are the shared lists <prefix>/lists/<name>: one entry, or
	// the parts <name>/<part> in key order (a list larger than one Consul
	// value is split). Each part is a JSON array of addresses and CIDRs.
	Lists map[string][]Entry
	// Mitigations are the fleet-wide automatic mitigations,
	// <prefix>/dos/mitigations/<tenant>/<id>, by "<tenant>/<id>"
	// (dos/fleet); a directory store has none.
	Mitigations map[string]Entry
	// Changed names the tenants whose keys may differ from those in the
	// snapshot the same Watch sent before this one (added, changed or
	// deleted); nil means any tenant may have changed (the first
	// snapshot, Read, a store that went back, a directory store). nsd's
	// pass over a snapshot with Changed looks at those tenants only, so
	// that a change costs a server with 10,000 tenants what it costs one
	// with ten. Read-only, like the rest of the snapshot.
	Changed map[string]bool
	// Problems are keys that could not be attributed to a tenant (bad
	// tenant ID, nested keys); reported, never fatal.
	Problems []string
	// StoreReset is set on the first snapshot after the store's indexes
	// went backwards: a new cluster on the same address, or a restore from
	// an old snapshot. Deletions it implies are held (see nsd).
	StoreReset bool
	// Through is the store index up to which every tenant write is in
	// Tenants (0: unknown). A host that applied this snapshot acknowledges
	// it (Ack).
	Through uint64
	// Hidden is set when the store's ACLs hid some keys from the listing
	// (Consul: a tenant's token sees only its own keys), so a tenant
	// missing from Tenants may exist. Watch never sends such a snapshot.
	Hidden bool
}

// ErrConflict is returned by Put when a check-and-set lost a race.
var ErrConflict = errors.New("check-and-set conflict: the key changed since it was read")

// ErrNotFound is returned when a tenant or key does not exist.
var ErrNotFound = errors.New("not found")

// ErrTimeout is returned when the store did not answer in time (a hung
// Consul agent); the request may or may not have taken effect.
var ErrTimeout = errors.New("config store timed out")

// ErrTooLarge is returned when the store refuses a value for its size
// (Consul: limits.kv_max_value_size, 512 KiB by default).
var ErrTooLarge = errors.New("value too large for the config store (Consul's limits.kv_max_value_size, 512 KiB by default)")

// ErrTxnTooLarge is returned when Consul refuses a transaction for its
// size (PutTenant), though each value may fit on its own.
var ErrTxnTooLarge = errors.New("transaction too large for the config store (Consul's limits.txn_max_req_len, 512 KiB of request by default, values in base64)")

// ErrForbidden is returned when the store refused the request's
// credentials: Consul answered 403 because the token is unknown (revoked,
// expired) or its policies do not allow the operation. The error names
// the operation, the key and the policy that would allow it.
var ErrForbidden = errors.New("refused by Consul ACLs")

// Store is what nsd and nsctl need from a configuration backend.
type Store interface {
	// Watch sends a snapshot as soon as one can be read and then one per
	// change, until ctx ends. Read errors are retried with backoff and
	// reported through onHealth, and so is the recovery after them (a nil
	// error); the last snapshot stays in force meanwhile.
	Watch(ctx context.Context, out chan<- Snapshot, onHealth func(error)) error
	// Read returns the current snapshot once.
	Read(ctx context.Context) (Snapshot, error)
	// Put writes a tenant key. cas is the ModifyIndex the writer read (0:
	// the key must not exist yet); a lost race is ErrConflict.
	Put(ctx context.Context, tenant, key string, value []byte, cas uint64) error
	// PutTenant writes several keys of one tenant, each with its own
	// check-and-set, all or none: a lost race on any is ErrConflict and
	// writes nothing. Consul refuses a transaction larger than its
	// limits.txn_max_req_len (512 KiB of request, values in base64) with
	// ErrTxnTooLarge; nothing is written then either.
	PutTenant(ctx context.Context, tenant string, writes []KeyWrite) error
	// DeleteTenant removes every key of a tenant.
	DeleteTenant(ctx context.Context, tenant string) error
	// PutControl writes <prefix>/control/<name>.
	PutControl(ctx context.Context, name string, value []byte) error
	// PutDoSGlobal writes <prefix>/dos/global with check-and-set like Put.
	PutDoSGlobal(ctx context.Context, value []byte, cas uint64) error
	// PutStatus and DeleteStatus maintain the status of tenant name (or
	// HostStatusName) on host: in Consul tenant-status/<name>/<host> and
	// host-status/<host>.
	PutStatus(ctx context.Context, host, name string, st any) error
	DeleteStatus(ctx context.Context, host, name string) error
	// ListStatus returns raw status documents by host, then by name.
	ListStatus(ctx context.Context, host string) (map[string]map[string]json.RawMessage, error)
	// ListTenantStatus returns one tenant's status documents by host
	// (readable with that tenant's own token).
	ListTenantStatus(ctx context.Context, tenant string) (map[string]json.RawMessage, error)
}

// KeyWrite is one key of PutTenant: its name under the tenant, its value
// and the ModifyIndex the writer read (0: it must not exist yet).
type KeyWrite struct {
	Key   string
	Value []byte
	CAS   uint64
}

// MitigationStore is a store that holds fleet-wide mitigations
// (Consul). Names are "<tenant>/<id>"; cas as in Put.
type MitigationStore interface {
	PutMitigation(ctx context.Context, name string, value []byte, cas uint64) error
	DeleteMitigation(ctx context.Context, name string, cas uint64) error
}

// Ack is a host's acknowledgement, acks/<host> (AckStore): every tenant
// write up to Through has been processed by the host, applied or refused.
// With acknowledgements (nsd --status-writes ack) a tenant's status on a
// host is written only when it says more than "applied" (an error, a
// warning, tunnel health, counters asked for), so a single-tenant change
// costs a host one write however many tenants it holds, and a few a second
// at most however many change; a tenant with no status from a host whose
// ack is at or past the tenant's last write is applied there.
type Ack struct {
	Host    string    `json:"host"`
	Through uint64    `json:"through"`
	At      time.Time `json:"at"`
}

// AckStore is a store that keeps hosts' acknowledgements (Consul).
type AckStore interface {
	PutAck(ctx context.Context, a Ack) error
	// ListAcks returns every host's acknowledgement by host.
	ListAcks(ctx context.Context) (map[string]Ack, error)
	// DeleteAck removes host's acknowledgement (a host that went back to
	// per-tenant status writes).
	DeleteAck(ctx context.Context, host string) error
}

// HostStatusName is the status entry that describes the host itself.
const HostStatusName = "_host"

// Status is what nsd reports per tenant.
type Status struct {
	Host         string                    `json:"host"`
	Tenant       string                    `json:"tenant"`
	State        string                    `json:"state"` // applied | error | held
	AppliedIndex uint64                    `json:"applied_index"`
	AppliedAt    time.Time                 `json:"applied_at"`
	Subsystems   map[string]SubsystemState `json:"subsystems"`
	Error        string                    `json:"error,omitempty"`
	Warnings     []string                  `json:"warnings,omitempty"`
	Changes      int                       `json:"changes"`
	// FirewallIndex is the ModifyIndex of the firewall key in force.
	FirewallIndex uint64 `json:"firewall_index,omitempty"`
	// Firewall holds per-rule counters, read after each apply and resync.
	Firewall map[string]RuleCounter `json:"firewall,omitempty"`
	// DoS holds the XDP DoS layer's counters for traffic towards the
	// tenant, read on resync.
	DoS *DoSCounters `json:"dos,omitempty"`
	// Tunnels holds each GRE tunnel's health and counters.
	Tunnels map[string]TunnelStatus `json:"tunnels,omitempty"`
	// CountersAsked is the Asked time of the counter request (in the
	// requester's clock) these counters answer: the firewall, DoS and
	// tunnel counters were read fresh for it. Zero: the counters are as of
	// the last write, which counter changes alone do not cause (nsd
	// --status-counters on-demand).
	CountersAsked time.Time `json:"counters_asked,omitzero"`
}

// CounterRequest is the value of control/watch/<tenant>
// (CounterRequestName): nsctl asks every host to publish the tenant's
// counters now and, until Until, every few seconds while they change.
// Both times are the requester's clock; hosts echo Asked in the status
// they write for it (Status.CountersAsked).
type CounterRequest struct {
	Asked time.Time `json:"asked"`
	Until time.Time `json:"until"`
}

// CounterRequestName is the control name of a tenant's counter request.
func CounterRequestName(tenant string) string { return consulacl.CounterRequestPrefix + tenant }

// SubsystemState is one subsystem's part of a tenant's status, as status
// documents carry it: "ok" or "error", and in parentheses what stays in
// force when the newest document was not applied.
type SubsystemState string

// The states every subsystem uses; a subsystem may say more with Keeping.
const (
	SubsystemOK SubsystemState = "ok"
	// SubsystemOKLastGood: the subsystem is fine, but the tenant failed in
	// another one and this one's state of the last good pass stays.
	SubsystemOKLastGood SubsystemState = "ok (last good config)"
	SubsystemError      SubsystemState = "error"
)

// ErrorKeeping is an error state that says what stays in force.
func ErrorKeeping(what string) SubsystemState { return SubsystemState("error (" + what + ")") }

// Failed reports whether the state is an error.
func (s SubsystemState) Failed() bool { return strings.HasPrefix(string(s), string(SubsystemError)) }

// TunnelStatus is one tunnel's health (state healthy, degraded, down or
// unchecked) and counters.
type TunnelStatus struct {
	State       string  `json:"state"`
	LossPercent float64 `json:"loss_percent"`
	RTTMillis   float64 `json:"rtt_ms"`
	RxPackets   uint64  `json:"rx_packets"`
	TxPackets   uint64  `json:"tx_packets"`
	Drops       uint64  `json:"drops"`
	// The health check: why the state holds and since when, the probe
	// settings in force, and the window the verdict is based on (the last
	// five minutes, at least the last 30 probes).
	Reason         string    `json:"reason,omitempty"`
	Since          time.Time `json:"since,omitzero"`
	Type           string    `json:"type,omitempty"`
	Direction      string    `json:"direction,omitempty"`
	WindowProbes   int       `json:"window_probes,omitempty"`
	WindowLost     int       `json:"window_lost,omitempty"`
	LastFailure    time.Time `json:"last_failure,omitzero"`
	ProbesSent     uint64    `json:"probes_sent,omitempty"`
	ProbesAnswered uint64    `json:"probes_answered,omitempty"`
}

// DoSCounters are a tenant's DoS counters: all its traffic, and per rule
// (signature:<id>, rate:<prefix>, sig:<id> rate buckets).
type DoSCounters struct {
	Packets uint64                  `json:"packets"`
	Dropped uint64                  `json:"dropped"`
	Rules   map[string]DoSRuleCount `json:"rules,omitempty"`
}

// DoSRuleCount is one rule's counts.
type DoSRuleCount struct {
	Packets uint64 `json:"packets"`
	Dropped uint64 `json:"dropped"`
}

// RuleCounter is a firewall rule's hit count.
type RuleCounter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// HostStatus is the host-level report, including the delete guard.
type HostStatus struct {
	Host        string    `json:"host"`
	UpdatedAt   time.Time `json:"updated_at"`
	Tenants     int       `json:"tenants"`
	HeldDeletes []string  `json:"held_deletes,omitempty"`
	// ConfirmToken must be written to <prefix>/control/confirm-deletes/<host>
	// to let the held deletes through.
	ConfirmToken string `json:"confirm_token,omitempty"`
	// SpentConfirmToken is the last token that let deletions through; it
	// is never accepted again.
	SpentConfirmToken string   `json:"spent_confirm_token,omitempty"`
	Problems          []string `json:"problems,omitempty"`
	// DoSGlobalIndex is the ModifyIndex of the dos/global document in
	// force; DoSGlobalError the reason a newer one was refused.
	DoSGlobalIndex uint64 `json:"dos_global_index,omitempty"`
	DoSGlobalError string `json:"dos_global_error,omitempty"`
	// Drained: the operator drained this host (DrainKey); it announces
	// nothing over BGP.
	Drained bool `json:"drained,omitempty"`
	// BGP is the speaker's state (nil: nsd runs without --bgp-config).
	BGP *BGPStatus `json:"bgp,omitempty"`
	// GREBackend is the tunnels' backend in force: ebpf or kernel (empty:
	// no tunnels, without --uplink).
	GREBackend string `json:"gre_backend,omitempty"`
}

// BGPStatus is what the host's BGP speaker reports.
type BGPStatus struct {
	LocalASN uint32       `json:"local_asn"`
	RouterID string       `json:"router_id"`
	Sessions []BGPSession `json:"sessions"`
	// Announced: the prefixes in the speaker's RIB, sent to every
	// established peer of their family; at most MaxStatusPrefixes of
	// them, AnnouncedCount says how many there are.
	Announced      []string `json:"announced"`
	AnnouncedCount int      `json:"announced_count"`
	// FlowSpec: the FlowSpec rules announced, one line each.
	FlowSpec []string `json:"flowspec,omitempty"`
	// NotExported: signatures marked for export that FlowSpec cannot
	// express, with the reason.
	NotExported []string `json:"not_exported,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// MaxStatusPrefixes bounds the announced prefixes listed in a host status
// (a host announcing 10,000 prefixes would write 200 KB per status).
const MaxStatusPrefixes = 100

// BGPSession is one peer's session.
type BGPSession struct {
	Peer        string    `json:"peer"`
	ASN         uint32    `json:"asn"`
	State       string    `json:"state"`
	Since       time.Time `json:"since,omitzero"`
	FlowSpec    bool      `json:"flowspec,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	UpdatesSent uint64    `json:"updates_sent"`
	Failures    int       `json:"failures,omitempty"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
}

// DrainKey is the control key that drains a host
// (<prefix>/control/drain/<host>): the value true withdraws everything the
// host announces over BGP, any other value (nsctl undrain writes false)
// announces again.
func DrainKey(host string) string { return "drain/" + host }

// Drained reads a drain key's value.
func Drained(e Entry, ok bool) bool {
	return ok && strings.TrimSpace(string(e.Value)) == "true"
}

// ConfirmKey is the control key an operator writes a host's confirm token
// to (<prefix>/control/confirm-deletes/<host>) to let the deletions its
// mass-delete guard holds through. nsd reads it; nsctl confirm-deletes
// writes it.
func ConfirmKey(host string) string { return "confirm-deletes/" + host }

// backoff doubles from 250ms to 4s, with up to 25% jitter so that a fleet
// does not retry in lockstep after an outage. The cap bounds how long nsd
// lags behind a recovered store.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = 250 * time.Millisecond
	} else if b.d < 4*time.Second {
		b.d = min(2*b.d, 4*time.Second)
	}
	return b.d + time.Duration(rand.Int64N(int64(b.d/4)+1))
}

func (b *backoff) reset() { b.d = 0 }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
