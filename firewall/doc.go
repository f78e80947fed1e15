// Package firewall compiles a tenant's rules (a fwspec.Spec, written in the
// firewall/lang language) to nftables and keeps them in force inside the
// tenant's namespace: one table "inet nfhost" per namespace, replaced in one
// atomic batch, with named counters that survive rule replacement.
package firewall
