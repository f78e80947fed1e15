package dos

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/nfhost/nfhost/dos/dosspec"
)

// slotDoc is a DoS document with n drop signatures s0.. on UDP
// destination ports base, base+1, ...
func slotDoc(n, base int) string {
	var sigs []string
	for i := 0; i < n; i++ {
		sigs = append(sigs, fmt.Sprintf(`{"id": "s%d", "expression": "udp.dstport == %d", "action": "drop"}`, i, base+i))
	}
	return `{"signatures": [` + strings.Join(sigs, ",") + `]}`
}

func mustGlobal(t testing.TB, doc string) dosspec.Spec {
	t.Helper()
	s, err := dosspec.ParseGlobal([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// inForce lists the signature IDs the maps hold, sorted.
func inForce(t *testing.T, r *Reconciler) []string {
	t.Helper()
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id := range c.Signatures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func countPrefix(ids []string, p string) int {
	n := 0
	for _, id := range ids {
		if strings.HasPrefix(id, p) {
			n++
		}
	}
	return n
}

// TestSignatureSlotsRunOut is the reliability issue's item 9: a tenant had
// 256 signatures in force and a one-signature dos/global arrived. The
// tenant's signatures used to vanish while nothing said so. Now a
// document that does not fit is refused with the field that ran out, and
// the rules in force keep their slots.
func TestSignatureSlotsRunOut(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	acme := func(n int) []Tenant {
		return []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Spec: mustSpec(t, "acme", slotDoc(n, 10000))}}
	}
	verdict := func(dst string, dport uint16) uint32 {
		t.Helper()
		ret, err := objs.NfhostDos.Run(&ebpf.RunOptions{Data: pkt{src: "192.0.2.1", dst: dst, dport: dport}.bytes(t)})
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	noGlobal := dosspec.Spec{}
	global := mustGlobal(t, `{"signatures": [{"id": "chargen", "expression": "udp.dstport == 19", "action": "drop"}]}`)

	// 1. The tenant fills the host's 256 slots.
	if errs, err := r.Apply(noGlobal, acme(256), time.Now()); err != nil || len(errs) != 0 {
		t.Fatalf("errs %v, err %v", errs, err)
	}
	if verdict("203.0.113.7", 10255) != xdpDrop {
		t.Fatal("acme's last signature does not drop")
	}

	// 2. The reported failure: a one-signature global document arrives.
	// It is the document that does not fit, so it is the one refused; the
	// tenant keeps every signature it had.
	errs, err := r.Apply(global, acme(256), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const globalMsg = "dos/global: signatures[0]: no free signature slot (256 in use: 0 global, 256 tenant)"
	if len(errs) != 1 || errs[dosspec.GlobalKey] == nil || errs[dosspec.GlobalKey].Error() != globalMsg {
		t.Fatalf("errs %v, want only %s: %q", errs, dosspec.GlobalKey, globalMsg)
	}
	ids := inForce(t, r)
	if len(ids) != 256 || countPrefix(ids, "acme/") != 256 {
		t.Fatalf("in force after the global document: %d signatures, %d of acme", len(ids), countPrefix(ids, "acme/"))
	}
	if verdict("203.0.113.7", 10255) != xdpDrop || verdict("203.0.113.7", 10000) != xdpDrop {
		t.Fatal("acme lost signatures to the global document")
	}
	if verdict("198.51.100.1", 19) != xdpPass {
		t.Fatal("the refused global signature is in force")
	}

	// 3. The tenant shrinks: the refused global document now fits and is
	// placed without being written again.
	if errs, err := r.Apply(global, acme(200), time.Now()); err != nil || len(errs) != 0 {
		t.Fatalf("errs %v, err %v", errs, err)
	}
	if verdict("198.51.100.1", 19) != xdpDrop || verdict("203.0.113.7", 10199) != xdpDrop {
		t.Fatal("global and acme signatures not both in force")
	}

	// 4. The tenant grows back to 256: 255 fit, so the whole document is
	// refused at signatures[255] and its 200 signatures in force stay.
	errs, err = r.Apply(global, acme(256), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const acmeMsg = "tenants/acme/dos: signatures[255]: no free signature slot (256 in use: 1 global, 255 tenant)"
	if len(errs) != 1 || errs["acme"] == nil || errs["acme"].Error() != acmeMsg {
		t.Fatalf("errs %v, want only acme: %q", errs, acmeMsg)
	}
	ids = inForce(t, r)
	if len(ids) != 201 || countPrefix(ids, "acme/") != 200 || countPrefix(ids, "global/") != 1 {
		t.Fatalf("in force: %v", ids)
	}
	if verdict("203.0.113.7", 10199) != xdpDrop || verdict("203.0.113.7", 10200) != xdpPass || verdict("198.51.100.1", 19) != xdpDrop {
		t.Fatal("the refused tenant document changed what is in force")
	}
}

// TestSignatureSlotsSurviveRestart: a restarted nsd learns which
// documents hold slots from the pinned maps, so a document refused before
// the restart is still the one refused after it.
func TestSignatureSlotsSurviveRestart(t *testing.T) {
	objs := loadForTest(t)
	r, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	tenants := []Tenant{{ID: "acme", Prefixes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Spec: mustSpec(t, "acme", slotDoc(256, 10000))}}
	if errs, err := r.Apply(dosspec.Spec{}, tenants, time.Now()); err != nil || len(errs) != 0 {
		t.Fatalf("errs %v, err %v", errs, err)
	}
	global := mustGlobal(t, `{"signatures": [{"id": "chargen", "expression": "udp.dstport == 19", "action": "drop"}]}`)
	if errs, err := r.Apply(global, tenants, time.Now()); err != nil || errs[dosspec.GlobalKey] == nil {
		t.Fatalf("errs %v, err %v", errs, err)
	}
	r2, err := newReconciler(objs, nil)
	if err != nil {
		t.Fatal(err)
	}
	errs, err := r2.Apply(global, tenants, time.Now())
	if err != nil || len(errs) != 1 || errs[dosspec.GlobalKey] == nil {
		t.Fatalf("after a restart: errs %v, err %v", errs, err)
	}
	if ids := inForce(t, r2); countPrefix(ids, "acme/") != 256 {
		t.Fatalf("after a restart acme holds %d signatures", countPrefix(ids, "acme/"))
	}
	if r2.Writes() != 0 {
		t.Errorf("the restarted reconciler wrote %d entries", r2.Writes())
	}
}

// TestPlacementPolicy walks Build (no kernel) through the policy: what is
// in force keeps its slots; documents that shrink go before documents
// that grow; among those that grow the global document goes first, then
// tenants by ID; a refused document keeps its previous version, if any.
func TestPlacementPolicy(t *testing.T) {
	pf := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	var inForce map[string]*dosspec.Spec
	build := func(global dosspec.Spec, tenants ...TenantInput) (*State, map[string]error) {
		t.Helper()
		for i := range tenants {
			tenants[i].Index = uint32(i + 1)
		}
		st, errs := Build(Desired{Global: global, Tenants: tenants, Now: time.Now(), InForce: inForce})
		inForce = st.InForce
		return st, errs
	}
	tenant := func(id, prefix string, n, base int) TenantInput {
		return TenantInput{ID: id, Prefixes: pf(prefix), Spec: mustSpec(t, id, slotDoc(n, base))}
	}
	scopes := func(st *State) map[string]int {
		out := map[string]int{}
		for _, s := range st.Sigs {
			out[strings.Split(s.ID, "/")[0]]++
		}
		return out
	}
	wantErr := func(errs map[string]error, key, msg string, kept bool) {
		t.Helper()
		pe, ok := errs[key].(*PlacementError)
		if !ok || pe.Error() != msg || pe.Kept != kept {
			t.Fatalf("errs[%s] = %#v, want %q (kept %v); all: %v", key, errs[key], msg, kept, errs)
		}
	}

	// Two new tenants compete for the last 6 slots: beta's document comes
	// before gamma's by ID even though gamma has the lower index.
	_, errs := build(dosspec.Spec{}, tenant("acme", "203.0.113.0/24", 250, 1000))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	st, errs := build(dosspec.Spec{}, tenant("acme", "203.0.113.0/24", 250, 1000), tenant("gamma", "198.51.100.0/25", 4, 2000), tenant("beta", "198.51.100.128/25", 4, 3000))
	if got := scopes(st); got["acme"] != 250 || got["beta"] != 4 || got["gamma"] != 0 || len(errs) != 1 {
		t.Fatalf("placed %v, errs %v", got, errs)
	}
	wantErr(errs, "gamma", "tenants/gamma/dos: signatures[2]: no free signature slot (256 in use: 0 global, 256 tenant)", false)

	// In one change acme shrinks by 10 and the global document asks for
	// 10: acme's shrink goes first, so both fit, and gamma (still waiting)
	// is still refused.
	global := mustGlobal(t, slotDoc(10, 100))
	st, errs = build(global, tenant("acme", "203.0.113.0/24", 240, 1000), tenant("gamma", "198.51.100.0/25", 4, 2000), tenant("beta", "198.51.100.128/25", 4, 3000))
	if got := scopes(st); got["global"] != 10 || got["acme"] != 240 || got["beta"] != 4 || len(errs) != 1 {
		t.Fatalf("placed %v, errs %v", got, errs)
	}
	wantErr(errs, "gamma", "tenants/gamma/dos: signatures[2]: no free signature slot (256 in use: 10 global, 246 tenant)", false)
	if st.Sigs[0].ID != "global/s0" {
		t.Fatalf("global signatures are not first: %s", st.Sigs[0].ID)
	}

	// beta grows and also moves a rate limit outside its prefixes: refused
	// for the prefix, its 4 signatures stay. An expired signature takes no
	// slot.
	beta := mustSpec(t, "beta", `{"rate_limits": [{"prefix": "203.0.113.0/24", "pps": 10, "per": "ip"}], "signatures": [
	  {"id": "a", "expression": "udp.dstport == 1", "action": "drop"}]}`)
	gamma := mustSpec(t, "gamma", `{"signatures": [{"id": "old", "expression": "udp.dstport == 1", "action": "drop", "expires": "2020-01-01T00:00:00Z"}]}`)
	st, errs = build(global, tenant("acme", "203.0.113.0/24", 240, 1000),
		TenantInput{ID: "gamma", Prefixes: pf("198.51.100.0/25"), Spec: gamma}, TenantInput{ID: "beta", Prefixes: pf("198.51.100.128/25"), Spec: beta})
	if got := scopes(st); got["beta"] != 4 || got["gamma"] != 0 || len(errs) != 1 {
		t.Fatalf("placed %v, errs %v", got, errs)
	}
	wantErr(errs, "beta", `tenants/beta/dos: rate_limits[0].prefix: "203.0.113.0/24": not inside the tenant's prefixes`, true)

	// The global document grows past what is free: refused, its 10 stay;
	// a tenant that deletes its document frees its slots at once.
	st, errs = build(mustGlobal(t, slotDoc(20, 100)), tenant("acme", "203.0.113.0/24", 240, 1000), TenantInput{ID: "beta", Prefixes: pf("198.51.100.128/25")})
	if got := scopes(st); got["global"] != 10 || got["acme"] != 240 || got["beta"] != 0 || len(errs) != 1 {
		t.Fatalf("placed %v, errs %v", got, errs)
	}
	wantErr(errs, dosspec.GlobalKey, "dos/global: signatures[16]: no free signature slot (256 in use: 16 global, 240 tenant)", true)
}
