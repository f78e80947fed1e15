package dosspec

import (
	"encoding/json"
	"fmt"
	"testing"
)

// Over-limit documents are refused with errors naming the document and the
// limit, before their entries are parsed (the signatures here are invalid:
// checking them would add errors).
func TestLimits(t *testing.T) {
	c := Config{}
	for i := 0; i < 300; i++ {
		c.Signatures = append(c.Signatures, Signature{ID: fmt.Sprintf("s%d", i), Expression: "udp.dstprot == 1", Action: "drop"})
	}
	sigs, _ := json.Marshal(c)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"signatures", func() error { _, err := Parse("acme", sigs); return err }(), "tenants/acme/dos: signatures: 300 signatures, at most 256"},
		{"9 MiB", func() error { _, err := Parse("acme", make([]byte, 9<<20)); return err }(), "tenants/acme/dos: document is 9437184 bytes, at most 8388608 (8 MiB)"},
		{"global", func() error { _, err := ParseGlobal(make([]byte, 9<<20)); return err }(), "dos/global: document is 9437184 bytes, at most 8388608 (8 MiB)"},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("%s: got %v\nwant %s", tc.name, tc.err, tc.want)
		}
	}
}
