package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/nfhost/nfhost/dos/detect"
	"github.com/nfhost/nfhost/dos/top"
	"github.com/nfhost/nfhost/nsd/source"
)

// TestTopPublisher: a watch request in control/top/ makes the publisher
// write this host's frame to top/<watch>/<host>; a request for other
// hosts, an expired one or one that went leaves nothing; a bad one is
// ignored.
func TestTopPublisher(t *testing.T) {
	cfg, state := t.TempDir(), t.TempDir()
	store := source.NewDir(cfg, state)
	rec := top.NewRecorder()
	now := time.Now()
	rec.Watch(now.Add(-3 * time.Second))
	for i := 0; i < 100; i++ {
		rec.Add(top.Sample{At: now.Add(-time.Duration(i) * 10 * time.Millisecond), Tenant: "acme", Rate: 64, Len: 90,
			Pkt: detect.Packet{Src: netip.MustParseAddr("192.0.2.66"), Dst: netip.MustParseAddr("203.0.113.1"), Proto: 17, DPort: 123, ICMPType: -1}})
	}
	p := newTopPublisher(&top.Server{Host: "edge1", Rec: rec}, store, "edge1", slog.New(slog.DiscardHandler))
	ctx := context.Background()
	req := func(id string, r top.WatchRequest) {
		b, _ := json.Marshal(r)
		if err := store.PutControl(ctx, source.TopWatchKey(id), b); err != nil {
			t.Fatal(err)
		}
	}
	control := func() {
		snap, err := store.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.Control(snap.Control)
		p.publish(ctx)
	}
	req("w1", top.WatchRequest{Until: now.Add(time.Minute), Query: "window=1s&tenant=acme"})
	req("w2", top.WatchRequest{Until: now.Add(time.Minute), Query: "window=1s", Hosts: []string{"edge2"}})
	req("w3", top.WatchRequest{Until: now.Add(-time.Second), Query: "window=1s"})
	req("w4", top.WatchRequest{Until: now.Add(time.Minute), Query: "window=1h"})
	control()
	got, _ := store.ListTop(ctx, "w1")
	var s top.Summary
	if json.Unmarshal(got["edge1"], &s) != nil || s.Hosts[0] != "edge1" || len(s.Destinations) == 0 || s.Destinations[0].Key != "203.0.113.1" {
		t.Fatalf("w1: %q", got)
	}
	for _, id := range []string{"w2", "w3", "w4"} {
		if got, _ := store.ListTop(ctx, id); len(got) != 0 {
			t.Errorf("%s: published %q", id, got)
		}
	}
	// The request goes (nsctl exits): the summary goes too.
	if err := store.DeleteControl(ctx, source.TopWatchKey("w1")); err != nil {
		t.Fatal(err)
	}
	control()
	if got, _ := store.ListTop(ctx, "w1"); len(got) != 0 {
		t.Errorf("w1 after its request went: %q", got)
	}
}
