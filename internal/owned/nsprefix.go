package owned

import (
	"fmt"
	"regexp"
)

// MaxNSPrefix bounds --ns-prefix: with a tenant ID (at most 31 bytes) the
// namespace name stays a short, plain file name under /run/netns.
const MaxNSPrefix = 32

var nsPrefixRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// ValidateNSPrefix checks a tenant namespace name prefix.
func ValidateNSPrefix(p string) error {
	switch {
	case len(p) > MaxNSPrefix:
		return fmt.Errorf("%q is %d bytes, at most %d", p, len(p), MaxNSPrefix)
	case !nsPrefixRE.MatchString(p):
		return fmt.Errorf("%q: want letters, digits, '_', '.' or '-', starting with a letter or digit", p)
	}
	return nil
}
