// Package geoip reads MaxMind-format databases (GeoLite2 / GeoIP2 Country
// and ASN, DB-IP lite) into per-country and per-AS prefix indexes: the
// firewall compiles ip.src.country == "BR" into a lookup in the set of
// prefixes the database places in BR (fwspec.Geo). Reloader notices a
// changed file, loads it beside the one in use and swaps only a database
// that loaded completely; the firewall then updates set elements in one
// nftables batch per tenant, so no packet meets a half-updated set.
package geoip

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
)

// DB is a country database, an ASN database, or both, indexed.
type DB struct {
	countries map[string][]netip.Prefix
	asns      map[uint32][]netip.Prefix
	version   string
}

// HasCountries and HasASNs report which databases are loaded.
func (d *DB) HasCountries() bool { return d != nil && d.countries != nil }
func (d *DB) HasASNs() bool      { return d != nil && d.asns != nil }

// Country returns the prefixes of a country (ISO 3166-1 alpha-2, upper
// case).
func (d *DB) Country(code string) []netip.Prefix { return d.countries[code] }

// ASN returns the prefixes an AS number announces.
func (d *DB) ASN(n uint32) []netip.Prefix { return d.asns[n] }

// Version identifies the loaded files' contents ("" for none).
func (d *DB) Version() string {
	if d == nil {
		return ""
	}
	return d.version
}

// Open loads the databases at the given paths ("" for none).
func Open(countryPath, asnPath string) (*DB, error) {
	d := &DB{}
	var sums []string
	if countryPath != "" {
		idx, sum, err := load(countryPath, func(r maxminddb.Result) (string, error) {
			var rec struct {
				Country struct {
					ISOCode string `maxminddb:"iso_code"`
				} `maxminddb:"country"`
				Registered struct {
					ISOCode string `maxminddb:"iso_code"`
				} `maxminddb:"registered_country"`
			}
			if err := r.Decode(&rec); err != nil {
				return "", err
			}
			c := rec.Country.ISOCode
			if c == "" {
				c = rec.Registered.ISOCode
			}
			return strings.ToUpper(c), nil
		})
		if err != nil {
			return nil, fmt.Errorf("load country database %s: %w", countryPath, err)
		}
		d.countries = idx
		sums = append(sums, sum)
	}
	if asnPath != "" {
		idx, sum, err := load(asnPath, func(r maxminddb.Result) (uint32, error) {
			var rec struct {
				ASN uint32 `maxminddb:"autonomous_system_number"`
			}
			err := r.Decode(&rec)
			return rec.ASN, err
		})
		if err != nil {
			return nil, fmt.Errorf("load ASN database %s: %w", asnPath, err)
		}
		d.asns = idx
		sums = append(sums, sum)
	}
	d.version = strings.Join(sums, "+")
	return d, nil
}

// load indexes every network of the file by key (zero keys are skipped)
// and returns a hash of the file.
func load[K comparable](path string, key func(maxminddb.Result) (K, error)) (map[K][]netip.Prefix, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	r, err := maxminddb.OpenBytes(b)
	if err != nil {
		return nil, "", err
	}
	defer r.Close()
	idx := map[K][]netip.Prefix{}
	var zero K
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return nil, "", err
		}
		k, err := key(res)
		if err != nil {
			return nil, "", err
		}
		if k == zero {
			continue
		}
		p := res.Prefix()
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		idx[k] = append(idx[k], p.Masked())
	}
	h := sha256.Sum256(b)
	return idx, hex.EncodeToString(h[:6]), nil
}

// Reloader holds the database in use and reloads it when a file changes.
type Reloader struct {
	countryPath, asnPath string
	log                  *slog.Logger
	mu                   sync.Mutex
	db                   *DB
	stamp                string
}

// NewReloader loads the databases once; an error here is fatal for the
// caller (a flag naming a file that does not load).
func NewReloader(countryPath, asnPath string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{countryPath: countryPath, asnPath: asnPath, log: log}
	db, err := Open(countryPath, asnPath)
	if err != nil {
		return nil, err
	}
	r.db, r.stamp = db, r.fileStamp()
	return r, nil
}

// DB returns the database in use.
func (r *Reloader) DB() *DB {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.db
}

func (r *Reloader) fileStamp() string {
	var b strings.Builder
	for _, p := range []string{r.countryPath, r.asnPath} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", st.ModTime().UnixNano(), st.Size())
		}
	}
	return b.String()
}

// Check reloads if a file's size or modification time changed, and
// reports whether the database in use changed. A file that fails to load
// (a partial copy, a corrupt download) is logged and the old database
// stays in use: verdicts never follow a half-written file.
func (r *Reloader) Check() bool {
	stamp := r.fileStamp()
	r.mu.Lock()
	same := stamp == r.stamp
	r.mu.Unlock()
	if same {
		return false
	}
	db, err := Open(r.countryPath, r.asnPath)
	if err != nil {
		r.log.Error("reload geo databases; the loaded ones stay in use", "err", err)
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stamp = stamp
	if db.version == r.db.version {
		return false
	}
	r.db = db
	r.log.Info("geo databases reloaded", "version", db.version)
	return true
}

// Watch calls Check every interval until stop is closed, and sends on
// changed (without blocking) when the database changed.
func (r *Reloader) Watch(stop <-chan struct{}, interval time.Duration, changed chan<- struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if r.Check() {
				select {
				case changed <- struct{}{}:
				default:
				}
			}
		}
	}
}
