package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nfhost/nfhost/internal/doc"
)

// Dir is a Store on a directory tree: the embedded default that needs no
// Consul. CAS indexes are content hashes, so a writer that read an older
// version of a file gets ErrConflict.
type Dir struct {
	root  string // DIR/<tenant>/<key>.json
	state string // status under STATE/status/<host>/<name>.json
	// Poll is how often Watch re-reads the tree.
	Poll time.Duration
}

// NewDir returns a directory store.
func NewDir(root, stateDir string) *Dir {
	return &Dir{root: root, state: stateDir, Poll: 250 * time.Millisecond}
}

const (
	dirControl = "_control"
	dirGlobal  = "_global"
	dirLists   = "_lists"
)

func hashIndex(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	if v := h.Sum64(); v != 0 {
		return v
	}
	return 1
}

// Read walks the tree once.
func (d *Dir) Read(ctx context.Context) (Snapshot, error) {
	s := Snapshot{Tenants: map[string]map[string]Entry{}, Control: map[string]Entry{}, Lists: map[string][]Entry{}}
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return s, fmt.Errorf("read config dir: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
			continue
		case name == dirControl:
			if err := d.readControl(&s); err != nil {
				return s, err
			}
			continue
		case name == dirLists:
			files, err := os.ReadDir(filepath.Join(d.root, dirLists))
			if err != nil {
				return s, fmt.Errorf("read %s: %w", dirLists, err)
			}
			for _, f := range files {
				if f.IsDir() || !strings.HasSuffix(f.Name(), ".json") {
					continue
				}
				b, err := os.ReadFile(filepath.Join(d.root, dirLists, f.Name()))
				if err != nil {
					return s, fmt.Errorf("read %s/%s: %w", dirLists, f.Name(), err)
				}
				s.Lists[strings.TrimSuffix(f.Name(), ".json")] = []Entry{{Value: b, ModifyIndex: hashIndex(b)}}
			}
			continue
		case name == dirGlobal:
			b, err := os.ReadFile(filepath.Join(d.root, dirGlobal, "dos.json"))
			if err == nil {
				s.DoSGlobal = &Entry{Value: b, ModifyIndex: hashIndex(b)}
			} else if !os.IsNotExist(err) {
				return s, fmt.Errorf("read %s/dos.json: %w", dirGlobal, err)
			}
			continue
		case !e.IsDir():
			s.Problems = append(s.Problems, fmt.Sprintf("%s: not a tenant directory", filepath.Join(d.root, name)))
			continue
		case doc.ValidateTenantID(name) != nil:
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %v", filepath.Join(d.root, name), doc.ValidateTenantID(name)))
			continue
		}
		files, err := os.ReadDir(filepath.Join(d.root, name))
		if err != nil {
			return s, fmt.Errorf("read tenant dir %s: %w", name, err)
		}
		keys := map[string]Entry{}
		for _, f := range files {
			if f.IsDir() || strings.HasPrefix(f.Name(), ".") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(d.root, name, f.Name()))
			if err != nil {
				return s, fmt.Errorf("read %s/%s: %w", name, f.Name(), err)
			}
			keys[strings.TrimSuffix(f.Name(), ".json")] = Entry{Value: b, ModifyIndex: hashIndex(b)}
		}
		if len(keys) > 0 {
			s.Tenants[name] = keys
		}
	}
	return s, nil
}

func (d *Dir) readControl(s *Snapshot) error {
	root := filepath.Join(d.root, dirControl)
	return filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if strings.HasPrefix(e.Name(), ".") {
			return nil // as in a tenant's directory: writeAtomic's temporary files
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted while the tree was read
		}
		if err != nil {
			return fmt.Errorf("read control %s: %w", p, err)
		}
		rel, _ := filepath.Rel(root, p)
		s.Control[filepath.ToSlash(rel)] = Entry{Value: bytes.TrimSpace(b), ModifyIndex: hashIndex(b)}
		return nil
	})
}

// Watch polls the tree and sends a snapshot when anything changed.
func (d *Dir) Watch(ctx context.Context, out chan<- Snapshot, onHealth func(error)) error {
	var last string
	sick := false
	for {
		s, err := d.Read(ctx)
		if (err != nil || sick) && onHealth != nil {
			onHealth(err) // every failure, and nil for the recovery
		}
		sick = err != nil
		if fp := fingerprint(s); err == nil && fp != last {
			last = fp
			select {
			case out <- s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if !sleepCtx(ctx, d.Poll) {
			return ctx.Err()
		}
	}
}

// fingerprint identifies a snapshot by its keys and their indexes (the
// indexes change with every write), without touching the values.
func fingerprint(s Snapshot) string {
	var b strings.Builder
	for _, m := range []map[string]Entry{s.Control} {
		for _, k := range sortedKeys(m) {
			fmt.Fprintf(&b, "c:%s=%d;", k, m[k].ModifyIndex)
		}
	}
	ids := make([]string, 0, len(s.Tenants))
	for id := range s.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, k := range sortedKeys(s.Tenants[id]) {
			fmt.Fprintf(&b, "%s/%s=%d;", id, k, s.Tenants[id][k].ModifyIndex)
		}
	}
	if s.DoSGlobal != nil {
		fmt.Fprintf(&b, "g:%d;", s.DoSGlobal.ModifyIndex)
	}
	names := make([]string, 0, len(s.Lists))
	for n := range s.Lists {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, e := range s.Lists[n] {
			fmt.Fprintf(&b, "l:%s=%d;", n, e.ModifyIndex)
		}
	}
	fmt.Fprintf(&b, "p:%s", strings.Join(s.Problems, "|"))
	return b.String()
}

func sortedKeys(m map[string]Entry) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (d *Dir) tenantFile(tenant, key string) string {
	return filepath.Join(d.root, tenant, key+".json")
}

// Put writes a tenant file atomically, with check-and-set on its hash.
func (d *Dir) Put(ctx context.Context, tenant, key string, value []byte, cas uint64) error {
	p := d.tenantFile(tenant, key)
	if err := checkCAS(p, cas); err != nil {
		return err
	}
	return writeAtomic(p, value)
}

// PutTenant checks every key's check-and-set first, then writes each
// file atomically: a conflict on any writes none.
func (d *Dir) PutTenant(ctx context.Context, tenant string, writes []KeyWrite) error {
	for _, w := range writes {
		if err := checkCAS(d.tenantFile(tenant, w.Key), w.CAS); err != nil {
			return err
		}
	}
	for _, w := range writes {
		if err := writeAtomic(d.tenantFile(tenant, w.Key), w.Value); err != nil {
			return err
		}
	}
	return nil
}

// checkCAS compares the file's content index with cas (0: must not exist).
func checkCAS(p string, cas uint64) error {
	cur, err := os.ReadFile(p)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if cas != 0 {
			return fmt.Errorf("write %s: %w", p, ErrConflict)
		}
	case err != nil:
		return fmt.Errorf("read %s: %w", p, err)
	case hashIndex(cur) != cas:
		return fmt.Errorf("write %s: %w", p, ErrConflict)
	}
	return nil
}

func writeAtomic(p string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(p), err)
	}
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("rename %s: %w", p, err)
	}
	return nil
}

// DeleteTenant removes the tenant's directory.
func (d *Dir) DeleteTenant(ctx context.Context, tenant string) error {
	if tenant == "" || strings.HasPrefix(tenant, ".") || strings.HasPrefix(tenant, "_") || strings.Contains(tenant, "/") {
		// The tree's own folders (_control, _global) are not tenants.
		return fmt.Errorf("tenant %q: %w", tenant, ErrNotFound)
	}
	p := filepath.Join(d.root, tenant)
	if _, err := os.Stat(p); err != nil {
		return fmt.Errorf("tenant %s: %w", tenant, ErrNotFound)
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("delete %s: %w", p, err)
	}
	return nil
}

// PutDoSGlobal writes DIR/_global/dos.json; cas as in Put.
func (d *Dir) PutDoSGlobal(ctx context.Context, value []byte, cas uint64) error {
	p := filepath.Join(d.root, dirGlobal, "dos.json")
	if err := checkCAS(p, cas); err != nil {
		return err
	}
	return writeAtomic(p, value)
}

// PutControl writes DIR/_control/<name>.
func (d *Dir) PutControl(ctx context.Context, name string, value []byte) error {
	return writeAtomic(filepath.Join(d.root, dirControl, filepath.FromSlash(name)), value)
}

func (d *Dir) statusFile(host, name string) string {
	return filepath.Join(d.state, "status", host, name+".json")
}

// PutStatus writes STATE/status/<host>/<name>.json.
func (d *Dir) PutStatus(ctx context.Context, host, name string, st any) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	return writeAtomic(d.statusFile(host, name), b)
}

// DeleteStatus removes a status file.
func (d *Dir) DeleteStatus(ctx context.Context, host, name string) error {
	if err := os.Remove(d.statusFile(host, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete status: %w", err)
	}
	return nil
}

// ListStatus reads the status files of one host or of all ("").
func (d *Dir) ListStatus(ctx context.Context, host string) (map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]json.RawMessage{}
	hosts := []string{host}
	if host == "" {
		ents, err := os.ReadDir(filepath.Join(d.state, "status"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read status dir: %w", err)
		}
		hosts = nil
		for _, e := range ents {
			hosts = append(hosts, e.Name())
		}
	}
	for _, h := range hosts {
		files, _ := filepath.Glob(filepath.Join(d.state, "status", h, "*.json"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil || !json.Valid(b) {
				continue
			}
			if out[h] == nil {
				out[h] = map[string]json.RawMessage{}
			}
			out[h][strings.TrimSuffix(filepath.Base(f), ".json")] = b
		}
	}
	return out, nil
}

// ListTenantStatus reads one tenant's status files from every host.
func (d *Dir) ListTenantStatus(ctx context.Context, tenant string) (map[string]json.RawMessage, error) {
	all, err := d.ListStatus(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for h, names := range all {
		if b, ok := names[tenant]; ok {
			out[h] = b
		}
	}
	return out, nil
}
