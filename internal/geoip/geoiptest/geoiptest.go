// Package geoiptest writes small MaxMind-format databases for tests, in
// the layout of GeoLite2-Country (country.iso_code) and GeoLite2-ASN
// (autonomous_system_number), with github.com/maxmind/mmdbwriter.
package geoiptest

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// WriteCountry writes a country database mapping each prefix to its
// country code, as dir/name, and returns the path.
func WriteCountry(t testing.TB, dir, name string, countries map[string][]string) string {
	return write(t, dir, name, "GeoLite2-Country", func(tree *mmdbwriter.Tree) {
		for code, ps := range countries {
			for _, p := range ps {
				insert(t, tree, p, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(code)}})
			}
		}
	})
}

// WriteASN writes an ASN database mapping each prefix to its AS number.
func WriteASN(t testing.TB, dir, name string, asns map[uint32][]string) string {
	return write(t, dir, name, "GeoLite2-ASN", func(tree *mmdbwriter.Tree) {
		for n, ps := range asns {
			for _, p := range ps {
				insert(t, tree, p, mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(n)})
			}
		}
	})
}

func insert(t testing.TB, tree *mmdbwriter.Tree, prefix string, v mmdbtype.DataType) {
	p := netip.MustParsePrefix(prefix)
	n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	if err := tree.Insert(n, v); err != nil {
		t.Fatalf("insert %s: %v", prefix, err)
	}
}

func write(t testing.TB, dir, name, dbType string, fill func(*mmdbwriter.Tree)) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24, IPVersion: 6,
		IncludeReservedNetworks: true, DisableIPv4Aliasing: true})
	if err != nil {
		t.Fatal(err)
	}
	fill(tree)
	path := filepath.Join(dir, name)
	// Written beside and renamed, as a database update should be.
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}
