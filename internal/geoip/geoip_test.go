package geoip_test

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nfhost/nfhost/internal/geoip"
	"github.com/nfhost/nfhost/internal/geoip/geoiptest"
)

func TestOpenAndReload(t *testing.T) {
	dir := t.TempDir()
	cc := geoiptest.WriteCountry(t, dir, "cc.mmdb", map[string][]string{
		"BR": {"198.51.100.0/24", "2001:db8:1::/48"}, "FR": {"203.0.113.0/25"}})
	as := geoiptest.WriteASN(t, dir, "as.mmdb", map[uint32][]string{64500: {"198.51.100.0/25", "2001:db8::/32"}})
	r, err := geoip.NewReloader(cc, as, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	db := r.DB()
	if !db.HasCountries() || !db.HasASNs() {
		t.Fatal("databases missing")
	}
	want := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
	got := slices.Clone(db.Country("BR"))
	slices.SortFunc(got, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	if !slices.Equal(got, want) {
		t.Fatalf("BR = %v", got)
	}
	if n := len(db.ASN(64500)); n != 2 {
		t.Fatalf("AS64500 has %d prefixes", n)
	}
	if r.Check() {
		t.Fatal("unchanged files reported as changed")
	}
	// A corrupt file in place: the old database stays.
	v1 := db.Version()
	if err := os.WriteFile(cc, []byte("not a database"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r.Check() || r.DB().Version() != v1 || len(r.DB().Country("BR")) != 2 {
		t.Fatal("a corrupt file replaced the database")
	}
	// A new file: swapped.
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	geoiptest.WriteCountry(t, dir, "cc.mmdb", map[string][]string{"BR": {"192.0.2.0/24"}})
	if !r.Check() || r.DB().Version() == v1 || len(r.DB().Country("BR")) != 1 || r.DB().Country("FR") != nil {
		t.Fatalf("reload: %v", r.DB().Country("BR"))
	}
	if _, err := geoip.Open(filepath.Join(dir, "missing.mmdb"), ""); err == nil {
		t.Fatal("missing file opened")
	}
	if none, _ := geoip.Open("", ""); none.HasCountries() || none.HasASNs() {
		t.Fatal("no paths, yet databases")
	}
}
