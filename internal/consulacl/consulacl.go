// Package consulacl holds the Consul ACL policies that let each party
// touch only its own part of nfhost's KV layout, with Consul's default
// policy "deny":
//
//   - a tenant reads and writes tenants/<id>/firewall, reads its own
//     network and dos keys and its status from every host
//     (tenant-status/<id>/), and nothing else;
//   - nsd reads tenants/, dos/ and control/ and writes the status
//     prefixes (tenant-status/, host-status/, and status/ only so that it
//     can delete the layout older versions wrote) and top/ (the summaries
//     of nsctl dos top it publishes while an operator watches through the
//     store); a leaked nsd token cannot change any tenant's config;
//   - the operator writes everything under the prefix and manages tokens.
//
// The rules are generated for a KV prefix; deploy/consul/ ships them for
// the default prefix as HCL files. The package is pure: it links only the
// Consul API types.
package consulacl

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultPrefix is nfhost's default KV prefix.
const DefaultPrefix = "nfhost"

// TenantPlaceholder stands for the tenant ID in deploy/consul/tenant.hcl.tmpl.
const TenantPlaceholder = "TENANT_ID"

// Policy is one ACL policy: its name, description and rules.
type Policy struct {
	Name, Description, Rules string
}

// Names of the policies for prefix: nfhost-nsd, nfhost-operator and
// nfhost-tenant-<id> for the default prefix; another prefix is part of
// the name, so that two deployments in one cluster keep their policies
// apart.
func base(prefix string) string {
	prefix = strings.Trim(prefix, "/")
	if prefix == DefaultPrefix {
		return "nfhost"
	}
	return "nfhost-" + strings.Trim(nonName.ReplaceAllString(prefix, "-"), "-")
}

// nonName matches what a Consul policy name cannot hold.
var nonName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// NSDName is the name of nsd's policy.
func NSDName(prefix string) string { return base(prefix) + "-nsd" }

// OperatorName is the name of the operator's policy.
func OperatorName(prefix string) string { return base(prefix) + "-operator" }

// TenantNamePrefix starts the name of every tenant policy.
func TenantNamePrefix(prefix string) string { return base(prefix) + "-tenant-" }

// TenantName is the name of tenant id's policy.
func TenantName(prefix, id string) string { return TenantNamePrefix(prefix) + id }

// TenantDescription is the description of tenant id's policy and tokens;
// it names the tenant.
func TenantDescription(prefix, id string) string {
	return fmt.Sprintf("nfhost tenant %s (KV prefix %s)", id, strings.Trim(prefix, "/"))
}

// nsdRules are nsd's rules: what it reads, and the few prefixes it writes.
// Each rule has a comment that says why.
var nsdRules = []struct{ comment, kind, sub, policy string }{
	{"", "key_prefix", "tenants/", "read"},
	{"", "key_prefix", "dos/", "read"},
	{"", "key_prefix", "control/", "read"},
	{"The operator's shared lists that tenants' rules refer to.", "key_prefix", "lists/", "read"},
	{"Its status, per tenant and per host.", "key_prefix", "tenant-status/", "write"},
	{"", "key_prefix", "host-status/", "write"},
	{"Its acknowledgement (nsd --status-writes ack): up to which index it\nprocessed every tenant write.", "key_prefix", "acks/", "write"},
	{"status/ is the layout before tenant-status/ and host-status/: nsd\ndeletes what it wrote there, nothing writes it any more.", "key_prefix", "status/", "write"},
	{"The fleet-wide automatic DoS mitigations it derives (dos/fleet).", "key_prefix", "dos/mitigations/", "write"},
	{"The nsctl dos top summaries it publishes while an operator watches.", "key_prefix", "top/", "write"},
	{"The fleet's index (the journal and digest the elected nsd keeps, so that\na change costs each server one tenant's keys) and the session of the\nlock that elects it.", "key_prefix", "index/", "write"},
	{"", "session_prefix", "", "write"},
}

// NSDWrites are the KV prefixes (under the prefix) nsd's policy may write.
func NSDWrites() []string {
	var out []string
	for _, r := range nsdRules {
		if r.kind == "key_prefix" && r.policy == "write" {
			out = append(out, r.sub)
		}
	}
	return out
}

// NSD is nsd's policy.
func NSD(prefix string) Policy {
	p := strings.Trim(prefix, "/")
	var b strings.Builder
	b.WriteString("# nfhost nsd: read what it reconciles, write only status and what it\n# publishes. A leaked nsd token cannot change any tenant's config.\n")
	for _, r := range nsdRules {
		if r.comment != "" {
			b.WriteString("# " + strings.ReplaceAll(r.comment, "\n", "\n# ") + "\n")
		}
		name := r.sub
		if r.kind == "key_prefix" {
			name = p + "/" + r.sub
		}
		fmt.Fprintf(&b, "%s %q {\n  policy = %q\n}\n", r.kind, name, r.policy)
	}
	return Policy{Name: NSDName(p), Description: fmt.Sprintf("nfhost nsd: reads tenant configs, writes status (KV prefix %s)", p), Rules: b.String()}
}

// Operator is the operator's policy.
func Operator(prefix string) Policy {
	p := strings.Trim(prefix, "/")
	return Policy{Name: OperatorName(p), Description: fmt.Sprintf("nfhost operator: all of KV prefix %s, ACL tokens", p),
		Rules: fmt.Sprintf(`# nfhost operator: everything under the prefix, and the ACL
# system (nsctl acl init, nsctl tenant token).
key_prefix %q {
  policy = "write"
}
acl = "write"
`, p+"/")}
}

// CounterRequestPrefix starts the control keys by which a tenant (or the
// operator) asks every host to publish the tenant's counters:
// control/watch/<tenant>.
const CounterRequestPrefix = "watch/"

// Tenant is tenant id's policy. It does not check id: nsctl does, and
// the HCL template is this policy with TenantPlaceholder.
func Tenant(prefix, id string) Policy {
	p := strings.Trim(prefix, "/")
	return Policy{Name: TenantName(p, id), Description: TenantDescription(p, id),
		Rules: fmt.Sprintf(`# nfhost tenant %[1]s: its own firewall, read-only network and dos,
# its status from every host, the hosts' acknowledgements (acks/: up to
# which index each host processed every write; no tenant's data), and its
# counter request (nsctl fw stats, dos stats and tunnels ask the hosts to
# publish fresh counters). Nothing else.
key %[2]q {
  policy = "write"
}
key %[3]q {
  policy = "read"
}
key %[4]q {
  policy = "read"
}
key_prefix %[5]q {
  policy = "read"
}
key %[6]q {
  policy = "write"
}
key_prefix %[7]q {
  policy = "read"
}
`, id, p+"/tenants/"+id+"/firewall", p+"/tenants/"+id+"/network", p+"/tenants/"+id+"/dos", p+"/tenant-status/"+id+"/",
			p+"/control/"+CounterRequestPrefix+id, p+"/acks/")}
}

// Allowing names the policies that allow op ("read", "list", "write" or
// "delete") on key (with the prefix), for an error message after Consul
// refused it: "nfhost-tenant-acme (tenant acme's token) or nfhost-operator".
func Allowing(prefix, op, key string) string {
	p := strings.Trim(prefix, "/")
	rest, ok := strings.CutPrefix(key, p+"/")
	op2 := "read"
	if op == "write" || op == "delete" {
		op2 = "write"
	}
	var who []string
	tenant := func(id string) {
		who = append(who, fmt.Sprintf("%s (tenant %s's token)", TenantName(p, id), id))
	}
	nsd := func() { who = append(who, NSDName(p)+" (nsd's token)") }
	if ok {
		dir, tail, _ := strings.Cut(rest, "/")
		id, sub, _ := strings.Cut(tail, "/")
		switch dir {
		case "tenants":
			if id != "" && sub == "firewall" || id != "" && op2 == "read" && (sub == "network" || sub == "dos") {
				tenant(id)
			}
			if op2 == "read" {
				nsd()
			}
		case "dos", "control", "lists":
			if dir == "control" && id+"/" == CounterRequestPrefix && sub != "" && !strings.Contains(sub, "/") {
				tenant(sub)
			}
			if op2 == "read" || dir == "dos" && id == "mitigations" {
				nsd()
			}
		case "tenant-status":
			if id != "" && op2 == "read" {
				tenant(id)
			}
			nsd()
		case "host-status", "status", "top", "index":
			nsd()
		case "acks":
			if op2 == "read" {
				who = append(who, "any tenant's token")
			}
			nsd()
		}
	}
	who = append(who, OperatorName(p))
	if len(who) == 1 {
		return who[0] + " (the operator's token)"
	}
	return strings.Join(who[:len(who)-1], ", ") + " or " + who[len(who)-1]
}
