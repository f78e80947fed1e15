// Package doc decodes and checks the JSON documents tenants and operators
// write (tenants/<tenant>/<key>, dos/global) and reports what is wrong with
// them as field-path errors, for example
//
//	tenants/acme/network: prefixes[1]: "203.0.113.0/33": invalid CIDR
//
// Contract: DecodeStrict refuses unknown fields, trailing data and type
// mismatches; every failure is a *FieldError (or Errors of several) naming
// tenant, key and field path, so that nsd and nsctl print the same message
// and map it to the same exit code. The package knows the key names and
// tenant ID rules, and parses the address forms every document shares; it
// touches no kernel and no store, and imports nothing of nfhost.
package doc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Keys under nfhost/tenants/<tenant>/.
const (
	KeyNetwork  = "network"
	KeyFirewall = "firewall"
	KeyDoS      = "dos"
)

// KnownKeys are the per-tenant keys nsd understands. Any other key under a
// tenant is reported as a warning, never treated as fatal.
var KnownKeys = []string{KeyNetwork, KeyFirewall, KeyDoS}

// IsKnownKey reports whether key is one of KnownKeys.
func IsKnownKey(key string) bool {
	for _, k := range KnownKeys {
		if k == key {
			return true
		}
	}
	return false
}

var tenantIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}$`)

// ValidateTenantID checks a tenant ID against ^[a-z0-9][a-z0-9-]{0,30}$.
func ValidateTenantID(id string) error {
	if !tenantIDRe.MatchString(id) {
		return &FieldError{Tenant: id, Msg: fmt.Sprintf("invalid tenant ID %q: must match %s", id, tenantIDRe)}
	}
	return nil
}

// FieldError is a validation error located in a tenant document.
type FieldError struct {
	Tenant string // tenant ID, may be empty for files without one
	Key    string // "network", "firewall", ...
	Path   string // JSON field path such as prefixes[1]; empty for whole-document errors
	Value  string // offending value as written, quoted in the message when set
	Msg    string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Tenant != "" {
		b.WriteString("tenants/")
		b.WriteString(e.Tenant)
		if e.Key != "" {
			b.WriteString("/")
			b.WriteString(e.Key)
		}
		b.WriteString(": ")
	} else if e.Key != "" {
		b.WriteString(e.Key) // a fleet-wide key, e.g. dos/global
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Value != "" {
		fmt.Fprintf(&b, "%q: ", e.Value)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors collects several field errors of one document.
type Errors []*FieldError

// maxShown bounds how many field errors one message lists.
const maxShown = 10

func (es Errors) Error() string {
	msgs := make([]string, 0, min(len(es), maxShown+1))
	for i, e := range es {
		if i == maxShown {
			msgs = append(msgs, fmt.Sprintf("and %d more errors", len(es)-maxShown))
			break
		}
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.As find the individual field errors.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// orNil returns nil for an empty list so that callers can `return errs.orNil()`.
func (es Errors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// DecodeStrict decodes one JSON document into v, rejecting unknown fields
// and trailing data, and turns decoder errors into field errors naming
// tenant and key. Every tenant document is read through it.
func DecodeStrict(tenant, key string, data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(tenant, key, data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &FieldError{Tenant: tenant, Key: key, Msg: "invalid JSON: trailing data after the document"}
	}
	return nil
}

func jsonError(tenant, key string, data []byte, err error) error {
	fe := &FieldError{Tenant: tenant, Key: key}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		// Offset counts the bytes read including the offending one.
		line, col := lineCol(data, max(syn.Offset-1, 0))
		fe.Msg = fmt.Sprintf("invalid JSON at line %d, column %d: %s", line, col, syn.Error())
	case errors.As(err, &typ):
		fe.Path = typ.Field
		fe.Msg = fmt.Sprintf("expected %s, got JSON %s", typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		fe.Msg = "invalid JSON: empty document"
	case errors.Is(err, io.ErrUnexpectedEOF):
		fe.Msg = "invalid JSON: unexpected end of document"
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		fe.Msg = "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	default:
		fe.Msg = "invalid JSON: " + err.Error()
	}
	return fe
}

func lineCol(data []byte, off int64) (line, col int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line = 1 + bytes.Count(data[:off], []byte("\n"))
	col = int(off) - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// IDs checks the IDs of one list of a document (rules, signatures): each
// must match a pattern and be unique in the list.
type IDs struct {
	list string
	re   *regexp.Regexp
	seen map[string]int
}

// NewIDs checks the IDs of the list called list ("rules") against re.
func NewIDs(list string, re *regexp.Regexp) *IDs {
	return &IDs{list: list, re: re, seen: map[string]int{}}
}

// Check takes entry i's id and reports through add what is wrong with it,
// at path "<list>[i].id".
func (s *IDs) Check(i int, id string, add func(path, value, format string, args ...any)) {
	path := fmt.Sprintf("%s[%d].id", s.list, i)
	if !s.re.MatchString(id) {
		add(path, id, "must match %s", s.re)
	} else if j, dup := s.seen[id]; dup {
		add(path, id, "duplicate of %s[%d].id", s.list, j)
	}
	s.seen[id] = i
}
