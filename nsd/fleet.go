package nsd

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/fleet"
	"github.com/nfhost/nfhost/nsd/source"
)

// fleetState is the fleet-wide mitigations as this edge last read them.
type fleetState struct {
	records map[string]fleet.Entry
	bad     map[string]string // name -> why it was refused (logged once)
}

// inForce is what the DoS maps hold of the automatic mitigations: this
// edge's and the fleet's (dos/fleet.InForce).
func (d *Daemon) inForce() []detect.Mitigation {
	return fleet.InForce(d.auto, d.fleet.records, d.o.Now())
}

// syncFleet reads the fleet's records from the snapshot, publishes this
// edge's detector's mitigations that the fleet lacks (or whose record
// expires too early), and deletes expired records. Store errors are
// logged; the next pass tries again. A lost check-and-set race means
// another edge wrote first: its record arrives with the next snapshot.
func (d *Daemon) syncFleet(ctx context.Context, s source.Snapshot) {
	recs := map[string]fleet.Entry{}
	bad := map[string]string{}
	for name, e := range s.Mitigations {
		r, err := fleet.Parse(name, e.Value)
		if err != nil {
			bad[name] = err.Error()
			if d.fleet.bad[name] != err.Error() {
				d.log.Error("fleet mitigation refused", "err", err)
			}
			continue
		}
		recs[name] = fleet.Entry{Record: r, Index: e.ModifyIndex}
	}
	for name, r := range recs {
		if _, ok := d.fleet.records[name]; !ok && !r.Record.Cancelled && r.Record.Origin != d.o.HostID {
			d.log.Warn("fleet DoS mitigation", "tenant", r.Record.Tenant, "signature", r.Record.ID, "origin", r.Record.Origin,
				"expires", r.Record.Expires, "expression", r.Record.Expression)
		}
		if old, ok := d.fleet.records[name]; ok && !old.Record.Cancelled && r.Record.Cancelled {
			d.log.Warn("fleet DoS mitigation cancelled", "tenant", r.Record.Tenant, "signature", r.Record.ID, "by", r.Record.CancelledBy)
		}
	}
	d.fleet = fleetState{records: recs, bad: bad}
	ms, ok := d.o.Store.(source.MitigationStore)
	if !ok {
		return
	}
	now := d.o.Now()
	for _, w := range fleet.ToPublish(d.auto, recs, d.o.HostID, now) {
		b, _ := json.Marshal(w.Record)
		err := ms.PutMitigation(ctx, w.Name, b, w.CAS)
		switch {
		case errors.Is(err, source.ErrConflict):
			d.log.Debug("fleet mitigation written by another edge first", "name", w.Name)
		case err != nil:
			d.log.Error("publish fleet mitigation", "name", w.Name, "err", err)
		case w.CAS == 0:
			d.log.Info("fleet mitigation published", "name", w.Name, "expires", w.Record.Expires)
			d.m.FleetPublished.Inc()
		}
	}
	for name, idx := range fleet.Expired(recs, now) {
		if err := ms.DeleteMitigation(ctx, name, idx); err != nil && !errors.Is(err, source.ErrConflict) {
			d.log.Error("delete expired fleet mitigation", "name", name, "err", err)
		}
	}
}
