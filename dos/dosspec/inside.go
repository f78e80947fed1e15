package dosspec

import (
	"fmt"
	"net/netip"

	"github.com/nfhost/nfhost/internal/doc"
)

// CheckPrefixes is what a tenant's document must satisfy against the
// tenant's own prefixes: its rate limits and its tcp_protection prefixes
// lie inside them. nsd refuses a document that does not, whole; nsctl
// checks it before writing.
func (s *Spec) CheckPrefixes(tenant string, prefixes []netip.Prefix) error {
	bad := func(path, value string) error {
		return &doc.FieldError{Tenant: tenant, Key: doc.KeyDoS, Path: path, Value: value, Msg: "not inside the tenant's prefixes"}
	}
	for i, rl := range s.RateLimits {
		if !InsideAny(rl.Prefix, prefixes) {
			return bad(fmt.Sprintf("rate_limits[%d].prefix", i), rl.Prefix.String())
		}
	}
	if s.TCP != nil {
		for i, ps := range s.TCP.Prefixes {
			p, err := doc.ParseAddrOrPrefix(ps)
			if err == nil && !InsideAny(p, prefixes) {
				return bad(fmt.Sprintf("tcp_protection.prefixes[%d]", i), ps)
			}
		}
	}
	return nil
}

// InsideAny reports whether p lies inside one of in (same family).
func InsideAny(p netip.Prefix, in []netip.Prefix) bool {
	for _, q := range in {
		q, k := q.Masked(), p.Masked()
		if q.Addr().Is4() == p.Addr().Is4() && q.Bits() <= k.Bits() && q.Contains(k.Addr()) {
			return true
		}
	}
	return false
}
