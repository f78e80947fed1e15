package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	_ TopStore = (*Consul)(nil)
	_ TopStore = (*Dir)(nil)
)

// TopStore relays nsctl dos top through the store, for edges whose nsd
// nsctl cannot reach over HTTP: nsctl writes a watch request
// control/top/<watch> (TopWatchKey) and refreshes it while it watches;
// every nsd that sees an unexpired request publishes its summary to
// top/<watch>/<host> about once a second and deletes it when the request
// expires. Consul and Dir implement it.
type TopStore interface {
	// PutTop writes host's summary for watch.
	PutTop(ctx context.Context, watch, host string, value []byte) error
	// DeleteTop removes host's summary for watch.
	DeleteTop(ctx context.Context, watch, host string) error
	// ListTop returns the summaries published for watch, by host.
	ListTop(ctx context.Context, watch string) (map[string][]byte, error)
	// DeleteControl removes control/<name> (a watch request at its end).
	DeleteControl(ctx context.Context, name string) error
}

// TopWatchPrefix is the control name prefix of watch requests.
const TopWatchPrefix = "top/"

// TopWatchKey is the control name of a watch request.
func TopWatchKey(watch string) string { return TopWatchPrefix + watch }

var watchID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// ValidWatchID checks a watch ID (it becomes a key and a file name).
func ValidWatchID(id string) error {
	if !watchID.MatchString(id) {
		return fmt.Errorf("watch ID %q: want %s", id, watchID)
	}
	return nil
}

func topKey(c *Consul, watch, host string) string { return c.key("top", watch, host) }

// PutTop writes <prefix>/top/<watch>/<host>.
func (c *Consul) PutTop(ctx context.Context, watch, host string, value []byte) error {
	if err := ValidWatchID(watch); err != nil {
		return err
	}
	return c.put(ctx, topKey(c, watch, host), value)
}

// DeleteTop removes <prefix>/top/<watch>/<host>.
func (c *Consul) DeleteTop(ctx context.Context, watch, host string) error {
	k := topKey(c, watch, host)
	return c.call(ctx, "delete "+k, func(ctx context.Context) error {
		_, err := c.kv.Delete(k, c.wo(ctx))
		return err
	})
}

// ListTop reads <prefix>/top/<watch>/.
func (c *Consul) ListTop(ctx context.Context, watch string) (map[string][]byte, error) {
	if err := ValidWatchID(watch); err != nil {
		return nil, err
	}
	p := c.key("top", watch) + "/"
	pairs, err := c.list(ctx, p)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, kv := range pairs {
		out[strings.TrimPrefix(kv.Key, p)] = kv.Value
	}
	return out, nil
}

// DeleteControl removes <prefix>/control/<name>.
func (c *Consul) DeleteControl(ctx context.Context, name string) error {
	k := c.key("control", name)
	return c.call(ctx, "delete "+k, func(ctx context.Context) error {
		_, err := c.kv.Delete(k, c.wo(ctx))
		return err
	})
}

func (d *Dir) topFile(watch, host string) string {
	return filepath.Join(d.state, "top", watch, host+".json")
}

// PutTop writes STATE/top/<watch>/<host>.json.
func (d *Dir) PutTop(ctx context.Context, watch, host string, value []byte) error {
	if err := ValidWatchID(watch); err != nil {
		return err
	}
	return writeAtomic(d.topFile(watch, host), value)
}

// DeleteTop removes STATE/top/<watch>/<host>.json (and the watch's
// directory once empty).
func (d *Dir) DeleteTop(ctx context.Context, watch, host string) error {
	if err := os.Remove(d.topFile(watch, host)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete top summary: %w", err)
	}
	os.Remove(filepath.Dir(d.topFile(watch, host)))
	return nil
}

// ListTop reads STATE/top/<watch>/*.json.
func (d *Dir) ListTop(ctx context.Context, watch string) (map[string][]byte, error) {
	if err := ValidWatchID(watch); err != nil {
		return nil, err
	}
	files, _ := filepath.Glob(filepath.Join(d.state, "top", watch, "*.json"))
	out := map[string][]byte{}
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
		}
	}
	return out, nil
}

// DeleteControl removes DIR/_control/<name>.
func (d *Dir) DeleteControl(ctx context.Context, name string) error {
	if err := os.Remove(filepath.Join(d.root, dirControl, filepath.FromSlash(name))); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete control/%s: %w", name, err)
	}
	return nil
}
